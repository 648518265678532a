"""The record every outcome reward returns (QA rewards in outcome.py, math in math.py)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class OutcomeResult:
    """score: the reward; format_ok: the response passed validation (and was not truncated); answer: the
    extracted answer or None; em / f1: SQuAD EM and token F1 of the answer (0 without one), for logging;
    reason: why the score is what it is (format errors, "truncated", ...)."""

    score: float
    format_ok: bool
    answer: str | None
    em: float
    f1: float
    reason: str
