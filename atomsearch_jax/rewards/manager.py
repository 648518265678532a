"""Score a batch of finished trajectories: outcome rewards locally, the judge's atomic-thought reward for
the batch in one concurrent `grade` call, curriculum aggregation, optional overlong shaping.

Per sample, with alpha = schedule(step):
- well-formed, judge succeeded:  R = alpha * R_atom + (1 - alpha) * R_outcome
- well-formed, judge failed:     R = R_outcome  (fallback; counted in components["judge_failed"])
- malformed (format error or truncated): R = R_outcome, i.e. the outcome reward's format penalty (0 for
  ReSearch, -1 for DeepResearcher), whatever the judge would say, and the judge is not asked. The paper does
  not say how malformed trajectories interact with the process reward; we choose the penalty so a well-
  reasoned but broken trajectory can never outscore the format penalty -- otherwise the policy could learn
  to skip the answer tags. `malformed_policy="mix"` instead grades them and mixes like well-formed ones.
- well-formed, no thoughts to grade: R_atom = 0 (nothing earned the process reward), no judge call.
- judge absent or alpha == 0: R = R_outcome.
Then, when overlong shaping is configured, DAPO's penalty for the response length is added; the length
counts the tokens the policy generated, not the tool results the environment inserted (those are not
the policy's verbosity, and a format that returns long documents would otherwise be penalised for them).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from atomsearch_jax.formats import AgentFormat
from atomsearch_jax.parallel.multihost import gather_rows
from atomsearch_jax.rewards.atr import ATR_MODES, aggregate_atr
from atomsearch_jax.rewards.curriculum import Schedule, make_schedule, mix_rewards
from atomsearch_jax.rewards.judge import GradeRequest, GradeResult, Judge
from atomsearch_jax.rewards.outcome import OutcomeResult, get_outcome_reward
from atomsearch_jax.rewards.shaping import overlong_penalty
from atomsearch_jax.rl.advantages import informative_rows

MALFORMED_POLICIES = ("penalty", "mix")


@dataclasses.dataclass(frozen=True)
class RewardInput:
    """One finished trajectory: question, gold answers, the response text after the prompt (environment
    blocks included), the number of tokens the policy generated in it (inserted tool results excluded:
    what overlong shaping counts) and whether generation was cut off."""

    question: str
    golden_answers: Sequence[str]
    response: str
    generated_tokens: int = 0
    truncated: bool = False


def as_reward_input(sample: Any, index: int = 0) -> RewardInput:
    """A RewardInput from a RewardInput, a mapping, or any object with the same field names."""
    if isinstance(sample, RewardInput):
        return sample
    get = sample.get if isinstance(sample, Mapping) else lambda k, d=None: getattr(sample, k, d)
    missing = [k for k in ("question", "golden_answers", "response") if get(k) is None]
    if missing:
        raise ValueError(f"batch sample {index} lacks {missing} (needs question, golden_answers, response)")
    golds = get("golden_answers")
    golds = [golds] if isinstance(golds, str) else list(golds)
    if not golds or not all(isinstance(g, str) for g in golds):
        raise ValueError(f"batch sample {index} needs a non-empty list of string golden_answers, got {golds!r:.200}")
    return RewardInput(question=str(get("question")), golden_answers=golds,
                       response=str(get("response")), generated_tokens=int(get("generated_tokens", 0) or 0),
                       truncated=bool(get("truncated", False)))


class RewardManager:
    """Rewards for a batch; see the module docstring for the rules.

    Args:
      fmt: the agent format the responses were written in.
      outcome: an outcome-reward name from `OUTCOME_REWARDS` ("deepresearcher", "research", ...) or a callable
        with the same signature; `outcome_params` are bound to a named one.
      judge: a Judge, or None for outcome-only rewards.
      schedule: a schedule name ("linear", "cosine", "constant") or a callable step -> alpha.
      total_steps, alpha0: the schedule's T and alpha0.
      atr_mode, tag_weights: the ATR aggregation (see atr.py).
      malformed_policy: "penalty" (default) or "mix".
      overlong: (max_length, cache_length) in generated tokens for DAPO shaping, or None.
      send_trajectory: include the response text in judge requests (the judge sees the evidence).
    """

    def __init__(self, fmt: AgentFormat, *, outcome: str | Callable[..., OutcomeResult] = "deepresearcher",
                 outcome_params: Mapping[str, Any] | None = None, judge: Judge | None = None,
                 schedule: str | Schedule = "linear", total_steps: int = 1, alpha0: float = 0.5,
                 atr_mode: str = "mean", tag_weights: Mapping[str, float] | None = None,
                 malformed_policy: str = "penalty", overlong: tuple[int, int] | None = None,
                 send_trajectory: bool = True):
        if malformed_policy not in MALFORMED_POLICIES:
            raise ValueError(f"unknown malformed_policy {malformed_policy!r}; known: {list(MALFORMED_POLICIES)}")
        if atr_mode not in ATR_MODES:
            raise ValueError(f"unknown ATR aggregation {atr_mode!r}; known: {list(ATR_MODES)}")
        if overlong is not None:
            overlong_penalty(0, *overlong)  # validates the pair
        self.fmt = fmt
        self.outcome_fn = get_outcome_reward(outcome, **(outcome_params or {})) if isinstance(outcome, str) else outcome
        self.judge = judge
        self.schedule = make_schedule(schedule, total_steps=total_steps, alpha0=alpha0) if isinstance(schedule, str) else schedule
        self.atr_mode = atr_mode
        self.tag_weights = tag_weights
        self.malformed_policy = malformed_policy
        self.overlong = overlong
        self.send_trajectory = send_trajectory

    def score(self, batch: Sequence[Any], step: int) -> tuple[np.ndarray, dict[str, Any]]:
        """(rewards float32 [B], components). Components: float arrays [B] "reward", "outcome", "atr" (NaN
        where no process reward was used), "alpha", "judge_used", "judge_failed", "format_ok", "em", "f1",
        "overlong", "n_thoughts"; and "judge_error": list of B error strings or None."""
        inputs = [as_reward_input(sample, i) for i, sample in enumerate(batch)]
        n = len(inputs)
        alpha = float(self.schedule(step))
        outcomes = [self.outcome_fn(x.response, x.golden_answers, self.fmt, truncated=x.truncated) for x in inputs]
        outcome = np.array([o.score for o in outcomes], np.float64)
        atr = np.full(n, np.nan)
        judge_used, judge_failed = np.zeros(n), np.zeros(n)
        n_thoughts = np.zeros(n)
        judge_error: list[str | None] = [None] * n

        to_grade: list[int] = []
        requests: list[GradeRequest] = []
        if self.judge is not None and alpha > 0:
            for i, (x, o) in enumerate(zip(inputs, outcomes)):
                if not o.format_ok and self.malformed_policy == "penalty":
                    continue
                thoughts = tuple(self.fmt.atomic_thoughts(x.response))
                n_thoughts[i] = len(thoughts)
                if not thoughts:
                    atr[i] = 0.0
                    continue
                to_grade.append(i)
                requests.append(GradeRequest(x.question, thoughts, tuple(x.golden_answers),
                                             x.response if self.send_trajectory else ""))
        results = self.judge.grade(requests) if requests else []
        if len(results) != len(requests):
            raise RuntimeError(f"judge returned {len(results)} results for {len(requests)} requests")
        for i, request, result in zip(to_grade, requests, results):
            atr[i], judge_error[i] = self._atr(request, result)

        reward = outcome.copy()
        has_atr = ~np.isnan(atr)
        reward[has_atr] = mix_rewards(atr[has_atr], outcome[has_atr], alpha)
        judge_used[to_grade] = 1.0
        judge_failed = np.array([e is not None for e in judge_error], np.float64)
        shaping = np.zeros(n)
        if self.overlong is not None:
            shaping = np.array([overlong_penalty(x.generated_tokens, *self.overlong) for x in inputs])
            reward = reward + shaping
        components = {
            "reward": reward, "outcome": outcome, "atr": atr, "alpha": np.full(n, alpha),
            "judge_used": judge_used, "judge_failed": judge_failed,
            "format_ok": np.array([o.format_ok for o in outcomes], np.float64),
            "em": np.array([o.em for o in outcomes]), "f1": np.array([o.f1 for o in outcomes]),
            "overlong": shaping, "n_thoughts": n_thoughts, "judge_error": judge_error,
        }
        return reward.astype(np.float32), components

    def _atr(self, request: GradeRequest, result: GradeResult) -> tuple[float, str | None]:
        """(R_atom or NaN, error or None) for one judge result."""
        if not result.ok:
            return np.nan, result.error or "judge returned no scores"
        try:
            return aggregate_atr(result.scores, request.thoughts, self.atr_mode, self.tag_weights), None
        except ValueError as err:
            return np.nan, f"bad judge scores: {err}"


def reward_metrics(components: Mapping[str, Any], group_size: int = 0) -> dict[str, float]:
    """Batch means of the numeric components (NaN-aware for "atr") plus judge failure counts, for logging.
    On a multi-process job each process passes its rows' components and gets the global batch's
    metrics (every process must call it).

    With group_size > 1 (rows ordered group by group) also the share of groups whose rewards differ
    (`reward/contrast_groups_frac`: groups with a nonzero advantage) and of those whose outcome scores
    differ (`reward/outcome_contrast_groups_frac`: groups that tell a right answer from a wrong one). Their
    gap is the groups that GRPO learns from through the process reward or shaping alone.
    """
    metrics = {}
    components = {k: gather_rows(v) if isinstance(v, np.ndarray) and v.ndim == 1 else v
                  for k, v in components.items()}
    for key, value in components.items():
        if isinstance(value, np.ndarray) and value.size:
            metrics[f"reward/{key}_mean"] = float(np.nanmean(value)) if not np.all(np.isnan(value)) else float("nan")
    metrics["reward/judge_failures"] = float(np.sum(components.get("judge_failed", 0.0)))
    if group_size > 1:
        for name, key in (("contrast_groups_frac", "reward"), ("outcome_contrast_groups_frac", "outcome")):
            if len(components[key]) % group_size:
                raise ValueError(f"reward_metrics: {len(components[key])} rows are not whole groups of {group_size}")
            # every group contributes group_size rows, so the row share is the group share
            metrics[f"reward/{name}"] = float(np.mean(informative_rows(components[key], group_size)))
    return metrics
