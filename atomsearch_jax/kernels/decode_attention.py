"""Attention of a few new queries over the KV cache on XLA:CPU (the handler in decode_attention.cc).

Decoding's attention is small work split into many XLA ops (two batched products, masking, max, exp,
sums, division, transposes): ~150 us a layer for Qwen2.5-0.5B at batch 8 over 192 cache slots. The handler
reads each (row, kv head)'s visible keys and values once, with the kv head's G <= 8 query heads as the
lanes of one AVX2 vector. For cache masks without padding keys (`KeyMask.kv_valid` None: query (b, t) sees
slots <= q_slots[b, t]), float32, head dim a multiple of 16, x86 with AVX2, FMA and AVX-512F; forward only (decoding
never differentiates). Equal to the reference kernel up to float rounding.

One custom call, which XLA cannot partition: on a mesh, call it per device (`attention.attend`'s `shard`).
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import jax
import jax.numpy as jnp

from atomsearch_jax.kernels import build

Array = jax.Array
_SOURCE = Path(__file__).with_name("decode_attention.cc")
_TARGET = "atomsearch_decode_attention"
MAX_GROUP = 8  # query heads per kv head (kMaxGroup in decode_attention.cc)


@functools.cache
def registration_error() -> str | None:
    """Builds and registers the handler once per process; None when ready, else why not."""
    if not build.x86_with("avx2", "fma", "avx512f"):
        return "the CPU is not x86 with AVX2, FMA and AVX-512F"
    try:
        library = ctypes.cdll.LoadLibrary(str(build.shared_library(_SOURCE)))
        handler = library.AtomsearchDecodeAttention
    except (OSError, build.BuildError, AttributeError) as e:
        return str(e)
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    return None


def available() -> bool:
    """True when the handler is built and registered (building it on the first call)."""
    return registration_error() is None


def supports(q: Array, k: Array) -> bool:
    """Whether q [B, T, H, D] and a cache k [B, K, S, D] fit the handler (availability aside)."""
    return (q.ndim == 4 and k.ndim == 4 and q.dtype == jnp.float32 and k.dtype == jnp.float32
            and q.shape[0] == k.shape[0] and q.shape[3] == k.shape[3] and q.shape[3] % 16 == 0
            and q.shape[2] % k.shape[1] == 0 and q.shape[2] // k.shape[1] <= MAX_GROUP)


def decode_attention(q: Array, k: Array, v: Array, q_slots: Array) -> Array:
    """softmax(q k^T / sqrt(D)) v over each query's visible cache slots (s <= q_slots[b, t]) for q
    [B, T, H, D] and the cache k, v [B, K, S, D]; [B, T, H, D] float32. Raises ValueError naming the operands
    when `supports` is False, RuntimeError when the handler is unavailable."""
    if not supports(q, k) or k.shape != v.shape or v.dtype != jnp.float32 or q_slots.shape != q.shape[:2]:
        raise ValueError(f"decode_attention: q {q.shape} {q.dtype}, k {k.shape} {k.dtype}, v {v.shape} {v.dtype}, "
                         f"q_slots {q_slots.shape}: needs float32 q [B,T,H,D], k/v [B,K,S,D] with H = K * G, "
                         f"G <= {MAX_GROUP}, D a multiple of 16, and q_slots [B,T]")
    if not available():
        raise RuntimeError(f"decode_attention: the CPU handler is unavailable: {registration_error()}")
    call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct(q.shape, jnp.float32), vmap_method="sequential")
    return call(q, k, v, q_slots.astype(jnp.int32))
