"""Process-level helpers of a multi-process job: who does what, and small cross-process reductions.

Every process runs the same program on its own share of the work (its rows of a batch, its questions
of an evaluation); these helpers split the work by global index and combine per-process numbers, so a
job's results do not depend on how many processes it runs as. With one process they are identities.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence, TypeVar

import jax
import numpy as np

T = TypeVar("T")


def is_writer() -> bool:
    """True on the one process that logs and writes reports, tokenizers and exports (process 0)."""
    return jax.process_index() == 0


def process_bounds(n: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
    """[start, stop) of process `index`'s contiguous share of n items (the first n % count get one more).

    Contiguous, in process order: the concatenation of the shares is the global order, which is also
    how `jax.make_array_from_process_local_data` lays out process-local rows.
    """
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    base, extra = divmod(int(n), count)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def process_share(items: Sequence[T]) -> tuple[Sequence[T], int]:
    """This process's share of `items` (see `process_bounds`) and the global index of its first item."""
    start, stop = process_bounds(len(items))
    return items[start:stop], start


def _allgather(x: np.ndarray) -> np.ndarray:
    """[P, *x.shape]: x from every process (a small host array; every process must call it)."""
    if jax.process_count() == 1:
        return np.asarray(x)[None]
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(np.asarray(x)))


def global_max(value: int) -> int:
    """The largest `value` over processes (e.g. the padded width every process must use)."""
    return int(_allgather(np.asarray(int(value), np.int64)).max())


def global_maxes(values: Mapping[str, float]) -> dict[str, float]:
    """Per-key maxima over processes (every process passes the same keys)."""
    keys = sorted(values)
    top = _allgather(np.asarray([float(values[k]) for k in keys], np.float64)).max(axis=0)
    return {k: float(v) for k, v in zip(keys, top)}


def global_sums(values: Mapping[str, float]) -> dict[str, float]:
    """Per-key sums over processes (every process passes the same keys)."""
    keys = sorted(values)
    summed = _allgather(np.asarray([float(values[k]) for k in keys], np.float64)).sum(axis=0)
    return {k: float(v) for k, v in zip(keys, summed)}


def gather_rows(x: np.ndarray) -> np.ndarray:
    """The concatenation over processes of each process's rows of x (small per-row host values only:
    rewards, counts; never tokens). Rows may differ in number between processes."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    counts = _allgather(np.asarray(x.shape[0], np.int64))
    width = int(counts.max())
    padded = np.zeros((width, *x.shape[1:]), x.dtype)
    padded[: x.shape[0]] = x
    every = _allgather(padded)
    return np.concatenate([every[p, : int(c)] for p, c in enumerate(counts)])


def gather_objects(items: Sequence[Any]) -> list[Any]:
    """The concatenation over processes (in process order) of each process's JSON-serialisable items
    (e.g. evaluation rows, for the report process 0 writes)."""
    if jax.process_count() == 1:
        return list(items)
    blob = np.frombuffer(json.dumps(list(items)).encode("utf-8"), np.uint8)
    counts = _allgather(np.asarray(blob.size, np.int64))
    padded = np.zeros((int(counts.max()),), np.uint8)
    padded[: blob.size] = blob
    every = _allgather(padded)
    return [item for p, c in enumerate(counts) for item in json.loads(every[p, : int(c)].tobytes().decode("utf-8"))]
