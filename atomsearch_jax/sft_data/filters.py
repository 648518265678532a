"""Filters of Atom-Searcher's SFT data: which sampled teacher trajectories become training data.

Applied per question to its k samples, in order (the first failing check names the rejection):
generation failed, search failed, format invalid (the format's validator, ended by an answer), tool calls
outside [min_tool_calls, max_tool_calls], too long, answer F1 below the threshold, answer not the majority
answer of the k samples (or the majority share below min_agreement), duplicate (same normalized response,
or more than max_per_question kept).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Sequence

from atomsearch_jax.agent.text_rollout import TextTrajectory
from atomsearch_jax.rewards import f1_score, normalize_answer

REJECTIONS = ("generation_failed", "search_failed", "format", "tool_calls", "length", "f1", "majority", "duplicate")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    f1_threshold: float = 0.8
    min_agreement: float = 0.5
    min_tool_calls: int = 1
    max_tool_calls: int = 10
    max_tokens: int = 8192
    max_per_question: int = 1


def _first_rejection(t: TextTrajectory, fmt: Any, cfg: FilterConfig, tokens: int, answer: str | None,
                     majority: str | None, agreement: float) -> str | None:
    if t.stop_reason == "error":
        return "generation_failed"
    if t.search_failures:
        return "search_failed"
    if t.stop_reason != "answer" or answer is None or not fmt.validate(t.response).ok:
        return "format"
    if not cfg.min_tool_calls <= t.tool_calls <= cfg.max_tool_calls:
        return "tool_calls"
    if tokens > cfg.max_tokens:
        return "length"
    if f1_score(answer, t.record.golden_answers) < cfg.f1_threshold:
        return "f1"
    if normalize_answer(answer) != majority or agreement < cfg.min_agreement:
        return "majority"
    return None


def filter_question(samples: Sequence[TextTrajectory], fmt: Any, cfg: FilterConfig,
                    count_tokens: Callable[[TextTrajectory], int]) -> tuple[list[TextTrajectory], collections.Counter]:
    """(kept samples, Counter of rejection reasons) for the k samples of one question."""
    answers = [fmt.extract_answer(t.response) if t.stop_reason == "answer" else None for t in samples]
    votes = collections.Counter(normalize_answer(a) for a in answers if a is not None)
    majority, count = votes.most_common(1)[0] if votes else (None, 0)
    agreement = count / len(samples) if samples else 0.0
    kept, rejected, seen = [], collections.Counter(), set()
    for t, answer in zip(samples, answers):
        why = _first_rejection(t, fmt, cfg, count_tokens(t), answer, majority, agreement)
        if why is None:
            key = " ".join(t.response.split())
            if key in seen or len(kept) >= cfg.max_per_question:
                why = "duplicate"
            else:
                seen.add(key)
                kept.append(t)
        if why is not None:
            rejected[why] += 1
    return kept, rejected
