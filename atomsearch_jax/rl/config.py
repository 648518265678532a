"""GRPO settings (ml_collections): the shared trainer settings plus the loss, advantages and sampling.

Config conventions: 0 means "off"/"default" where the Python API uses None (dual_clip = 0: no dual
clip; loss_norm_length = 0: rollout.max_response_tokens).
"""
from __future__ import annotations

import ml_collections

from atomsearch_jax.rl import entropy_regulation
from atomsearch_jax.training import config as training_config

OLD_LOGP_SOURCES = ("recompute", "sampler")


def loss_config() -> ml_collections.ConfigDict:
    """Defaults follow `atomsearch_jax.rl.policy_loss`: clip-higher 0.2/0.28, token-mean, no KL."""
    return ml_collections.ConfigDict(dict(
        eps_low=0.2,
        eps_high=0.28,
        dual_clip=0.0,              # c > 1 caps −A·r at −A·c for A < 0 (GRPO-TCR: 10); 0 = off
        agg_mode="token-mean",      # token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
        loss_norm_length=0,         # Dr. GRPO's constant for seq-mean-token-sum-norm; 0 = rollout.max_response_tokens
        kl_coef=0.0,                # 0 = no reference model forward at all (ReSearch/Search-R1/DeepResearcher: 0.001)
        kl_estimator="k3",          # k1 | k2 | k3 (veRL names kl | mse | low_var_kl also accepted)
        entropy_coef=0.0,           # entropy bonus (the entropy regulator may steer it)
    ))


def rollout_config() -> ml_collections.ConfigDict:
    """How rollouts sample. The update scores every log-prob at `temperature` (the sampler's)."""
    return ml_collections.ConfigDict(dict(
        max_response_tokens=512,    # per trajectory: tokens after the prompt (generated + inserted)
        segment_steps=128,          # decode steps per jitted segment
        max_tool_calls=4,
        max_observation_tokens=0,   # tokens kept of each inserted tool result (Search-R1: 500); 0 = all
        temperature=1.0,            # > 0 (the papers: 1.0)
        top_p=1.0,                  # 1 = off
        top_k=0,                    # 0 = off
        kv_cache_gb=0.0,            # per-device KV-cache budget of one rollout chunk (GB); 0 = the batch in one chunk
    ))


def reward_config() -> ml_collections.ConfigDict:
    """How rollouts are scored (see `atomsearch_jax.rewards.RewardManager`) and which judge grades the
    atomic thoughts."""
    return ml_collections.ConfigDict(dict(
        outcome="",                 # "" = the format's own (deepresearcher / research / search_r1_em)
        judge="none",               # none | oracle (synthetic world) | http (OpenAI-compatible) | model (in process)
        judge_url="", judge_model="", judge_api_key_env="",  # http judge
        judge_checkpoint="",        # model judge: an HF Qwen2 checkpoint directory (tokenizer included)
        judge_dtype="bfloat16",     # model judge: param dtype of its weights
        judge_max_len=4096,         # model judge: cache slots per grading prompt + reply
        judge_max_tokens=1024,      # the judge's reply budget
        judge_temperature=0.0,
        judge_timeout_s=60.0,       # http judge: per request (the whole batch gets 5x this)
        schedule="linear", alpha0=0.5, atr_mode="mean", malformed_policy="penalty",
        # DAPO overlong shaping over the tokens the policy generated: 0 if n <= max_length - cache_length,
        # linear to -1 at max_length, -1 beyond. max_length 0 = off.
        overlong=ml_collections.ConfigDict(dict(max_length=0, cache_length=0)),
    ))


def failures_config() -> ml_collections.ConfigDict:
    """When a run stops because its services fail (see `atomsearch_jax.rl.FailureMonitor`)."""
    return ml_collections.ConfigDict(dict(
        window=5,                   # rollout batches the rates are measured over
        max_judge_failure_rate=0.2,   # judge requests that failed after retries; 1 = never stop
        max_search_failure_rate=0.2,  # tool calls whose retrieval failed after retries; 1 = never stop
        min_events=20,              # no verdict before the window holds this many requests / calls
    ))


def get_config() -> ml_collections.ConfigDict:
    config = training_config.get_config()
    config.group_size = 5                  # samples per prompt; rows arrive group by group
    config.normalize_std = True            # False = Dr. GRPO advantages (no std division)
    config.dynamic_sampling = False        # zero the loss of groups whose rewards are all equal (DAPO)
    # recompute | sampler: use the rollout's sampler log-probs as the old policy's. "sampler" needs
    # rollouts without top-k/top-p (the sampler records the filtered, renormalised distribution).
    config.old_logp = "recompute"
    config.loss = loss_config()
    config.entropy_regulation = entropy_regulation.get_config()
    config.rollout = rollout_config()
    config.reward = reward_config()
    config.failures = failures_config()
    return config
