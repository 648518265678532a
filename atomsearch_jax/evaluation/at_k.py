"""Sampling metrics over k samples per question (seed 002's average@k, pass@k, maj@k).

pass@k is the unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
pass@k = 1 - C(n-c, k) / C(n, k), the probability that a random k-subset holds a correct sample.
"""
from __future__ import annotations

import collections
from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (1 <= k <= n, 0 <= c <= n)."""
    if not (1 <= k <= n and 0 <= c <= n):
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): the product form of C(n-c, k)/C(n, k), stable for large n.
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def k_values(n: int) -> list[int]:
    """The k reported for n samples: 1, the powers of two below n, and n."""
    return sorted({1, n} | {1 << i for i in range(n.bit_length()) if 1 << i <= n})


def majority_index(keys: Sequence[str | None]) -> int | None:
    """Index of the first sample holding the most frequent non-None key (ties: the earliest to appear),
    or None when every key is None (no sample answered)."""
    counts = collections.Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(i for i, k in enumerate(keys) if k is not None and counts[k] == best)
