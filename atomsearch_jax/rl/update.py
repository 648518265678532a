"""The jitted GRPO update on a rollout batch already laid out on the mesh.

Every log-prob (policy, old, reference) and the entropy are scored at the rollout temperature, the
distribution the tokens were sampled from. Per update call: old log-probs (recomputed with the training forward before any step, as veRL; or
the sampler's; with a single mini-batch the policy is still the sampling one, so old = the current
log-probs with the gradient stopped, which skips a forward), reference log-probs when kl is used
(never otherwise), then one optimizer step per mini-batch with micro-batch gradient accumulation.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from atomsearch_jax.model import ModelConfig
from atomsearch_jax.parallel import replicated
from atomsearch_jax.rl.config import OLD_LOGP_SOURCES
from atomsearch_jax.rl.losses import AGGREGATED_METRICS, check_agg_mode, check_kl_estimator, num_sequences, policy_loss
from atomsearch_jax.training.batching import layout_sharding
from atomsearch_jax.training.logprobs import check_temperature, token_logprobs
from atomsearch_jax.training.train_state import TrainState
from atomsearch_jax.training.update import optimizer_steps

Array = jax.Array
CONTROLS = ("eps_high", "kl_coef", "entropy_coef")  # traced scalars: changing them does not recompile


@dataclasses.dataclass(frozen=True)
class GRPOSettings:
    """The static (compile-time) part of the GRPO loss settings."""

    eps_low: float = 0.2
    dual_clip: float | None = None
    agg_mode: str = "token-mean"
    loss_norm_length: int | None = None
    kl_estimator: str = "k3"
    use_kl: bool = False
    entropy_bonus: bool = False
    old_logp: str = "recompute"
    logprob_chunk: int = 256
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check_agg_mode(self.agg_mode)
        check_temperature(self.temperature)
        check_kl_estimator(self.kl_estimator)
        if self.old_logp not in OLD_LOGP_SOURCES:
            raise ValueError(f"old_logp={self.old_logp!r}; expected one of {OLD_LOGP_SOURCES}")
        if self.dual_clip is not None and not self.dual_clip > 1.0:
            raise ValueError(f"loss.dual_clip={self.dual_clip} must be > 1 (0 in configs disables it)")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "GRPOSettings":
        """Settings from `rl.get_config()`; log-probs are scored at config.rollout.temperature."""
        loss, reg, rollout = config.loss, config.entropy_regulation, config.rollout
        if loss.kl_coef < 0 or loss.entropy_coef < 0:
            raise ValueError(f"loss.kl_coef={loss.kl_coef} and loss.entropy_coef={loss.entropy_coef} must be >= 0")
        if config.old_logp == "sampler" and (rollout.top_k > 0 or rollout.top_p < 1.0):
            # The sampler records log-probs of the top-k/top-p filtered, renormalised distribution,
            # which the policy's full-vocabulary log-probs cannot be compared with.
            raise ValueError(f"old_logp='sampler' with rollout.top_k={rollout.top_k}, rollout.top_p={rollout.top_p}: "
                             "the sampler's log-probs are of the filtered distribution; use old_logp='recompute' "
                             "or sample without top-k/top-p")
        return cls(
            eps_low=float(loss.eps_low), dual_clip=float(loss.dual_clip) if loss.dual_clip else None,
            agg_mode=loss.agg_mode, loss_norm_length=(int(loss.loss_norm_length) or int(rollout.max_response_tokens)
                                                      if loss.agg_mode == "seq-mean-token-sum-norm" else None),
            kl_estimator=loss.kl_estimator, use_kl=loss.kl_coef > 0,
            entropy_bonus=loss.entropy_coef > 0 or (reg.enabled and reg.knob == "entropy_coef"),
            old_logp=config.old_logp, logprob_chunk=int(config.train_step.logprob_chunk),
            temperature=float(rollout.temperature),
        )


def _per_micro_logprobs(model_config: ModelConfig, params: Any, batch: dict[str, Array], chunk: int,
                        temperature: float, mesh: Mesh | None) -> Array:
    """Log-probs [n_mini, n_micro, micro, T] under `params`, one forward per micro-batch, no gradient."""
    lead = batch["tokens"].shape[:2]
    flat = {k: batch[k].reshape(-1, *batch[k].shape[2:]) for k in ("tokens", "attention_mask", "positions")}
    logp = jax.lax.map(lambda m: token_logprobs(model_config, params, m["tokens"], temperature=temperature,
                                                attention_mask=m["attention_mask"], positions=m["positions"],
                                                chunk=chunk, with_entropy=False, mesh=mesh)[0], flat)
    return logp.reshape(*lead, *logp.shape[1:])


def grpo_update(state: TrainState, batch: dict[str, Array], ref_params: Any, controls: dict[str, Array], *,
                model_config: ModelConfig, settings: GRPOSettings, optimizer: optax.GradientTransformation,
                schedule: optax.Schedule | None = None, mesh: Mesh | None = None,
                grad_shardings: Any = None) -> tuple[TrainState, dict[str, Array]]:
    """One GRPO update (pure; see `make_grpo_update` for the jitted, donated form).

    batch (laid out [n_mini, n_micro, micro, ...], see training.batching): tokens, loss_mask (float),
    attention_mask, positions [.., T]; advantages [..]; sampler_logprobs [.., T] when
    settings.old_logp == "sampler". ref_params: the frozen reference (None unless settings.use_kl).
    controls: float32 scalars eps_high, kl_coef, entropy_coef.
    Returns the new state and metrics (means over mini-batches; skipped_steps summed).
    """
    batch = dict(batch)
    n_mini = batch["tokens"].shape[0]
    if settings.old_logp == "sampler":
        batch["old_logp"] = batch.pop("sampler_logprobs")
    elif n_mini > 1:
        batch["old_logp"] = _per_micro_logprobs(model_config, state.params, batch, settings.logprob_chunk,
                                               settings.temperature, mesh)
    if settings.use_kl:
        batch["ref_logp"] = _per_micro_logprobs(model_config, ref_params, batch, settings.logprob_chunk,
                                               settings.temperature, mesh)

    def loss_fn(params: Any, micro: dict[str, Array], totals: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
        mask = micro["loss_mask"]
        logp, entropy = token_logprobs(model_config, params, micro["tokens"], temperature=settings.temperature,
                                       attention_mask=micro["attention_mask"], positions=micro["positions"],
                                       chunk=settings.logprob_chunk, mesh=mesh)
        old_logp = micro["old_logp"] if "old_logp" in micro else jax.lax.stop_gradient(logp)
        if not settings.entropy_bonus:
            entropy = jax.lax.stop_gradient(entropy)
        loss, metrics = policy_loss(
            logp, old_logp, micro["advantages"], mask, eps_low=settings.eps_low, eps_high=controls["eps_high"],
            dual_clip=settings.dual_clip, agg_mode=settings.agg_mode, ref_logp=micro.get("ref_logp"),
            kl_coef=controls["kl_coef"], kl_estimator=settings.kl_estimator, entropy=entropy,
            entropy_coef=controls["entropy_coef"], loss_norm_length=settings.loss_norm_length)
        # This micro-batch's share of the mini-batch value (see training.update).
        token_share = jnp.sum(mask > 0) / jnp.maximum(totals["tokens"], 1)
        if settings.agg_mode == "token-mean":
            loss_share = token_share
        else:
            loss_share = num_sequences(mask) / jnp.maximum(totals["sequences"], 1)
        metrics = {k: v * (loss_share if k in AGGREGATED_METRICS else token_share) for k, v in metrics.items()}
        return loss * loss_share, metrics

    def totals_fn(mini: dict[str, Array]) -> dict[str, Array]:
        mask = mini["loss_mask"]
        return {"tokens": jnp.sum(mask > 0), "sequences": num_sequences(mask.reshape(-1, mask.shape[-1]))}

    return optimizer_steps(state, batch, loss_fn=loss_fn, totals_fn=totals_fn, optimizer=optimizer,
                           schedule=schedule, grad_shardings=grad_shardings)


def make_grpo_update(model_config: ModelConfig, settings: GRPOSettings, optimizer: optax.GradientTransformation,
                     state_shardings: TrainState, mesh: Mesh, schedule: optax.Schedule | None = None):
    """`grpo_update` jitted on the mesh with the state donated: f(state, batch, ref_params, controls)."""
    fn = functools.partial(grpo_update, model_config=model_config, settings=settings, optimizer=optimizer,
                           schedule=schedule, mesh=mesh, grad_shardings=state_shardings.params)
    ref_sh = state_shardings.params if settings.use_kl else None
    rep = replicated(mesh)
    return jax.jit(fn, in_shardings=(state_shardings, layout_sharding(mesh, 3), ref_sh, rep),
                   out_shardings=(state_shardings, rep), donate_argnums=(0,))
