"""The default job's sampler and updates on one XLA:CPU device against several (config.cpu_devices).

    python scripts/bench_cpu_devices.py [--devices=1,2] [--repeats=5] [--rows=64 --prompt_len=250 --steps=144]

The device count is fixed when JAX starts, so every side runs in its own process (this script with
--worker): it builds the default job's model (configs/default.py's shape, vocabulary 2048, random float32
weights) on a mesh over all its devices, runs each phase once untimed (compilation, warm-up), then times it
`--inner` times and reports the median:

- decode: `rows` distinct prompts of `prompt_len` tokens, `steps` greedy decode steps in one segment (ms per
  step; the default's GRPO batch is 64 rows, its evaluation batches 128);
- grpo_update: one GRPO update of 64 rows padded to 512 (the default's usual update width), micro-batch 2;
- sft_step: one SFT step of 8 rows at each of the default's bucket widths 304 and 672 (summed), micro-batch 2.

Rounds: bench_util.alternate over the sides (one process per side per round, the order rotating), medians
and min-max over `repeats` rounds. Decoded tokens are compared between sides (greedy, same weights): the
share of rows whose tokens are identical is printed. Last line:

    RESULT cpu_devices decode_speedup=<1 device / most> grpo_update_speedup=<..> sft_step_speedup=<..>
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_util  # noqa: E402

_DEVICES = flags.DEFINE_list("devices", ["1", "2"], "XLA:CPU device counts to compare (one process each).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Alternated rounds (one process per side per round).")
_INNER = flags.DEFINE_integer("inner", 3, "Timed runs per phase inside a worker (their median is reported).")
_ROWS = flags.DEFINE_integer("rows", 64, "Decode rows.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 250, "Decode prompt tokens per row.")
_STEPS = flags.DEFINE_integer("steps", 144, "Greedy decode steps (one segment).")
_WORKER = flags.DEFINE_integer("worker", 0, "Internal: run the phases on this many CPU devices, print JSON.")

PHASES = ("decode", "grpo_update", "sft_step")


def _median_seconds(timed, inner: int) -> float:
    """The median of `inner` calls of timed() (each returns its seconds), after one untimed call (compile, warm-up)."""
    timed()
    return float(np.median([timed() for _ in range(inner)]))


def worker(devices: int) -> dict:
    """Times every phase on `devices` CPU devices (this process); returns seconds and the decoded tokens' digests."""
    import jax

    from atomsearch_jax.parallel.cpu_devices import use_cpu_devices

    use_cpu_devices(devices)
    import configs.default as default_config

    from atomsearch_jax.generate.engine import Engine
    from atomsearch_jax.generate.sampling import sampling_arrays
    from atomsearch_jax.model import init_params
    from atomsearch_jax.parallel import make_mesh
    from atomsearch_jax.rl import GRPOTrainer
    from atomsearch_jax.sft import SFTTrainer

    assert jax.device_count() == devices, (jax.device_count(), devices)
    config = default_config.get_config()
    model = bench_util.default_job_model(tie_word_embeddings=config.model.tie_word_embeddings)
    mesh = make_mesh(**config.mesh.to_dict())
    params = init_params(model, jax.random.key(0))
    out: dict = {}

    rng = np.random.RandomState(0)
    prompts = [rng.randint(3, model.vocab_size, size=_PROMPT_LEN.value).tolist() for _ in range(_ROWS.value)]
    engine = Engine(model, params, max_len=config.model.max_len, eos_ids=(), mesh=mesh)
    sampling = sampling_arrays(engine.row_count(_ROWS.value), temperature=0.0)
    decoded = {}

    def decode() -> float:
        state = engine.start(prompts, max_new_tokens=_STEPS.value)
        jax.block_until_ready(state.lengths)
        start = time.perf_counter()  # the decode loop alone, not the prefill
        _, view = engine.decode(state, max_steps=_STEPS.value, sampling=sampling)
        seconds = time.perf_counter() - start
        decoded["tokens"] = view.tokens[: _ROWS.value, _PROMPT_LEN.value: _PROMPT_LEN.value + _STEPS.value]
        return seconds

    out["decode"] = _median_seconds(decode, _INNER.value)
    out["decode_digests"] = [hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest()[:12]
                             for r in decoded["tokens"]]

    def trainer(cls, stage):
        cfg = copy.deepcopy(stage)
        cfg.checkpoint.directory = ""
        cfg.train_step.micro_batch_size = 2
        return cls(model, params, cfg, mesh=mesh)

    grpo = trainer(GRPOTrainer, config.rl)
    batch = bench_util.update_batch(64, 512, model.vocab_size)
    out["grpo_update"] = _median_seconds(bench_util.wall(lambda: grpo.update(batch)), _INNER.value)
    sft = trainer(SFTTrainer, config.sft)
    batches = [bench_util.sft_batch(config.sft.batch_size, w, model.vocab_size, seed=i)
               for i, w in enumerate((304, 672))]
    out["sft_step"] = _median_seconds(bench_util.wall(lambda: [sft.update(b) for b in batches]),
                                      _INNER.value)
    return out


def _ms_per_step(t: bench_util.Timing, per_step: float) -> str:
    low, high = min(t.times), max(t.times)
    return f"{per_step * t.median:.2f} ({per_step * low:.2f}-{per_step * high:.2f})"


def side(devices: int, digests: dict):
    def run() -> dict[str, float]:
        cmd = [sys.executable, os.path.abspath(__file__), f"--worker={devices}", f"--inner={_INNER.value}",
               f"--rows={_ROWS.value}", f"--prompt_len={_PROMPT_LEN.value}", f"--steps={_STEPS.value}"]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        env.pop("XLA_FLAGS", None)  # the device count is the worker's to set
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("WORKER ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"worker --worker={devices} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        result = json.loads(lines[-1][len("WORKER "):])
        digests[devices] = result.pop("decode_digests")
        return result

    return run


def main(argv) -> None:
    del argv
    if _WORKER.value:
        print("WORKER " + json.dumps(worker(_WORKER.value)), flush=True)
        return
    counts = [int(d) for d in _DEVICES.value]
    print(bench_util.probe_machine().line(), flush=True)
    digests: dict[int, list[str]] = {}
    timings = bench_util.alternate({f"{n} device(s)": side(n, digests) for n in counts}, repeats=_REPEATS.value,
                                   warmup=0)
    base = f"{counts[0]} device(s)"
    print(f"default model (4 layers, hidden 128, vocab 2048), float32; decode: {_ROWS.value} rows x "
          f"{_PROMPT_LEN.value}-token prompts, {_STEPS.value} greedy steps (the loop alone, ms per step); "
          f"GRPO update 64 x 512; SFT step 8 rows at 304 + 672; each worker: warm-up then median of {_INNER.value}; "
          f"{_REPEATS.value} alternated rounds, medians (min-max)")
    per_step = 1e3 / _STEPS.value
    rows = [[name, _ms_per_step(t["decode"], per_step), t["grpo_update"].spread(), t["sft_step"].spread()]
            for name, t in timings.items()]
    bench_util.print_table(["devices", "decode ms/step", "GRPO update", "SFT step (304 + 672)"], rows)
    for n in counts[1:]:
        same = sum(a == b for a, b in zip(digests[counts[0]], digests[n]))
        print(f"decoded rows identical to {counts[0]} device(s): {same}/{len(digests[n])} with {n} device(s)")
    last = f"{counts[-1]} device(s)"
    print(f"load average at the end {bench_util.load_average()}")
    print("RESULT cpu_devices " + " ".join(
        f"{phase}_speedup={bench_util.speedup(timings[last][phase], timings[base][phase]):.2f}" for phase in PHASES))


if __name__ == "__main__":
    app.run(main)
