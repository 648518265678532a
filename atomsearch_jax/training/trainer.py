"""What every trainer holds: the model config, the mesh, the optimizer, the sharded train state, its
checkpoints and HF export. `SFTTrainer` and `GRPOTrainer` add their objective's `update`."""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from atomsearch_jax.model import ModelConfig, save_hf_checkpoint, unstack_layers
from atomsearch_jax.parallel import check_heads_divisible, make_mesh
from atomsearch_jax.training.batching import BatchLayout, batch_layout
from atomsearch_jax.training.checkpoint import Checkpointer
from atomsearch_jax.training.optimizer import make_optimizer
from atomsearch_jax.model.dtypes import cast_floating
from atomsearch_jax.training.train_state import TrainState, abstract_state, init_sharded_state, state_shardings


class Trainer:
    """The state of one training run on a mesh.

    params are copied onto the mesh (FSDP over "fsdp", tensor-parallel over "tensor"); the trainer's
    state buffers are donated to each update, so read them only through this object.
    config: `atomsearch_jax.training.config.get_config()` or a config containing its fields.
    """

    def __init__(self, model_config: ModelConfig, params: Any, config: ml_collections.ConfigDict, *,
                 mesh: Mesh | None = None) -> None:
        self.config = config
        self.mesh = mesh if mesh is not None else make_mesh()
        check_heads_divisible(model_config.num_heads, model_config.num_kv_heads, self.mesh)
        self.model_config = model_config.replace(remat=bool(config.train_step.remat))
        self.optimizer, self.schedule = make_optimizer(config.optimizer, params)
        self.shardings = state_shardings(params, self.optimizer, self.mesh)
        self.state: TrainState = init_sharded_state(params, self.optimizer, self.mesh, int(config.seed))
        cfg = self.model_config
        self._sampling_copy = jax.jit(lambda p: jax.tree_util.tree_map(
            jnp.copy, unstack_layers(cfg, cast_floating(p, cfg.storage_dtype))))
        self.checkpointer = Checkpointer.from_config(config.checkpoint) if config.checkpoint.directory else None
        if self.checkpointer is not None and config.checkpoint.save_on_sigterm:
            self.checkpointer.install_sigterm_handler()

    @property
    def step(self) -> int:
        """Optimizer steps attempted so far (the checkpoint step number)."""
        return int(self.state.step)

    @property
    def params(self) -> Any:
        """The float32 master weights (donated to the next update: copy before keeping them)."""
        return self.state.params

    def sampling_params(self) -> Any:
        """A fresh copy of the policy for a sampler: unrolled layers, in the model's param dtype (e.g.
        bfloat16 for a bfloat16 checkpoint), sharing no buffer with the train state."""
        return self._sampling_copy(self.state.params)

    def layout(self, local_rows: int) -> BatchLayout:
        """The layout of the global batch made of every process's `local_rows` rows (equal on all)."""
        u = self.config.train_step
        return batch_layout(local_rows * jax.process_count(), u.mini_batch_size, u.micro_batch_size, self.mesh)

    def next_rng(self) -> jax.Array:
        """A fresh PRNG key for the caller (e.g. rollout sampling), drawn from the checkpointed key."""
        carry, key = jax.random.split(self.state.rng)
        self.state = self.state.replace(rng=carry)
        return key

    # ---- checkpoints -------------------------------------------------------------------------
    OWN_JSON_ITEMS: tuple[str, ...] = ()  # checkpoint JSON item names the trainer itself writes

    def own_json_items(self) -> dict[str, Any]:
        """JSON state the trainer itself keeps besides the TrainState (subclasses extend)."""
        return {}

    def load_own_json_items(self, items: Mapping[str, Any]) -> None:
        del items

    def _checkpointer(self) -> Checkpointer:
        if self.checkpointer is None:
            raise ValueError("checkpoint.directory is empty: this trainer has no checkpoint directory")
        return self.checkpointer

    def save(self, json_items: Mapping[str, Any] | None = None, *, force: bool = False) -> bool:
        """Checkpoints the state at `self.step` with the caller's JSON items (e.g. data_iterator,
        reward_schedule) and the trainer's own; skipped off the save interval unless `force`."""
        own = self.own_json_items()
        clash = sorted(set(self.OWN_JSON_ITEMS) & set(json_items or {}))
        if clash:
            raise ValueError(f"checkpoint JSON items {clash} are reserved by {type(self).__name__}")
        return self._checkpointer().save(self.step, self.state, {**own, **(json_items or {})}, force=force)

    def preemption_requested(self) -> bool:
        """True once the job was told to stop (SIGTERM on any host, or JAX's preemption sync point):
        the loop should then `save(..., force=True)` and exit."""
        return self.checkpointer is not None and self.checkpointer.preemption_requested(self.step)

    def restore(self, step: int | None = None) -> dict[str, Any] | None:
        """Restores the newest readable checkpoint (or `step`) onto this trainer's mesh.

        Returns the caller's JSON items, or None when the directory holds no checkpoint (fresh run).
        """
        target = abstract_state(self.state.params, self.optimizer, self.mesh)
        restored = self._checkpointer().restore(target, step)
        if restored is None:
            return None
        _, self.state, items = restored
        self.load_own_json_items({k: v for k, v in items.items() if k in self.OWN_JSON_ITEMS})
        return {k: v for k, v in items.items() if k not in self.OWN_JSON_ITEMS}

    def export_hf(self, path: str | os.PathLike, *, dtype: str | None = None) -> None:
        """Writes the current policy as an HF Qwen2 checkpoint (config.json + safetensors); dtype defaults
        to the model's param dtype (the float32 masters of a bfloat16 model are written as bfloat16)."""
        save_hf_checkpoint(self.model_config.replace(remat=False), self.state.params, path,
                           dtype=dtype or self.model_config.param_dtype)

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.wait()
            self.checkpointer.close()
