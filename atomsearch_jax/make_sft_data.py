"""Atom-Searcher's SFT data from a teacher: seed prompts expanded by the teacher, k rollouts per question
with the real search tool, filtered and deduplicated, written as a trajectory file for `train`.

    # a remote teacher (vLLM / SGLang serving e.g. Qwen2.5-72B-Instruct; text-level /v1/completions)
    python -m atomsearch_jax.make_sft_data --config=configs/atom_searcher_qwen7b.py \
        --config.model.tokenizer_path=/ckpt/Qwen2.5-7B-Instruct --config.search.retriever=searchr1:http://host:8000 \
        --qa_files=data/train.jsonl --num_questions=2000 --teacher_url=http://host:8001/v1 \
        --teacher_model=Qwen2.5-72B-Instruct --out=data/sft/atomic.jsonl
    # our own JAX engine as the teacher (config.model.hf_path), e.g. on the synthetic world
    python -m atomsearch_jax.make_sft_data --config=configs/default.py --config.model.hf_path=runs/default/hf_policy \
        --out=runs/sft_data/world.jsonl

Writes OUT (one trajectory per line, chat messages with the tool results) and OUT.stats.json (rejections
per filter, teacher and search failures, atomic-thought tags used). Train on it with
`--config.sft.trajectory_files=OUT`. When the teacher (or search) failed on more than
--max_teacher_failure_rate (--max_search_failure_rate) of the samples so far, the run stops: OUT holds
what was kept until then, OUT.stats.json says why under "stopped", and the exit status is non-zero.
"""
from __future__ import annotations

import json
import logging
import os

from absl import app, flags
from ml_collections import config_flags

from atomsearch_jax.agent.backends import EngineBackend, RemoteBackend, RemoteBackendConfig
from atomsearch_jax.agent.rollout import RolloutConfig
from atomsearch_jax.agent.text_rollout import TextRollout
from atomsearch_jax.clients import EndpointConfig, OpenAIClient
from atomsearch_jax.data import load_qa_file
from atomsearch_jax.evaluation.datasets import subsample
from atomsearch_jax.experiment import build_environment, build_model
from atomsearch_jax.generate import Engine
from atomsearch_jax.parallel import make_mesh
from atomsearch_jax.sft_data import (FailureLimits, FilterConfig, TooManyFailures, expand_prompts, generate_sft_data,
                                    seed_prompts, write_sft_data)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config file (format, "
                                          "search, tokenizer, data; model.hf_path for a JAX teacher).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/make_sft_data", "Scratch directory (the world's tokenizer, if built).")
_OUT = flags.DEFINE_string("out", None, "Output trajectory file (jsonl).", required=True)
_QA_FILES = flags.DEFINE_list("qa_files", [], "Questions (QA files); default: the config's training questions.")
_NUM_QUESTIONS = flags.DEFINE_integer("num_questions", 0, "Questions used (a seeded random subset; 0 = all).")
_TEACHER_URL = flags.DEFINE_string("teacher_url", "", "OpenAI-compatible server of the teacher ('' = our JAX "
                                   "engine on config.model.hf_path).")
_TEACHER_MODEL = flags.DEFINE_string("teacher_model", "", "Served model name of the remote teacher.")
_TEACHER_KEY_ENV = flags.DEFINE_string("teacher_api_key_env", "", "Environment variable holding the API key.")
_CONCURRENCY = flags.DEFINE_integer("teacher_concurrency", 16, "Requests in flight to the remote teacher.")
_ATTEMPTS = flags.DEFINE_integer("teacher_max_attempts", 4, "Attempts per teacher request (retries with backoff).")
_TIMEOUT = flags.DEFINE_float("teacher_timeout_s", 300.0, "Timeout of one teacher request, seconds.")
_SEEDS = flags.DEFINE_string("seed_prompts", "atomic_seeds_v1", "Version of the seed system-prompt templates.")
_PER_SEED = flags.DEFINE_integer("prompts_per_seed", 3, "Teacher-written variants per seed template (remote "
                                 "teacher only; 0 = the seeds alone).")
_K = flags.DEFINE_integer("samples_per_question", 4, "Teacher samples per question (majority vote over them).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.7, "Teacher sampling temperature.")
_F1 = flags.DEFINE_float("f1_threshold", 0.8, "Keep answers with F1 >= this.")
_AGREEMENT = flags.DEFINE_float("min_agreement", 0.5, "Keep only majority answers held by >= this share of samples.")
_MIN_CALLS = flags.DEFINE_integer("min_tool_calls", 1, "Fewest tool calls of a kept trajectory.")
_MAX_CALLS = flags.DEFINE_integer("max_tool_calls", None, "Most tool calls (default: config.rl.rollout.max_tool_calls).")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", None, "Longest kept SFT row, tokens (default: config.model.max_len).")
_PER_QUESTION = flags.DEFINE_integer("max_per_question", 1, "Kept trajectories per question.")
_BATCH = flags.DEFINE_integer("questions_per_batch", 8, "Questions rolled out together.")
_MAX_TEACHER_FAILURES = flags.DEFINE_float("max_teacher_failure_rate", 0.5, "Stop when the teacher failed (after "
                                           "retries) on more than this share of the samples so far.")
_MAX_SEARCH_FAILURES = flags.DEFINE_float("max_search_failure_rate", 0.5, "Stop when more than this share of the "
                                          "samples so far had a failed search.")


def _backend(config, env):
    if _TEACHER_URL.value:
        if not _TEACHER_MODEL.value:
            raise app.UsageError("--teacher_url needs --teacher_model (the served model name)")
        endpoint = EndpointConfig(base_url=_TEACHER_URL.value, model=_TEACHER_MODEL.value,
                                  api_key_env=_TEACHER_KEY_ENV.value or None, max_workers=_CONCURRENCY.value,
                                  max_attempts=_ATTEMPTS.value, request_timeout_s=_TIMEOUT.value,
                                  total_timeout_s=max(_TIMEOUT.value * _ATTEMPTS.value, 1.0))
        return RemoteBackend(RemoteBackendConfig(endpoint)), OpenAIClient(endpoint)
    if not config.model.hf_path:
        raise app.UsageError("give --teacher_url (a remote teacher) or --config.model.hf_path (a JAX teacher)")
    model_config, params = build_model(config, env.tokenizer)
    engine = Engine(model_config, params, max_len=config.model.max_len, mesh=make_mesh(**config.mesh.to_dict()),
                    tokenizer=env.tokenizer)
    return EngineBackend(engine, env.tokenizer, segment_steps=config.rl.rollout.segment_steps), None


def main(argv) -> None:
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = _CONFIG.value
    failure_limits = FailureLimits(teacher=_MAX_TEACHER_FAILURES.value, search=_MAX_SEARCH_FAILURES.value)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    env = build_environment(config, _WORKDIR.value, need_questions=not _QA_FILES.value)
    records = [r for path in _QA_FILES.value for r in load_qa_file(path)] if _QA_FILES.value else env.train_records
    records = subsample(records, _NUM_QUESTIONS.value, config.seed, "make_sft_data")
    backend, chat_client = _backend(config, env)
    r = config.rl.rollout
    max_calls = _MAX_CALLS.value if _MAX_CALLS.value is not None else r.max_tool_calls
    max_tokens = _MAX_TOKENS.value or config.model.max_len
    rollout = TextRollout(backend, env.tokenizer, env.fmt, env.retriever, RolloutConfig(
        max_response_tokens=min(r.max_response_tokens, max_tokens), segment_steps=r.segment_steps,
        max_tool_calls=max_calls, topk=config.search.topk, max_chars_per_doc=config.search.max_chars_per_doc,
        temperature=_TEMPERATURE.value))
    prompts, expansion = expand_prompts(chat_client, seed_prompts(_SEEDS.value), _PER_SEED.value)
    logging.info("system prompts: %d (%s)", len(prompts), json.dumps(expansion))
    run_info = {"expansion": expansion, "seed_prompts": _SEEDS.value,
                "teacher": _TEACHER_MODEL.value or config.model.hf_path}
    try:
        result = generate_sft_data(
            rollout, records, prompts, k=_K.value, seed=config.seed, questions_per_batch=_BATCH.value,
            filters=FilterConfig(f1_threshold=_F1.value, min_agreement=_AGREEMENT.value,
                                 min_tool_calls=_MIN_CALLS.value, max_tool_calls=max_calls, max_tokens=max_tokens,
                                 max_per_question=_PER_QUESTION.value),
            failure_limits=failure_limits)
    except TooManyFailures as err:
        write_sft_data(err.partial, _OUT.value, run_info)
        raise SystemExit(f"make_sft_data stopped after {err.partial.stats['questions']} of {len(records)} questions: "
                         f"{err} (teacher {_TEACHER_URL.value or config.model.hf_path}); the "
                         f"{len(err.partial.kept)} trajectories kept so far are in {_OUT.value}") from None
    write_sft_data(result, _OUT.value, run_info)
    print(json.dumps(result.stats, indent=2))
    logging.info("wrote %d trajectories to %s (+ .stats.json)", len(result.kept), _OUT.value)


if __name__ == "__main__":
    app.run(main)
