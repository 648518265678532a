"""The decoding state: one pytree holding every row's tokens, masks, log-probs, stop status and KV cache.

Shapes: B rows, S = max_len cache slots (the tokens buffer has the same length as the cache).

Invariant (kept by prefill, decode and append): row b holds the token history tokens[b, :lengths[b]];
the KV cache holds valid keys/values for slots 0 .. lengths[b] - 2; the last token tokens[b, lengths[b] - 1]
is *pending*: its keys/values are computed by the next decode step, which then samples the token after it.
Slots at or beyond a row's length hold stale data that is always rewritten before it is attended, so
rolling a row back is just lowering its length.

The state is passed into, and donated to, every jitted engine call; nothing about it is static except
its shapes.
"""
from __future__ import annotations

import enum
import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from atomsearch_jax.model import KVCache, ModelConfig
from atomsearch_jax.parallel import MESH_AXES

Array = jax.Array
BATCH_AXES = ("data", "fsdp")


class StopReason(enum.IntEnum):
    """Why a row is not generating (device code `stop_reason[b]`)."""

    RUNNING = 0  # live, or a padding row that was never started (see `active`)
    EOS = 1  # sampled an end-of-sequence id (the EOS token is kept)
    STOP = 2  # completed a stop string (`stop_index[b]` says which); tokens end with the completing token
    LENGTH = 3  # reached the row's length limit


@struct.dataclass
class DecodeState:
    """Everything the engine knows about a batch of rows (all device arrays).

    tokens [B, S] int32: prompt, generated and appended tokens; only tokens[b, :lengths[b]] are meaningful.
    lengths [B] int32: tokens in the row (the last one is pending, see module docstring).
    loss_mask [B, S] bool: True for model-generated tokens, False for prompt and environment tokens.
    logprobs [B, S] float32: log-probability the sampler gave each generated token (0 elsewhere).
    prompt_lengths [B] int32: tokens of the row's prompt.
    segment_start [B] int32: the row's length at its last start/append; tokens from there on are the
      text generated since the host last acted (what stop strings are matched in).
    limits [B] int32: the row stops with LENGTH when its length reaches this (<= S).
    active [B] bool: False for padding rows (never generate, not exported).
    done [B] bool: not generating (stopped, or inactive).
    stop_reason [B] int32: a `StopReason`.
    stop_index [B] int32: which stop string ended the row (-1 when not STOP).
    keys [B, 2] uint32: per-row PRNG keys; the token at slot p is drawn with fold_in(keys[b], p), so a
      row's samples do not depend on how decoding was split into segments or batched.
    cache: the model's KV cache (per layer {"k", "v"}: [B, K, S, D]).
    """

    tokens: Array
    lengths: Array
    loss_mask: Array
    logprobs: Array
    prompt_lengths: Array
    segment_start: Array
    limits: Array
    active: Array
    done: Array
    stop_reason: Array
    stop_index: Array
    keys: Array
    cache: KVCache

    @property
    def num_rows(self) -> int:
        return self.tokens.shape[0]

    @property
    def max_len(self) -> int:
        return self.tokens.shape[1]


def batch_spec(ndim: int) -> PartitionSpec:
    """Rows over (data, fsdp), every other dimension replicated."""
    return PartitionSpec(BATCH_AXES, *([None] * (ndim - 1)))


def cache_spec(config: ModelConfig, mesh: Mesh) -> PartitionSpec:
    """KV cache [B, K, S, D]: rows over (data, fsdp); KV heads over tensor when they divide evenly."""
    heads = "tensor" if config.num_kv_heads % mesh.shape["tensor"] == 0 else None
    return PartitionSpec(BATCH_AXES, heads, None, None)


def state_shardings(config: ModelConfig, mesh: Mesh) -> DecodeState:
    """A DecodeState-shaped tree of NamedShardings (independent of B and S, so one tree serves all buckets)."""
    missing = [a for a in MESH_AXES if a not in mesh.shape]
    if missing:
        raise ValueError(f"mesh lacks axes {missing}; build it with atomsearch_jax.parallel.make_mesh")

    def named(spec: PartitionSpec) -> NamedSharding:
        return NamedSharding(mesh, spec)

    rows1, rows2 = named(batch_spec(1)), named(batch_spec(2))
    kv = named(cache_spec(config, mesh))
    return DecodeState(
        tokens=rows2, lengths=rows1, loss_mask=rows2, logprobs=rows2, prompt_lengths=rows1, segment_start=rows1,
        limits=rows1, active=rows1, done=rows1, stop_reason=rows1, stop_index=rows1, keys=rows2,
        cache=[{"k": kv, "v": kv} for _ in range(config.num_layers)],
    )


def row_divisor(mesh: Mesh | None) -> int:
    """Row counts must be multiples of this (the number of devices rows are split over)."""
    if mesh is None:
        return 1
    return int(mesh.shape["data"] * mesh.shape["fsdp"])


def gather_rows(x: Array, index: Array) -> Array:
    """x[b, index[b]] for x [B, S] and index [B] (index clipped into range)."""
    index = jnp.clip(index, 0, x.shape[1] - 1)
    return jnp.take_along_axis(x, index[:, None], axis=1)[:, 0]


def set_rows(x: Array, index: Array, values: Array, where: Array) -> Array:
    """x with x[b, index[b]] = values[b] for rows where `where[b]`; other rows (and OOB indices) unchanged."""
    s = x.shape[1]
    index = jnp.where(where, index, s)  # out of range -> dropped
    return x.at[jnp.arange(x.shape[0]), index].set(values.astype(x.dtype), mode="drop")

