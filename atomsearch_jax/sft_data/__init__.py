"""Atom-Searcher's teacher SFT-data pipeline (seed prompts, teacher expansion, rollouts, filters)."""
from atomsearch_jax.sft_data.expansion import SystemPrompt, check_variant, expand_prompts
from atomsearch_jax.sft_data.filters import REJECTIONS, FilterConfig, filter_question
from atomsearch_jax.sft_data.pipeline import (FailureLimits, SFTDataResult, TooManyFailures, generate_sft_data,
                                             write_sft_data)
from atomsearch_jax.sft_data.seed_prompts import SEED_PROMPTS, SeedPrompt, seed_prompts

__all__ = ["FailureLimits", "FilterConfig", "REJECTIONS", "SEED_PROMPTS", "SFTDataResult", "SeedPrompt",
           "SystemPrompt", "TooManyFailures",
           "check_variant", "expand_prompts", "filter_question", "generate_sft_data", "seed_prompts",
           "write_sft_data"]
