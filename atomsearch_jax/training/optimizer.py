"""optax AdamW with linear warmup, optional cosine decay and global-norm clipping; optionally frozen
parameters (zero update, no decay)."""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from atomsearch_jax.parallel.rules import path_str

SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """lr(step): 0 → learning_rate linearly over warmup_steps, then constant or cosine decay."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={cfg.schedule!r}; expected one of {SCHEDULES}")
    if cfg.warmup_steps < 0:
        raise ValueError(f"optimizer.warmup_steps={cfg.warmup_steps} must be >= 0")
    lr = float(cfg.learning_rate)
    if cfg.schedule == "cosine":
        if cfg.total_steps <= cfg.warmup_steps:
            raise ValueError(f"optimizer.total_steps={cfg.total_steps} must exceed warmup_steps={cfg.warmup_steps} "
                             "for the cosine schedule")
        return optax.warmup_cosine_decay_schedule(0.0, lr, cfg.warmup_steps, cfg.total_steps,
                                                  end_value=lr * cfg.final_lr_ratio)
    if cfg.warmup_steps == 0:
        return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, cfg.warmup_steps), optax.constant_schedule(lr)],
                                [cfg.warmup_steps])


def decay_mask(params: Any) -> Any:
    """True for matrices/embeddings (weight decay applies), False for norm scales and biases."""
    return jax.tree_util.tree_map(lambda x: x.ndim >= 2, params)


def frozen_patterns(spec: str) -> tuple[re.Pattern, ...]:
    """The compiled regexes of `optimizer.frozen` ("" = none; comma-separated, searched in "/"-joined
    parameter paths such as "embed/embedding" or "layers_3/attn/q/kernel")."""
    patterns = []
    for text in (t.strip() for t in spec.split(",")):
        if not text:
            continue
        try:
            patterns.append(re.compile(text))
        except re.error as e:
            raise ValueError(f"optimizer.frozen: {text!r} is not a regular expression ({e})") from None
    return tuple(patterns)


def trained_mask(params: Any, patterns: tuple[re.Pattern, ...]) -> Any:
    """True per trained parameter, False per frozen one; raises when a pattern matches no parameter (a typo
    would otherwise silently train everything) or when every parameter is frozen."""
    paths = [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    for pattern in patterns:
        if not any(pattern.search(p) for p in paths):
            raise ValueError(f"optimizer.frozen: {pattern.pattern!r} matches no parameter; paths look like "
                             f"{paths[:4]}")
    mask = jax.tree_util.tree_map_with_path(lambda p, _: not any(pt.search(path_str(p)) for pt in patterns), params)
    if not any(jax.tree_util.tree_leaves(mask)):
        raise ValueError("optimizer.frozen freezes every parameter")
    return mask


def _zero_frozen(mask: Any) -> optax.GradientTransformation:
    """Zeroes the gradients of frozen parameters (stateless, so optimizer states keep the params' structure)."""
    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda g, keep: g if keep else jnp.zeros_like(g), updates, mask), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(cfg: ml_collections.ConfigDict, params: Any = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, its learning-rate schedule). The schedule advances once per applied update.

    cfg.frozen (optional): parameters left as they are, see `frozen_patterns`; they get no update, no weight
    decay, and do not count in the gradient norm that is clipped. Needs `params` (arrays or
    ShapeDtypeStructs), whose structure the optimizer is then built for. Their Adam moments exist but stay
    zero (a zero gradient moves a zero-moment parameter by exactly 0), which keeps the state's structure that
    of the params.
    """
    if cfg.max_grad_norm < 0:
        raise ValueError(f"optimizer.max_grad_norm={cfg.max_grad_norm} must be >= 0 (0 disables clipping)")
    schedule = learning_rate_schedule(cfg)
    patterns = frozen_patterns(cfg.get("frozen", ""))
    transforms, decay = [], decay_mask
    if patterns:
        if params is None:
            raise ValueError(f"optimizer.frozen={cfg.frozen!r} needs the params to build the optimizer for")
        trained = trained_mask(params, patterns)
        transforms.append(_zero_frozen(trained))
        decay = jax.tree_util.tree_map(lambda d, t: d and t, decay_mask(params), trained)
    if cfg.max_grad_norm > 0:
        transforms.append(optax.clip_by_global_norm(cfg.max_grad_norm))
    transforms.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                  mask=decay))
    return (transforms[0] if len(transforms) == 1 else optax.chain(*transforms)), schedule
