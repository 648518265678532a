"""How the default job's SFT rows are laid out: prompt cost, padding, buckets vs packing, and the time per
real token of an SFT update in each layout.

    python scripts/bench_sft_layout.py [--repeats=5] [--batch=16]

Part 1 (exact counts): teacher-trajectory lengths of the default world behind the published (model.max_len
1024, as the previous default) and the brief (the default's max_len) Atom-Searcher prompts; the share of real tokens when rows are padded to one width, to 2 or 3 length buckets
(`bucket_widths`), or packed first-fit into rows of 1024 (where dense attention also spans unrelated segments:
the share of attention pairs that are within a segment is printed too).
Part 2 (timed): SFT updates of the default model on one-width batches vs bucketed batches of the same rows,
alternated, after a warm-up of every shape; medians of `repeats` rounds, reported per real token.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import app, flags

import configs.default as default_config
from atomsearch_jax.data.length_buckets import BucketedBatches, bucket_widths
from atomsearch_jax.data.sft_examples import pad_rows
from atomsearch_jax.experiment import build_environment, build_model
from atomsearch_jax.parallel import make_mesh
from atomsearch_jax.sft import SFTTrainer
from atomsearch_jax.train import sft_examples

_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds (each: one update per layout, alternated).")
_BATCH = flags.DEFINE_integer("batch", 16, "Rows per SFT batch.")
_TIME = flags.DEFINE_bool("time", True, "Run part 2 (timed updates).")


def examples_for(prompt_version: str, workdir: str, max_len: int | None = None):
    config = default_config.get_config()
    config.data.world_prompt_versions = {"atom_searcher": prompt_version}
    config.model.max_len = max_len or config.model.max_len
    config.workdir = workdir
    env = build_environment(config, workdir)
    return config, env, [v for _, v in sorted(sft_examples(config, env).items())]


def packed_stats(lengths: list[int], row: int) -> tuple[float, float]:
    """(real-token share, within-segment share of causal attention pairs) of first-fit-decreasing packing."""
    rows: list[list[int]] = []
    for n in sorted(lengths, reverse=True):
        for r in rows:
            if sum(r) + n <= row:
                r.append(n)
                break
        else:
            rows.append([n])
    real = sum(lengths) / (len(rows) * row)
    within = sum(n * (n + 1) / 2 for n in lengths) / sum(sum(r) * (sum(r) + 1) / 2 for r in rows)
    return real, within


def main(argv) -> None:
    del argv
    workdir = tempfile.mkdtemp(prefix="bench_sft_layout_")
    print("part 1: teacher trajectories of the default world (tokens per row)")
    for version, max_len in (("atom_searcher_v1", 1024), ("atom_searcher_brief_v1", None)):  # the default's last
        config, env, examples = examples_for(version, os.path.join(workdir, version), max_len)
        lengths = [len(t) for t, _ in examples]
        prompt = len(env.tokenizer.encode(env.fmt.prompt_text(env.train_records[0].question, env.tokenizer)))
        trained = np.mean([m.sum() for _, m in examples])
        one = -(-max(lengths) // 64) * 64
        print(f"  {version}: n {len(lengths)}, mean {np.mean(lengths):.1f}, min {min(lengths)}, max {max(lengths)}, "
              f"prompt {prompt}, trained (loss-mask) tokens {trained:.1f}")
        print(f"    one width {one}: real share {sum(lengths) / (len(lengths) * one):.3f}")
        for k in (2, 3):
            widths = bucket_widths(lengths, k)
            padded = sum(min(w for w in widths if w >= n) for n in lengths)
            print(f"    {k} buckets {widths}: real share {sum(lengths) / padded:.3f}")
        real, within = packed_stats(lengths, 1024)
        print(f"    packed into rows of 1024: real share {real:.3f}, within-segment attention pairs {within:.3f}")
    if not _TIME.value:
        return
    print(f"part 2: SFT update time, brief prompt, batch {_BATCH.value}, medians of {_REPEATS.value} alternated rounds")
    model_config, params = build_model(config, env.tokenizer)
    config.sft.checkpoint.directory = ""
    trainer = SFTTrainer(model_config, params, config.sft, mesh=make_mesh(**config.mesh.to_dict()))
    lengths = [len(t) for t, _ in examples]
    widths = bucket_widths(lengths, config.sft.length_buckets)
    batches = BucketedBatches(lengths, widths, _BATCH.value, seed=0)
    one = -(-max(lengths) // 64) * 64
    layouts = {}
    for step in range(len(widths) * 4):  # one batch per bucket
        rows, width = batches.batch(step)
        layouts.setdefault(width, [examples[i] for i in rows])
    cases = {f"bucket {w}": pad_rows(rows, w) for w, rows in layouts.items()}
    cases |= {f"one width {one} (same rows as bucket {w})": pad_rows(rows, one) for w, rows in layouts.items()}
    for batch in cases.values():  # warm-up: compile every shape
        trainer.update(batch)
    times = {name: [] for name in cases}
    for _ in range(_REPEATS.value):
        for name, batch in cases.items():
            start = time.perf_counter()
            trainer.update(batch)
            times[name].append(time.perf_counter() - start)
    for name, batch in cases.items():
        real = int(batch["lengths"].sum())
        median = float(np.median(times[name]))
        print(f"  {name:<40} {median * 1e3:8.1f} ms/update  {real / median:8.0f} real tokens/s  "
              f"(spread {min(times[name]) * 1e3:.0f}-{max(times[name]) * 1e3:.0f} ms)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    app.run(main)
