"""Mixed precision: float32 master weights (what the optimizer updates) and the copies that compute.

A bfloat16 weight of magnitude ~0.1 has a resolution of ~5e-4, so an AdamW step of size ~lr = 1e-6
applied to bfloat16 params leaves almost every weight unchanged. Trainers therefore keep float32
masters and float32 optimizer moments, and cast the masters to the model's param dtype for the forward
(`training.token_logprobs` does so) and for the sampler's copy.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from atomsearch_jax.model.dtypes import cast_floating

MASTER_DTYPE = jnp.float32


def master_params(params: Any) -> Any:
    """The float32 master copy of params (leaves already float32 are kept)."""
    return cast_floating(params, MASTER_DTYPE)
