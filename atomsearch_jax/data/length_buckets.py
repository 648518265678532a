"""Length-bucketed batches: rows of similar length padded to their bucket's width, not the longest row's.

Teacher trajectories of the synthetic world are bimodal (2-hop around 430 tokens, 3-hop around 590):
padding every row to the longest wastes about a third of the positions, and packing two rows into one
wide row would spend the dense attention of the wide row on pairs of unrelated segments. A few buckets
whose widths minimise the padding keep padding in the single digits with one compiled shape per bucket.

    widths = bucket_widths(lengths, n_buckets=2)
    batches = BucketedBatches(lengths, widths, batch_size=16, seed=0)
    indices, width = batches.batch(step)      # a pure function of (seed, step): resuming needs only the step
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def bucket_widths(lengths: Sequence[int], n_buckets: int, *, multiple: int = 16) -> list[int]:
    """At most `n_buckets` widths (multiples of `multiple`, ascending) minimising the total padding of
    `lengths` when each row is padded to the smallest width that holds it (exact dynamic programme)."""
    if n_buckets < 1 or multiple < 1:
        raise ValueError(f"n_buckets and multiple must be >= 1, got {n_buckets}, {multiple}")
    if len(lengths) == 0:
        raise ValueError("bucket_widths needs at least one length")
    rounded = -(-np.asarray(lengths, np.int64) // multiple) * multiple
    candidates, counts = np.unique(rounded, return_counts=True)
    k = len(candidates)
    # cost[i][j]: padding of the rows in candidates[i..j] padded to candidates[j].
    cum_n, cum_len = np.cumsum(np.r_[0, counts]), np.cumsum(np.r_[0, counts * candidates])

    def cost(i: int, j: int) -> int:
        return int((cum_n[j + 1] - cum_n[i]) * candidates[j] - (cum_len[j + 1] - cum_len[i]))

    n = min(n_buckets, k)
    best = np.full((n + 1, k), np.iinfo(np.int64).max, np.int64)  # best[b][j]: b buckets covering 0..j
    back = np.zeros((n + 1, k), np.int64)
    for j in range(k):
        best[1][j] = cost(0, j)
    for b in range(2, n + 1):
        for j in range(b - 1, k):
            for i in range(b - 1, j + 1):  # the last bucket covers candidates[i..j]; b - 1 buckets cover 0..i-1
                value = best[b - 1][i - 1] + cost(i, j)
                if value < best[b][j]:
                    best[b][j], back[b][j] = value, i
    b = int(np.argmin(best[1:, k - 1])) + 1
    widths, j = [], k - 1
    while b >= 1:
        widths.append(int(candidates[j]))
        i = int(back[b][j]) if b > 1 else 0
        j, b = i - 1, b - 1
    return sorted(widths)


class BucketedBatches:
    """Fixed-size batches of row indices, each batch from one length bucket; deterministic in (seed, step).

    Every epoch shuffles each bucket's rows, cuts them into batches of `batch_size` (a bucket's last
    batch is topped up with other rows of the same bucket) and shuffles the order of all batches.
    """

    def __init__(self, lengths: Sequence[int], widths: Sequence[int], batch_size: int, seed: int = 0):
        lengths = np.asarray(lengths, np.int64)
        widths = sorted(int(w) for w in widths)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(lengths) == 0:
            raise ValueError("BucketedBatches needs at least one row")
        if lengths.max() > widths[-1]:
            raise ValueError(f"a row of {lengths.max()} tokens is longer than the widest bucket ({widths[-1]})")
        slot = np.searchsorted(widths, lengths)  # the smallest width >= length
        self.widths = widths
        self.members = [np.flatnonzero(slot == b) for b in range(len(widths))]
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.batches_per_epoch = sum(-(-len(m) // batch_size) for m in self.members)

    def _epoch(self, epoch: int) -> list[tuple[np.ndarray, int]]:
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for bucket, members in enumerate(self.members):
            if not len(members):
                continue
            order = rng.permutation(members)
            short = -len(order) % self.batch_size
            if short:
                order = np.concatenate([order, rng.choice(members, size=short, replace=len(members) < short)])
            batches += [(chunk, self.widths[bucket]) for chunk in order.reshape(-1, self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def batch(self, step: int) -> tuple[np.ndarray, int]:
        """(row indices [batch_size], the bucket's width) of the `step`-th batch (0-based)."""
        epoch, index = divmod(int(step), self.batches_per_epoch)
        return self._epoch(epoch)[index]
