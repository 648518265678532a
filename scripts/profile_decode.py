"""Where a decode step's time goes: jax.profiler over a segment of greedy decode steps, per HLO op.

    python scripts/profile_decode.py [--preset qwen2.5-0.5b --batch 8 --prompt 128 --steps 16 --max_len 192]

An Engine of the preset (random float32 weights, matmul="auto", greedy log-probabilities off as in
`evaluate` and bench_generate's "ours" row) prefills `batch` random prompts, decodes one step, then decodes
`steps - 1` more in one segment: timed untraced (--repeats times), then once under jax.profiler. Each trace
event of the compiled decode program is matched to its HLO instruction in XLA's dump of that program
(--xla_dump_to, set by this script before jax starts) and grouped by the instruction's op name with the
layer index removed, so that "layers_N/mlp/gate_up" sums the 24 layers' products. Printed: untraced ms a step
(each repeat), the traced ms a step, then the groups by total ms a step with their calls a step, the median
call in us, the median delay (us) from a call's start to the first XLA pool task that starts during it on
another thread ("-": none started; a pool task that was already running, e.g. few_rows.h's lingering one,
starts none), and the output shape.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time

DUMP = tempfile.mkdtemp(prefix="profile_decode_hlo_")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={DUMP} --xla_dump_hlo_as_text").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import load_average  # noqa: E402

from atomsearch_jax.generate.engine import Engine  # noqa: E402
from atomsearch_jax.generate.sampling import sampling_arrays  # noqa: E402
from atomsearch_jax.model import get_preset, init_params  # noqa: E402

_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%(\S+) = (\(.*?\)|\S+) [\w-]+\(.*op_name=\"([^\"]+)\"")


def hlo_ops(names: set[str]) -> dict[str, tuple[str, str]]:
    """{instruction: (output shape, op name)} from the optimised HLO dump that holds most of `names`."""
    best: dict[str, tuple[str, str]] = {}
    for path in glob.glob(os.path.join(DUMP, "*after_optimizations.txt")):
        ops = {}
        with open(path) as f:
            for line in f:
                m = _INSTRUCTION.match(line)
                if m:
                    ops[m.group(1)] = (m.group(2), m.group(3))
        if len(names & ops.keys()) > len(names & best.keys()):
            best = ops
    return best


def pool_task_starts(events: list[dict]) -> dict[int, np.ndarray]:
    """Sorted start times (us) of XLA pool tasks (ThreadpoolListener regions), by thread."""
    starts = collections.defaultdict(list)
    for e in events:
        if e["name"] == "ThreadpoolListener::StartRegion":
            starts[e["tid"]].append(e["ts"])
    return {tid: np.sort(ts) for tid, ts in starts.items()}


def first_start_inside(starts: dict[int, np.ndarray], event: dict) -> float | None:
    """us from the event's start to the first pool task that starts on another thread during it, if any."""
    begin, end = event["ts"], event["ts"] + event["dur"]
    delays = []
    for tid, ts in starts.items():
        i = np.searchsorted(ts, begin)
        if tid != event["tid"] and i < len(ts) and ts[i] < end:
            delays.append(ts[i] - begin)
    return min(delays) if delays else None


def op_group(op_name: str) -> str:
    """The op name below the decode loop's body, with every layer index replaced by N."""
    return re.sub(r"layers_\d+", "layers_N", op_name.split("while/body/")[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--max_len", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    if args.steps < 2 or args.prompt + args.steps > args.max_len:
        raise SystemExit(f"--steps {args.steps} must be >= 2 and --prompt + --steps <= --max_len {args.max_len}")

    cfg = get_preset(args.preset).replace(matmul="auto")
    engine = Engine(cfg, init_params(cfg, jax.random.PRNGKey(0)), max_len=args.max_len, eos_ids=(),
                    greedy_logprobs=False)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, cfg.vocab_size - 1, args.prompt).tolist() for _ in range(args.batch)]
    greedy = sampling_arrays(engine.row_count(args.batch), temperature=0.0)

    def segment(trace_dir: str | None = None) -> float:
        """ms a step of `steps - 1` decode steps after a first one."""
        state = engine.start(prompts, max_new_tokens=args.steps)
        state, _ = engine.decode(state, max_steps=1, sampling=greedy)
        jax.block_until_ready(state.tokens)
        if trace_dir:
            jax.profiler.start_trace(trace_dir)
        start = time.perf_counter()
        engine.decode(state, max_steps=args.steps - 1, sampling=greedy)  # returns after the host copy
        ms = (time.perf_counter() - start) / (args.steps - 1) * 1e3
        if trace_dir:
            jax.profiler.stop_trace()
        return ms

    segment()
    print(f"{args.preset}, batch {args.batch}, prompt {args.prompt}, cache {args.max_len}: untraced ms a step "
          f"{[round(segment(), 1) for _ in range(args.repeats)]}; load average {load_average()}", flush=True)
    trace_dir = tempfile.mkdtemp(prefix="profile_decode_trace_")
    print(f"traced: {segment(trace_dir):.1f} ms a step")
    trace = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
    with gzip.open(trace) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    ops = hlo_ops({e["name"] for e in events})
    shutil.rmtree(trace_dir, ignore_errors=True)
    shutil.rmtree(DUMP, ignore_errors=True)
    steps = args.steps - 1
    starts = pool_task_starts(events)
    groups: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    late: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for e in events:
        if e["name"] in ops:
            shape, op_name = ops[e["name"]]
            groups[(op_group(op_name), shape)].append(e["dur"])
            delay = first_start_inside(starts, e)
            if delay is not None:
                late[(op_group(op_name), shape)].append(delay)
    rows = sorted(groups.items(), key=lambda kv: -sum(kv[1]))[: args.top]
    print(f"{'ms/step':>8} {'calls/step':>10} {'median us':>9} {'pool start':>10}  op (output shape)")
    for key, durations in rows:
        start = f"{np.median(late[key]):.1f}" if late[key] else "-"
        print(f"{sum(durations) / steps / 1e3:8.3f} {len(durations) / steps:10.1f} {np.median(durations):9.1f} "
              f"{start:>10}  {key[0]} ({key[1]})")


if __name__ == "__main__":
    main()
