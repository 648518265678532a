"""The default job over several seeds, summarised as the README's "what the default run shows" table.

    python scripts/default_seeds.py --seeds=0,1,2 --root=runs/seeds [-- extra train flags]

Runs `python -m atomsearch_jax.train --workdir=<root>/seed<N> --config.seed=<N> [extra flags]` for every
seed whose workdir has no report.json yet (one after another: each run takes the machine's cores), then
prints a markdown table of held-out EM/F1 per stage as mean ± std over the seeds (population std, n = seeds),
each seed's F1 gains, and the wall/CPU seconds, and writes it to <root>/table.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed) to run.")
_ROOT = flags.DEFINE_string("root", "runs/seeds", "Parent of the per-seed workdirs.")

STAGES = (("untrained", "untrained"), ("sft", "after SFT"), ("grpo", "after GRPO"))


def run_seed(seed: int, workdir: str, extra: list[str]) -> dict:
    path = os.path.join(workdir, "report.json")
    if not os.path.exists(path):
        command = [sys.executable, "-m", "atomsearch_jax.train", f"--workdir={workdir}", f"--config.seed={seed}", *extra]
        print("running:", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(reports: dict[int, dict]) -> str:
    runs = list(reports.values())
    n_q = sorted({r["heldout_questions"] for r in runs})
    lines = [f"Held-out questions per run: {', '.join(map(str, n_q))}; seeds {sorted(reports)} (mean ± std over "
             f"{len(runs)} seeds, greedy decoding).", "",
             "| stage | EM | F1 | valid format | searches / question |", "|---|---|---|---|---|"]
    for key, label in STAGES:
        if all(f"heldout_f1_{key}" in r for r in runs):
            lines.append(f"| {label} | {mean_std([r[f'heldout_em_{key}'] for r in runs])} | "
                         f"{mean_std([r[f'heldout_f1_{key}'] for r in runs])} | "
                         f"{mean_std([r['heldout'][key]['format_ok'] for r in runs])} | "
                         f"{mean_std([r['heldout'][key]['tool_calls'] for r in runs])} |")
    lines += ["", "| seed | F1 SFT − untrained | F1 GRPO − SFT | wall s | process CPU s | load avg (start) |",
              "|---|---|---|---|---|---|"]
    for seed, r in sorted(reports.items()):
        sft_gain = r["heldout_f1_sft"] - r["heldout_f1_untrained"]
        grpo_gain = r.get("heldout_f1_grpo", float("nan")) - r["heldout_f1_sft"]
        lines.append(f"| {seed} | {sft_gain:+.3f} | {grpo_gain:+.3f} | {r['wall_seconds']:.0f} | "
                     f"{r.get('cpu_seconds', float('nan')):.0f} | {r.get('load_average', {}).get('start', ['?'])[0]} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    extra = argv[1:]
    reports = {int(s): run_seed(int(s), os.path.join(_ROOT.value, f"seed{s}"), extra) for s in _SEEDS.value}
    text = table(reports)
    with open(os.path.join(_ROOT.value, "table.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    app.run(main)
