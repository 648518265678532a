"""Model-aware curation of an RL problem set (seed 002): k rollouts per problem with a given policy,
pass rates written out, a difficulty band, a mixture across domains.

    python -m atomsearch_jax.curate --config=configs/demyagent_code.py \
        --config.model.hf_path=runs/sft/hf_policy \
        --qa_files=math=data/dapo_math.jsonl,code=data/code.jsonl,science=data/science.jsonl \
        --k=8 --min_pass_rate=0.125 --max_pass_rate=0.875 --mixture=math:6,code:3,science:1 \
        --out_dir=runs/curated

Each --qa_files entry is a QA file any reader of `atomsearch_jax.data` accepts (AIME / MATH style jsonl
included), optionally prefixed by its domain (default: the record's source). A problem counts as solved
by a rollout when the config's outcome reward finds the gold answer (exact match; for math, the last
\\boxed{} compared as numbers / normalised LaTeX). Writes OUT/pass_rates.jsonl (every problem: k,
correct, pass_rate, answers), OUT/curated.jsonl (the kept and mixed problems as QA records, pass rate in
metadata; a valid --config.data.train_files) and OUT/summary.json (per-domain counts and pass-rate
histograms).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
from typing import Any, Sequence

from absl import app, flags
from ml_collections import config_flags

from atomsearch_jax.agent.pass_rates import rollout_pass_rates
from atomsearch_jax.data import QARecord, load_qa_file
from atomsearch_jax.data.curation import PassRate, in_band, mix, parse_weights, summarize_curation
from atomsearch_jax.experiment import FORMAT_OUTCOME, build_environment, build_model, make_runner
from atomsearch_jax.generate import Engine
from atomsearch_jax.parallel import make_mesh
from atomsearch_jax.rewards import get_outcome_reward

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (e.g. configs/demyagent_code.py).")
_QA_FILES = flags.DEFINE_list("qa_files", [], "QA files to curate, each 'path' or 'domain=path'.")
_K = flags.DEFINE_integer("k", 8, "Rollouts per problem (seed 002: 8).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Sampling temperature (default config.rl.rollout.temperature).")
_MIN = flags.DEFINE_float("min_pass_rate", 0.01, "Keep problems with pass rate >= this (default drops never-solved).")
_MAX = flags.DEFINE_float("max_pass_rate", 0.99, "Keep problems with pass rate <= this (default drops always-solved).")
_MIXTURE = flags.DEFINE_string("mixture", "", "domain:weight,... proportions of the output ('' = every kept problem).")
_TOTAL = flags.DEFINE_integer("mixture_total", -1, "Problems in the mixture (-1 = as many as the weights allow).")
_OUT_DIR = flags.DEFINE_string("out_dir", "", "Output directory.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/curate", "Scratch directory.")


def load_domains(entries: Sequence[str]) -> list[QARecord]:
    """Records of 'path' / 'domain=path' entries; a given domain replaces each record's source."""
    records: list[QARecord] = []
    for entry in entries:
        domain, sep, path = entry.partition("=")
        if not sep:
            domain, path = "", entry
        loaded = load_qa_file(path)
        records += [dataclasses.replace(r, source=domain) for r in loaded] if domain else loaded
    return records


def curated_record(rate: PassRate) -> dict[str, Any]:
    r = rate.record
    return {"id": r.id, "question": r.question, "golden_answers": list(r.golden_answers), "source": r.source,
            "metadata": {**r.metadata, "pass_rate": rate.rate, "k": rate.k}}


def _write_jsonl(path: str, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv) -> None:
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required (e.g. configs/demyagent_code.py)")
    if not _QA_FILES.value:
        raise app.UsageError("--qa_files is required")
    if not _OUT_DIR.value:
        raise app.UsageError("--out_dir is required")
    if not config.model.hf_path:
        raise app.UsageError("--config.model.hf_path (the policy whose pass rates are measured) is required")
    temperature = config.rl.rollout.temperature if _TEMPERATURE.value is None else _TEMPERATURE.value
    if _K.value > 1 and temperature <= 0:
        raise app.UsageError(f"--k={_K.value} rollouts need a temperature > 0 (greedy rollouts are identical)")
    weights = parse_weights(_MIXTURE.value) if _MIXTURE.value else None
    records = load_domains(_QA_FILES.value)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    env = build_environment(config, _WORKDIR.value, need_questions=False)
    model_config, params = build_model(config, env.tokenizer)
    engine = Engine(model_config, params, max_len=config.model.max_len, mesh=make_mesh(**config.mesh.to_dict()),
                    tokenizer=env.tokenizer)
    outcome = get_outcome_reward(config.rl.reward.outcome or FORMAT_OUTCOME[env.fmt.name])
    rates = rollout_pass_rates(make_runner(config, env, engine), records, k=_K.value, temperature=temperature,
                               outcome=outcome, rows_per_batch=config.eval.rows_per_batch, seed=config.seed)
    kept = in_band(rates, _MIN.value, _MAX.value)
    if weights is None:
        chosen = kept
    else:
        pools: dict[str, list[PassRate]] = collections.defaultdict(list)
        for rate in kept:
            pools[rate.record.source].append(rate)
        chosen = mix(pools, weights, None if _TOTAL.value < 0 else _TOTAL.value, seed=config.seed)
    _write_jsonl(os.path.join(_OUT_DIR.value, "pass_rates.jsonl"), [r.to_json() for r in rates])
    _write_jsonl(os.path.join(_OUT_DIR.value, "curated.jsonl"), [curated_record(r) for r in chosen])
    summary = {"policy": config.model.hf_path, "k": _K.value, "temperature": temperature,
               "band": [_MIN.value, _MAX.value], "mixture": weights, **summarize_curation(rates, kept, chosen)}
    with open(os.path.join(_OUT_DIR.value, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(f"RESULT curate problems={len(rates)} in_band={len(kept)} chosen={len(chosen)} out_dir={_OUT_DIR.value}")


if __name__ == "__main__":
    app.run(main)
