"""GRPOTrainer: GRPO updates from rollout batches (numpy), on a mesh, with checkpoints.

The rollout loop (generation, search, rewards) lives elsewhere; it hands each batch here:

    trainer = GRPOTrainer(model_config, params, rl.get_config(), mesh=mesh, ref_params=params)
    trainer.restore()                       # resume if the checkpoint directory has a step
    metrics = trainer.update(batch)         # tokens, loss_mask, lengths, rewards [, sampler_logprobs]
    trainer.save({"data_iterator": ..., "reward_schedule": ...})
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from atomsearch_jax.model import ModelConfig
from atomsearch_jax.model.dtypes import cast_floating
from atomsearch_jax.parallel.multihost import gather_rows
from atomsearch_jax.rl.advantages import group_advantages, informative_rows
from atomsearch_jax.rl.entropy_regulation import EntropyRegulator
from atomsearch_jax.rl.update import CONTROLS, GRPOSettings, make_grpo_update
from atomsearch_jax.training.batching import shard_batch
from atomsearch_jax.training.metrics import scalar_metrics
from atomsearch_jax.training.sequences import sequence_arrays
from atomsearch_jax.training.trainer import Trainer

ENTROPY_ITEM = "entropy_regulation"


class GRPOTrainer(Trainer):
    """GRPO on a mesh. config: `atomsearch_jax.rl.get_config()`.

    ref_params: the frozen reference policy, required when config.loss.kl_coef > 0 and not used
    (no reference forward at all) when it is 0.
    """

    OWN_JSON_ITEMS = (ENTROPY_ITEM,)

    def __init__(self, model_config: ModelConfig, params: Any, config: ml_collections.ConfigDict, *,
                 mesh: Mesh | None = None, ref_params: Any = None) -> None:
        super().__init__(model_config, params, config, mesh=mesh)
        self.settings = GRPOSettings.from_config(config)
        self.ref_params = None
        if self.settings.use_kl:
            if ref_params is None:
                raise ValueError(f"loss.kl_coef={config.loss.kl_coef} > 0 needs ref_params (the reference policy)")
            # The frozen reference needs no float32 master: kept in the model's param dtype.
            self.ref_params = jax.device_put(cast_floating(ref_params, self.model_config.storage_dtype),
                                             self.shardings.params)
        elif ref_params is not None:
            logging.info("loss.kl_coef = 0: the reference params are not used")
        reg = config.entropy_regulation
        self.regulator = EntropyRegulator.from_config(reg, eps_high=config.loss.eps_high) if reg.enabled else None
        self._update = make_grpo_update(self.model_config, self.settings, self.optimizer, self.shardings, self.mesh,
                                        self.schedule)

    def controls(self) -> dict[str, np.ndarray]:
        """The per-update scalars (entropy regulation may steer eps_high or entropy_coef)."""
        values = {name: self.config.loss[name] for name in CONTROLS}
        if self.regulator is not None:
            values[self.regulator.knob] = self.regulator.value
        return {k: np.float32(v) for k, v in values.items()}

    def prepare_batch(self, batch: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Validated host arrays (with advantages) for the update, and statistics of the batch."""
        arrays = sequence_arrays(batch, self.model_config.vocab_size)
        b, t = arrays["tokens"].shape
        if "rewards" not in batch:
            raise ValueError("rollout batch is missing required field 'rewards'")
        rewards = np.asarray(batch["rewards"], np.float64)
        if rewards.shape != (b,):
            raise ValueError(f"batch field 'rewards' has shape {rewards.shape}, expected ({b},)")
        group_size = int(self.config.group_size)
        valid = np.ones((b,), bool) if batch.get("valid") is None else np.asarray(batch["valid"])
        if valid.shape != (b,) or valid.dtype != bool:
            raise ValueError(f"batch field 'valid' must be bool [{b}], got {valid.dtype} {valid.shape}")
        arrays["advantages"] = group_advantages(rewards, group_size, normalize_std=self.config.normalize_std,
                                                valid=valid)
        arrays["loss_mask"] = arrays["loss_mask"] * valid[:, None].astype(np.float32)
        # Statistics describe the global batch: every process gathers the per-row numbers (not tokens).
        all_rewards = gather_rows(rewards)
        stats = {"reward/mean": all_rewards.mean(), "reward/std": all_rewards.std(), "reward/max": all_rewards.max(),
                 "reward/min": all_rewards.min(), "excluded_rows_frac": 1.0 - gather_rows(valid).mean()}
        if self.config.dynamic_sampling:
            keep = informative_rows(rewards, group_size)
            arrays["loss_mask"] = arrays["loss_mask"] * keep[:, None].astype(np.float32)
            stats["dynamic_sampling/kept_groups_frac"] = gather_rows(keep).mean()
        if self.settings.old_logp == "sampler":
            if batch.get("sampler_logprobs") is None:
                raise ValueError("old_logp='sampler' needs the batch field 'sampler_logprobs' [B, T]")
            logprobs = np.asarray(batch["sampler_logprobs"], np.float32)
            if logprobs.shape != (b, t):
                raise ValueError(f"batch field 'sampler_logprobs' has shape {logprobs.shape}, expected {(b, t)}")
            arrays["sampler_logprobs"] = logprobs
        generated = gather_rows(arrays["loss_mask"].sum(axis=1))
        lengths = gather_rows(arrays["attention_mask"].sum(axis=1))
        stats.update({"response_tokens/mean": generated.mean(), "response_tokens/max": generated.max(),
                      "sequence_length/mean": lengths.mean(), "tokens": float(lengths.sum())})
        return arrays, {k: float(v) for k, v in stats.items()}

    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One GRPO update on a rollout batch; returns host metrics (loss terms, clip fractions, KL,
        entropy, grad norm, lr, skipped steps, reward/length statistics, tokens/s).

        batch fields (numpy, rows ordered group by group): tokens [B, T], loss_mask [B, T] (1 only on
        model-generated tokens), attention_mask [B, T] or lengths [B], optional positions [B, T],
        rewards [B], sampler_logprobs [B, T] (needed when config.old_logp == "sampler"), valid [B] bool
        (optional: False rows, e.g. failed judge or search, are left out of the update and of their
        group's advantage statistics).
        """
        start = time.perf_counter()
        arrays, stats = self.prepare_batch(batch)
        layout = self.layout(arrays["tokens"].shape[0])
        device_batch = shard_batch(arrays, layout, self.mesh)
        self.state, metrics = self._update(self.state, device_batch, self.ref_params, self.controls())
        metrics = scalar_metrics(metrics)
        elapsed = time.perf_counter() - start
        if self.regulator is not None:
            self.regulator.observe(metrics["entropy"])
            metrics.update(self.regulator.metrics())
        metrics.update(stats)
        metrics.update({"update_time_s": elapsed, "tokens_per_s": stats["tokens"] / elapsed,
                        "total_skipped_steps": float(self.state.skipped_steps)})
        return metrics

    def own_json_items(self) -> dict[str, Any]:
        return {ENTROPY_ITEM: self.regulator.state_dict()} if self.regulator is not None else {}

    def load_own_json_items(self, items: Mapping[str, Any]) -> None:
        if self.regulator is not None and ENTROPY_ITEM in items:
            self.regulator.load_state_dict(items[ENTROPY_ITEM])
