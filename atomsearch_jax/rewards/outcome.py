"""Outcome rewards: the answer-and-format rewards of ReSearch, DeepResearcher / Atom-Searcher and Search-R1,
and the math reward of DAPO / GRPO-TCR (math.py).

Each reward is a function `(response, golden_answers, fmt, *, truncated=False, **params) -> OutcomeResult`
registered under a config name in `OUTCOME_REWARDS`; `get_outcome_reward(name, **params)` binds parameters.
`response` is the text after the prompt (environment blocks included), `fmt` the agent format it was
written in (it validates and extracts the answer), `truncated` whether generation hit the length budget.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

from atomsearch_jax.formats import AgentFormat
from atomsearch_jax.rewards.math import math_reward
from atomsearch_jax.rewards.metrics import exact_match, f1_score, research_f1_score, set_f1_score
from atomsearch_jax.rewards.outcome_result import OutcomeResult


OutcomeReward = Callable[..., OutcomeResult]


def _read(response: str, golds: Sequence[str], fmt: AgentFormat, truncated: bool) -> tuple[bool, str | None, float, float, str]:
    report = fmt.validate(response)
    errors = list(report.errors) + (["truncated"] if truncated else [])
    answer = fmt.extract_answer(response)
    em = exact_match(answer, golds) if answer is not None else 0.0
    f1 = f1_score(answer, golds) if answer is not None else 0.0
    return not errors, answer, em, f1, "; ".join(errors)


def research_reward(response: str, golden_answers: Sequence[str], fmt: AgentFormat, *, truncated: bool = False,
                    format_score: float = 0.1) -> OutcomeResult:
    """ReSearch: 0 for an invalid format, a truncated response or no extractable answer; else ReSearch F1
    when it is > 0, else `format_score` (0.1)."""
    ok, answer, em, f1, reason = _read(response, golden_answers, fmt, truncated)
    if not ok or answer is None:
        return OutcomeResult(0.0, False, answer, em, f1, reason or "no answer")
    score = research_f1_score(answer, golden_answers)
    if score > 0:
        return OutcomeResult(score, True, answer, em, f1, "answer overlaps gold")
    return OutcomeResult(format_score, True, answer, em, f1, "wrong answer, good format")


def deepresearcher_reward(response: str, golden_answers: Sequence[str], fmt: AgentFormat, *, truncated: bool = False,
                          format_penalty: float = -1.0) -> OutcomeResult:
    """DeepResearcher / Atom-Searcher: `format_penalty` (-1) on a format error (a truncated response or one
    without an answer included), else the word-set F1 of the answer."""
    ok, answer, em, f1, reason = _read(response, golden_answers, fmt, truncated)
    if not ok or answer is None:
        return OutcomeResult(format_penalty, False, answer, em, f1, reason or "no answer")
    return OutcomeResult(set_f1_score(answer, golden_answers), True, answer, em, f1, "set F1")


def search_r1_em_reward(response: str, golden_answers: Sequence[str], fmt: AgentFormat, *,
                        truncated: bool = False) -> OutcomeResult:
    """Search-R1: exact match of the last answer (no format requirement)."""
    ok, answer, em, f1, reason = _read(response, golden_answers, fmt, truncated)
    return OutcomeResult(em, ok, answer, em, f1, reason or ("exact match" if em else "no match"))


def search_r1_format_reward(response: str, golden_answers: Sequence[str], fmt: AgentFormat, *, truncated: bool = False,
                            structure_format_score: float = 0.2, final_format_score: float = 0.1) -> OutcomeResult:
    """Search-R1 with format credit (qa_em_format): correct & valid 1; correct & invalid 1 - 0.2 = 0.8;
    wrong (or no answer) & valid 0.2; wrong & invalid 0.1 (0 when there is no answer at all)."""
    ok, answer, em, f1, reason = _read(response, golden_answers, fmt, truncated)
    if answer is None:
        score = structure_format_score if ok else 0.0
    elif em:
        score = 1.0 if ok else 1.0 - structure_format_score
    else:
        score = structure_format_score if ok else final_format_score
    return OutcomeResult(score, ok, answer, em, f1, reason or ("exact match" if em else "no match"))


OUTCOME_REWARDS: dict[str, OutcomeReward] = {
    "math": math_reward,
    "research": research_reward,
    "deepresearcher": deepresearcher_reward,
    "search_r1_em": search_r1_em_reward,
    "search_r1_format": search_r1_format_reward,
}


def get_outcome_reward(name: str, **params) -> OutcomeReward:
    """The outcome reward registered as `name`, with keyword parameters bound."""
    if name not in OUTCOME_REWARDS:
        raise ValueError(f"unknown outcome reward {name!r}; known: {sorted(OUTCOME_REWARDS)}")
    return functools.partial(OUTCOME_REWARDS[name], **params) if params else OUTCOME_REWARDS[name]
