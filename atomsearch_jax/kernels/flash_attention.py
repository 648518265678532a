"""Causal self-attention for training on XLA:CPU through the C++ handlers of flash_attention.cc.

XLA:CPU runs the reference kernel's [B, K, G, T, T] scores as separate passes over tensors bigger than the
caches; the handlers stream blocks of queries against blocks of keys up to the diagonal with the scores in
L1 (online softmax forward, FlashAttention-2 backward from the saved log-sum-exp). For training masks only
(`KeyMask.aligned`: queries are the T keys' own slots), float32, head dim a multiple of 8 up to 256, x86
with AVX2 and FMA. The result equals the reference kernel's up to float rounding on every position a query
may attend something; a query that attends nothing (padding) gets zeros.

`flash_attention` is one custom call, which XLA cannot partition: on a mesh, call it per device
(`attention.attend`'s `shard`).
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp

from atomsearch_jax.kernels import build

Array = jax.Array
_SOURCE = Path(__file__).with_name("flash_attention.cc")
_FORWARD, _BACKWARD = "atomsearch_flash_forward", "atomsearch_flash_backward"


def cpu_supported() -> bool:
    """x86 with AVX2 and FMA (what the handlers need; they are compiled for it at run time)."""
    return build.x86_with("avx2", "fma")


@functools.cache
def registration_error() -> str | None:
    """Builds and registers both handlers once per process; None when ready, else why not."""
    if not cpu_supported():
        return "the CPU is not x86 with AVX2 and FMA"
    try:
        library = ctypes.cdll.LoadLibrary(str(build.shared_library(_SOURCE)))
        forward, backward = library.AtomsearchFlashForward, library.AtomsearchFlashBackward
    except (OSError, build.BuildError, AttributeError) as e:
        return str(e)
    jax.ffi.register_ffi_target(_FORWARD, jax.ffi.pycapsule(forward), platform="cpu")
    jax.ffi.register_ffi_target(_BACKWARD, jax.ffi.pycapsule(backward), platform="cpu")
    return None


def available() -> bool:
    """True when the handlers are built and registered (building them on the first call)."""
    return registration_error() is None


def supports(q: Array, k: Array) -> bool:
    """Whether these operands (q [B, T, H, D], k [B, T, K, D]) fit the handlers (availability aside)."""
    d = q.shape[-1]
    return (q.dtype == jnp.float32 and k.dtype == jnp.float32 and d % 8 == 0 and d <= 256
            and q.shape[1] == k.shape[1] and q.shape[2] % k.shape[2] == 0)


def _threads() -> int:
    """Threads per call: this process's cores shared by its devices (each device runs its share at once)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, jax.local_device_count()))


def _forward_call(q: Array, k: Array, v: Array, valid: Array) -> tuple[Array, Array]:
    b, t, h, _ = q.shape
    call = jax.ffi.ffi_call(_FORWARD, (jax.ShapeDtypeStruct(q.shape, jnp.float32),
                                       jax.ShapeDtypeStruct((b, h, t), jnp.float32)), vmap_method="sequential")
    return call(q, k, v, valid, threads=_threads())


@jax.custom_vjp
def _flash(q: Array, k: Array, v: Array, valid: Array) -> Array:
    return _forward_call(q, k, v, valid)[0]


def _flash_fwd(q: Array, k: Array, v: Array, valid: Array):
    out, lse = _forward_call(q, k, v, valid)
    return out, (q, k, v, valid, out, lse)


def _flash_bwd(residuals, d_out: Array):
    q, k, v, valid, out, lse = residuals
    call = jax.ffi.ffi_call(_BACKWARD, (jax.ShapeDtypeStruct(q.shape, jnp.float32),
                                        jax.ShapeDtypeStruct(k.shape, jnp.float32),
                                        jax.ShapeDtypeStruct(v.shape, jnp.float32)), vmap_method="sequential")
    dq, dk, dv = call(q, k, v, valid, out, lse, d_out.astype(jnp.float32), threads=_threads())
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q: Array, k: Array, v: Array, kv_valid: Array | None = None) -> Array:
    """Causal softmax(q k^T / sqrt(D)) v for q [B, T, H, D], k and v [B, T, K, D] (H a multiple of K), keys
    invalid where kv_valid [B, T] is False (None: all valid); [B, T, H, D] float32. Differentiable in q, k, v.
    Raises ValueError naming the operands when `supports` is False, RuntimeError when the handlers are
    unavailable (see `registration_error`)."""
    if not supports(q, k) or k.shape != v.shape or q.shape[0] != k.shape[0]:
        raise ValueError(f"flash_attention: q {q.shape} {q.dtype}, k {k.shape} {k.dtype}, v {v.shape}: needs "
                         "float32 q [B,T,H,D] and k/v [B,T,K,D] with H a multiple of K and D a multiple of 8 "
                         "up to 256")
    if not available():
        raise RuntimeError(f"flash_attention: the CPU handlers are unavailable: {registration_error()}")
    b, t = q.shape[:2]
    valid = jnp.ones((b, t), jnp.int32) if kv_valid is None else kv_valid.astype(jnp.int32)
    return _flash(q, k, v, jax.lax.stop_gradient(valid))
