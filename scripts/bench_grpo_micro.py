"""The default job's GRPO update and SFT step: seconds by micro-batch size (rows per gradient computation).

    python scripts/bench_grpo_micro.py [--micro=0,16,8,4,2,1] [--width=704] [--rows=64] [--repeats=5]
                                       [--sft_micro=0,4,2,1] [--sft_widths=464,640] [--sft_rows=8]

One update of the default model (configs/default.py's shape, world vocabulary 2048) on `rows` rows padded to
`width`, row lengths spread over [0.55, 1] x width as the default's rollouts (prompt ~100 tokens, the rest
generated or inserted), random token ids (the time does not depend on them). Every micro-batch size is one
trainer (one compile, warmed up), alternated over `repeats` rounds (scripts/bench_util.alternate); medians,
min-max, and the speed-up over the whole batch in one piece (micro 0). The loss and the gradient are the same
for every micro size up to float summation order (tests/test_training_update.py).

    RESULT grpo_micro best_micro=<rows> seconds=<median> whole_batch_seconds=<median> speedup=<x>

Then the same for one SFT step of `sft_rows` rows at each of the default's two bucket widths (rows 80-100% of
the width long; the time of a step is the sum over the widths, as SFT alternates them):

    RESULT sft_micro best_micro=<rows> seconds=<median> whole_batch_seconds=<median> speedup=<x>
"""
from __future__ import annotations

import copy
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_util  # noqa: E402
import configs.default as default_config  # noqa: E402

_MICRO = flags.DEFINE_list("micro", ["0", "16", "8", "4", "2", "1"], "Micro-batch sizes (0 = the whole batch).")
_WIDTH = flags.DEFINE_integer("width", 704, "Padded row width (the default's largest update width).")
_ROWS = flags.DEFINE_integer("rows", 64, "Rows per update (the default: 8 prompts x 8 samples).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds.")
_SFT_MICRO = flags.DEFINE_list("sft_micro", ["0", "4", "2", "1"], "SFT micro-batch sizes (0 = the whole batch).")
_SFT_WIDTHS = flags.DEFINE_list("sft_widths", ["464", "640"], "SFT bucket widths (the default's two).")
_SFT_ROWS = flags.DEFINE_integer("sft_rows", 8, "Rows per SFT step (the default's batch).")


def report(kind: str, timings: dict, whole_name: str, real_tokens: int) -> None:
    whole = timings[whole_name]["s"]
    bench_util.print_table(["micro-batch", "seconds", "real tokens/s", "speed-up vs whole"],
                           [[name, t["s"].spread(), t["s"].spread(real_tokens, "tok/s"),
                             bench_util.speedup(t["s"], whole)] for name, t in timings.items()])
    best = min(timings, key=lambda n: timings[n]["s"].median)
    print(f"RESULT {kind} best_micro={best.split()[1]} seconds={timings[best]['s'].median:.2f} "
          f"whole_batch_seconds={whole.median:.2f} speedup={bench_util.speedup(timings[best]['s'], whole):.2f}")


def micro_sides(trainer_cls, stage_config, sizes: list[str], rows: int, batches: list[dict], model_config, params,
                mesh) -> dict:
    """One warmed-up side per micro-batch size: a trainer of `trainer_cls` updating on every batch in turn."""
    sides = {}
    for micro in (int(m) for m in sizes):
        cfg = copy.deepcopy(stage_config)
        cfg.train_step.micro_batch_size = micro
        cfg.checkpoint.directory = ""
        trainer = trainer_cls(model_config, params, cfg, mesh=mesh)
        sides[f"micro {micro or rows}"] = bench_util.wall(lambda t=trainer: [t.update(b) for b in batches])
    return sides


def time_sft(config, model_config, params, mesh) -> None:
    from atomsearch_jax.sft import SFTTrainer

    batches = [bench_util.sft_batch(_SFT_ROWS.value, int(w), model_config.vocab_size, seed=i)
               for i, w in enumerate(_SFT_WIDTHS.value)]
    sides = micro_sides(SFTTrainer, config.sft, _SFT_MICRO.value, _SFT_ROWS.value, batches, model_config, params, mesh)
    timings = bench_util.alternate(sides, repeats=_REPEATS.value)
    real = int(sum(b["lengths"].sum() for b in batches))
    print(f"SFT steps, {_SFT_ROWS.value} rows at widths {', '.join(_SFT_WIDTHS.value)} (one step each, {real} real "
          f"tokens), {_REPEATS.value} rounds:")
    report("sft_micro", timings, f"micro {_SFT_ROWS.value}", real)


def main(argv) -> None:
    del argv
    import jax

    from atomsearch_jax.model import init_params
    from atomsearch_jax.parallel import make_mesh
    from atomsearch_jax.rl import GRPOTrainer

    print(bench_util.probe_machine().line())
    config = default_config.get_config()
    model_config = bench_util.default_job_model(tie_word_embeddings=config.model.tie_word_embeddings)
    mesh = make_mesh(data=1, fsdp=-1, tensor=1)
    params = init_params(model_config, jax.random.key(0))
    batch = bench_util.update_batch(_ROWS.value, _WIDTH.value, model_config.vocab_size)
    sides = micro_sides(GRPOTrainer, config.rl, _MICRO.value, _ROWS.value, [batch], model_config, params, mesh)
    timings = bench_util.alternate(sides, repeats=_REPEATS.value)
    real = int(batch["lengths"].sum())
    print(f"GRPO update, {_ROWS.value} rows x {_WIDTH.value} ({real} real tokens), {_REPEATS.value} rounds:")
    report("grpo_micro", timings, f"micro {_ROWS.value}", real)
    del sides, timings
    time_sft(config, model_config, params, mesh)


if __name__ == "__main__":
    app.run(main)
