"""Model-aware data curation (seed 002): pass rates of a policy on each problem, a difficulty band, and
mixtures across domains.

A problem's pass rate is the fraction of k rollouts of the given policy that solved it; problems the
policy always or never solves give GRPO no signal (every sample of the group gets the same reward), so
the band keeps those in between. A mixture then draws from each domain's kept problems in fixed
proportions (DemyAgent's RL set mixes math, code and science).
"""
from __future__ import annotations

import collections
import dataclasses
import math
import random
from typing import Any, Mapping, Sequence

from atomsearch_jax.data.records import QARecord


@dataclasses.dataclass(frozen=True)
class PassRate:
    """k rollouts of one problem: how many solved it, and each rollout's extracted answer (None: none)."""

    record: QARecord
    correct: int
    k: int
    answers: tuple[str | None, ...] = ()

    def __post_init__(self):
        if not 0 <= self.correct <= self.k or self.k < 1:
            raise ValueError(f"pass rate of {self.record.id!r}: need 0 <= correct <= k and k >= 1, "
                             f"got correct={self.correct}, k={self.k}")

    @property
    def rate(self) -> float:
        return self.correct / self.k

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {"id": r.id, "source": r.source, "question": r.question, "golden_answers": list(r.golden_answers),
                "k": self.k, "correct": self.correct, "pass_rate": self.rate, "answers": list(self.answers)}


def in_band(rates: Sequence[PassRate], low: float, high: float) -> list[PassRate]:
    """The problems with low <= pass rate <= high (inclusive), in order."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"difficulty band needs 0 <= low <= high <= 1, got [{low}, {high}]")
    return [r for r in rates if low - 1e-12 <= r.rate <= high + 1e-12]


def parse_weights(spec: str) -> dict[str, float]:
    """"math:3,code:1" -> {"math": 3.0, "code": 1.0}; errors name the bad entry."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, value = part.rpartition(":")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name or weight <= 0 or not math.isfinite(weight):
            raise ValueError(f"mixture entry {part!r}: expected domain:weight with a weight > 0")
        if name in weights:
            raise ValueError(f"mixture names domain {name!r} twice")
        weights[name] = weight
    if not weights:
        raise ValueError(f"empty mixture {spec!r}")
    return weights


def mixture_counts(available: Mapping[str, int], weights: Mapping[str, float], total: int | None = None) -> dict[str, int]:
    """How many problems to draw per domain: `total` split by `weights` (largest remainder, ties to the
    domain listed first). total None = the largest total whose split every domain can supply. Raises,
    naming the domain, when a domain is unknown or has too few problems."""
    unknown = [d for d in weights if d not in available]
    if unknown:
        raise ValueError(f"mixture domains {unknown} have no problems (domains: {sorted(available)})")
    share = {d: w / sum(weights.values()) for d, w in weights.items()}
    if total is None:
        total = min(math.floor(available[d] / share[d] + 1e-9) for d in weights)
        while total > 0 and any(c > available[d] for d, c in _split(total, share).items()):
            total -= 1
    if total < 0:
        raise ValueError(f"mixture total must be >= 0, got {total}")
    counts = _split(total, share)
    short = {d: (c, available[d]) for d, c in counts.items() if c > available[d]}
    if short:
        d, (want, have) = next(iter(short.items()))
        raise ValueError(f"mixture needs {want} problems from domain {d!r} but only {have} are in the band")
    return counts


def _split(total: int, share: Mapping[str, float]) -> dict[str, int]:
    exact = {d: total * s for d, s in share.items()}
    counts = {d: math.floor(x + 1e-9) for d, x in exact.items()}
    order = sorted(share, key=lambda d: -(exact[d] - counts[d]))  # stable: earlier domains win ties
    for d in order[: total - sum(counts.values())]:
        counts[d] += 1
    return counts


def mix(pools: Mapping[str, Sequence[Any]], weights: Mapping[str, float], total: int | None = None,
        seed: int = 0) -> list[Any]:
    """A seeded draw (without replacement) of `mixture_counts` items from each domain's pool, shuffled."""
    counts = mixture_counts({d: len(p) for d, p in pools.items()}, weights, total)
    rng = random.Random(seed)
    chosen = [item for d, n in counts.items() for item in rng.sample(list(pools[d]), n)]
    rng.shuffle(chosen)
    return chosen


def summarize_curation(rates: Sequence[PassRate], kept: Sequence[PassRate], chosen: Sequence[PassRate]) -> dict[str, Any]:
    """Per domain: problems, mean pass rate, histogram of solved counts (index = rollouts solved), kept, chosen."""
    domains: dict[str, Any] = {}
    for name in dict.fromkeys(r.record.source for r in rates):
        mine = [r for r in rates if r.record.source == name]
        histogram = collections.Counter(r.correct for r in mine)
        domains[name] = {"problems": len(mine), "mean_pass_rate": sum(r.rate for r in mine) / len(mine),
                         "solved_histogram": [histogram.get(c, 0) for c in range(mine[0].k + 1)],
                         "in_band": sum(r.record.source == name for r in kept),
                         "chosen": sum(r.record.source == name for r in chosen)}
    return {"problems": len(rates), "in_band": len(kept), "chosen": len(chosen), "domains": domains}
