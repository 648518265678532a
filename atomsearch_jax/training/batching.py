"""Host batches -> device arrays laid out [n_mini, n_micro, micro, ...] on the mesh.

An update call splits its batch of B rows into mini-batches (one optimizer step each, in order) and
each mini-batch into micro-batches (gradients accumulated). Rows stay in their given order, so GRPO
groups stay together. The micro dimension is sharded over ("data", "fsdp"); multi-host runs pass
each process's own rows and the global micro-batch is the concatenation over processes.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """How B (global) rows split: n_mini optimizer steps × n_micro accumulated micro-batches × micro rows."""

    n_mini: int
    n_micro: int
    micro: int

    @property
    def rows(self) -> int:
        return self.n_mini * self.n_micro * self.micro


def batch_layout(batch_size: int, mini_batch_size: int, micro_batch_size: int, mesh: Mesh) -> BatchLayout:
    """Checks the sizes (0 = "all") and returns the layout; errors name the offending setting.

    A micro-batch is rounded up to a multiple of the mesh's data×fsdp devices (every device computes whole
    rows): micro-batching sets memory and speed, never the update, so a config tuned on one device (the
    default's 2 rows) runs unchanged on a slice."""
    mini = mini_batch_size or batch_size
    if batch_size <= 0:
        raise ValueError(f"the batch has {batch_size} rows")
    if batch_size % mini:
        raise ValueError(f"train_step.mini_batch_size={mini} does not divide the batch size {batch_size}")
    ways = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
    micro = -(-(micro_batch_size or mini) // ways) * ways
    if mini % micro:
        raise ValueError(f"train_step.micro_batch_size={micro_batch_size} (as {micro} rows: a multiple of the mesh's "
                         f"data×fsdp = {ways} devices) does not divide the mini-batch size {mini}")
    return BatchLayout(batch_size // mini, mini // micro, micro)


def layout_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Sharding of a laid-out array [n_mini, n_micro, micro, ...] (ndim counts all dims)."""
    return NamedSharding(mesh, PartitionSpec(None, None, BATCH_AXES, *([None] * (ndim - 3))))


def check_same_shapes(arrays: Mapping[str, np.ndarray]) -> None:
    """Raises unless every process holds arrays of the same shapes (a global batch needs one row count
    and one padded width; a mismatch would otherwise hang or fail inside a collective)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    names = sorted(arrays)
    shapes = [np.shape(arrays[k]) for k in names]
    flat = np.asarray([d for shape in shapes for d in (len(shape), *shape)], np.int64)
    every = np.asarray(multihost_utils.process_allgather(flat))
    differ = np.flatnonzero((every != every[0]).any(axis=1))
    if differ.size:
        raise ValueError(f"process {int(differ[0])} holds batch fields of other shapes than process 0 "
                         f"({dict(zip(names, shapes))} here): pad every process's rows to the same width")


def shard_batch(arrays: Mapping[str, np.ndarray], layout: BatchLayout, mesh: Mesh) -> dict[str, jax.Array]:
    """Reshapes each process-local [B_local, ...] array to the layout and places it on the mesh."""
    nproc = jax.process_count()
    check_same_shapes(arrays)
    out = {}
    for name, x in arrays.items():
        x = np.asarray(x)
        if x.shape[0] * nproc != layout.rows:
            raise ValueError(f"batch field {name!r} has {x.shape[0]} rows per process; expected {layout.rows // nproc}")
        local = x.reshape(layout.n_mini, layout.n_micro, layout.micro // nproc, *x.shape[1:])
        global_shape = (layout.n_mini, layout.n_micro, layout.micro, *x.shape[1:])
        out[name] = jax.make_array_from_process_local_data(layout_sharding(mesh, local.ndim), local, global_shape)
    return out
