"""Reasoning reward model served over an OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, SGLang,
our own `serve`, or a hosted API).

The transport is `clients.OpenAIClient`: concurrent requests, retries with backoff on connection errors,
timeouts, HTTP 408/409/425/429/5xx, malformed bodies and judge replies the score parser cannot read (other
4xx fail at once), and a batch deadline, so `grade` returns within about `total_timeout_s` whatever the
server does. Failures are recorded per request, never raised.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from atomsearch_jax.clients import EndpointConfig, OpenAIClient
from atomsearch_jax.clients.openai_compat import read_chat_content
from atomsearch_jax.rewards.judge import GradeRequest, GradeResult, Judge
from atomsearch_jax.rewards.rrm import build_grading_messages, parse_scores


@dataclasses.dataclass
class HttpJudgeConfig(EndpointConfig):
    """The judge server (`clients.EndpointConfig`: base_url with or without "/v1", model, api_key or
    api_key_env, concurrency, timeouts, retries) plus the grading prompt and sampling settings."""

    prompt_version: str = "rrm_v1"
    show_gold: bool = True
    max_trajectory_chars: int = 8000
    max_tokens: int = 1024
    temperature: float = 0.0
    extra_body: dict[str, Any] = dataclasses.field(default_factory=dict)
    min_coverage: float = 0.5


class HttpJudge(Judge):
    """OpenAI-compatible chat-completions judge; see the module docstring for the failure policy."""

    def __init__(self, config: HttpJudgeConfig | None = None, **overrides: Any):
        config = dataclasses.replace(config, **overrides) if config else HttpJudgeConfig(**overrides)
        self.config = config
        self.client = OpenAIClient(config)
        self.url = self.client.url("chat/completions")

    def grade(self, requests_: Sequence[GradeRequest]) -> list[GradeResult]:
        replies = self.client.post_many("chat/completions", [self._payload(r) for r in requests_],
                                        read=[self._reader(len(r.thoughts)) for r in requests_])
        return [GradeResult(r.value, r.error, r.attempts, r.raw, r.seconds) for r in replies]

    def _payload(self, request: GradeRequest) -> dict[str, Any]:
        cfg = self.config
        messages = build_grading_messages(
            request.question, request.thoughts, golden_answers=request.golden_answers, trajectory=request.trajectory,
            version=cfg.prompt_version, show_gold=cfg.show_gold, max_trajectory_chars=cfg.max_trajectory_chars)
        return {"messages": messages, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, **cfg.extra_body}

    def _reader(self, n_thoughts: int):
        min_coverage = self.config.min_coverage

        def read(body: Any):
            content, error, raw = read_chat_content(body)
            if error:
                return None, error, raw
            parsed = parse_scores(content, n_thoughts, min_coverage=min_coverage)
            return parsed.scores, parsed.error, raw
        return read
