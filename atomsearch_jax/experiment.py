"""What an experiment config builds before any training: the environment (questions, corpus/retriever,
code interpreter, tokenizer, format), the model, the rollout runner, the process judge (rewards) and the
answer judge (evaluation). Shared by the `train`, `evaluate` and `make_sft_data` entry points.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import tempfile
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from atomsearch_jax.agent import RolloutConfig, RolloutRunner
from atomsearch_jax.clients import EndpointConfig
from atomsearch_jax.data import QARecord, load_qa_file
from atomsearch_jax.evaluation import AnswerJudge, AnswerJudgeConfig, EvalDataset
from atomsearch_jax.evaluation.datasets import subsample
from atomsearch_jax.formats import CODE_TOOL, SEARCH_TOOL, AgentFormat, get_format
from atomsearch_jax.generate import Engine
from atomsearch_jax.model import ModelConfig, init_params, load_hf_checkpoint
from atomsearch_jax.parallel.multihost import is_writer
from atomsearch_jax.paths import copy_tree, local_copy, resolve
from atomsearch_jax.rewards import FunctionJudge, HttpJudge, HttpJudgeConfig, Judge, SamplerJudge
from atomsearch_jax.search import BM25Retriever, Retriever, make_retriever
from atomsearch_jax.tools import CodeInterpreter, Limits

# The outcome reward each format was published with (REFERENCE.md §2).
FORMAT_OUTCOME = {"atom_searcher": "deepresearcher", "research": "research", "search_r1": "search_r1_em",
                  "hermes": "math"}


@dataclasses.dataclass
class Environment:
    """Questions, tools and graders of one experiment. `world` is set for the synthetic world only.

    train_records: the SFT questions (the world's teacher answers them) and, unless `grpo_records` is set,
      the GRPO prompts.
    eval_records: the validation questions (evaluated during training; settings may be tuned on them).
    heldout_records: the test questions, evaluated before and after each stage and never used for a choice.
    grpo_records: GRPO prompts kept out of SFT (synthetic world, `data.grpo_only_fraction` > 0), else None.
    """

    fmt: AgentFormat
    tokenizer: Any
    retriever: Retriever | None
    train_records: list[QARecord]
    eval_records: list[QARecord]
    heldout_records: list[QARecord]
    world: Any = None
    code_interpreter: CodeInterpreter | None = None
    grpo_records: list[QARecord] | None = None

    @property
    def rl_records(self) -> list[QARecord]:
        """The GRPO prompts: `grpo_records` when set, else the train questions."""
        return self.grpo_records if self.grpo_records is not None else self.train_records


def _load_files(spec: str, what: str, required: bool = True) -> list[QARecord]:
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    if not paths and required:
        raise ValueError(f"config.data.{what} is empty but data.source is 'files'")
    records: list[QARecord] = []
    for path in paths:
        records += load_qa_file(path)
    return records


def build_environment(config: ml_collections.ConfigDict, workdir: str, *, need_questions: bool = True) -> Environment:
    """Builds the format, the questions, the retriever and the tokenizer named by `config`. With
    need_questions=False (evaluation of other sets), empty data.train_files / eval_files are allowed."""
    from transformers import AutoTokenizer

    data = config.data
    grpo_records = None
    # config.prompt_version (any data) wins; else the world's brief prompt per format on the synthetic world.
    prompt_version = config.get("prompt_version") or (
        data.world_prompt_versions.get(config.format) if data.source == "world" else None)
    fmt = get_format(config.format, prompt_version=prompt_version or None)
    world = None
    if data.source == "world":
        from atomsearch_jax.data.world import build_world, scaled_config
        from atomsearch_jax.data.world.questions import split_off_starts

        world = build_world(scaled_config(data.world_scale, seed=data.world_seed,
                                          validation_fraction=data.validation_fraction,
                                          test_fraction=data.test_fraction))
        train_records, eval_records = world.splits["train"], world.splits["validation"]
        heldout_records = world.splits["test"]
        grpo_fraction = float(data.get("grpo_only_fraction", 0.0))
        if grpo_fraction > 0:
            # GRPO on questions SFT never answered: on the SFT questions the policy recites memorised
            # trajectories (every sample of a group right, no advantage), and what GRPO teaches must be
            # what the held-out questions need -- reading the question and the search results.
            train_records, grpo_records = split_off_starts(train_records, grpo_fraction,
                                                           random.Random(f"{data.world_seed}:grpo_only"))
        tokenizer_dir = config.model.tokenizer_path or config.model.hf_path or _world_tokenizer(world, workdir)
        retriever = (make_retriever(config.search.retriever) if config.search.retriever
                     else BM25Retriever.from_documents(world.corpus))
    elif data.source == "files":
        train_records = _load_files(data.train_files, "train_files", need_questions)
        eval_records = _load_files(data.eval_files, "eval_files", need_questions)
        heldout_records = _load_files(data.heldout_files, "heldout_files") if data.heldout_files else eval_records
        retriever = None
        if SEARCH_TOOL in fmt.tools:
            if not config.search.retriever:
                raise ValueError("data.source='files' needs config.search.retriever "
                                 "(e.g. 'http:http://host:8000/retrieve')")
            retriever = make_retriever(config.search.retriever)
        tokenizer_dir = config.model.tokenizer_path or config.model.hf_path
        if not tokenizer_dir:
            raise ValueError("data.source='files' needs config.model.hf_path or config.model.tokenizer_path")
    else:
        raise ValueError(f"config.data.source={data.source!r}; expected 'world' or 'files'")
    if data.eval_size:  # per evaluation set, as the papers sample 512 questions of each
        eval_records = [r for d in group_by_source(eval_records, data.eval_size, config.seed) for r in d.records]
    if data.heldout_size:
        heldout_records = [r for d in group_by_source(heldout_records, data.heldout_size, config.seed)
                           for r in d.records]
    tokenizer = AutoTokenizer.from_pretrained(local_copy(tokenizer_dir))
    logging.info("environment: format %s (prompt %s), %d train / %d GRPO-only / %d validation / %d held-out questions, "
                 "tokenizer %s (%d tokens)", fmt.name, fmt.prompt_version, len(train_records),
                 len(grpo_records or []), len(eval_records), len(heldout_records), tokenizer_dir, len(tokenizer))
    interpreter = make_code_interpreter(config) if CODE_TOOL in fmt.tools else None
    return Environment(fmt, tokenizer, retriever, list(train_records), list(eval_records), list(heldout_records),
                       world, interpreter, grpo_records)


def make_code_interpreter(config: ml_collections.ConfigDict) -> CodeInterpreter:
    """The sandboxed interpreter of config.code_interpreter (limits, pool size); logs its isolation."""
    c = config.code_interpreter
    limits = Limits(timeout_s=c.timeout_s, cpu_s=c.cpu_s, memory_bytes=c.memory_mb << 20,
                    max_processes=c.max_processes, max_output_bytes=c.max_output_bytes)
    interpreter = CodeInterpreter(limits, max_workers=c.max_workers, allow_unsandboxed=c.allow_unsandboxed)
    logging.info("code interpreter: %s", interpreter.isolation.describe())
    return interpreter


def group_by_source(records: list[QARecord], limit: int = 0, seed: int = 0) -> list[EvalDataset]:
    """The records as one evaluation set per `source` (first-appearance order), each cut to `limit`
    (0 = all) by `evaluation.datasets.subsample`."""
    names = list(dict.fromkeys(r.source for r in records))
    sets = []
    for name in names:
        mine = [r for r in records if r.source == name]
        sets.append(EvalDataset(name, "", subsample(mine, limit, seed, name), len(mine)))
    return sets


def make_runner(config: ml_collections.ConfigDict, env: Environment, engine: Engine) -> RolloutRunner:
    """The rollout runner of config.rl.rollout and config.search on `engine`."""
    r = config.rl.rollout
    return RolloutRunner(engine, env.tokenizer, env.fmt, env.retriever, RolloutConfig(
        max_response_tokens=r.max_response_tokens, segment_steps=r.segment_steps, max_tool_calls=r.max_tool_calls,
        topk=config.search.topk, max_chars_per_doc=config.search.max_chars_per_doc, temperature=r.temperature,
        top_p=r.top_p, top_k=r.top_k, max_observation_tokens=r.max_observation_tokens,
        kv_cache_gb=r.kv_cache_gb),
        code_interpreter=env.code_interpreter)


def make_answer_judge(config: ml_collections.ConfigDict) -> AnswerJudge | None:
    """The LLM judge of final answers named by config.eval.judge_url / judge_model (None when unset)."""
    e = config.eval
    if not e.judge_url:
        return None
    if not e.judge_model:
        raise ValueError("eval.judge_url is set but eval.judge_model (the served model name) is empty")
    endpoint = EndpointConfig(base_url=e.judge_url, model=e.judge_model, api_key_env=e.judge_api_key_env or None,
                              max_attempts=e.judge_max_attempts, request_timeout_s=e.judge_timeout_s)
    return AnswerJudge(AnswerJudgeConfig(endpoint, prompt_version=e.judge_prompt_version))


def _world_tokenizer(world: Any, workdir: str) -> str:
    """Trains the world's tokenizer into a directory of this host (BPE training is deterministic, so every
    process gets the same one); process 0 keeps a copy in <workdir>/tokenizer (any epath, e.g. gs://)."""
    from atomsearch_jax.data.world import train_tokenizer

    local = train_tokenizer(world, tempfile.mkdtemp(prefix="atomsearch_tokenizer_"))
    if is_writer():
        copy_tree(local, resolve(workdir) / "tokenizer")
    return local


def end_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a model turn: the chat end-of-turn token and the tokenizer's EOS."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    ids.append(tokenizer.eos_token_id)
    unk = tokenizer.unk_token_id
    return sorted({i for i in ids if i is not None and i != unk})


def build_model(config: ml_collections.ConfigDict, tokenizer: Any, mesh: Mesh | None = None) -> tuple[ModelConfig, Any]:
    """(ModelConfig, params): the HF checkpoint (placed tensor by tensor straight onto `mesh` by the
    training rules when given, else on this process's first device), or a fresh tiny model."""
    m = config.model
    if m.hf_path:
        model_config, params = load_hf_checkpoint(m.hf_path, dtype=m.dtype, mesh=mesh)
    else:
        vocab = -(-len(tokenizer) // 128) * 128  # a multiple of 128 shards evenly and vectorises well
        model_config = ModelConfig(
            vocab_size=vocab, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
            num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads, rope_theta=m.rope_theta,
            tie_word_embeddings=bool(m.get("tie_word_embeddings", False)), max_position_embeddings=max(m.max_len, 2048), dtype=m.dtype,
            param_dtype=m.dtype, eos_token_id=end_token_ids(tokenizer))
        params = init_params(model_config, jax.random.PRNGKey(config.seed))
    if not model_config.eos_ids:
        model_config = model_config.replace(eos_token_id=end_token_ids(tokenizer))
    model_config = model_config.replace(attention=m.attention, attention_block=m.attention_block,
                                        matmul=m.get("matmul", "auto"))
    logging.info("model: %s, %.2fM parameters", model_config, model_config.num_params() / 1e6)
    return model_config, params


JUDGES = ("none", "oracle", "http", "model")


def build_judge(reward: ml_collections.ConfigDict, env: Environment) -> Judge | None:
    """The process judge named by `rl.reward.judge` (see `atomsearch_jax.rl.config.reward_config`):
    none; oracle (the synthetic world's fact checker); http (an OpenAI-compatible server, e.g. vLLM or
    `python -m atomsearch_jax.serve`); model (an HF checkpoint run in process on our JAX sampler)."""
    kind = reward.judge
    if kind == "none":
        return None
    if kind == "oracle":
        if env.world is None:
            raise ValueError("rl.reward.judge='oracle' needs the synthetic world (data.source='world')")
        from atomsearch_jax.data.world import OracleJudge
        return FunctionJudge(OracleJudge(env.world).score)
    if kind == "http":
        if not reward.judge_url:
            raise ValueError("rl.reward.judge='http' needs rl.reward.judge_url (an OpenAI-compatible server)")
        return HttpJudge(HttpJudgeConfig(
            base_url=reward.judge_url, model=reward.judge_model, api_key_env=reward.judge_api_key_env or None,
            max_tokens=reward.judge_max_tokens, temperature=reward.judge_temperature,
            request_timeout_s=reward.judge_timeout_s, total_timeout_s=5 * reward.judge_timeout_s))
    if kind == "model":
        return _model_judge(reward)
    raise ValueError(f"rl.reward.judge={kind!r}; expected one of {JUDGES}")


def _model_judge(reward: ml_collections.ConfigDict) -> SamplerJudge:
    from transformers import AutoTokenizer

    from atomsearch_jax.generate import Sampler

    if not reward.judge_checkpoint:
        raise ValueError("rl.reward.judge='model' needs rl.reward.judge_checkpoint (an HF checkpoint directory)")
    model_config, params = load_hf_checkpoint(reward.judge_checkpoint, dtype=reward.judge_dtype)
    tokenizer = AutoTokenizer.from_pretrained(reward.judge_checkpoint)
    if not model_config.eos_ids:
        model_config = model_config.replace(eos_token_id=end_token_ids(tokenizer))
    sampler = Sampler(model_config, params, tokenizer, max_len=reward.judge_max_len)
    return SamplerJudge(sampler, tokenizer=tokenizer, max_new_tokens=reward.judge_max_tokens,
                        temperature=reward.judge_temperature)
