"""Training-step time of the default job's model per attention kernel, at its SFT and GRPO widths.

    python scripts/bench_sft_attention.py [--rows 16 --widths 640,704 --repeats 5]

The default config's model (4 layers, hidden 128, vocabulary 2048, random float32 weights); one forward and
backward of the token log-probabilities (the SFT / GRPO loss path, `training.logprobs.token_logprobs`) over
`rows` full rows of each width. Sides: attention="reference" (causal query chunks,
`model.attention.CAUSAL_QUERY_CHUNKS`), "reference" over one whole [T, S] square (the kernel before the
chunks), "blockwise" (the key-block scan) and "cpu_flash" (the C++ handlers of kernels/flash_attention.cc,
what "auto" takes on CPU from attention.CPU_FLASH_MIN_QUERIES queries). Gradients must agree (rtol
1e-3), else the run exits 1. Timing: bench_util.alternate (warm-up on each side, --repeats alternated
rounds, medians). Last line (the widest width; ratios of the other sides' medians to the chunked one's):
RESULT sft_attention width=W reference_ms=… square_ms=… blockwise_ms=… cpu_flash_ms=… ratio=… square_ratio=…
flash_ratio=…  (flash_ratio = reference / cpu_flash)
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import alternate, default_job_model, load_average, print_table, probe_machine, speedup, wall  # noqa: E402

from atomsearch_jax.model import init_params  # noqa: E402
from atomsearch_jax.training.logprobs import token_logprobs  # noqa: E402

from atomsearch_jax.model import attention  # noqa: E402

SIDES = {"reference": ("reference", attention.CAUSAL_QUERY_CHUNKS), "square": ("reference", 1),
         "blockwise": ("blockwise", attention.CAUSAL_QUERY_CHUNKS),
         "cpu_flash": ("cpu_flash", attention.CAUSAL_QUERY_CHUNKS)}


def step_fn(side: str, tokens: jax.Array):
    """jit(grad of the mean token log-prob) for the default model with this side's attention kernel."""
    kernel, attention.CAUSAL_QUERY_CHUNKS = SIDES[side]   # read when the step is traced (first call)
    cfg = default_job_model(attention=kernel, attention_block=512)
    rows, width = tokens.shape
    mask = jnp.ones((rows, width), bool)
    positions = jnp.broadcast_to(jnp.arange(width), (rows, width))

    def loss(params):
        logp, _ = token_logprobs(cfg, params, tokens, attention_mask=mask, positions=positions, chunk=256,
                                 with_entropy=False)
        return -logp.mean()

    return jax.jit(jax.grad(loss)), init_params(cfg, jax.random.PRNGKey(0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--widths", default="640,704")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    probe = probe_machine()
    print(probe.line(), flush=True)
    print(f"default model (4 layers, hidden 128, vocab 2048), float32, forward + backward of token log-probs, "
          f"{args.rows} rows per width; {args.repeats} alternated repeats")
    rows, last = [], None
    for width in (int(w) for w in args.widths.split(",")):
        tokens = jnp.asarray(np.random.RandomState(width).randint(3, 2048, (args.rows, width)))
        fns, grads = {}, {}
        for side in SIDES:   # traced one after the other: each with its own chunk setting
            fns[side] = step_fn(side, tokens)
            grads[side] = fns[side][0](fns[side][1])
        for side in ("square", "blockwise", "cpu_flash"):
            for a, b in zip(jax.tree_util.tree_leaves(grads["reference"]), jax.tree_util.tree_leaves(grads[side])):
                if not np.allclose(a, b, rtol=1e-3, atol=1e-6):
                    print(f"FAIL: gradients of {side} differ from the chunked reference at width {width}", flush=True)
                    sys.exit(1)
        timings = alternate({k: wall(lambda fn=fn, p=params: jax.block_until_ready(fn(p)))
                             for k, (fn, params) in fns.items()}, repeats=args.repeats)
        for k in SIDES:
            times = sorted(1e3 * t for t in timings[k]["s"].times)
            rows.append([width, k, f"{1e3 * timings[k]['s'].median:.0f} ({times[0]:.0f}-{times[-1]:.0f})"])
        last = (width, timings)
    print_table(["width", "attention", "ms per step, median (min-max)"], rows)
    print(f"reference = {SIDES['reference'][1]} causal query chunks (rows of >= {attention.MIN_CHUNKED_QUERIES}); "
          "square = the reference kernel over the whole [T, S] square")
    print(f"load average at the end {load_average()}")
    width, timings = last
    ms = {k: f"{1e3 * timings[k]['s'].median:.0f}" for k in SIDES}
    print(f"RESULT sft_attention width={width} reference_ms={ms['reference']} square_ms={ms['square']} "
          f"blockwise_ms={ms['blockwise']} cpu_flash_ms={ms['cpu_flash']} "
          f"ratio={speedup(timings['reference']['s'], timings['blockwise']['s']):.2f} "
          f"square_ratio={speedup(timings['reference']['s'], timings['square']['s']):.2f} "
          f"flash_ratio={speedup(timings['cpu_flash']['s'], timings['reference']['s']):.2f}")


if __name__ == "__main__":
    main()
