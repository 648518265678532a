"""Pass rates of a policy: k rollouts per problem, each scored by an outcome reward (model-aware curation)."""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from atomsearch_jax.agent.rollout import RolloutRunner
from atomsearch_jax.data import QARecord
from atomsearch_jax.data.curation import PassRate


def rollout_pass_rates(runner: RolloutRunner, records: Sequence[QARecord], *, k: int, temperature: float,
                       outcome: Callable[..., Any], rows_per_batch: int = 32, seed: int = 0) -> list[PassRate]:
    """k rollouts of every record (at most `rows_per_batch` rollouts per engine batch), each scored by
    `outcome` (an outcome reward); solved = its exact match is positive."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    per_batch = max(1, rows_per_batch // k)
    rates = []
    for start in range(0, len(records), per_batch):
        batch = list(records[start: start + per_batch])
        trajectories = runner.run(batch, n=k, seed=seed + start, temperature=temperature)
        for i, record in enumerate(batch):
            results = [outcome(t.response, t.golden_answers, runner.fmt, truncated=t.truncated)
                       for t in trajectories[i * k:(i + 1) * k]]
            rates.append(PassRate(record, sum(r.em > 0 for r in results), k, tuple(r.answer for r in results)))
        logging.info("curate: %d / %d problems rolled out", min(start + per_batch, len(records)), len(records))
    return rates
