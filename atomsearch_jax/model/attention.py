"""Grouped-query attention kernels behind one interface, chosen by `ModelConfig.attention`.

Shapes: B rows, T queries, S keys (cache slots, or T without a cache), H query heads, K kv heads,
G = H // K, D head dim. Every kernel takes q [B, T, H, D], k and v [B, S, K, D] (`attend` also [B, K, S, D]) and a `KeyMask`, and
returns [B, T, H, D] in q's dtype; scores and the softmax are float32.

- "reference": the [B, K, G, T, S] float32 score tensor, masked and soft-maxed in one piece; on aligned
  masks in causal chunks of queries, each against the keys up to its last query.
- "blockwise": flash-style in XLA (runs everywhere): a `lax.scan` over blocks of `block` keys with an
  online softmax; a custom VJP recomputes each block's scores in the backward pass from the saved
  softmax statistics, so neither direction holds more than [B, K, G, T, block] scores.
- "dot_product": `jax.nn.dot_product_attention` (cuDNN's fused kernel on GPU, XLA elsewhere) for the
  training forward (`KeyMask.aligned`) when each row's valid keys are a prefix (right padding);
  other masks take the blockwise path inside the same program.
- "pallas": the Pallas TPU flash-attention kernel for the training forward (aligned masks; padding via
  segment ids), inside `shard_map` when the model runs on a mesh; other calls go blockwise.
- "cpu_flash": the C++ flash-attention handlers of `kernels/flash_attention.py` for the training forward
  and backward on XLA:CPU (aligned masks, float32, head dim a multiple of 8), per device on a mesh; other
  calls (and operands) go where "auto" would without it.
- "cpu_decode": the C++ handler of `kernels/decode_attention.py` for a few queries over the KV cache on
  XLA:CPU (decoding: cache masks without padding keys, heads-major cache, float32, G <= 8, head dim a
  multiple of 16; one device); other calls go where "auto" would without it.
- "auto": on XLA:CPU "cpu_flash" for aligned masks of at least CPU_FLASH_MIN_QUERIES queries when the
  operands fit and the handlers build, "cpu_decode" for at most CPU_DECODE_MAX_QUERIES queries over a cache
  when they fit it and the head dim is at least CPU_DECODE_MIN_HEAD_DIM; else "reference" wherever a row's [T, S] scores per head are no
  bigger than one block's square (T * S <= block**2): decoding (T = 1) against any cache window, short
  prefills, tiny test shapes; else "pallas" on TPU, "dot_product" on GPU, "blockwise" on CPU. Blockwise decoding re-laid the whole cache
  out into padded key blocks in every layer of every step, for scores that are only [B, K, G, 1, S]
  (scripts/bench_decode_step.py measures both).

A query at slot q_slots[b, t] may attend key slot s iff s <= q_slots[b, t] and kv_valid[b, s]. A query
that may attend nothing (a left-padding position) gets the uniform average over all S values in every
kernel but the fused ones (the chunked reference kernel: over its chunk's keys); such rows are padding,
excluded from every loss.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from atomsearch_jax.kernels import decode_attention, flash_attention

Array = jax.Array
IMPLEMENTATIONS = ("auto", "reference", "blockwise", "dot_product", "pallas", "cpu_flash", "cpu_decode")
# Fewest queries for which "auto" takes "cpu_flash" on CPU. A forward + backward of the default job's model
# (head dim 32, 2 rows) ran within noise of the reference kernel at 304-448 queries, whose scores still fit the
# caches, and 1.06x / 1.22x faster at 672 / 704, 2.1x the blockwise kernel at 704 (scripts/bench_sft_attention.py,
# BENCHMARKS.md).
CPU_FLASH_MIN_QUERIES = 384
# Most queries per row for which "auto" takes "cpu_decode" (a decode step has 1; appended spans and prefills,
# whose [T, S] scores make fuller products, stay on the reference kernel), and the smallest head dim: the
# handler's gain was measured at Qwen2.5-0.5B's 64 (scripts/bench_generate.py); the default job's model (head
# dim 32) keeps the reference kernel its documented runs used.
CPU_DECODE_MAX_QUERIES = 8
CPU_DECODE_MIN_HEAD_DIM = 64
# A large finite negative instead of -inf: a fully masked row (padding query) then gives a uniform
# softmax rather than NaNs that would poison gradients through `where`.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@struct.dataclass
class KeyMask:
    """Which keys each query sees (never a dense [T, S] array).

    q_slots [B, T] int32: the cache slot of each query (keys at slots <= it are causal-visible).
    kv_valid [B, S] bool or None (all valid): padding keys are False.
    aligned (static): queries are slots 0..T-1 of the same T keys (no cache); fused kernels need it.
    """

    q_slots: Array
    kv_valid: Array | None = None
    aligned: bool = struct.field(pytree_node=False, default=False)

    def visible(self, key_slots: Array, key_valid: Array | None) -> Array:
        """[B, T, N] bool for keys at slots key_slots [N] with validity key_valid [B, N] (or None)."""
        vis = key_slots[None, None, :] <= self.q_slots[:, :, None]
        return vis if key_valid is None else vis & key_valid[:, None, :]


def check_implementation(name: str) -> str:
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"ModelConfig.attention={name!r}; expected one of {IMPLEMENTATIONS}")
    return name


def resolve(name: str, *, num_keys: int, block: int, aligned: bool, backend: str | None = None,
            num_queries: int | None = None, cpu_flash_operands: bool = True, cpu_decode_operands: bool = False) -> str:
    """The kernel "auto" stands for at these shapes (and fused kernels' fallback when not aligned).

    num_queries: T (default num_keys, i.e. self-attention without a cache). cpu_flash_operands: whether the
    operands fit the cpu_flash handlers (`flash_attention.supports`: float32, head dim a multiple of 8);
    when not, "cpu_flash" and "auto" choose among the other kernels. cpu_decode_operands: whether the call
    fits the cpu_decode handler (see `attend`); when not, "cpu_decode" and "auto" choose among the others.
    """
    check_implementation(name)
    num_queries = num_keys if num_queries is None else num_queries
    backend = backend or jax.default_backend()
    flash_fits = cpu_flash_operands and aligned and backend == "cpu" and num_queries == num_keys
    if name == "auto" and flash_fits and num_queries >= CPU_FLASH_MIN_QUERIES and _cpu_flash_available():
        return "cpu_flash"
    decode_fits = cpu_decode_operands and not aligned and backend == "cpu"
    if name == "auto" and decode_fits and num_queries <= CPU_DECODE_MAX_QUERIES and _cpu_decode_available():
        return "cpu_decode"
    if (name == "cpu_flash" and not flash_fits) or (name == "cpu_decode" and not decode_fits):
        name = "auto"
    if name == "auto":
        if num_keys <= block or num_queries * num_keys <= block * block:
            return "reference"
        name = {"tpu": "pallas", "gpu": "dot_product"}.get(backend, "blockwise")
        if name == "pallas" and not _pallas_available():
            name = "blockwise"
    if name in ("dot_product", "pallas") and not aligned:
        return "blockwise"
    return name


def attend(q: Array, k: Array, v: Array, mask: KeyMask, *, implementation: str = "auto", block: int = 512,
           shard: Callable | None = None, kv_layout: str = "bskd") -> Array:
    """softmax(q k^T / sqrt(D) + mask) v with grouped kv heads; see the module docstring.

    kv_layout: "bskd" (k, v [B, S, K, D]) or "bksd" (heads-major [B, K, S, D], the KV cache's layout);
    the reference kernel reads either as stored, the others take [B, S, K, D].
    shard: wraps a per-device kernel for a mesh (`(fn, q, k, v, mask) -> out`, see layers.Attention);
    the Pallas and cpu_flash kernels, custom calls XLA cannot partition, use it.
    """
    if kv_layout not in ("bskd", "bksd"):
        raise ValueError(f"kv_layout={kv_layout!r}; expected 'bskd' or 'bksd'")
    num_keys = k.shape[1] if kv_layout == "bskd" else k.shape[2]
    # The decode handler reads the heads-major cache as stored and sees no padding keys; a custom call on a
    # mesh would need per-device specs for that layout, so it runs on one device only.
    decode_fits = (kv_layout == "bksd" and mask.kv_valid is None and shard is None
                   and decode_attention.supports(q, k))
    if implementation == "auto":
        decode_fits = decode_fits and q.shape[-1] >= CPU_DECODE_MIN_HEAD_DIM
    name = resolve(implementation, num_keys=num_keys, block=block, aligned=mask.aligned, num_queries=q.shape[1],
                   cpu_flash_operands=flash_attention.supports(q, k if kv_layout == "bskd" else k.swapaxes(1, 2)),
                   cpu_decode_operands=decode_fits)
    if name == "reference":
        return reference_attention(q, k, v, mask, kv_layout=kv_layout)
    if name == "cpu_decode":
        return decode_attention.decode_attention(q, k, v, mask.q_slots).astype(q.dtype)
    if kv_layout == "bksd":
        k, v = k.swapaxes(1, 2), v.swapaxes(1, 2)
    if name == "blockwise":
        return blockwise_attention(q, k, v, mask, block=block)
    if name == "cpu_flash":
        kernel = lambda q, k, v, mask: flash_attention.flash_attention(q, k, v, mask.kv_valid)  # noqa: E731
        return kernel(q, k, v, mask) if shard is None else shard(kernel, q, k, v, mask)
    if name == "dot_product":
        return dot_product_attention(q, k, v, mask, block=block)
    if shard is None:
        return pallas_attention(q, k, v, mask)
    return shard(pallas_attention, q, k, v, mask)


# The reference kernel splits aligned (training) masks of at least MIN_CHUNKED_QUERIES queries into
# CAUSAL_QUERY_CHUNKS chunks of queries; chunk c sees only the keys up to its last query, so the chunks skip
# part of the masked upper triangle (a quarter of the square in two halves) and their score tiles are
# smaller. A forward + backward of the default job's 2-row micro-batches at widths 464 / 640 / 704 ran
# 1.01 / 1.09 / 1.16x faster on CPU than over the whole square (scripts/bench_sft_attention.py --rows 2);
# every chunk is separate code in the program, so more chunks cost compile time for little more speed.
CAUSAL_QUERY_CHUNKS = 2
MIN_CHUNKED_QUERIES = 256


def reference_attention(q: Array, k: Array, v: Array, mask: KeyMask, *, kv_layout: str = "bskd") -> Array:
    """The [B, K, G, T, S] score tensor at once (k, v in `kv_layout`, see `attend`); on aligned masks
    (queries at slots 0..T-1 of the same T keys) of T >= MIN_CHUNKED_QUERIES in CAUSAL_QUERY_CHUNKS chunks
    of queries, each against the keys up to its last query (a padding query there averages the values of
    that prefix)."""
    b, t, h, d = q.shape
    kv, s = (k.shape[2], k.shape[1]) if kv_layout == "bskd" else (k.shape[1], k.shape[2])
    qg = q.reshape(b, t, kv, h // kv, d)
    if not (mask.aligned and t == s and t >= MIN_CHUNKED_QUERIES and CAUSAL_QUERY_CHUNKS > 1):
        out = _softmax_attend(qg, k, v, mask.visible(jnp.arange(s, dtype=jnp.int32), mask.kv_valid), kv_layout)
        return out.reshape(b, t, h, d)
    outs, chunk = [], -(-t // CAUSAL_QUERY_CHUNKS)
    for start in range(0, t, chunk):
        stop = min(start + chunk, t)
        keys = (slice(None), slice(0, stop)) if kv_layout == "bskd" else (slice(None), slice(None), slice(0, stop))
        valid = None if mask.kv_valid is None else mask.kv_valid[:, :stop]
        vis = KeyMask(q_slots=mask.q_slots[:, start:stop]).visible(jnp.arange(stop, dtype=jnp.int32), valid)
        outs.append(_softmax_attend(qg[:, start:stop], k[keys], v[keys], vis, kv_layout))
    return jnp.concatenate(outs, axis=1).reshape(b, t, h, d)


def _softmax_attend(qg: Array, k: Array, v: Array, vis: Array, kv_layout: str) -> Array:
    """softmax(qg k^T / sqrt(D), visible keys) v for qg [B, T, K, G, D] and vis [B, T, S]: [B, T, K, G, D].

    The softmax's division is applied to the [.., T, D] product instead of the [.., T, S] probabilities:
    one pass less over the scores in each direction."""
    keys = "bskd" if kv_layout == "bskd" else "bksd"
    scores = jnp.einsum(f"btkgd,{keys}->bkgts", qg, k, preferred_element_type=jnp.float32) * (qg.shape[-1] ** -0.5)
    scores = jnp.where(vis[:, None, None], scores, MASK_VALUE)
    weights = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
    # Heads-major output, then a transpose of the (small) result: asked for "btkgd" directly, XLA CPU
    # ran the decode-time product as V^T P with the cache as the left operand (scripts/bench_decode_step.py).
    out = jnp.einsum(f"bkgts,{keys}->bkgtd", weights.astype(qg.dtype), v, preferred_element_type=jnp.float32)
    out = (out / weights.sum(axis=-1, keepdims=True)).astype(qg.dtype)
    return out.transpose(0, 3, 1, 2, 4)


# ---- blockwise (flash-style) XLA path -------------------------------------------------------------
def blockwise_attention(q: Array, k: Array, v: Array, mask: KeyMask, *, block: int = 512) -> Array:
    """Online-softmax attention over key blocks of `block` slots (memory O(T * block) per head)."""
    s = k.shape[1]
    kv_valid = jnp.ones(k.shape[:2], bool) if mask.kv_valid is None else mask.kv_valid
    return _blockwise(min(int(block), s), q, k, v, mask.q_slots, kv_valid)


def _key_blocks(block: int, k: Array, v: Array, kv_valid: Array) -> tuple[Array, Array, Array, Array]:
    """k, v as [n, B, block, K, D], validity [n, B, block] and the slot index of each key [n, block].

    Slots past S (padding up to a whole block) get slot index -1 in `exists`: they never count, not
    even in a fully masked row's uniform average, which then matches the reference over S slots.
    """
    b, s = k.shape[:2]
    n = -(-s // block)
    pad = n * block - s
    if pad:
        k = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
        kv_valid = jnp.pad(kv_valid, ((0, 0), (0, pad)))
    split = lambda x: x.reshape(b, n, block, *x.shape[2:]).swapaxes(0, 1)  # noqa: E731
    slots = jnp.arange(n * block, dtype=jnp.int32).reshape(n, block)
    return split(k), split(v), split(kv_valid), slots


def _block_scores(qg: Array, kb: Array, validb: Array, slots: Array, q_slots: Array, s: int) -> tuple[Array, Array]:
    """Masked float32 scores [B, K, G, T, block] of one key block, and its visibility [B, T, block]."""
    d = qg.shape[-1]
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, kb, preferred_element_type=jnp.float32) * (d ** -0.5)
    vis = (slots[None, None, :] <= q_slots[:, :, None]) & validb[:, None, :]
    scores = jnp.where(vis[:, None, None], scores, MASK_VALUE)
    return jnp.where((slots < s)[None, None, None, None, :], scores, -jnp.inf), vis


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _blockwise(block: int, q: Array, k: Array, v: Array, q_slots: Array, kv_valid: Array) -> Array:
    return _blockwise_fwd(block, q, k, v, q_slots, kv_valid)[0]


def _blockwise_fwd(block: int, q: Array, k: Array, v: Array, q_slots: Array, kv_valid: Array):
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    qg = q.reshape(b, t, kv, h // kv, d)
    kb, vb, validb, slots = _key_blocks(block, k, v, kv_valid)

    def body(carry, xs):
        out, m, l = carry
        k_j, v_j, valid_j, slots_j = xs
        scores, _ = _block_scores(qg, k_j, valid_j, slots_j, q_slots, s)
        m_new = jnp.maximum(m, scores.max(axis=-1))
        corr = jnp.exp(m - m_new)
        p = jnp.exp(scores - m_new[..., None])
        l = l * corr + p.sum(axis=-1)
        pv = jnp.einsum("bkgts,bskd->btkgd", p.astype(v.dtype), v_j, preferred_element_type=jnp.float32)
        out = out * jnp.moveaxis(corr, -1, 1)[..., None] + pv
        return (out, m_new, l), None

    init = (jnp.zeros(qg.shape, jnp.float32), jnp.full((b, kv, h // kv, t), MASK_VALUE, jnp.float32),
            jnp.zeros((b, kv, h // kv, t), jnp.float32))
    (out, m, l), _ = jax.lax.scan(body, init, (kb, vb, validb, slots))
    out = (out / jnp.moveaxis(l, -1, 1)[..., None]).astype(q.dtype).reshape(b, t, h, d)
    # m and l are kept apart rather than as m + log(l): for a fully masked row m is MASK_VALUE, which
    # would swallow log(l) in float32.
    return out, (q, k, v, q_slots, kv_valid, out, m, l)


def _blockwise_bwd(block: int, residuals, d_out: Array):
    q, k, v, q_slots, kv_valid, out, m, l = residuals
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    g = h // kv
    qg = q.reshape(b, t, kv, g, d)
    dog = d_out.reshape(b, t, kv, g, d)
    delta = jnp.einsum("btkgd,btkgd->bkgt", dog.astype(jnp.float32), out.reshape(b, t, kv, g, d).astype(jnp.float32))
    kb, vb, validb, slots = _key_blocks(block, k, v, kv_valid)
    scale = d ** -0.5

    def body(dq, xs):
        k_j, v_j, valid_j, slots_j = xs
        scores, vis = _block_scores(qg, k_j, valid_j, slots_j, q_slots, s)
        p = jnp.exp(scores - m[..., None]) / l[..., None]
        dv_j = jnp.einsum("bkgts,btkgd->bskd", p, dog, preferred_element_type=jnp.float32)
        dp = jnp.einsum("btkgd,bskd->bkgts", dog, v_j, preferred_element_type=jnp.float32)
        ds = jnp.where(vis[:, None, None], p * (dp - delta[..., None]), 0.0) * scale
        dq = dq + jnp.einsum("bkgts,bskd->btkgd", ds, k_j, preferred_element_type=jnp.float32)
        dk_j = jnp.einsum("bkgts,btkgd->bskd", ds, qg, preferred_element_type=jnp.float32)
        return dq, (dk_j, dv_j)

    dq, (dk, dv) = jax.lax.scan(body, jnp.zeros(qg.shape, jnp.float32), (kb, vb, validb, slots))
    unblock = lambda x, like: x.swapaxes(0, 1).reshape(b, -1, *x.shape[3:])[:, :s].astype(like.dtype)  # noqa: E731
    return dq.reshape(b, t, h, d).astype(q.dtype), unblock(dk, k), unblock(dv, v), None, None


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)


# ---- fused kernels (training forward) -------------------------------------------------------------
def _prefix_lengths(kv_valid: Array | None, b: int, s: int) -> tuple[Array, Array]:
    """(valid keys per row [B] int32, whether every row's valid keys are a prefix: scalar bool)."""
    if kv_valid is None:
        return jnp.full((b,), s, jnp.int32), jnp.array(True)
    lengths = kv_valid.sum(axis=1).astype(jnp.int32)
    prefix = jnp.all(kv_valid == (jnp.arange(s)[None, :] < lengths[:, None]))
    return lengths, prefix


def dot_product_attention(q: Array, k: Array, v: Array, mask: KeyMask, *, block: int = 512) -> Array:
    """`jax.nn.dot_product_attention` (causal, key lengths) for aligned masks whose valid keys are
    prefixes; the blockwise kernel for the rest (decided per batch inside the program)."""
    if not mask.aligned:
        return blockwise_attention(q, k, v, mask, block=block)
    b, s = k.shape[:2]
    lengths, prefix = _prefix_lengths(mask.kv_valid, b, s)
    impl = "cudnn" if jax.default_backend() == "gpu" else None

    def fused(_):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, key_value_seq_lengths=lengths,
                                            implementation=impl).astype(q.dtype)

    if mask.kv_valid is None:
        return fused(None)
    return jax.lax.cond(prefix, fused, lambda _: blockwise_attention(q, k, v, mask, block=block), None)


def _cpu_flash_available() -> bool:
    if flash_attention.available():
        return True
    _warn_cpu_flash_unavailable()
    return False


def _cpu_decode_available() -> bool:
    if decode_attention.available():
        return True
    _warn_cpu_decode_unavailable()
    return False


@functools.cache
def _warn_cpu_decode_unavailable() -> None:
    logging.warning("attention: cpu_decode handler unavailable, using the XLA kernels: %s",
                    decode_attention.registration_error())


@functools.cache
def _warn_cpu_flash_unavailable() -> None:
    logging.warning("attention: cpu_flash handlers unavailable, using the XLA kernels: %s",
                    flash_attention.registration_error())


@functools.lru_cache(maxsize=None)
def _pallas_available() -> bool:
    try:
        from jax.experimental.pallas.ops.tpu import flash_attention  # noqa: F401
    except ImportError:
        return False
    return True


def pallas_attention(q: Array, k: Array, v: Array, mask: KeyMask) -> Array:
    """The Pallas TPU flash-attention kernel (causal; padding keys as segment 0). TPU only."""
    from jax.experimental.pallas.ops.tpu import flash_attention as fa

    if not mask.aligned:
        raise ValueError("pallas attention needs an aligned mask (training forward without a cache)")
    h, kv, d = q.shape[2], k.shape[2], q.shape[3]
    repeat = lambda x: jnp.repeat(x, h // kv, axis=2).swapaxes(1, 2)  # noqa: E731  [B, H, S, D]
    valid = jnp.ones(k.shape[:2], jnp.int32) if mask.kv_valid is None else mask.kv_valid.astype(jnp.int32)
    segments = fa.SegmentIds(q=jnp.ones(q.shape[:2], jnp.int32), kv=valid)
    out = fa.flash_attention(q.swapaxes(1, 2), repeat(k), repeat(v), segment_ids=segments, causal=True,
                             sm_scale=d ** -0.5)
    return out.swapaxes(1, 2).astype(q.dtype)
