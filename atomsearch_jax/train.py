"""Train a search agent: SFT on teacher trajectories, then GRPO with search in the loop.

    python -m atomsearch_jax.train --config=configs/default.py --workdir=/tmp/atomsearch
    python -m atomsearch_jax.train --config=configs/default.py --config.rl.steps=50 --config.format=research

Everything a preempted job needs to continue is checkpointed under workdir (params, optimizer, PRNG,
data-iterator position, reward-schedule step); rerunning the same command resumes. Metrics go to
workdir/logs (jsonl + TensorBoard); the final policy is exported to workdir/hf_policy as an HF checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from atomsearch_jax import report as job_report
from atomsearch_jax.agent import RolloutRunner, rollout_metrics, training_batch
from atomsearch_jax.data import host_shard_options, mixture_pipeline, pipeline_iterator, qa_pipeline, records_dataset
from atomsearch_jax.data.length_buckets import BucketedBatches, bucket_widths
from atomsearch_jax.data.sft_examples import document_rows, first_turn_example, pad_rows, turns_example
from atomsearch_jax.data.trajectory_files import read_trajectory_file, trajectory_example
from atomsearch_jax.distributed_flags import initialize_from_flags
from atomsearch_jax.evaluation import evaluate_datasets
from atomsearch_jax.experiment import (FORMAT_OUTCOME, Environment, build_environment, build_model, group_by_source,
                                       build_judge, make_answer_judge, make_runner)
from atomsearch_jax.generate import Engine
from atomsearch_jax.model import save_hf_checkpoint, stack_layers, unstack_layers
from atomsearch_jax.parallel import make_mesh
from atomsearch_jax.parallel.cpu_devices import use_cpu_devices
from atomsearch_jax.parallel.multihost import gather_rows, is_writer, process_share
from atomsearch_jax.paths import copy_tree, resolve
from atomsearch_jax.rewards import RewardManager, reward_metrics
from atomsearch_jax.rl import FailureMonitor, GRPOTrainer, ServiceFailureError
from atomsearch_jax.sft import SFTTrainer
from atomsearch_jax.training import MetricsWriter
from atomsearch_jax.training.preemption import SIGTERM_EXIT

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config file (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, logs and exports go.")


# Every process iterates the same stream of global batches and takes its contiguous share of each
# (`process_share`), so batches, row order and PRNG streams do not depend on the number of processes.
GLOBAL_BATCHES = host_shard_options(0, 1)


class Preempted(RuntimeError):
    """The job was asked to stop (SIGTERM / TPU preemption) and saved a checkpoint to resume from."""


def _checkpoint_dir(trainer_config: ml_collections.ConfigDict, workdir: str, name: str) -> None:
    if not trainer_config.checkpoint.directory:
        trainer_config.checkpoint.directory = str(resolve(workdir) / "checkpoints" / name)


def _world_teacher_examples(config: ml_collections.ConfigDict, env: Environment) -> dict[str, tuple]:
    """The teacher's trajectory for every train question, plus counterfactual copies with the entity names
    permuted (data.world.counterfactual; held-out starts kept): config.sft.world_counterfactual_copies whole
    trajectories and config.sft.world_first_turn_copies first turns (prompt to first search call) each.

    config.sft.world_early_answer_fraction of the whole trajectories (drawn per example) come from a weak
    teacher that answers the first hop's bridge entity: a mistake the outcome reward and the process judge
    (an answer statement that is not the golden answer) both expose to GRPO. Its plan names only the first
    hop (config.sft.world_early_answer_plan "first_hop") or the whole chain ("whole_chain": the trajectory
    is the faithful teacher's up to the thought after the first observation).
    config.sft.world_sentence_answer_fraction of them (drawn per example) answer with the last hop's fact
    as a sentence: right, but the word-F1 / EM outcome rewards score it below the bare entity.
    config.sft.world_question_query_fraction of them (drawn per example) search the question itself first
    and read the first hop's entity from the results (teacher_turns(question_query=True)): the teacher
    mixes two strategies, the other one copying the entity from the question into its plan."""
    from atomsearch_jax.data.world import TeacherSearchMiss, teacher_turns
    from atomsearch_jax.data.world.counterfactual import (EntityRenaming, held_out_starts, rename_record, rename_turns,
                                                          trajectory_texts)

    copies = int(config.sft.get("world_counterfactual_copies", 0))
    first_turns = int(config.sft.get("world_first_turn_copies", 0))
    early = float(config.sft.get("world_early_answer_fraction", 0.0))
    sentence = float(config.sft.get("world_sentence_answer_fraction", 0.0))
    question = float(config.sft.get("world_question_query_fraction", 0.0))
    early_plan = config.sft.get("world_early_answer_plan", "first_hop")
    if early_plan not in ("first_hop", "whole_chain"):
        raise ValueError(f"config.sft.world_early_answer_plan must be 'first_hop' or 'whole_chain', got {early_plan!r}")
    for name, value in (("world_early_answer_fraction", early), ("world_sentence_answer_fraction", sentence),
                        ("world_question_query_fraction", question)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"config.sft.{name} must be in [0, 1], got {value}")
    # GRPO-only start entities stay unrenamed too: no SFT question is about them.
    keep = held_out_starts(env.world) | {r.metadata["start"] for r in env.grpo_records or []}
    renaming = (EntityRenaming(env.world.graph, keep=keep, words=bool(config.sft.get("world_counterfactual_words", False)))
                if copies + first_turns else None)
    topk, max_chars = config.search.topk, config.search.max_chars_per_doc
    examples = {}
    for record in env.train_records:
        try:
            turns = teacher_turns(record, env.retriever, topk=topk)
            first_hop = record.metadata["chain"][:1]
            early_route = {"chain": first_hop} if early_plan == "first_hop" else {"answer_after": 1}
            variants = {(e, s, q): teacher_turns(record, env.retriever, topk=topk, sentence_answer=s, question_query=q,
                                                 **(early_route if e else {})) if e or s or q else turns
                        for e in {False, early > 0} for s in {False, sentence > 0} for q in {False, question > 0}}
        except TeacherSearchMiss:
            continue

        def whole(copy: int) -> list:
            draw = lambda what: random.Random(f"{config.seed}:{record.id}:{copy}:{what}").random()  # noqa: E731
            return variants[(draw("early") < early, draw("sentence") < sentence, draw("question") < question)]

        examples[record.id] = turns_example(record.question, whole(-1), env.fmt, env.tokenizer,
                                            max_chars_per_doc=max_chars)
        for copy in range(copies + first_turns):
            source = whole(copy) if copy < copies else turns
            rename = renaming.sample(random.Random(f"{config.seed}:{record.id}:{copy}"),
                                     renaming.mentions(trajectory_texts(record, source)))
            variant = rename_record(record, rename, f"cf{copy}")
            if copy < copies:
                examples[variant.id] = turns_example(variant.question, rename_turns(source, rename), env.fmt,
                                                     env.tokenizer, max_chars_per_doc=max_chars)
            else:
                examples[variant.id] = first_turn_example(variant.question, rename_turns(source, rename), env.fmt,
                                                          env.tokenizer)
    return examples


def _world_corpus_examples(config: ml_collections.ConfigDict, env: Environment) -> dict[str, tuple]:
    """config.sft.world_corpus_passes shuffled passes over the world's corpus (the documents search serves)
    as language-modelling rows of config.sft.world_corpus_row_tokens tokens: the name pieces of every
    entity, held-out ones included, become text the model has read, as a pretrained LLM has read the
    Wikipedia its search serves. Questions are never in the corpus."""
    passes, width = int(config.sft.get("world_corpus_passes", 0)), int(config.sft.get("world_corpus_row_tokens", 448))
    if passes < 0:
        raise ValueError(f"config.sft.world_corpus_passes must be >= 0, got {passes}")
    examples = {}
    for p in range(passes):
        docs = list(env.world.corpus)
        random.Random(f"{config.seed}:corpus:{p}").shuffle(docs)
        for i, row in enumerate(document_rows([d["contents"] for d in docs], env.tokenizer, width)):
            examples[f"corpus{p}#{i}"] = row
    return examples


def _file_examples(config: ml_collections.ConfigDict, env: Environment) -> dict[str, tuple]:
    examples = {}
    for path in [p.strip() for p in config.sft.trajectory_files.split(",") if p.strip()]:
        for i, record in enumerate(read_trajectory_file(path, env.fmt)):
            examples[f"{path}#{i}"] = trajectory_example(record, env.fmt, env.tokenizer,
                                                         system_prompt=config.sft.system_prompt)
    return examples


def sft_examples(config: ml_collections.ConfigDict, env: Environment) -> dict[str, tuple]:
    """{key: (tokens, loss_mask)} of the SFT data that fit model.max_len: config.sft.trajectory_files when
    set, else the synthetic world's teacher; {} when neither is available."""
    if config.sft.trajectory_files:
        examples, source = _file_examples(config, env), config.sft.trajectory_files
    elif env.world is not None:
        examples = _world_teacher_examples(config, env) | _world_corpus_examples(config, env)
        source = "the world's teacher" + (" and corpus" if config.sft.get("world_corpus_passes", 0) else "")
    else:
        return {}
    fitting = {k: v for k, v in examples.items() if len(v[0]) <= config.model.max_len}
    logging.info("SFT data: %d trajectories from %s, %d fit model.max_len=%d", len(examples), source, len(fitting),
                 config.model.max_len)
    if not fitting:
        raise ValueError(f"no SFT trajectory from {source} fits model.max_len={config.model.max_len}")
    return fitting


def run_sft(config: ml_collections.ConfigDict, env: Environment, model_config, params, mesh, writer) -> Any:
    """SFT on trajectory files or the world's teacher in length-bucketed batches; returns the trained params
    (resumes from checkpoints: the batch of a step is a function of the seed and the step)."""
    cfg = config.sft
    examples = sft_examples(config, env)
    if not examples:
        raise ValueError(f"sft.steps={cfg.steps} but there is no SFT data: set config.sft.trajectory_files (e.g. the "
                         "output of `python -m atomsearch_jax.make_sft_data`) or config.sft.steps=0")
    rows_data = [examples[key] for key in sorted(examples)]
    lengths = [len(t) for t, _ in rows_data]
    widths = bucket_widths(lengths, cfg.length_buckets, multiple=16)
    batches = BucketedBatches(lengths, widths, cfg.batch_size, seed=config.seed)
    padded = sum(min(w for w in widths if w >= n) for n in lengths)
    logging.info("SFT: %d trajectories, bucket widths %s, %.0f%% of positions real", len(rows_data), widths,
                 100 * sum(lengths) / padded)
    _checkpoint_dir(cfg, config.workdir, "sft")
    trainer = SFTTrainer(model_config, params, cfg, mesh=mesh)
    if trainer.restore() is not None:
        logging.info("SFT resumed at step %d", trainer.step)
    with job_report.progress(cfg.steps, "SFT", initial=trainer.step) as bar:
        while trainer.step < cfg.steps:
            rows, width = batches.batch(trainer.step)
            rows = process_share(rows)[0]  # every process builds the same global batch; takes its rows
            metrics = trainer.update(pad_rows([rows_data[i] for i in rows], width))
            writer.write(trainer.step, {f"sft/{k}": v for k, v in metrics.items()})
            bar.update(1)
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}", refresh=False)
            if trainer.step % 20 == 0 or trainer.step == cfg.steps:
                logging.info("SFT step %d: loss %.4f", trainer.step, metrics.get("loss", float("nan")))
            trainer.save({}, force=trainer.step == cfg.steps)
            if trainer.preemption_requested():
                trainer.save({}, force=True)
                trainer.close()
                raise Preempted(f"SFT preempted at step {trainer.step}; rerun the same command to resume")
    params = trainer.params
    trainer.close()
    return params




def run_eval(runner: RolloutRunner, records, config, writer, step: int, tag: str, clock: job_report.PhaseClock,
             prefix: str = "eval") -> dict[str, float]:
    """Evaluation of the current policy on `records` with the evaluation library (one set per source);
    logs the average and per-set metrics under `prefix`/ at `step` and appends a few full trajectories to
    workdir/eval_trajectories.jsonl. Returns the average over sets."""
    e = config.eval
    with clock("eval"):
        result = evaluate_datasets(runner, group_by_source(records), n=e.n, temperature=e.temperature,
                                   rows_per_batch=e.rows_per_batch, seed=config.seed, judge=make_answer_judge(config),
                                   progress=job_report.progress_enabled())
    scalars = {f"{prefix}/{k}": v for k, v in result.average.items() if isinstance(v, (int, float))}
    if len(result.summaries) > 1:
        scalars |= {f"{prefix}/{name}/{k}": v for name, metrics in result.summaries.items()
                    for k, v in metrics.items() if isinstance(v, (int, float))}
    writer.write(step, scalars)
    if is_writer():
        path = resolve(config.workdir) / "eval_trajectories.jsonl"
        before = path.read_text() if path.exists() else ""  # rewritten whole: object stores cannot append
        path.write_text(before + "".join(json.dumps({"step": step, "tag": tag} | row, ensure_ascii=False) + "\n"
                                         for row in result.rows[: e.log_trajectories]))
    shown = {k: round(v, 4) for k, v in result.average.items() if isinstance(v, float)}
    logging.info("%s %s (step %d): %s", prefix, tag, step, json.dumps(shown))
    for name, metrics in result.summaries.items():
        logging.info("  %s: n %d, em %.3f, f1 %.3f", name, metrics["n"], metrics["em"], metrics["f1"])
    return result.average


def prompt_pipeline(config: ml_collections.ConfigDict, env: Environment):
    """Batches of rl.prompts_per_step GRPO prompts (env.rl_records): the data.mixture of their sources
    ("name:weight,...", e.g. DeepResearcher's "nq:1,triviaqa:1,hotpotqa:3,2wiki:3"), else all of them."""
    batch_size, seed = config.rl.prompts_per_step, config.seed + 1
    if not config.data.mixture:
        return qa_pipeline(records_dataset(env.rl_records), batch_size=batch_size, seed=seed,
                           shard_options=GLOBAL_BATCHES)
    weights = parse_mixture(config.data.mixture)
    by_source = {name: [r for r in env.rl_records if r.source == name] for name in weights}
    empty = [name for name, records in by_source.items() if not records]
    if empty:
        raise ValueError(f"config.data.mixture names sources {empty} that no train record has "
                         f"(sources: {sorted({r.source for r in env.rl_records})})")
    datasets = {name: records_dataset(records) for name, records in by_source.items()}
    return mixture_pipeline(datasets, weights, batch_size=batch_size, seed=seed, shard_options=GLOBAL_BATCHES)


def parse_mixture(spec: str) -> dict[str, float]:
    """"nq:1,hotpotqa:3" -> {"nq": 1.0, "hotpotqa": 3.0}; a ValueError naming config.data.mixture otherwise."""
    weights = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition(":")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not value >= 0 or not name.strip():
            raise ValueError(f"config.data.mixture={spec!r}: {part!r} is not name:weight with a weight >= 0")
        weights[name.strip()] = value
    return weights


def make_reward_manager(cfg: ml_collections.ConfigDict, env: Environment) -> RewardManager:
    """The reward manager of `rl.reward` (see `atomsearch_jax.rl.config.reward_config`)."""
    reward = cfg.reward
    overlong = (reward.overlong.max_length, reward.overlong.cache_length) if reward.overlong.max_length else None
    return RewardManager(env.fmt, outcome=reward.outcome or FORMAT_OUTCOME[env.fmt.name], judge=build_judge(reward, env),
                         schedule=reward.schedule, total_steps=cfg.steps, alpha0=reward.alpha0,
                         atr_mode=reward.atr_mode, malformed_policy=reward.malformed_policy, overlong=overlong)


def observe_failures(monitor: FailureMonitor, trajectories, components: dict[str, Any]) -> None:
    """Feeds one rollout batch's judge and search failure counts (of all processes) to the monitor."""
    # Summed over processes, so every process of a multi-host job takes the same stop decision.
    counts = gather_rows(np.array([[components["judge_used"].sum(), components["judge_failed"].sum(),
                                    sum(t.tool_calls for t in trajectories),
                                    sum(t.search_failures for t in trajectories)]], np.int64)).sum(axis=0)
    monitor.observe(judge_requests=int(counts[0]), judge_failures=int(counts[1]), tool_calls=int(counts[2]),
                    search_failures=int(counts[3]), judge_errors=tuple(e for e in components["judge_error"] if e),
                    search_errors=tuple(e for t in trajectories for e in t.search_errors))


def stop_on_failures(monitor: FailureMonitor, trainer: GRPOTrainer, items: dict[str, Any]) -> None:
    """Checkpoints (as of before the failing batch) and re-raises when a failure rate is too high."""
    try:
        monitor.check()
    except ServiceFailureError:
        trainer.checkpointer.wait()
        if trainer.checkpointer.latest_step() != trainer.step:
            trainer.save(items, force=True)
        trainer.close()
        raise


def run_grpo(config: ml_collections.ConfigDict, env: Environment, model_config, params, mesh, writer,
             runner: RolloutRunner, clock: job_report.PhaseClock) -> Any:
    """GRPO with rollouts through `runner` (whose engine is kept in sync with the policy)."""
    cfg = config.rl
    _checkpoint_dir(cfg, config.workdir, "grpo")
    trainer = GRPOTrainer(model_config, params, cfg, mesh=mesh, ref_params=params if cfg.loss.kl_coef > 0 else None)
    manager = make_reward_manager(cfg, env)
    monitor = FailureMonitor.from_config(cfg.failures)
    iterator = pipeline_iterator(prompt_pipeline(config, env))
    update = 0
    items = trainer.restore()
    if items:
        iterator.set_state(items["data_iterator"])
        update = int(items["reward_schedule"]["step"])
        logging.info("GRPO resumed after update %d", update)
    runner.engine.set_params(trainer.sampling_params())
    bar = job_report.progress(cfg.steps, "GRPO", initial=update, unit="update")
    while update < cfg.steps:
        start = time.perf_counter()
        before_batch = {"data_iterator": iterator.get_state(), "reward_schedule": {"step": update, "total": cfg.steps}}
        records, first = process_share(next(iterator))
        trajectories = runner.run(records, n=cfg.group_size, seed=config.seed * 1_000_003 + update, first_record=first)
        clock.add("grpo_search", runner.last_stats["rollout/search_time_s"])
        clock.add("grpo_decode", runner.last_stats["rollout/time_s"] - runner.last_stats["rollout/search_time_s"])
        with clock("grpo_reward"):
            rewards, components = manager.score(trajectories, update)
        observe_failures(monitor, trajectories, components)
        stop_on_failures(monitor, trainer, before_batch)
        with clock("grpo_update"):
            metrics = trainer.update(training_batch(trajectories, rewards, widths=cfg.update_widths,
                                                    exclude=components["judge_failed"] > 0))
            runner.engine.set_params(trainer.sampling_params())
        update += 1
        metrics.update(reward_metrics(components, cfg.group_size))
        metrics.update(rollout_metrics(trajectories, runner.last_stats))
        metrics.update(monitor.metrics())
        metrics["step_time_s"] = time.perf_counter() - start
        writer.write(update, {f"rl/{k}": v for k, v in metrics.items()})
        if is_writer() and config.report.samples_every and (update % config.report.samples_every == 0 or update == 1):
            job_report.write_samples(config.workdir, update, trajectories, rewards, components, env.fmt)
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", f1=f"{metrics.get('reward/f1_mean', np.nan):.3f}",
                        refresh=False)
        logging.info("GRPO update %d: reward %.3f (outcome %.3f, atr %.3f, alpha %.2f) f1 %.3f, groups with "
                     "outcome / any contrast %.2f / %.2f, tool calls %.2f, clipped %.3f (dual %.3f), %.1f s",
                     update, metrics["reward/mean"], metrics.get("reward/outcome_mean", np.nan),
                     metrics.get("reward/atr_mean", np.nan), metrics.get("reward/alpha_mean", np.nan),
                     metrics.get("reward/f1_mean", np.nan), metrics.get("reward/outcome_contrast_groups_frac", np.nan),
                     metrics.get("reward/contrast_groups_frac", np.nan), metrics["rollout/tool_calls_mean"],
                     metrics["pg_clipfrac"], metrics.get("pg_clipfrac_lower", 0.0), metrics["step_time_s"])
        items = {"data_iterator": iterator.get_state(), "reward_schedule": {"step": update, "total": cfg.steps}}
        trainer.save(items, force=update == cfg.steps)
        if trainer.preemption_requested():
            trainer.save(items, force=True)
            trainer.close()
            bar.close()
            raise Preempted(f"GRPO preempted after update {update}; rerun the same command to resume")
        if config.eval.every and update % config.eval.every == 0 and update < cfg.steps:
            run_eval(runner, env.eval_records, config, writer, update, f"validation after GRPO update {update}", clock)
    bar.close()
    params = trainer.params
    trainer.close()
    return params


def _training_layout(config: ml_collections.ConfigDict, model_config, params) -> tuple[Any, Any]:
    """(config, params) for the trainers: layers stacked under one scan when model.scan_layers (faster
    compiles and less memory for big models; the sampler keeps its own unrolled copy)."""
    if not config.model.scan_layers:
        return model_config, params
    scanned = model_config.replace(scan_layers=True)
    return scanned, stack_layers(scanned, params)


class Job(NamedTuple):
    """What a job builds before training: the data and tools, the mesh, the model and its sampler."""
    env: Environment
    mesh: jax.sharding.Mesh
    model_config: Any
    params: Any
    writer: MetricsWriter
    engine: Engine
    runner: RolloutRunner


def build_job(config: ml_collections.ConfigDict, workdir: str) -> Job:
    """Environment, mesh, fresh or loaded model, metrics writer (workdir/logs), engine and rollout runner."""
    env = build_environment(config, workdir)
    mesh = make_mesh(**config.mesh.to_dict())
    model_config, params = build_model(config, env.tokenizer, mesh)
    writer = MetricsWriter(os.path.join(workdir, "logs"))
    engine = Engine(model_config, params, max_len=config.model.max_len, mesh=mesh, tokenizer=env.tokenizer)
    return Job(env, mesh, model_config, params, writer, engine, make_runner(config, env, engine))


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """The whole job; returns the report it also writes to workdir/report.json (and report.md, plots).

    Held-out evaluation (env.heldout_records, never used for a choice) runs before training, after SFT
    and after GRPO; the validation split (env.eval_records) is evaluated every config.eval.every updates.
    """
    started = job_report.process_start_time()
    clock = job_report.PhaseClock()
    load_at_start = os.getloadavg()
    with clock("setup"):
        resolve(workdir).mkdir(parents=True, exist_ok=True)
        config = ml_collections.ConfigDict(config.to_dict())  # a private, writable copy
        config.workdir = workdir
        for name, rows in (("sft.batch_size", config.sft.batch_size),
                           ("rl.prompts_per_step", config.rl.prompts_per_step)):
            if rows % jax.process_count():
                raise ValueError(f"config.{name}={rows} must be a multiple of the {jax.process_count()} processes "
                                 "(each process takes an equal share of the global batch)")
        env, mesh, model_config, params, writer, engine, runner = build_job(config, workdir)
    heldout = {}
    if config.eval.initial:
        heldout["untrained"] = run_eval(runner, env.heldout_records, config, writer, 0, "initial", clock, "heldout")
    train_config, params = _training_layout(config, model_config, params)
    if config.sft.steps > 0:
        with clock("sft"):
            params = run_sft(config, env, train_config, params, mesh, writer)
            engine.set_params(unstack_layers(train_config, params))
        heldout["sft"] = run_eval(runner, env.heldout_records, config, writer, config.sft.steps, "after SFT", clock,
                                  "heldout")
    if config.rl.steps > 0:
        params = run_grpo(config, env, train_config, params, mesh, writer, runner, clock)
        heldout["grpo"] = run_eval(runner, env.heldout_records, config, writer, config.rl.steps, "after GRPO", clock,
                                   "heldout")
    params = unstack_layers(train_config, params)
    result: dict[str, Any] = {}
    if config.export_hf:
        with clock("export"):
            export_dir = os.path.join(workdir, "hf_policy")
            save_hf_checkpoint(model_config, params, export_dir, dtype=model_config.param_dtype)  # not the float32 masters
            if is_writer():
                local = tempfile.mkdtemp(prefix="atomsearch_tokenizer_")
                env.tokenizer.save_pretrained(local)
                copy_tree(local, export_dir)
        result["hf_policy"] = export_dir
    writer.close()
    result.update(job_report.heldout_fields(heldout))
    cpu = os.times()
    result.update({"wall_seconds": round(time.time() - started, 1), "time_seconds": clock.seconds(),
                   "cpu_seconds": round(cpu.user + cpu.system, 1),  # this process; on a shared machine the
                   # closest measure of the work, wall time then counts other jobs too
                   "heldout": heldout, "format": env.fmt.name, "model_params": model_config.num_params(),
                   "seed": config.seed, "devices": jax.device_count(), "sft_steps": config.sft.steps,
                   "grpo_updates": config.rl.steps,
                   "load_average": {"start": [round(x, 2) for x in load_at_start],
                                    "end": [round(x, 2) for x in os.getloadavg()]}})
    if is_writer():
        # summary.json: the stage evaluations under their earlier names (scripts and tools read them).
        stage_names = {"untrained": "eval_initial", "sft": "eval_after_sft", "grpo": "eval_after_grpo"}
        summary = {"format": env.fmt.name, "model_params": model_config.num_params(),
                   **{stage_names[k]: v for k, v in heldout.items()}}
        if "hf_policy" in result:
            summary["hf_policy"] = result["hf_policy"]
        (resolve(workdir) / "summary.json").write_text(json.dumps(summary, indent=2))
        job_report.write_report(workdir, result, job_report.read_metrics(os.path.join(workdir, "logs", "metrics.jsonl")))
        print(job_report.render_table(result), flush=True)
    return result


class _QuietLibraries(logging.Filter):
    """Drops INFO chatter of checkpointing/data libraries (every save logs dozens of lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        noisy = any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in ("orbax", "grain", "etils"))
        return record.levelno >= logging.WARNING or not noisy


def main(argv) -> None:
    del argv
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLibraries())
    use_cpu_devices(_CONFIG.value.get("cpu_devices", 0))
    initialize_from_flags()
    try:
        train(_CONFIG.value, _WORKDIR.value)
    except Preempted as stop:
        logging.warning("%s", stop)
        raise SystemExit(SIGTERM_EXIT) from None
    except ServiceFailureError as stop:
        logging.error("stopping: %s", stop)
        raise SystemExit(1) from None


if __name__ == "__main__":
    app.run(main)
