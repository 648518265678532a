"""How many rollout rows one engine state may hold: the KV-cache budget turned into a chunk size.

A step's prompts × group_size rows are rolled out in chunks of whole groups (prefix sharing and group
advantages need a group inside one state). Rows in a state are padded to a power of two (the rollout
loop buckets row counts so every chunk reuses one compiled program), so a chunk of g groups costs the
cache of next_power_of_two(g · group_size) rows.
"""
from __future__ import annotations

import numpy as np
from jax.sharding import Mesh

from atomsearch_jax.generate.buckets import next_power_of_two, round_up
from atomsearch_jax.generate.state import row_divisor
from atomsearch_jax.model import ModelConfig


def kv_cache_bytes_per_device(config: ModelConfig, rows: int, max_len: int, mesh: Mesh | None = None,
                              dtype_bytes: int | None = None) -> int:
    """Bytes of the [rows, max_len] KV cache (all layers, keys and values) held by one device.

    Rows split over the mesh's data×fsdp devices; kv heads over tensor when they divide evenly (as
    generate.state.cache_spec lays the cache out).
    """
    itemsize = dtype_bytes or np.dtype(config.compute_dtype).itemsize
    heads = config.num_kv_heads
    if mesh is not None and heads % mesh.shape["tensor"] == 0:
        heads //= mesh.shape["tensor"]
    local_rows = -(-rows // row_divisor(mesh))
    return 2 * config.num_layers * local_rows * max_len * heads * config.dims_per_head * itemsize


def state_rows(samples: int, mesh: Mesh | None) -> int:
    """Rows of the engine state that holds `samples` rows (power-of-two bucket, mesh multiple)."""
    return round_up(next_power_of_two(max(samples, 1)), row_divisor(mesh))


def groups_per_chunk(config: ModelConfig, *, groups: int, group_size: int, max_len: int, budget_gb: float,
                     mesh: Mesh | None = None) -> int:
    """The most groups (<= groups) whose state's KV cache fits budget_gb (10^9 bytes) per device.

    budget_gb <= 0 means no budget: every group in one state. Raises when not even one group fits.
    """
    if budget_gb <= 0:
        return groups
    budget = budget_gb * 1e9
    best = 0
    for g in range(1, groups + 1):
        if kv_cache_bytes_per_device(config, state_rows(g * group_size, mesh), max_len, mesh) > budget:
            break
        best = g
    if best == 0:
        need = kv_cache_bytes_per_device(config, state_rows(group_size, mesh), max_len, mesh) / 1e9
        raise ValueError(f"rl.rollout.kv_cache_gb={budget_gb} holds no group of {group_size} rows at max_len="
                         f"{max_len} (one group needs {need:.2f} GB per device)")
    return best
