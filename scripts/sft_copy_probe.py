"""Does the SFT policy read the question? Teacher-forced accuracy at the plan's first entity.

    python scripts/sft_copy_probe.py WORKDIR STEPS [config.key=value ...]

For the first 48 questions of each probed set of the default job's world (configs/default.py with the
overrides, as scripts/tune_sft.py takes them), the teacher's trajectory is scored by the SFT checkpoints
WORKDIR/checkpoints/sft/<step> for each step of STEPS (comma-separated). The plan's first entity is the
question's start entity: predicting it needs the question (no other text before it names it), so its
greedy accuracy separates reading from recalling the world. Sets: `validation` (start entities never the
start of a training question), `train` (the SFT data's own questions) and, when the overrides set
sft.world_counterfactual_copies, `train_renamed` (their first counterfactual copies, exactly as SFT saw
them). Prints per set and step:

    RESULT copy_probe set=<set> step=<step> plan_entity_acc=<acc> token_acc=<acc over trained tokens> n=48
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

N_QUESTIONS = 48


def probe_rows(env, records, rename=None):
    """(tokens, loss_mask, position of the plan's first entity) per question (renamed by
    `rename(record) -> (record, renamer)` when given)."""
    import numpy as np

    from atomsearch_jax.data.sft_examples import turns_example
    from atomsearch_jax.data.world import TeacherSearchMiss, teacher_turns
    from atomsearch_jax.data.world.counterfactual import rename_turns

    rows = []
    for record in records:
        try:
            turns = teacher_turns(record, env.retriever, topk=3)
        except TeacherSearchMiss:
            continue
        if rename is not None:
            record, renamer = rename(record)
            turns = rename_turns(turns, renamer)
        tokens, mask = turns_example(record.question, turns, env.fmt, env.tokenizer)
        start = env.tokenizer.encode(" " + record.metadata["start"], add_special_tokens=False)[0]
        first_trained = int(np.argmax(mask > 0))
        position = next(i for i in range(first_trained, len(tokens)) if tokens[i] == start)
        rows.append((tokens, mask, position))
        if len(rows) == N_QUESTIONS:
            break
    return rows


def probe_sets(config, env):
    """{set name: rows}; the renamed copies use the trainer's own renaming (train._world_teacher_examples)."""
    import random

    from atomsearch_jax.data.world.counterfactual import EntityRenaming, held_out_starts, rename_record

    sets = {"validation": probe_rows(env, env.eval_records), "train": probe_rows(env, env.train_records)}
    if config.sft.world_counterfactual_copies:
        renaming = EntityRenaming(env.world.graph, keep=held_out_starts(env.world))

        def first_copy(record):
            renamer = renaming.sample(random.Random(f"{config.seed}:{record.id}:0"))
            return rename_record(record, renamer, "cf0"), renamer

        sets["train_renamed"] = probe_rows(env, env.train_records, first_copy)
    return sets


def main(workdir, steps, overrides):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from tune_sft import default_config

    from atomsearch_jax import train
    from atomsearch_jax.model import forward
    from atomsearch_jax.sft import SFTTrainer

    config = default_config(overrides)
    scratch = os.path.join(workdir, "copy_probe")
    config.workdir = scratch
    env, mesh, model_config, params, _, _, _ = train.build_job(config, scratch)
    sets = probe_sets(config, env)
    logits_fn = jax.jit(lambda p, x: forward(model_config, p, x))
    config.sft.checkpoint.directory = os.path.join(workdir, "checkpoints", "sft")
    for step in steps:
        trainer = SFTTrainer(model_config, params, config.sft, mesh=mesh)
        trainer.restore(step)
        for name, rows in sets.items():
            hits, token_acc = 0, []
            for tokens, mask, position in rows:
                logits = logits_fn(trainer.params, jnp.asarray(tokens[None]))
                predicted = np.asarray(jnp.argmax(logits[0], -1))
                hits += int(predicted[position - 1] == tokens[position])
                trained = mask[1:] > 0
                token_acc.append(float((predicted[:-1][trained] == tokens[1:][trained]).mean()))
            print(f"RESULT copy_probe set={name} step={step} plan_entity_acc={hits / len(rows):.3f} "
                  f"token_acc={np.mean(token_acc):.3f} n={len(rows)}", flush=True)
        trainer.close()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3:])
