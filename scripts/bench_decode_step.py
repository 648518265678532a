"""Decode-step time of the default job's model at its evaluation shape, per attention kernel.

    python scripts/bench_decode_step.py [--rows 128 --prompt_len 370 --steps 144 --repeats 5]

The default config's model (4 layers, hidden 128, vocabulary 2048, random float32 weights) in an Engine of
max_len 704, `rows` distinct prompts of `prompt_len` tokens, `steps` greedy decode steps in one segment
(the cache window is then 704 slots, wider than the 512-slot key block). Sides: attention="auto" (the
reference kernel when decoding) and attention="blockwise" (what "auto" chose for windows wider than one key
block before). Both must produce the same tokens, else the run exits 1. Timing: bench_util.alternate
(warm-up on each side, --repeats alternated rounds, medians). Last line:
RESULT decode_step auto_ms=… blockwise_ms=… ratio=…   (per decode step; ratio = blockwise / auto)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import alternate, default_job_model, load_average, print_table, probe_machine, speedup  # noqa: E402

from atomsearch_jax.generate.engine import Engine  # noqa: E402
from atomsearch_jax.generate.sampling import sampling_arrays  # noqa: E402
from atomsearch_jax.model import init_params  # noqa: E402

MAX_LEN = 704


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--prompt_len", type=int, default=370)
    ap.add_argument("--steps", type=int, default=144)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    probe = probe_machine()
    print(probe.line(), flush=True)
    rng = np.random.RandomState(0)
    prompts = [rng.randint(3, 2048, size=args.prompt_len).tolist() for _ in range(args.rows)]
    sampling = sampling_arrays(args.rows, temperature=0.0)
    engines, tokens = {}, {}
    for kernel in ("auto", "blockwise"):
        cfg = default_job_model(attention=kernel, attention_block=512)
        engines[kernel] = Engine(cfg, init_params(cfg, jax.random.PRNGKey(0)), max_len=MAX_LEN, eos_ids=())

    def side(kernel: str):
        engine = engines[kernel]

        def run() -> dict[str, float]:
            state = engine.start(prompts, max_new_tokens=args.steps)
            jax.block_until_ready(state.lengths)
            start = time.perf_counter()
            state, view = engine.decode(state, max_steps=args.steps, sampling=sampling)
            seconds = time.perf_counter() - start
            tokens[kernel] = view.tokens[:, args.prompt_len: args.prompt_len + args.steps].copy()
            return {"step": seconds / args.steps}

        return run

    timings = alternate({k: side(k) for k in engines}, repeats=args.repeats)
    if not np.array_equal(tokens["auto"], tokens["blockwise"]):
        print("FAIL: the two kernels decoded different tokens", flush=True)
        sys.exit(1)
    print(f"default model (4 layers, hidden 128, vocab 2048), float32, {args.rows} rows x {args.prompt_len}-token "
          f"prompts, {args.steps} greedy steps, window {MAX_LEN}; {args.repeats} alternated repeats; tokens equal")

    def ms(kernel: str) -> str:
        times = sorted(1e3 * t for t in timings[kernel]["step"].times)
        return f"{1e3 * timings[kernel]['step'].median:.2f} ({times[0]:.2f}-{times[-1]:.2f})"

    print_table(["attention", "ms per decode step, median (min-max)"], [[k, ms(k)] for k in engines])
    auto_ms, block_ms = 1e3 * timings["auto"]["step"].median, 1e3 * timings["blockwise"]["step"].median
    print(f"load average at the end {load_average()}")
    print(f"RESULT decode_step auto_ms={auto_ms:.2f} blockwise_ms={block_ms:.2f} "
          f"ratio={speedup(timings['auto']['step'], timings['blockwise']['step']):.2f}")


if __name__ == "__main__":
    main()
