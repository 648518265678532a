"""Evaluate a policy (an HF checkpoint) as a search agent on QA sets: the papers' table.

    python -m atomsearch_jax.evaluate --config=configs/atom_searcher_qwen7b.py \
        --config.model.hf_path=runs/qwen7b/hf_policy --config.search.retriever=searchr1:http://10.0.0.2:8000 \
        --datasets=nq,triviaqa,hotpotqa,2wiki,musique,bamboogle,popqa --data_dir=data/flashrag \
        --out_dir=runs/qwen7b/eval
    python -m atomsearch_jax.evaluate --config=configs/default.py --config.model.hf_path=runs/default/hf_policy \
        --out_dir=runs/default/eval          # the config's own eval split (one set per source)

--datasets takes names (resolved in --data_dir), files, or name=file, each optionally ending in :N (its
size limit; default --limit_per_dataset, 512 as in the papers). --n=k samples k runs per question
(avg@k, pass@k, maj@k). With --config.eval.judge_url/judge_model set, an OpenAI-compatible LLM judges
every answer (LJ); past --max_judge_failure_rate of failed judge calls the judge is no longer asked, and
after writing the results the run exits non-zero saying why. Writes DIR/results.md, DIR/results.json and
DIR/questions.jsonl.
"""
from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

from atomsearch_jax.distributed_flags import initialize_from_flags
from atomsearch_jax.evaluation import (evaluate_datasets, judge_failure_report, load_datasets, render_markdown,
                                       write_results)
from atomsearch_jax.experiment import (build_environment, build_model, group_by_source, make_answer_judge,
                                       make_runner)
from atomsearch_jax.generate import Engine
from atomsearch_jax.parallel import make_mesh
from atomsearch_jax.parallel.cpu_devices import use_cpu_devices
from atomsearch_jax.parallel.multihost import is_writer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config file (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/eval", "Scratch directory (the world's tokenizer, if built).")
_DATASETS = flags.DEFINE_list("datasets", [], "Evaluation sets: names (found in --data_dir), QA files, or "
                              "name=file, each optionally ending in :N (its size limit). Empty = the config's "
                              "eval split, one set per source.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where dataset names are looked up (<name>/test.*, "
                                "<name>/dev.*, or a file named after the dataset).")
_LIMIT = flags.DEFINE_integer("limit_per_dataset", 512, "Questions per set (a seeded random subset; 0 = all).")
_N = flags.DEFINE_integer("n", 1, "Sampled runs per question (avg@n, pass@k, maj@n when > 1).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Sampling temperature; default: config.eval.temperature "
                                  "for --n=1, config.rl.rollout.temperature for --n>1.")
_MAX_JUDGE_FAILURES = flags.DEFINE_float("max_judge_failure_rate", 0.2, "With an LLM judge: when more than this "
                                         "share of the answers got no verdict (after retries), stop asking it and "
                                         "exit non-zero once the results are written.")
_OUT_DIR = flags.DEFINE_string("out_dir", "", "Output directory for results.md / results.json / questions.jsonl "
                               "(default: <workdir>/results).")


def main(argv) -> None:
    del argv
    logging.getLogger().setLevel(logging.INFO)
    use_cpu_devices(_CONFIG.value.get("cpu_devices", 0))
    initialize_from_flags()
    config = _CONFIG.value
    if not config.model.hf_path:
        raise app.UsageError("--config.model.hf_path (the policy to evaluate) is required")
    if _N.value < 1:
        raise app.UsageError(f"--n must be >= 1, got {_N.value}")
    temperature = _TEMPERATURE.value
    if temperature is None:
        temperature = config.eval.temperature if _N.value == 1 else config.rl.rollout.temperature
    if _N.value > 1 and temperature <= 0:
        raise app.UsageError(f"--n={_N.value} sampled runs need a temperature > 0 (greedy runs are identical)")
    if not 0.0 <= _MAX_JUDGE_FAILURES.value <= 1.0:
        raise app.UsageError(f"--max_judge_failure_rate must be in [0, 1], got {_MAX_JUDGE_FAILURES.value}")
    judge = make_answer_judge(config)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    env = build_environment(config, _WORKDIR.value, need_questions=not _DATASETS.value)
    if _DATASETS.value:
        datasets = load_datasets(_DATASETS.value, data_dir=_DATA_DIR.value, limit_per_dataset=_LIMIT.value,
                                 seed=config.seed)
    else:
        datasets = group_by_source(env.eval_records, _LIMIT.value, config.seed)
    for d in datasets:
        logging.info("set %s: %d of %d questions from %s", d.name, len(d.records), d.total, d.path or "the config")
    mesh = make_mesh(**config.mesh.to_dict())
    model_config, params = build_model(config, env.tokenizer, mesh)
    # Evaluation scores answers, never log-probabilities: greedy rows may skip the logits (Engine docs).
    engine = Engine(model_config, params, max_len=config.model.max_len, mesh=mesh, tokenizer=env.tokenizer,
                    greedy_logprobs=False)
    result = evaluate_datasets(make_runner(config, env, engine), datasets, n=_N.value, temperature=temperature,
                               rows_per_batch=config.eval.rows_per_batch, seed=config.seed,
                               judge=judge, max_judge_failure_rate=_MAX_JUDGE_FAILURES.value, progress=is_writer())
    # Every process holds all rows, so all reach the same verdict on the judge.
    judge_failed = judge_failure_report(result.rows, _MAX_JUDGE_FAILURES.value) if judge else None
    out_dir = _OUT_DIR.value or os.path.join(_WORKDIR.value, "results")
    if is_writer():  # every process evaluated its share; process 0 writes the report of all
        title = f"{env.fmt.name} policy {config.model.hf_path}"
        write_results(result, out_dir, title=title, meta={
            "policy": config.model.hf_path, "format": env.fmt.name, "n": _N.value, "temperature": temperature,
            "judge_prompt_version": config.eval.judge_prompt_version if judge else None, "judge_failed": judge_failed,
            "sets": {d.name: {"path": d.path, "evaluated": len(d.records), "total": d.total} for d in datasets}})
        print(render_markdown(result, title))
        logging.info("wrote %s/results.md, results.json, questions.jsonl", out_dir)
    if judge_failed:
        raise SystemExit(f"evaluate: {judge_failed} (judge {config.eval.judge_url}); LJ in {out_dir} counts only "
                         "the judged answers")


if __name__ == "__main__":
    app.run(main)
