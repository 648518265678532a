"""Text-level generation backends for the text rollout loop (`TextRollout`): our JAX `Engine`, or a remote
OpenAI-compatible completions server (vLLM, SGLang) hosting e.g. a teacher such as Qwen2.5-72B-Instruct.

A backend continues prompt strings until a stop string, the end of the turn, or a token budget, and
returns the continuation with the stop string that ended it (so the format can parse a tool call).
Failures are returned per prompt (`Completion.error`), never raised.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Sequence

from atomsearch_jax.clients import EndpointConfig, OpenAIClient
from atomsearch_jax.clients.openai_compat import read_completion_text
from atomsearch_jax.formats.base import strip_trailing_specials
from atomsearch_jax.generate import sampling_arrays


@dataclasses.dataclass(frozen=True)
class Completion:
    """text: the continuation (ending with the stop string that ended it, if any); finish: "stop"
    (stop string or end of turn), "length" (budget reached) or "error" (then error says why)."""

    text: str
    finish: str
    error: str | None = None


class GenerationBackend(abc.ABC):
    """Continues prompts (text) until a stop string, the end of the turn, or `max_tokens` new tokens."""

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], *, stop: Sequence[str], max_tokens: int, temperature: float,
                 seed: int = 0) -> list[Completion]:
        """One Completion per prompt, in order."""


class EngineBackend(GenerationBackend):
    """Our JAX `Engine` (built with a tokenizer): each call prefills the prompts and decodes in segments
    of `segment_steps` until every row stopped."""

    def __init__(self, engine: Any, tokenizer: Any, *, segment_steps: int = 128):
        if engine.codec is None:
            raise ValueError("EngineBackend needs an Engine built with tokenizer= (stop strings are text)")
        self.engine, self.tokenizer, self.segment_steps = engine, tokenizer, segment_steps

    def generate(self, prompts, *, stop, max_tokens, temperature, seed=0):
        """A prompt that already fills the engine's max_len slots ends with finish "length" and no text
        (as a server ends a context that is full); the others are generated together."""
        engine = self.engine
        ids = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        out = [Completion("", "length")] * len(prompts)
        room = [i for i, x in enumerate(ids) if len(x) < engine.max_len]
        if not room:
            return out
        state = engine.start([ids[i] for i in room], seed=seed, max_new_tokens=max_tokens,
                             rows=engine.row_count(1 << (len(room) - 1).bit_length()))
        sampling = sampling_arrays(state.num_rows, temperature=temperature)
        stops = engine.stop_set(tuple(stop))
        while True:
            state, view = engine.decode(state, max_steps=self.segment_steps, sampling=sampling, stops=stops)
            if not view.live_rows():
                break
        exported = engine.export(state, tuple(stop))
        for row_index, i in enumerate(room):
            row = exported.row(row_index)
            text = self.tokenizer.decode(row.tokens[row.prompt_length:].tolist(), skip_special_tokens=False)
            out[i] = Completion(strip_trailing_specials(text) if row.stop_reason == "eos" else text,
                                "length" if row.stop_reason == "length" else "stop")
        return out


@dataclasses.dataclass(frozen=True)
class RemoteBackendConfig:
    """The server (`clients.EndpointConfig`), plus extra fields sent with every request (e.g. top_p)."""

    endpoint: EndpointConfig
    extra_body: dict = dataclasses.field(default_factory=dict)


class RemoteBackend(GenerationBackend):
    """POST /v1/completions with the prompt as text (so the chat template and every environment
    insertion are exactly ours), `stop` strings, concurrency and retries (`clients.OpenAIClient`).

    Servers leave the matched stop string out of the text; it is put back from the reply's
    `stop_reason` (vLLM, SGLang) and a "stop" without one is an end of turn."""

    def __init__(self, config: RemoteBackendConfig):
        self.config = config
        self.client = OpenAIClient(config.endpoint)

    def generate(self, prompts, *, stop, max_tokens, temperature, seed=0):
        payloads = [{"prompt": p, "stop": list(stop), "max_tokens": int(max_tokens), "temperature": temperature,
                     "seed": seed + i, **self.config.extra_body} for i, p in enumerate(prompts)]
        replies = self.client.post_many("completions", payloads, read=_read_with_stop(tuple(stop)))
        return [reply.value if reply.ok else Completion("", "error", reply.error) for reply in replies]


def _read_with_stop(stop: tuple[str, ...]):
    def read(body: Any):
        value, error, raw = read_completion_text(body)
        if error:
            return None, error, raw
        text, finish = value
        if finish == "length":
            return Completion(text, "length"), None, raw
        if finish not in ("stop", "eos", ""):
            return None, f"unexpected finish_reason {finish!r}", raw
        matched = body["choices"][0].get("stop_reason")
        if isinstance(matched, str) and matched in stop and not text.endswith(matched):
            text += matched
        return Completion(text, "stop"), None, raw
    return read
