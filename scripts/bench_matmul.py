"""The model's float32 dense products: the FFI handler (OpenBLAS sgemm; its own loop for <= 8 rows against a
transposed weight on AVX2 CPUs) vs XLA:CPU's dot.

    python scripts/bench_matmul.py [--rows 1,2,4,8,256,4096 --repeats 7]

Shapes are Qwen2.5-0.5B's (hidden 896, MLP 4864, vocabulary 151936, tied head read as the stored [V, E]
embedding): q/o [896, 896], fused gate/up [896, 9728], down [4864, 896], head [151936, 896]^T, each at
every row count (rows = batch x new tokens: 1-8 in decoding, B x T in prefill and training). Both sides
are jitted `kernels.blas_matmul.matmul` calls (policy "blas" vs "xla") on the same operands; results must
agree (rtol 1e-4) before timing. Up to 64 rows each timed call multiplies by distinct copies of the weight,
256 MB in all, one after another (per-product time = their total / copies), so no weight is re-read from
the CPU's caches. Timing: bench_util.alternate (warm-up both sides, --repeats rounds
alternating), medians; the ratio (XLA time / handler time) is what `ModelConfig.matmul="auto"`'s row
thresholds (`blas_matmul.MIN_ROWS`) are read from. Last line:
RESULT matmul decode_b8_ratio=… train_ratio=…   (geometric means of the ratios over the 8-row and the
>= 256-row products)
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import alternate, load_average, print_table, probe_machine, speedup  # noqa: E402

from atomsearch_jax.kernels import blas_matmul  # noqa: E402

PRODUCTS = {  # name: (K, N, transposed)
    "q/o 896x896": (896, 896, False),
    "gate_up 896x9728": (896, 9728, False),
    "down 4864x896": (4864, 896, False),
    "tied head 896x151936 (w^T)": (896, 151936, True),
}


STREAMED_BYTES = 256 << 20
STREAMED_MAX_ROWS = 64


def _ms(timing) -> str:
    return f"{1e3 * timing.median:.3g} ({1e3 * min(timing.times):.3g}-{1e3 * max(timing.times):.3g})"


def _handler_kernel(rows: int, transposed: bool) -> str:
    own = rows <= blas_matmul.SKINNY_MAX_ROWS and blas_matmul.has_few_row_loop(transposed)
    return "loop" if own else "sgemm"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,2,4,8,256,4096")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if not blas_matmul.available():
        sys.exit(f"OpenBLAS handler unavailable: {blas_matmul.registration_error()}")
    probe = probe_machine()
    print(probe.line(), flush=True)
    print(f"jax {jax.__version__} {jax.devices()}; {args.repeats} alternated rounds; ms, median (min-max)", flush=True)
    rng = np.random.default_rng(0)
    rows_out, ratios = [], {}
    for rows in (int(r) for r in args.rows.split(",")):
        for name, (k, n, transposed) in PRODUCTS.items():
            if transposed and rows > 256:
                continue  # the training head runs in chunks of <= 256 rows (logprob_chunk x batch)
            x = jax.device_put(rng.standard_normal((rows, k), np.float32))
            w = rng.standard_normal((n, k) if transposed else (k, n), np.float32)
            # Few-row products stream their weight: distinct copies, STREAMED_BYTES in all, multiplied in turn,
            # since one weight re-read from a 32 MB L3 would flatter both sides, whereas a model's step reads
            # every weight once from memory. Many-row products are compute-bound: one copy.
            copies = math.ceil(STREAMED_BYTES / w.nbytes) if rows <= STREAMED_MAX_ROWS else 1
            ws = [jax.device_put(w) for _ in range(copies)]
            calls = {policy: jax.jit(lambda x, w, p=policy: blas_matmul.matmul(x, w, transposed=transposed, policy=p))
                     for policy in ("blas", "xla")}
            np.testing.assert_allclose(np.asarray(calls["blas"](x, ws[0])), np.asarray(calls["xla"](x, ws[0])),
                                       rtol=1e-4, atol=1e-3 * math.sqrt(k))

            def per_product(f):
                start = time.perf_counter()
                for w in ws:
                    f(x, w).block_until_ready()
                return (time.perf_counter() - start) / len(ws)

            times = alternate({p: lambda f=f: per_product(f) for p, f in calls.items()}, repeats=args.repeats)
            blas, xla = times["blas"]["s"], times["xla"]["s"]
            ratio = speedup(blas, xla)
            ratios[(rows, name)] = ratio
            rows_out.append([rows, name, _handler_kernel(rows, transposed), _ms(blas), _ms(xla), round(ratio, 2),
                             "handler" if blas_matmul.MIN_ROWS[transposed] <= rows else "XLA"])
            print(f"  {rows} x {name}: ratio {ratio:.2f}", flush=True)
    print_table(["rows", "product", "handler runs", "handler ms", "XLA dot ms", "XLA / handler", "auto takes"],
                rows_out)
    geo = lambda vals: math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else 0.0  # noqa: E731
    decode = geo([r for (m, _), r in ratios.items() if m == 8])
    train = geo([r for (m, _), r in ratios.items() if m >= 256])
    print(f"load average at the end {load_average()}")
    print(f"RESULT matmul decode_b8_ratio={decode:.2f} train_ratio={train:.2f}")


if __name__ == "__main__":
    main()
