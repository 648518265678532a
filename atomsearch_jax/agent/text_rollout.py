"""The text-level rollout loop over any `GenerationBackend` (our Engine, a remote teacher server).

    rollout = TextRollout(backend, tokenizer, fmt, retriever, RolloutConfig(...))
    trajectories = rollout.run([(record, system_prompt), ...], n=4, seed=0)

Each turn, every live row's text so far (the chat-templated prompt, then turns and environment
insertions) is continued by the backend up to the format's stop strings; tool calls of all rows are
answered by one batched retrieval and the rendered results appended. Unlike `RolloutRunner` (which keeps
one KV cache per row across turns), the backend sees whole texts, which is what a remote server takes.
A failed generation ends its row with stop reason "error" (recorded, never raised).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from atomsearch_jax.agent.backends import GenerationBackend
from atomsearch_jax.agent.rollout import RolloutConfig
from atomsearch_jax.agent.search_calls import answer_calls
from atomsearch_jax.formats import SEARCH_TOOL, AgentFormat
from atomsearch_jax.search import Retriever


@dataclasses.dataclass
class TextTrajectory:
    """One sampled trajectory as text. segments: (text, trainable) after the prompt (model turns
    trainable, environment insertions not); tool_contents: the results of each insertion as JSON text;
    stop_reason: answer | length | tool_limit | error."""

    record: Any
    sample_index: int
    system_prompt: str
    prompt: str
    segments: list[tuple[str, bool]] = dataclasses.field(default_factory=list)
    tool_contents: list[str] = dataclasses.field(default_factory=list)
    stop_reason: str = ""
    tool_calls: int = 0
    invalid_tool_calls: int = 0
    search_failures: int = 0
    generated_tokens: int = 0
    error: str | None = None

    @property
    def response(self) -> str:
        return "".join(text for text, _ in self.segments)

    @property
    def finished(self) -> bool:
        return bool(self.stop_reason)


class TextRollout:
    """Agent rollouts in `fmt` on a text-level backend with a retriever (see the module docstring)."""

    def __init__(self, backend: GenerationBackend, tokenizer: Any, fmt: AgentFormat, retriever: Retriever,
                 config: RolloutConfig = RolloutConfig()):
        self.backend, self.tokenizer, self.fmt, self.retriever, self.config = backend, tokenizer, fmt, retriever, config

    def prompt(self, question: str, system_prompt: str) -> str:
        messages = [{"role": "system", "content": system_prompt},
                    {"role": "user", "content": self.fmt.user_content(question)}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + self.fmt.generation_prefix

    def run(self, prompts: Sequence[tuple[Any, str]], n: int = 1, *, seed: int = 0,
            temperature: float | None = None) -> list[TextTrajectory]:
        """n trajectories per (record, system prompt), ordered prompt by prompt."""
        cfg = self.config
        temperature = cfg.temperature if temperature is None else temperature
        rows = [TextTrajectory(record, j, system, self.prompt(record.question, system))
                for record, system in prompts for j in range(n)]
        turn = 0
        while live := [i for i, t in enumerate(rows) if not t.finished]:
            budget = min(cfg.max_response_tokens - rows[i].generated_tokens - self._inserted(rows[i]) for i in live)
            completions = self.backend.generate([rows[i].prompt + rows[i].response for i in live],
                                                stop=self.fmt.stop_strings, max_tokens=max(budget, 1),
                                                temperature=temperature, seed=seed * 1009 + turn)
            turn += 1
            calls: dict[int, list[str]] = {}
            failures: dict[int, str] = {}
            for i, completion in zip(live, completions):
                row = rows[i]
                if completion.error is not None:
                    row.stop_reason, row.error = "error", completion.error
                    continue
                row.segments.append((completion.text, True))
                row.generated_tokens += len(self.tokenizer.encode(completion.text, add_special_tokens=False))
                call, why = self.fmt.parse_tool_call_with_reason(completion.text)
                out_of_tokens = row.generated_tokens + self._inserted(row) >= cfg.max_response_tokens
                if completion.finish == "length" or out_of_tokens:
                    row.stop_reason = "length"
                elif call is None and why is None:
                    row.stop_reason = "answer"
                elif row.tool_calls >= cfg.max_tool_calls:
                    row.stop_reason = "tool_limit"
                else:
                    row.tool_calls += 1
                    if call is None:
                        row.invalid_tool_calls += 1
                        failures[i] = f"invalid tool call: {why}"
                    elif call.tool != SEARCH_TOOL:  # text rollouts serve search only (teacher data)
                        failures[i] = f"tool {call.tool!r} is not available here; only search is"
                    else:
                        calls[i] = call.queries
            outcomes = answer_calls(self.retriever, self.fmt, calls, topk=cfg.topk,
                                    max_chars_per_doc=cfg.max_chars_per_doc)
            for i, outcome in outcomes.items():
                rows[i].search_failures += outcome.error is not None
                rows[i].segments.append((outcome.rendered, False))
                rows[i].tool_contents.append(outcome.content)
            for i, message in failures.items():
                rows[i].segments.append((self.fmt.render_failure(message), False))
                rows[i].tool_contents.append(json.dumps({"error": message}))
        return rows

    def _inserted(self, row: TextTrajectory) -> int:
        return sum(len(self.tokenizer.encode(text, add_special_tokens=False)) for text, trainable in row.segments
                   if not trainable)
