"""GRPO settings tuned on the validation split only, from an existing SFT checkpoint (held-out never read).

    python scripts/tune_grpo.py SFT_CHECKPOINTS STEP WORKDIR [config.key=value ...]

Builds the default job's environment (configs/default.py with the overrides, as scripts/tune_sft.py takes
them), restores the SFT checkpoint SFT_CHECKPOINTS/<STEP> (e.g. DIR/checkpoints/sft of a tune_sft.py run
with the same model overrides), evaluates it greedily on the validation questions, runs the job's GRPO
stage (validation every config.eval.every updates, as the job does) and evaluates again. Prints:

    RESULT tune_grpo stage=sft val_f1 <f1> em <em> fmt <format valid>
    RESULT tune_grpo stage=update<k> val_f1 <f1> em <em> fmt <format valid>     (every eval.every updates)
    RESULT tune_grpo stage=grpo val_f1 <f1> em <em> fmt <format valid> seconds <wall>

Per-update rollout metrics go to WORKDIR/logs/metrics.jsonl (rl/reward/*, rl/rollout/*).
"""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


def _print(stage: str, result: dict, extra: str = "") -> None:
    print(f"RESULT tune_grpo stage={stage} val_f1 {result['f1']:.3f} em {result['em']:.3f} "
          f"fmt {result['format_ok']:.3f}{extra}", flush=True)


def restored_job(config, checkpoints: str, step: int):
    """The default job's parts (`train.build_job` in config.workdir) with the policy of the SFT checkpoint
    CHECKPOINTS/<step> in place of the fresh params, also in the sampling engine."""
    from atomsearch_jax import train
    from atomsearch_jax.sft import SFTTrainer

    config.sft.checkpoint.directory = checkpoints
    job = train.build_job(config, config.workdir)
    trainer = SFTTrainer(job.model_config, job.params, config.sft, mesh=job.mesh)
    if trainer.restore(step) is None:
        sys.exit(f"no SFT checkpoint at step {step} in {checkpoints}")
    params = trainer.params
    trainer.close()
    job.engine.set_params(params)
    return job._replace(params=params)


def main(checkpoints: str, step: int, workdir: str, overrides: list[str]) -> None:
    from tune_sft import default_config

    from atomsearch_jax import report, train

    started = time.time()
    config = default_config(overrides)
    config.workdir = workdir
    config.eval.initial = False
    os.makedirs(workdir, exist_ok=True)
    env, mesh, model_config, params, writer, engine, runner = restored_job(config, checkpoints, step)
    clock = report.PhaseClock()
    _print("sft", train.run_eval(runner, env.eval_records, config, writer, 0, "validation after SFT", clock))
    train.run_grpo(config, env, model_config, params, mesh, writer, runner, clock)
    with open(os.path.join(workdir, "logs", "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if "eval/f1" in row and 0 < row["step"] < config.rl.steps:
                _print(f"update{row['step']}", {k: row[f"eval/{k}"] for k in ("f1", "em", "format_ok")})
    final = train.run_eval(runner, env.eval_records, config, writer, config.rl.steps, "validation after GRPO", clock)
    _print("grpo", final, f" seconds {time.time() - started:.0f}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:])
