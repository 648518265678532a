"""Code-interpreter cost: one sandboxed execution against a bare `python -I -c` subprocess (the peer: what a
tool without isolation pays), and concurrent throughput of the pool.

    python scripts/bench_code_interpreter.py [--repeats 5 --calls 16 --workers 16]

Each repeat alternates the two sides (a warm-up run of each first): `--calls` sequential executions of a
small program (`print(sum(i * i for i in range(10000)))`) bare, then sandboxed; then `--calls` * 4
executions submitted at once to a `CodeInterpreter` with `--workers` threads. Medians over repeats.
Last line: RESULT code_interpreter bare_ms=… sandbox_ms=… overhead_ms=… pool_exec_s=… isolation=…
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import print_table  # noqa: E402

from atomsearch_jax.tools import CodeInterpreter, Limits, execute, probe  # noqa: E402

CODE = "print(sum(i * i for i in range(10000)))"
EXPECTED = f"{sum(i * i for i in range(10000))}\n"


def bare(calls: int) -> float:
    """Seconds per call of an unisolated `python -I -c` subprocess."""
    t0 = time.perf_counter()
    for _ in range(calls):
        # A session of its own, as the sandboxed process has: with scheduler autogroups a new session gets
        # its own CPU share, which on a loaded machine matters more than anything measured here.
        out = subprocess.run([sys.executable, "-I", "-c", CODE], capture_output=True, text=True, check=True,
                             start_new_session=True).stdout
        assert out == EXPECTED
    return (time.perf_counter() - t0) / calls


def sandboxed(calls: int) -> float:
    """Seconds per call of `execute` (sequential)."""
    t0 = time.perf_counter()
    for _ in range(calls):
        result = execute(CODE, timeout_s=30)
        assert result.error is None and result.stdout == EXPECTED, result
    return (time.perf_counter() - t0) / calls


def pooled(interpreter: CodeInterpreter, calls: int) -> float:
    """Executions per second with every call submitted at once."""
    t0 = time.perf_counter()
    results = interpreter.run_many([CODE] * calls)
    assert all(r.error is None and r.stdout == EXPECTED for r in results)
    return calls / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=16)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    iso = probe()
    print(f"isolation: {iso.describe()}; load average {os.getloadavg()[0]:.1f}")
    bare(2), sandboxed(2)  # warm-up (page cache, probe)
    bare_s, sandbox_s, pool_rate = [], [], []
    with CodeInterpreter(Limits(timeout_s=60), max_workers=args.workers) as interpreter:
        pooled(interpreter, args.workers)
        for _ in range(args.repeats):
            bare_s.append(bare(args.calls))
            sandbox_s.append(sandboxed(args.calls))
            pool_rate.append(pooled(interpreter, args.calls * 4))
    b, s, p = statistics.median(bare_s), statistics.median(sandbox_s), statistics.median(pool_rate)
    print_table(["what", "median", "min", "max"], [
        ["bare python -I -c, ms/call", b * 1e3, min(bare_s) * 1e3, max(bare_s) * 1e3],
        ["sandboxed execute, ms/call", s * 1e3, min(sandbox_s) * 1e3, max(sandbox_s) * 1e3],
        [f"pool of {args.workers}, executions/s", p, min(pool_rate), max(pool_rate)],
    ])
    print(f"RESULT code_interpreter bare_ms={b * 1e3:.1f} sandbox_ms={s * 1e3:.1f} overhead_ms={(s - b) * 1e3:.1f} "
          f"pool_exec_s={p:.1f} isolation={iso.mode}")


if __name__ == "__main__":
    main()
