"""Rewards: answer metrics, outcome rewards (QA and math), overlong shaping, the reasoning reward model (grading prompt,
score parsing, ATR aggregation, judge backends), curriculum aggregation and the batch reward manager."""
from atomsearch_jax.rewards.atr import ATR_MODES, aggregate_atr
from atomsearch_jax.rewards.curriculum import SCHEDULES, make_schedule, mix_rewards
from atomsearch_jax.rewards.http_judge import HttpJudge, HttpJudgeConfig
from atomsearch_jax.rewards.judge import FunctionJudge, GradeRequest, GradeResult, Judge
from atomsearch_jax.rewards.math import answers_match, last_boxed, math_reward, normalize_math_answer
from atomsearch_jax.rewards.manager import RewardInput, RewardManager, reward_metrics
from atomsearch_jax.rewards.metrics import (
    exact_match,
    f1_score,
    normalize_answer,
    research_f1_score,
    set_f1_score,
    substring_accuracy,
    token_f1,
)
from atomsearch_jax.rewards.model_judge import SamplerJudge
from atomsearch_jax.rewards.outcome import OUTCOME_REWARDS, OutcomeResult, get_outcome_reward
from atomsearch_jax.rewards.rrm import GRADING_PROMPTS, build_grading_messages, parse_scores
from atomsearch_jax.rewards.shaping import overlong_penalty

__all__ = [
    "ATR_MODES", "FunctionJudge", "GRADING_PROMPTS", "GradeRequest", "GradeResult", "HttpJudge", "HttpJudgeConfig",
    "Judge", "OUTCOME_REWARDS", "OutcomeResult", "RewardInput", "RewardManager", "SCHEDULES", "SamplerJudge",
    "aggregate_atr", "answers_match", "build_grading_messages", "last_boxed", "math_reward", "normalize_math_answer", "exact_match", "f1_score", "get_outcome_reward", "make_schedule",
    "mix_rewards", "normalize_answer", "overlong_penalty", "parse_scores", "research_f1_score", "reward_metrics",
    "set_f1_score", "substring_accuracy", "token_f1",
]
