"""A loopback OpenAI-compatible chat-completions server whose reply is scripted per request."""
from __future__ import annotations

import json
import time
from typing import Callable

from search_fakes import FakeServer, json_reply

# script(body, attempt) -> reply content (str), a whole JSON body (dict), (status, raw bytes) for an HTTP
# error or garbage body, or ("sleep", seconds, reply) for a slow reply. `attempt` counts requests with
# the same messages / prompt.
Script = Callable[[dict, int], object]


def chat_body(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


def completion_body(text: str, finish_reason: str = "stop") -> dict:
    return {"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": text,
                                                                 "finish_reason": finish_reason}]}


class ScriptedChatServer(FakeServer):
    """Answers /v1/chat/completions (and /v1/completions) by `script`; counts attempts per prompt."""

    def __init__(self, script: Script):
        self.attempts: dict[str, int] = {}

        def behaviour(number, path, body, headers):
            key = json.dumps(body.get("messages") or body.get("prompt"), sort_keys=True)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            reply = script(body, self.attempts[key])
            if isinstance(reply, tuple) and reply[0] == "sleep":
                time.sleep(reply[1])
                reply = reply[2]
            if isinstance(reply, dict):
                return json_reply(reply)
            if isinstance(reply, tuple):
                status, raw = reply
                return status, raw, {"Content-Type": "text/plain"}
            if path.endswith("/completions") and "chat" not in path:
                return json_reply(completion_body(reply))
            return json_reply(chat_body(reply))

        super().__init__(behaviour)
