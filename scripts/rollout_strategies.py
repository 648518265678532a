"""What a run's GRPO rollouts did, per sampled update: how many plans copy the question's start entity, how
many search the question itself first, and the mean F1 of each kind.

    python scripts/rollout_strategies.py WORKDIR [WORKDIR ...]

Reads WORKDIR/samples/grpo_update_*.jsonl (written by the default job every report.samples_every updates)
and looks each question up in the default synthetic world (configs/default.py's data.world_seed and
world_scale) for its start entity. Prints one line per sampled update:

    RESULT rollout_strategies run=<workdir> update=<k> n=<rollouts> f1=<mean> plan_names_start=<count>
        question_first=<count> question_first_f1=<mean> entity_first_f1=<mean>

(a mean over no rollouts prints as nan).
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_PLAN = re.compile(r"<PLAN>\n(.*?)\n</PLAN>", re.S)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def plan_names_start(response: str, start: str) -> bool:
    """Whether the response's first PLAN thought names the question's start entity."""
    plan = _PLAN.search(response)
    return bool(plan) and start in plan.group(1)


def job_world():
    """The default job's synthetic world (configs/default.py's data settings)."""
    from tune_sft import default_config

    from atomsearch_jax.data.world import build_world, scaled_config

    data = default_config([]).data
    return build_world(scaled_config(data.world_scale, seed=data.world_seed,
                                     validation_fraction=data.validation_fraction, test_fraction=data.test_fraction))


def main(workdirs: list[str]) -> None:
    from atomsearch_jax.data.world.teacher import QUESTION_PLAN

    world = job_world()
    for workdir in workdirs:
        paths = sorted(glob.glob(os.path.join(workdir, "samples", "grpo_update_*.jsonl")))
        if not paths:
            sys.exit(f"no samples/grpo_update_*.jsonl in {workdir}")
        for path in paths:
            with open(path, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f]
            starts = []
            for row in rows:
                record = world.record_for(row["question"])
                if record is None:
                    sys.exit(f"{path}: question not in the default world: {row['question']!r}")
                starts.append(record.metadata["start"])
            f1 = [row["components"]["f1"] for row in rows]
            first = [QUESTION_PLAN in row["response"] for row in rows]
            update = int(re.search(r"(\d+)\.jsonl$", path).group(1))
            print(f"RESULT rollout_strategies run={workdir} update={update} n={len(rows)} f1={_mean(f1):.3f} "
                  f"plan_names_start={sum(plan_names_start(r['response'], s) for r, s in zip(rows, starts))} "
                  f"question_first={sum(first)} "
                  f"question_first_f1={_mean([x for x, q in zip(f1, first) if q]):.3f} "
                  f"entity_first_f1={_mean([x for x, q in zip(f1, first) if not q]):.3f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
