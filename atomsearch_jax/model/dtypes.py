"""Floating-point dtypes of the model: names accepted from strings, numpy and jnp dtypes, and casts."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_name(value: Any, what: str = "dtype") -> str:
    """The canonical name ("float32", "bfloat16", "float16") of a dtype given as a string, a numpy
    dtype or scalar type, or a jnp dtype; a ValueError naming `what` otherwise."""
    try:
        name = np.dtype(jnp.dtype(value)).name if not isinstance(value, str) else jnp.dtype(value).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"{what}={value!r}; expected one of {sorted(DTYPES)} (a string, numpy or jnp dtype)")
    return name


def cast_floating(tree: Any, dtype: Any) -> Any:
    """tree with every floating-point leaf cast to dtype (a leaf already in dtype is returned as is)."""
    dtype = jnp.dtype(dtype)

    def cast(x: Any) -> Any:
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype else x

    return jax.tree_util.tree_map(cast, tree)
