"""Greedy next tokens from the float32 LM head, reading an int8 screen of it instead of all of it.

Greedy decoding needs each row's argmax over the logits, not the logits. `greedy_tokens` (the FFI handler
in greedy_head.cc) computes every logit from an int8 copy of the head (a quarter of the bytes of the
float32 head, which is 27% of Qwen2.5-0.5B's weights; per-token scales; x quantized to 8 bits too), bounds
how far each can be from its float32 value, and recomputes in float32 only the tokens whose bound reaches
the best one. The result is exactly the argmax (first index on ties) of the float32 logits as the
dense-product handler's few-row loop computes them (kernels/few_rows.h), with that logit; what the int8
values were never shows.

The screen (`HeadScreen`: the int8 rows, and per token two norms, the scale and the sum of the row) is
derived from the head by `head_screen` (one pass over it); `Engine.set_params` rebuilds it with the weights.
Runs on x86 CPUs with AVX512-VNNI, AVX512BW, AVX512VL, AVX2 and FMA (`supported`), one device (XLA cannot
partition a custom call).
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import struct

from atomsearch_jax.kernels import build

Array = jax.Array

_SOURCE = Path(__file__).with_name("greedy_head.cc")
_TARGETS = {"greedy_head": "AtomsearchGreedyHead", "head_screen": "AtomsearchHeadScreen"}  # name -> symbol


@struct.dataclass
class HeadScreen:
    """A head's int8 rows [V, E] (w_int_j = round(w_j / scale_j), scale_j = max |w_j| / 127) and norms [4, V]
    float32: |w_j|, |w_j - scale_j w_int_j| (2-norms over E), scale_j and the sum of w_int_j, from which the
    handler computes each logit's int8 value and bounds its error."""

    rows: Array
    norms: Array


def supported() -> bool:
    """Whether this CPU has what the handler needs (it checks again at run time)."""
    return build.x86_with("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx2", "fma")


@functools.cache
def registration_error() -> str | None:
    """Builds and registers the handler once per process; None when ready, else why not."""
    if not supported():
        return "the CPU lacks AVX512-VNNI, AVX512BW, AVX512VL, AVX2 or FMA"
    try:
        library = ctypes.cdll.LoadLibrary(str(build.shared_library(_SOURCE)))
        handlers = {name: getattr(library, symbol) for name, symbol in _TARGETS.items()}
    except (OSError, build.BuildError, AttributeError) as e:
        return str(e)
    for name, handler in handlers.items():
        jax.ffi.register_ffi_target(f"atomsearch_{name}", jax.ffi.pycapsule(handler), platform="cpu")
    return None


def _check_available(what: str) -> None:
    if registration_error() is not None:
        raise RuntimeError(f"{what}: the greedy-head handler is unavailable: {registration_error()}")


def available() -> bool:
    """True when the handler is built and registered (building it on the first call)."""
    return registration_error() is None


def head_screen(w: Array, *, transposed: bool) -> HeadScreen:
    """The screen of a float32 head: w [V, E] read transposed (a tied embedding) or w [E, V]."""
    _check_available("head_screen")
    if w.ndim != 2 or w.dtype != jnp.float32:
        raise ValueError(f"head_screen needs a 2-D float32 head, got {w.dtype} {w.shape}")
    v, e = w.shape if transposed else w.shape[::-1]
    call = jax.ffi.ffi_call("atomsearch_head_screen", (jax.ShapeDtypeStruct((v, e), jnp.int8),
                                                       jax.ShapeDtypeStruct((4, v), jnp.float32)),
                            vmap_method="sequential")
    rows, norms = call(w, transposed=transposed)
    return HeadScreen(rows=rows, norms=norms)


def greedy_tokens(hidden: Array, w: Array, screen: HeadScreen, *, transposed: bool) -> tuple[Array, Array]:
    """(tokens [B] int32, their logits [B] float32): each row's argmax of hidden [B, E] (float32) times the
    head w ([V, E] with transposed=True, else [E, V]), through the screen `head_screen(w)` made."""
    _check_available("greedy_tokens")
    if hidden.ndim != 2 or hidden.dtype != jnp.float32 or w.dtype != jnp.float32:
        raise ValueError(f"greedy_tokens needs float32 hidden [B, E] and head, got {hidden.dtype} {hidden.shape} "
                         f"and {w.dtype} {w.shape}")
    b = hidden.shape[0]
    call = jax.ffi.ffi_call("atomsearch_greedy_head", (jax.ShapeDtypeStruct((b,), jnp.int32), jax.ShapeDtypeStruct((b,), jnp.float32)),
                            vmap_method="sequential")
    return call(hidden, w, screen.rows, screen.norms, transposed=transposed)
