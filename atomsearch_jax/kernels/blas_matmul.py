"""Float32 matmuls on XLA:CPU through OpenBLAS's sgemm (the FFI handler in blas_matmul.cc).

On this project's CPU machines XLA's dot runs the model's products below an optimised BLAS on the same
cores: batch-8 decode products (8 rows x a weight) and the training products ([B*T, E] x [E, F]) alike.
`matmul` hands them to the OpenBLAS of the scipy-openblas32 wheel, forward and backward (a custom VJP
whose two products are the same call with transposed operands). Products of at most 8 rows run in the
handler's own loops, where sgemm's packing of the weight costs as much as such a product: against a weight
read transposed (the tied LM head while decoding) on x86 CPUs with AVX2 and FMA, against a weight stored
[K, N] (every layer while decoding) on x86 CPUs with AVX-512.

Policy (ModelConfig.matmul): "xla" always XLA's dot; "blas" always the handler (raises when it cannot be
used); "auto" the handler for float32 operands in a single-device XLA:CPU process (XLA cannot partition a
custom call, so multi-device programs keep the dot) with at least MIN_ROWS rows, XLA's dot otherwise or
when the handler does not build (warned once); where OPENBLAS_CORETYPE forces OpenBLAS's AVX2 kernels on an
AVX-512 CPU, XLA's dot for all but the handler's own few-row loops (`core_type_warning`). The policy changes
speed, never results beyond float rounding.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp

from atomsearch_jax.kernels import build

Array = jax.Array

POLICIES = ("auto", "xla", "blas")
_SOURCE = Path(__file__).with_name("blas_matmul.cc")
_TARGET = "atomsearch_sgemm"
_MANY_TARGET = "atomsearch_few_rows_many"
SKINNY_MAX_ROWS = 8  # kMaxRows in blas_matmul.cc


def has_few_row_loop(transposed: bool) -> bool:
    """Whether the handler runs <= SKINNY_MAX_ROWS-row products in its own loop instead of sgemm, as
    blas_matmul.cc checks at run time: against a weight read transposed on x86 with AVX2 and FMA, against a
    weight stored [K, N] on x86 with AVX-512."""
    return build.x86_with("avx2", "fma") if transposed else build.x86_with("avx512f")


# OpenBLAS's DYNAMIC_ARCH picks its kernels ("core") from the CPU at load time, unless $OPENBLAS_CORETYPE
# names one. On an AVX-512 CPU forced onto the AVX2 "Haswell" core (this project's Zen 5 VMs set
# OPENBLAS_CORETYPE=Haswell; unset, OpenBLAS picks SkylakeX there) sgemm ran the model's 256- and 4096-row
# products 1.5-3.1x slower (BENCHMARKS.md "Dense products"). These are the features of its AVX-512 cores.
_AVX512_FEATURES = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
_AVX512_CORES = ("skylakex", "cooperlake", "sapphirerapids")


# Fewest rows for which "auto" takes the handler, by whether w is read transposed; from
# `scripts/bench_matmul.py` (Qwen2.5-0.5B products, BENCHMARKS.md "Dense products"). One row is a
# matrix-vector product, which XLA's dot runs near memory bandwidth (the handler's loops 0.95-1.4x of it,
# sgemm 0.5-1.1x). From 2 rows the handler's own few-row loops run 1.1-3x faster than XLA's dot: the tied
# head read transposed ([V, E]) where the AVX2 loop is built, the layers' weights stored [K, N] where the
# AVX-512 loop is. Without them sgemm gains from 4 rows on the layers' weights (MLP products 1.8-2.3x at 4-8
# rows) and from 8 on the head (4: 0.87x, 8: 1.34x).
MIN_ROWS = {False: 2 if has_few_row_loop(False) else 4,
            True: 2 if has_few_row_loop(True) else 8}
# Fewest weight elements (K x N) for which "auto" takes sgemm. Inside a whole training step of the default
# job's model (hidden 128: weights of 16k-262k elements) sgemm made SFT steps 1.3-1.5x slower although each
# product alone ran faster (OpenBLAS's threads spinning between calls while XLA's run attention, and the
# dots' fused epilogues lost); Qwen2.5-0.5B's q/o, MLP and head weights (0.8M-136M) are the measured gains.
MIN_WEIGHT_ELEMENTS = 1 << 19


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"matmul policy {policy!r}; expected one of {list(POLICIES)}")


def _openblas_flags() -> tuple[str, ...]:
    try:
        import scipy_openblas32
    except ImportError as e:
        raise build.BuildError(f"scipy-openblas32 is not installed ({e})") from None
    lib = scipy_openblas32.get_lib_dir()
    return ("-L", lib, f"-l{scipy_openblas32.get_library()}", f"-Wl,-rpath,{lib}")


def _library_path() -> Path:
    import scipy_openblas32
    return Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"


def core_type_warning() -> str | None:
    """Why $OPENBLAS_CORETYPE slows sgemm down on this CPU (an AVX2 core forced on an AVX-512 CPU), else
    None. The variable is the user's to set: it is kept, warned about once, and "auto" then leaves sgemm's
    products to XLA's dot, which runs AVX-512 kernels (sgemm's AVX2 ones ran at 0.66-1.1x of it)."""
    forced = os.environ.get("OPENBLAS_CORETYPE", "")
    if not forced or forced.lower() in _AVX512_CORES or not build.x86_with(*_AVX512_FEATURES):
        return None
    return (f"OPENBLAS_CORETYPE={forced} keeps OpenBLAS on AVX2 kernels on this AVX-512 CPU, 1.5-3x slower than "
            "its AVX-512 ones and behind XLA's dot: matmul='auto' runs only the handler's own few-row loops; "
            "unset the variable for OpenBLAS's AVX-512 kernels")


def openblas_core() -> str:
    """The kernel set ("core") of the OpenBLAS the handler calls, as that library reports it."""
    library = ctypes.CDLL(str(_library_path()))
    library.scipy_openblas_get_corename.restype = ctypes.c_char_p
    return library.scipy_openblas_get_corename().decode()


@functools.cache
def registration_error() -> str | None:
    """Builds and registers the handler once per process; None when ready, else why not."""
    try:
        library = ctypes.cdll.LoadLibrary(str(build.shared_library(_SOURCE, _openblas_flags())))
        handler, many = library.AtomsearchSgemm, library.AtomsearchFewRowsMany
    except (OSError, build.BuildError, AttributeError) as e:
        return str(e)
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    jax.ffi.register_ffi_target(_MANY_TARGET, jax.ffi.pycapsule(many), platform="cpu")
    if (warning := core_type_warning()) is not None:
        logging.warning("blas_matmul: %s", warning)
    return None


def available() -> bool:
    """True when the handler is built and registered (building it on the first call)."""
    return registration_error() is None


@functools.cache
def _warn_unavailable() -> None:
    logging.warning("blas_matmul: OpenBLAS handler unavailable, using XLA's dot: %s", registration_error())


def uses_blas(x_dtype, w_dtype, policy: str = "auto", *, rows: int | None = None, transposed: bool = False,
              weight_elements: int | None = None) -> bool:
    """Whether `matmul` of `rows` flattened rows with a weight of `weight_elements` (None: any) of these
    dtypes, w read transposed or not, runs the OpenBLAS handler under `policy`."""
    check_policy(policy)
    if policy == "xla":
        return False
    eligible = jnp.dtype(x_dtype) == jnp.float32 and jnp.dtype(w_dtype) == jnp.float32
    if policy == "blas":
        if not eligible:
            raise ValueError(f"matmul policy 'blas' needs float32 operands, got {x_dtype} and {w_dtype}")
        if jax.default_backend() != "cpu":
            raise RuntimeError(f"matmul policy 'blas' needs XLA:CPU, this process runs {jax.default_backend()}")
        if not available():
            raise RuntimeError(f"matmul policy 'blas': the OpenBLAS handler is unavailable: {registration_error()}")
        return True
    if not eligible or jax.default_backend() != "cpu" or jax.device_count() != 1:
        return False
    if rows is not None and rows < MIN_ROWS[transposed]:
        return False
    if weight_elements is not None and weight_elements < MIN_WEIGHT_ELEMENTS:
        return False
    own_loop = rows is not None and rows <= SKINNY_MAX_ROWS and has_few_row_loop(transposed)
    if not own_loop and core_type_warning() is not None:
        return False
    if not available():
        _warn_unavailable()
        return False
    return True


def _sgemm(a: Array, b: Array, trans_a: bool, trans_b: bool) -> Array:
    """op(a) @ op(b) for 2-D float32 a, b through the handler."""
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32), vmap_method="sequential")
    return call(a, b, trans_a=trans_a, trans_b=trans_b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _blas_matmul(x: Array, w: Array, transposed: bool) -> Array:
    return _sgemm(x, w, False, transposed)


def _blas_matmul_fwd(x: Array, w: Array, transposed: bool):
    return _sgemm(x, w, False, transposed), (x, w)


def _blas_matmul_bwd(transposed: bool, residuals, dy: Array):
    x, w = residuals
    dx = _sgemm(dy, w, False, not transposed)  # dy [M, N] @ w^T (w [K, N]) or @ w (w [N, K])
    dw = _sgemm(dy, x, True, False) if transposed else _sgemm(x, dy, True, False)  # [N, K] or [K, N]
    return dx, dw


_blas_matmul.defvjp(_blas_matmul_fwd, _blas_matmul_bwd)


def matmul(x: Array, w: Array, *, transposed: bool = False, policy: str = "auto") -> Array:
    """x [..., K] @ w for w [K, N], or x @ w.T for w [N, K] with transposed=True. Returns [..., N].

    The leading dims of x are flattened into the rows of one product. See the module docstring for
    `policy`.
    """
    if x.ndim < 1 or w.ndim != 2:
        raise ValueError(f"matmul: x must have a contracting last dim and w must be 2-D; got {x.shape}, {w.shape}")
    k = x.shape[-1]
    if (w.shape[1] if transposed else w.shape[0]) != k:
        raise ValueError(f"matmul: x {x.shape} and w {w.shape} (transposed={transposed}) do not contract")
    rows = math.prod(x.shape[:-1])
    if not uses_blas(x.dtype, w.dtype, policy, rows=rows, transposed=transposed, weight_elements=w.size):
        return jnp.matmul(x, w.T if transposed else w)
    y = _blas_matmul(x.reshape(rows, k), w, transposed)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def groups_few_rows(x_dtype, w_dtype, policy: str = "auto", *, rows: int, weight_elements: int) -> bool:
    """Whether `few_row_products` should run `rows` rows against weights of `weight_elements` elements in all
    (stored [K, N]): `uses_blas` would take the handler for one such weight, and the rows fit its few-row
    loop (built here)."""
    return (1 <= rows <= SKINNY_MAX_ROWS and has_few_row_loop(False)
            and uses_blas(x_dtype, w_dtype, policy, rows=rows, weight_elements=weight_elements))


def _few_rows_many(x: Array, ws: tuple[Array, ...]) -> tuple[Array, ...]:
    call = jax.ffi.ffi_call(_MANY_TARGET, tuple(jax.ShapeDtypeStruct((x.shape[0], w.shape[1]), jnp.float32)
                                                for w in ws), vmap_method="sequential")
    return tuple(call(x, *ws))


@jax.custom_vjp
def _grouped(x: Array, ws: tuple[Array, ...]) -> tuple[Array, ...]:
    return _few_rows_many(x, ws)


def _grouped_fwd(x: Array, ws: tuple[Array, ...]):
    return _few_rows_many(x, ws), (x, ws)


def _grouped_bwd(residuals, dys: tuple[Array, ...]):
    x, ws = residuals
    dx = sum(_sgemm(dy, w, False, True) for dy, w in zip(dys, ws))
    return dx, tuple(_sgemm(x, dy, True, False) for dy in dys)


_grouped.defvjp(_grouped_fwd, _grouped_bwd)


def few_row_products(x: Array, ws: tuple[Array, ...]) -> tuple[Array, ...]:
    """(x @ w for w in ws) for x [..., K] of at most SKINNY_MAX_ROWS flattened rows and float32 weights
    [K, N_i], in one handler call (see `groups_few_rows`). Returns [..., N_i] each."""
    k = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    if not ws or any(w.ndim != 2 or w.shape[0] != k for w in ws):
        raise ValueError(f"few_row_products: x {x.shape} and weights {[w.shape for w in ws]} do not contract")
    if not 1 <= rows <= SKINNY_MAX_ROWS:
        raise ValueError(f"few_row_products: {rows} rows; the handler's loop takes 1-{SKINNY_MAX_ROWS}")
    if not available():
        raise RuntimeError(f"few_row_products: the handler is unavailable: {registration_error()}")
    ys = _grouped(x.reshape(rows, k), tuple(ws))
    return tuple(y.reshape(*x.shape[:-1], y.shape[-1]) for y in ys)
