"""How much of a GRPO update's gradient is signal: cosines between the policy gradients of independent
rollout batches of one fixed policy (an SFT checkpoint of the default job; no update is applied).

    python scripts/grpo_gradient_snr.py SFT_CHECKPOINTS STEP BATCHES [config.key=value ...]

Draws BATCHES rollout batches of the default's GRPO prompts (rl.prompts_per_step x rl.group_size, the job's
sampler, rewards and advantages), computes each batch's GRPO loss gradient g_k at the SFT policy, and
prints, over all pairs of batches, the mean cosine cos(g_j, g_k), for all parameters and split into the
token embedding and the transformer body. Two independent estimates of a gradient with mean mu and
per-batch noise variance s2 have E[cos] ~ |mu|^2 / (|mu|^2 + s2), so a mean cosine c says the batch holds
about c / (1 - c) times as much signal as noise, and a batch 1/c - 1 times as large would reach
cosine 0.5. Prints:

    RESULT grpo_gradient_snr batches=<k> rows=<rows> cos_all=<c> cos_all_pairs=[<min>,<max>] cos_all_sd=<sd>
        cos_embed=<c> cos_body=<c> norm=<|g|>
        f1=<mean rollout F1> contrast=<outcome-contrast groups share>
"""
from __future__ import annotations

import itertools
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def main(checkpoints: str, step: int, batches: int, overrides: list[str]) -> None:
    import jax
    import optax
    from tune_grpo import restored_job
    from tune_sft import default_config

    from atomsearch_jax import train
    from atomsearch_jax.agent.trajectory import training_batch
    from atomsearch_jax.parallel.rules import path_str
    from atomsearch_jax.rl import GRPOTrainer
    from atomsearch_jax.rl.advantages import informative_rows
    from atomsearch_jax.rl.update import grpo_update
    from atomsearch_jax.training.batching import shard_batch
    from atomsearch_jax.training.train_state import create_train_state

    config = default_config(overrides)
    config.workdir = tempfile.mkdtemp(prefix="grpo_snr_")
    env, mesh, model_config, params, writer, engine, runner = restored_job(config, checkpoints, step)
    cfg = config.rl
    trainer = GRPOTrainer(model_config, params, cfg, mesh=mesh)
    manager = train.make_reward_manager(cfg, env)
    iterator = train.pipeline_iterator(train.prompt_pipeline(config, env))
    # Plain SGD at rate 1 without clipping: the state's parameter change is minus the gradient.
    sgd = optax.sgd(1.0)
    gradient_of = jax.jit(lambda state, batch, controls: grpo_update(
        state, batch, None, controls, model_config=trainer.model_config, settings=trainer.settings, optimizer=sgd,
        mesh=mesh)[0].params)
    flat_params = {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}
    grads, f1s, contrast = [], [], []
    for k in range(batches):
        records = next(iterator)
        trajectories = runner.run(records, n=cfg.group_size, seed=config.seed * 1_000_003 + k)
        rewards, components = manager.score(trajectories, 0)
        arrays, _ = trainer.prepare_batch(training_batch(trajectories, rewards, widths=cfg.update_widths))
        device_batch = shard_batch(arrays, trainer.layout(arrays["tokens"].shape[0]), mesh)
        state = create_train_state(params, sgd, 0)
        moved = gradient_of(state, device_batch, trainer.controls())
        grads.append({path_str(p): flat_params[path_str(p)] - np.asarray(v)
                      for p, v in jax.tree_util.tree_leaves_with_path(moved)})
        f1s.append(float(np.mean(components["f1"])))
        contrast.append(float(np.mean(informative_rows(np.asarray(components["f1"]), cfg.group_size))))
        print(f"batch {k}: f1 {f1s[-1]:.3f}, |g| {np.sqrt(sum(np.sum(g ** 2) for g in grads[-1].values())):.4g}",
              flush=True)

    def vector(g: dict, select) -> np.ndarray:
        return np.concatenate([v.ravel() for name, v in sorted(g.items()) if select(name)])

    parts = {"all": lambda n: True, "embed": lambda n: n.startswith("embed/"),
             "body": lambda n: not n.startswith("embed/")}
    pair_cos = {name: [_cosine(vector(a, sel), vector(b, sel)) for a, b in itertools.combinations(grads, 2)]
                for name, sel in parts.items()}
    cos = {name: np.mean(values) for name, values in pair_cos.items()}
    norm = np.mean([np.linalg.norm(vector(g, parts["all"])) for g in grads])
    print(f"RESULT grpo_gradient_snr batches={batches} rows={cfg.prompts_per_step * cfg.group_size} "
          f"cos_all={cos['all']:.4f} cos_all_pairs=[{min(pair_cos['all']):.3f},{max(pair_cos['all']):.3f}] "
          f"cos_all_sd={np.std(pair_cos['all']):.3f} cos_embed={cos['embed']:.4f} cos_body={cos['body']:.4f} norm={norm:.4g} "
          f"f1={np.mean(f1s):.3f} contrast={np.mean(contrast):.3f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
