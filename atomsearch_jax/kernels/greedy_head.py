"""Greedy next tokens from the float32 LM head, reading a bfloat16 screen of it instead of all of it.

Greedy decoding needs each row's argmax over the logits, not the logits. `greedy_tokens` (the FFI handler
in greedy_head.cc) computes every logit from a bfloat16 copy of the head (half the bytes of the float32
head, which is 27% of Qwen2.5-0.5B's weights), bounds how far each can be from its float32 value, and
recomputes in float32 only the tokens whose bound reaches the best one. The result is exactly the argmax
(first index on ties) of the float32 logits as the dense-product handler's few-row loop computes them
(kernels/few_rows.h), with that logit; what the bfloat16 values were never shows.

The screen (`HeadScreen`: the bfloat16 rows and three norms per token) is derived from the head by
`head_screen`, once per decode segment (one pass over the head), so it always matches the weights in use.
Runs on x86 CPUs with AVX512-BF16, AVX512BW, AVX512VL, AVX2 and FMA (`supported`), one device (XLA cannot partition
a custom call).
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
    """A head's bfloat16 rows [V, E] and norms [3, V] float32: |w_j|, |w_j - bf16(w_j)| and |bf16(w_j)| of
    each token j (2-norms over E), from which the handler bounds each logit's bfloat16 error."""

    rows: Array
    norms: Array


def supported() -> bool:
    """Whether this CPU has what the handler needs (it checks again at run time)."""
    return build.x86_with("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx2", "fma")


@functools.cache
def registration_error() -> str | None:
    """Builds and registers the handler once per process; None when ready, else why not."""
    if not supported():
        return "the CPU lacks AVX512-BF16, AVX512BW, AVX512VL, AVX2 or FMA"
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
    """The screen of a float32 head: w [V, E] read transposed (a tied embedding) or w [E, V]. One pass over w
    (~25 ms for Qwen2.5-0.5B's head on 2 cores)."""
    _check_available("head_screen")
    if w.ndim != 2 or w.dtype != jnp.float32:
        raise ValueError(f"head_screen needs a 2-D float32 head, got {w.dtype} {w.shape}")
    v, e = w.shape if transposed else w.shape[::-1]
    call = jax.ffi.ffi_call("atomsearch_head_screen", (jax.ShapeDtypeStruct((v, e), jnp.bfloat16),
                                                       jax.ShapeDtypeStruct((3, v), jnp.float32)),
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
