"""Where the greedy validation trajectories of SFT checkpoints first leave the question's hop chain.

    python scripts/sft_failure_points.py SFT_CHECKPOINTS STEPS [config.key=value ...]

STEPS is comma-separated (e.g. 480,720). The default job's environment (configs/default.py with the
overrides, as scripts/tune_sft.py takes them; the held-out split is never read) is built once; each checkpoint
SFT_CHECKPOINTS/<step> answers the validation questions greedily, and every trajectory is followed along the
question's true hop chain: the plan must name the first hop's entity, then for each hop i the i-th ACTION
thought and the i-th search query must name hop i's head and the i-th OBSERVATION its tail; a trajectory
that passes every hop and answers wrong fails at "answer". Prints per checkpoint:

    RESULT failure_points step=<s> n=<questions> f1=<f1> em=<em> plan_names_entity=<share> right_off_chain=<k>
        first_failure={...}

right_off_chain counts the right answers (EM 1) of trajectories that left the chain (guessed or recalled).
"""
from __future__ import annotations

import collections
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_PLAN = re.compile(r"<PLAN>\n(.*?)\n</PLAN>", re.S)
_ACTION = re.compile(r"<ACTION>\n(.*?)\n</ACTION>", re.S)
_OBSERVATION = re.compile(r"<OBSERVATION>\n(.*?)\n</OBSERVATION>", re.S)
_QUERY = re.compile(r'"query": \["(.*?)"\]')


def first_failure(response: str, chain: list[dict], em: float) -> str:
    """The first step of an Atom-Searcher response that does not follow `chain` (hops {head, tail}), or
    "answer" / "correct" when every step does."""
    plan = _PLAN.search(response)
    if not plan or chain[0]["head"] not in plan.group(1):
        return "plan"
    actions, queries, observations = (p.findall(response) for p in (_ACTION, _QUERY, _OBSERVATION))
    for i, hop in enumerate(chain):
        for name, found, entity in (("action", actions, hop["head"]), ("query", queries, hop["head"]),
                                    ("observation", observations, hop["tail"])):
            if i >= len(found) or entity not in found[i]:
                return f"{name}{i}"
    return "correct" if em >= 1.0 else "answer"


def main(checkpoints: str, steps: list[int], overrides: list[str]) -> None:
    from tune_sft import default_config

    from atomsearch_jax import train
    from atomsearch_jax.evaluation import evaluate_datasets
    from atomsearch_jax.experiment import group_by_source
    from atomsearch_jax.sft import SFTTrainer

    config = default_config(overrides)
    config.workdir = tempfile.mkdtemp(prefix="failure_points_")
    config.sft.checkpoint.directory = checkpoints
    env, mesh, model_config, params, writer, engine, runner = train.build_job(config, config.workdir)
    chains = {r.id: r.metadata["chain"] for r in env.eval_records}
    for step in steps:
        trainer = SFTTrainer(model_config, params, config.sft, mesh=mesh)
        if trainer.restore(step) is None:
            sys.exit(f"no SFT checkpoint at step {step} in {checkpoints}")
        engine.set_params(trainer.params)
        trainer.close()
        result = evaluate_datasets(runner, group_by_source(env.eval_records), n=1, temperature=0.0,
                                   rows_per_batch=config.eval.rows_per_batch, seed=config.seed, progress=False)
        failures = [(first_failure(row["samples"][0]["response"], chains[row["id"]], row["samples"][0]["em"]),
                     row["samples"][0]["em"]) for row in result.rows]
        counts = collections.Counter(f for f, _ in failures)
        off_chain_right = sum(em >= 1.0 for f, em in failures if f not in ("correct", "answer"))
        n = len(result.rows)
        print(f"RESULT failure_points step={step} n={n} f1={result.average['f1']:.3f} em={result.average['em']:.3f} "
              f"plan_names_entity={1 - counts['plan'] / n:.3f} right_off_chain={off_chain_right} "
              f"first_failure={dict(counts.most_common())}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3:])
