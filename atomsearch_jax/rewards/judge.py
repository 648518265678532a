"""Judge interface for the Reasoning Reward Model and the function-backed judge.

A judge grades the atomic thoughts of many trajectories at once: `grade(requests) -> results`, one
`GradeResult` per request, in order. Judges never raise for a failing sample: the failure is recorded in
its result (`error`), and the reward manager falls back to the outcome reward for it.
"""
from __future__ import annotations

import abc
import dataclasses
import math
import time
from typing import Callable, Sequence

from atomsearch_jax.clients import Reply
from atomsearch_jax.formats import AtomicThought


@dataclasses.dataclass(frozen=True)
class GradeRequest:
    """What the judge sees for one trajectory."""

    question: str
    thoughts: tuple[AtomicThought, ...]
    golden_answers: tuple[str, ...] = ()
    trajectory: str = ""


@dataclasses.dataclass(frozen=True)
class GradeResult(Reply):
    """One request's grading, shaped like any external call's outcome (`clients.Reply`): value holds the
    scores, one per thought in [0, 1] (None = not scored), or None when grading failed; error: the failure
    (last one seen when retried); attempts: calls made; raw: the judge's last reply (cut to 2000 chars)
    for debugging; seconds: wall time spent on this request."""

    @property
    def scores(self) -> list[float | None] | None:
        return self.value

    @property
    def ok(self) -> bool:
        return self.value is not None and self.error is None


class Judge(abc.ABC):
    """A reasoning reward model backend."""

    @abc.abstractmethod
    def grade(self, requests: Sequence[GradeRequest]) -> list[GradeResult]:
        """One result per request, same order; never raises for per-sample failures."""


ScoreFn = Callable[[str, Sequence[AtomicThought], Sequence[str]], Sequence[float]]


class FunctionJudge(Judge):
    """Wraps `score_fn(question, thoughts, golden_answers) -> one score in [0, 1] per thought` (e.g. the
    synthetic world's OracleJudge.score). Exceptions and malformed returns become per-sample failures."""

    def __init__(self, score_fn: ScoreFn):
        if not callable(score_fn):
            raise TypeError(f"FunctionJudge needs a callable, got {type(score_fn).__name__}")
        self.score_fn = score_fn

    def grade(self, requests: Sequence[GradeRequest]) -> list[GradeResult]:
        return [self._grade_one(request) for request in requests]

    def _grade_one(self, request: GradeRequest) -> GradeResult:
        start = time.monotonic()
        try:
            values = list(self.score_fn(request.question, request.thoughts, request.golden_answers))
        except Exception as err:  # noqa: BLE001 -- any scorer failure is recorded per sample
            return GradeResult(None, f"score function raised {err.__class__.__name__}: {err}", 1,
                               seconds=time.monotonic() - start)
        error = None
        if len(values) != len(request.thoughts):
            error = f"score function returned {len(values)} scores for {len(request.thoughts)} thoughts"
        elif not all(isinstance(v, (int, float)) and not math.isnan(v) and 0.0 <= v <= 1.0 for v in values):
            error = f"score function returned values outside [0, 1]: {values[:8]}"
        seconds = time.monotonic() - start
        if error:
            return GradeResult(None, error, 1, seconds=seconds)
        return GradeResult([float(v) for v in values], None, 1, seconds=seconds)
