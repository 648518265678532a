"""What every benchmark shares: one machine probe, one MFU definition, one timing protocol, tables.

Machine probe (`probe_machine`, measured once per run, printed in the header): the float32 matmul rate
(a 2048^3 matmul) and the memory bandwidth (a float32 matrix-vector product over a 512 MB matrix, larger
than any last-level cache), each the better of jitted JAX and numpy over 5 runs, plus the load average.
MFU (`mfu`) = model matmul FLOPs per second / that matmul rate.

Timing protocol (`alternate`): every side (ours and each peer) runs once untimed (compilation, caches,
thread pools), then `repeats` rounds each run every side once, the order rotating each round so that no
side always runs first or last on a machine whose load drifts. A side returns the seconds it measured
(a float, or a dict of named phases); `wall` turns a blocking callable into such a side. Reported: the
median and min-max of each phase; ratios are ratios of medians from the same run.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import resource
import statistics
import sys
import time
from typing import Callable, Mapping

import numpy as np

Side = Callable[[], "float | Mapping[str, float]"]


@dataclasses.dataclass(frozen=True)
class MachineProbe:
    """matmul_flops: float32 FLOP/s; bandwidth: bytes/s; cores: CPU cores of the machine."""

    matmul_flops: float
    bandwidth: float
    cores: int

    def line(self) -> str:
        return (f"machine probe: float32 matmul {self.matmul_flops / 1e9:.1f} GFLOP/s (2048^3), memory bandwidth "
                f"{self.bandwidth / 1e9:.1f} GB/s (matrix-vector, 512 MB), {self.cores} cores, "
                f"load average {load_average()}")


def load_average() -> str:
    """`uptime`'s 1/5/15-minute load averages."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest of `repeats` wall-clock runs of fn() (fn must block until its result is ready)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def probe_machine(repeats: int = 5) -> MachineProbe:
    """Measures the float32 matmul rate and memory bandwidth of this machine now (see module docstring)."""
    import jax
    import jax.numpy as jnp

    n = 2048
    square = np.random.RandomState(0).randn(n, n).astype(np.float32)
    square_j = jnp.asarray(square)
    matmul = jax.jit(lambda x: x @ x)
    matmul(square_j).block_until_ready()
    mm_s = min(best_time(lambda: matmul(square_j).block_until_ready(), repeats),
               best_time(lambda: square @ square, repeats))
    rows, cols = 16384, 8192  # 512 MB of float32
    vec = np.ones((cols,), np.float32)
    mat = np.ones((rows, cols), np.float32)
    mv_s = best_time(lambda: mat @ vec, repeats)
    del mat
    gc.collect()
    mat_j = jnp.ones((rows, cols), jnp.float32)
    matvec = jax.jit(lambda m, v: m @ v)
    matvec(mat_j, vec).block_until_ready()
    mv_s = min(mv_s, best_time(lambda: matvec(mat_j, vec).block_until_ready(), repeats))
    del mat_j
    return MachineProbe(matmul_flops=2 * n ** 3 / mm_s, bandwidth=rows * cols * 4 / mv_s, cores=os.cpu_count() or 1)


def mfu(model_flops: float, seconds: float, probe: MachineProbe) -> float:
    """Model FLOPs utilisation: model_flops / seconds / the probe's float32 matmul rate."""
    return model_flops / seconds / probe.matmul_flops


def forward_flops(cfg, batch: int, seq: int, full_logits: bool) -> float:
    """Matmul FLOPs of one forward of a decoder `cfg` (a ModelConfig) over batch x seq tokens:
    2 * layer params * tokens, causal attention over the full square (what the kernels compute), and the
    LM head over every token (full_logits) or the last one per row."""
    e, d, h = cfg.hidden_size, cfg.dims_per_head, cfg.num_heads
    layer_params = e * d * (h + 2 * cfg.num_kv_heads) + h * d * e + 3 * e * cfg.intermediate_size
    tokens = batch * seq
    attn = 2 * 2 * batch * h * d * seq * seq
    head_tokens = tokens if full_logits else batch
    return cfg.num_layers * (2 * layer_params * tokens + attn) + 2 * e * cfg.vocab_size * head_tokens


def default_job_model(vocab_size: int = 2048, **overrides):
    """The default job's model (configs/default.py's `model` dimensions) as a ModelConfig; the world's
    tokenizer sets the vocabulary at run time (2048 entries at most)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from configs.default import get_config

    from atomsearch_jax.model import ModelConfig

    m = get_config().model
    fields = dict(vocab_size=vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
                  num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
                  rope_theta=m.rope_theta, tie_word_embeddings=False, attention=m.attention,
                  attention_block=m.attention_block)
    return ModelConfig(**{**fields, **overrides})


def dense_products(cfg) -> str:
    """Which kernel runs the model's float32 dense products under cfg.matmul, for the header line."""
    from atomsearch_jax.kernels import blas_matmul

    few = blas_matmul.SKINNY_MAX_ROWS
    built = [t for t in (False, True) if blas_matmul.has_few_row_loop(t)]  # weight read transposed or not
    loops = " and ".join(f"w{'^T' if t else ''} from {blas_matmul.MIN_ROWS[t]} rows" for t in built)
    loops = f"the handler's own loops to {few} rows ({loops})" if loops else ""
    if (cfg.matmul == "auto" and blas_matmul.core_type_warning()
            and blas_matmul.uses_blas(cfg.dtype, cfg.param_dtype, cfg.matmul, rows=few, transposed=True)):
        kernel = (f"XLA dot, but {loops} (OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} forces AVX2 kernels "
                  "on this AVX-512 CPU)")
    elif not blas_matmul.uses_blas(cfg.dtype, cfg.param_dtype, cfg.matmul):
        kernel = "XLA dot"
    elif cfg.matmul == "blas":
        own = " and ".join(f"w{'^T' if t else ''}" for t in built)
        kernel = "OpenBLAS sgemm (FFI) for every product" + (f", its own loops to {few} rows ({own})" if own else "")
    else:
        stored = few + 1 if False in built else blas_matmul.MIN_ROWS[False]
        kernel = f"OpenBLAS sgemm (FFI) from {stored} rows and {blas_matmul.MIN_WEIGHT_ELEMENTS} weight elements"
        if True not in built:
            kernel += f" (a head read transposed from {blas_matmul.MIN_ROWS[True]})"
        kernel += (f", {loops}" if loops else "") + ", XLA dot below"
    if kernel != "XLA dot":
        kernel += f"; OpenBLAS core {blas_matmul.openblas_core()}"
    return f"dense products: {kernel} (matmul={cfg.matmul!r})"


def wall(fn: Callable[[], object]) -> Side:
    """A side timing the whole of fn() (which must block until its result is ready)."""

    def timed() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return timed


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds of one phase of one side over the timed rounds."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def spread(self, scale: float = 1.0, unit: str = "s") -> str:
        """'median (min-max) unit' of scale / seconds (e.g. scale = tokens -> tokens/s) or of seconds."""
        if unit == "s":
            values = sorted(self.times)
        else:
            values = sorted(scale / t for t in self.times)
        med = statistics.median(values)
        return f"{med:.4g} ({values[0]:.4g}-{values[-1]:.4g}) {unit}"


def alternate(sides: Mapping[str, Side], repeats: int = 5, warmup: int = 1) -> dict[str, dict[str, Timing]]:
    """Runs every side `warmup` times untimed, then `repeats` rounds of every side once (the order rotating
    by one each round). Returns {side: {phase: Timing}}; a side returning a float has the phase "s"."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    times: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            result = sides[name]()
            phases = result if isinstance(result, Mapping) else {"s": result}
            for phase, seconds in phases.items():
                times[name].setdefault(phase, []).append(float(seconds))
    return {name: {phase: Timing(tuple(ts)) for phase, ts in by_phase.items()} for name, by_phase in times.items()}


def speedup(ours: Timing, peer: Timing) -> float:
    """How many times faster ours is than peer: the ratio of the peer's median time to ours."""
    return peer.median / ours.median


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def update_batch(rows: int, width: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A GRPO batch of random tokens: rows [0.55, 1] x width long (as the default's rollouts), loss on
    positions from 100 (the prompt before), random rewards."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(0.55 * width), width + 1, rows)
    lengths[0] = width
    loss_mask = (np.arange(width)[None, :] >= 100) & (np.arange(width)[None, :] < lengths[:, None])
    return {"tokens": rng.integers(3, vocab, (rows, width)).astype(np.int32),
            "loss_mask": loss_mask.astype(np.float32), "lengths": lengths.astype(np.int32),
            "sampler_logprobs": np.full((rows, width), -1.0, np.float32),
            "rewards": rng.normal(size=rows).astype(np.float32), "valid": np.ones(rows, bool)}


def sft_batch(rows: int, width: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """An SFT batch of random tokens: rows [0.8, 1] x width long (one length bucket), loss from position 90."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(0.8 * width), width + 1, rows)
    loss_mask = (np.arange(width)[None, :] >= 90) & (np.arange(width)[None, :] < lengths[:, None])
    return {"tokens": rng.integers(3, vocab, (rows, width)).astype(np.int32),
            "loss_mask": loss_mask.astype(np.float32), "lengths": lengths.astype(np.int32)}


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, row in enumerate(cells):
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))
        if j == 0:
            print("-+-".join("-" * w for w in widths))
