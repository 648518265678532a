"""The train state (float32 master params, optimizer state, counters, PRNG key) and its shardings on a mesh."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from atomsearch_jax.parallel import TRAIN_RULES, param_shardings, replicated
from atomsearch_jax.training.precision import master_params


@flax.struct.dataclass
class TrainState:
    """Everything an update changes.

    params: float32 master weights, whatever the model's param dtype (see training.precision); the
      optimizer state is float32 with them. Forwards cast them to the model's dtype.
    step: int32 [] optimizer steps attempted (applied + skipped); checkpoints are numbered by it.
    skipped_steps: int32 [] steps whose loss or gradients were not finite (never applied).
    rng: uint32 [2] raw PRNG key the run draws its sampling keys from (checkpointed with the rest).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    skipped_steps: jax.Array

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (what checkpoints store)."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state, "rng": self.rng,
                "skipped_steps": self.skipped_steps}

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> "TrainState":
        return cls(**tree)


def create_train_state(params: Any, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state: float32 masters of params (any float dtype), their optimizer state, zero counters."""
    params = master_params(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      rng=jax.random.PRNGKey(seed), skipped_steps=jnp.zeros((), jnp.int32))


def state_shardings(params: Any, optimizer: optax.GradientTransformation, mesh: Mesh,
                    rules: Any = TRAIN_RULES) -> TrainState:
    """NamedShardings of the state: params (and the optimizer's per-param moments) by the partition
    rules, FSDP-style; counters and the PRNG key replicated."""
    param_sh = param_shardings(params, mesh, rules)
    opt_shapes = jax.eval_shape(optimizer.init, params)
    opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, opt_shapes, param_sh,
                                   transform_non_params=lambda _: replicated(mesh),
                                   is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
    rep = replicated(mesh)
    return TrainState(step=rep, params=param_sh, opt_state=opt_sh, rng=rep, skipped_steps=rep)


def abstract_state(params: Any, optimizer: optax.GradientTransformation, mesh: Mesh,
                   rules: Any = TRAIN_RULES) -> TrainState:
    """ShapeDtypeStructs (with shardings) of the state, e.g. the restore target of a checkpoint."""
    shapes = jax.eval_shape(lambda p: create_train_state(p, optimizer, 0), params)
    shardings = state_shardings(params, optimizer, mesh, rules)
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def init_sharded_state(params: Any, optimizer: optax.GradientTransformation, mesh: Mesh, seed: int,
                       rules: Any = TRAIN_RULES) -> TrainState:
    """A fresh state placed on the mesh (float32 master copies; the caller's arrays are not donated)."""
    shardings = state_shardings(params, optimizer, mesh, rules)
    params = jax.device_put(params, shardings.params, may_alias=False)  # the state's buffers are donated
    init = jax.jit(create_train_state, static_argnums=(1,), out_shardings=shardings)
    return init(params, optimizer, seed)
