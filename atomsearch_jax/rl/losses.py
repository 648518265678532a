"""GRPO / DAPO / Dr. GRPO policy loss on per-token log-probs (REFERENCE.md §3).

Every per-token array is [B, T] and aligned with the trajectory tokens: entry t scores token t.
`mask` [B, T] is 1 on the model's own generated tokens and 0 on prompt, environment (search result)
and padding tokens; a masked token contributes nothing to any term, value or gradient, even when
old/ref log-probs or entropies hold non-finite garbage there.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
# Canonical estimator names and the names veRL uses for the same formulas.
KL_ESTIMATORS = {"k1": "k1", "kl": "k1", "k2": "k2", "mse": "k2", "k3": "k3", "low_var_kl": "k3"}
LOG_RATIO_CLAMP = 20.0
K3_CLAMP = 10.0


def check_agg_mode(agg_mode: str) -> str:
    if agg_mode not in AGG_MODES:
        raise ValueError(f"agg_mode={agg_mode!r}; expected one of {AGG_MODES}")
    return agg_mode


def check_kl_estimator(name: str) -> str:
    """The canonical name (k1/k2/k3) of a KL estimator, accepting veRL's aliases."""
    if name not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator={name!r}; expected one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[name]


def _masked(values: Array, mask: Array) -> Array:
    return jnp.where(mask > 0, values, 0.0)


def masked_mean(values: Array, mask: Array) -> Array:
    """Mean of values over unmasked entries (0 when there are none)."""
    return jnp.sum(_masked(values, mask)) / jnp.maximum(jnp.sum(mask > 0), 1)


def num_sequences(mask: Array) -> Array:
    """Rows with at least one unmasked token: the sequences the seq-mean modes average over.

    Rows without any (padding rows, groups dropped by dynamic sampling) are not counted, so zeroing a
    row's mask is the same as removing the row.
    """
    return jnp.sum(jnp.any(mask > 0, axis=-1))


def aggregate(values: Array, mask: Array, agg_mode: str, *, norm_length: int | None = None) -> Array:
    """Reduces per-token values [B, T] to a scalar.

    token-mean: Σ over unmasked tokens / their count (DAPO, GRPO-TCR).
    seq-mean-token-mean: mean over sequences of each sequence's token mean (original GRPO).
    seq-mean-token-sum: mean over sequences of each sequence's token sum.
    seq-mean-token-sum-norm: mean over sequences of token sum / norm_length (Dr. GRPO; norm_length is
      required and must be a constant such as the maximum response length: the batch's padded width
      would change the loss scale from batch to batch). veRL divides the sum over sequences by T
      without the 1/num_seqs, which makes the loss scale with the batch size; Dr. GRPO's own code
      averages over sequences.
    """
    check_agg_mode(agg_mode)
    if agg_mode == "seq-mean-token-sum-norm" and not (norm_length and norm_length > 0):
        raise ValueError(f"agg_mode='seq-mean-token-sum-norm' needs a constant norm_length > 0, got {norm_length!r} "
                         "(Dr. GRPO: the maximum response length)")
    if agg_mode == "token-mean":
        return masked_mean(values, mask)
    token_sums = jnp.sum(_masked(values, mask), axis=-1)
    if agg_mode == "seq-mean-token-mean":
        token_sums = token_sums / jnp.maximum(jnp.sum(mask > 0, axis=-1), 1)
    elif agg_mode == "seq-mean-token-sum-norm":
        token_sums = token_sums / float(norm_length)
    return jnp.sum(token_sums) / jnp.maximum(num_sequences(mask), 1)


def kl_penalty(logp: Array, ref_logp: Array, estimator: str = "k3") -> Array:
    """Per-token estimate of KL(policy || reference) from sampled-token log-probs.

    k1 = logp − ref; k2 = ½ (logp − ref)²; k3 ("low_var_kl") = exp(ref − logp) − (ref − logp) − 1
    clamped to ±10. The exponent is also clamped to ±20 first: that never changes a value (|d| > 20
    already gives k3 > 10) but keeps exp finite so its gradient cannot be NaN.
    """
    estimator = check_kl_estimator(estimator)
    diff = logp - ref_logp
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * diff * diff
    log_ratio = jnp.clip(-diff, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return jnp.clip(jnp.exp(log_ratio) - log_ratio - 1.0, -K3_CLAMP, K3_CLAMP)


def policy_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, eps_low: float = 0.2,
                eps_high: float | Array = 0.28, dual_clip: float | None = None, agg_mode: str = "token-mean",
                ref_logp: Array | None = None, kl_coef: float | Array = 0.0, kl_estimator: str = "k3",
                entropy: Array | None = None, entropy_coef: float | Array = 0.0,
                loss_norm_length: int | None = None) -> tuple[Array, dict[str, Array]]:
    """Clipped policy-gradient loss with optional dual clip, KL to a reference and entropy bonus.

    logp, old_logp, mask, ref_logp, entropy: [B, T]; advantages: [B] (one per sequence).
    r = exp(clip(logp − old_logp, ±20)); per token max(−A·r, −A·clip(r, 1−eps_low, 1+eps_high));
    with dual_clip = c (> 1), tokens with A < 0 are further capped at −A·c.
    loss = agg(pg) + kl_coef·agg(kl) − entropy_coef·agg(entropy), agg by `agg_mode` (see `aggregate`).
    The KL term is added only when ref_logp is given; the entropy bonus only when entropy is given.

    Metrics: pg_loss, kl_loss (aggregated like the loss); pg_clipfrac (fraction of tokens where the
    clip is active), pg_clipfrac_lower (dual clip active), ppo_kl (mean old_logp − logp), kl and
    entropy (token means).
    """
    check_agg_mode(agg_mode)
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip={dual_clip} must be > 1 (or None to disable)")
    agg = lambda v: aggregate(v, mask, agg_mode, norm_length=loss_norm_length)  # noqa: E731
    adv = jnp.asarray(advantages, jnp.float32)[:, None]
    # Inputs at masked positions may be garbage (a sampler's padding, NaN): replace them before any
    # arithmetic, because a zero cotangent times a NaN local derivative would still be NaN.
    old_logp = jnp.where(mask > 0, old_logp, 0.0)
    log_ratio = jnp.clip(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = jnp.exp(log_ratio)
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    pg = jnp.maximum(pg_unclipped, pg_clipped)
    metrics = {"pg_clipfrac": masked_mean((pg_clipped > pg_unclipped).astype(jnp.float32), mask),
               "ppo_kl": masked_mean(-log_ratio, mask)}
    if dual_clip is not None:
        pg_dual = -adv * dual_clip
        metrics["pg_clipfrac_lower"] = masked_mean(((pg > pg_dual) & (adv < 0)).astype(jnp.float32), mask)
        pg = jnp.where(adv < 0, jnp.minimum(pg, pg_dual), pg)
    metrics["pg_loss"] = loss = agg(pg)
    if ref_logp is not None:
        kl = kl_penalty(logp, jnp.where(mask > 0, ref_logp, 0.0), kl_estimator)
        metrics["kl_loss"] = kl_loss = agg(kl)
        metrics["kl"] = masked_mean(kl, mask)
        loss = loss + kl_coef * kl_loss
    if entropy is not None:
        entropy = jnp.where(mask > 0, entropy, 0.0)
        metrics["entropy"] = masked_mean(entropy, mask)
        loss = loss - entropy_coef * agg(entropy)
    return loss, metrics


# Metrics that `policy_loss` aggregates with the loss's agg_mode (the others are token means).
AGGREGATED_METRICS = ("pg_loss", "kl_loss")
