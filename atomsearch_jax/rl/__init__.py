"""GRPO and its variants: group advantages, clipped policy loss, KL, entropy regulation, the update."""
from atomsearch_jax.rl.advantages import group_advantages, informative_rows
from atomsearch_jax.rl.config import get_config
from atomsearch_jax.rl.entropy_regulation import EntropyRegulator
from atomsearch_jax.rl.failures import FailureMonitor, ServiceFailureError
from atomsearch_jax.rl.losses import AGG_MODES, KL_ESTIMATORS, aggregate, kl_penalty, masked_mean, policy_loss
from atomsearch_jax.rl.trainer import GRPOTrainer
from atomsearch_jax.rl.update import GRPOSettings, grpo_update, make_grpo_update

__all__ = [
    "group_advantages", "informative_rows", "get_config", "EntropyRegulator", "FailureMonitor", "ServiceFailureError", "AGG_MODES", "KL_ESTIMATORS",
    "aggregate", "kl_penalty", "masked_mean", "policy_loss", "GRPOTrainer", "GRPOSettings", "grpo_update",
    "make_grpo_update",
]
