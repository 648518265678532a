"""Default optimizer, update-step and checkpoint settings shared by SFT and GRPO (ml_collections)."""
from __future__ import annotations

import ml_collections


def optimizer_config() -> ml_collections.ConfigDict:
    """AdamW with linear warmup and global-norm clipping (veRL's actor defaults, lr of the papers)."""
    return ml_collections.ConfigDict(dict(
        learning_rate=1e-6,
        warmup_steps=0,          # optimizer steps of linear warmup from 0
        schedule="constant",     # after warmup: "constant" or "cosine" (to final_lr_ratio · lr at total_steps)
        total_steps=0,           # cosine horizon in optimizer steps (cosine only)
        final_lr_ratio=0.0,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.01,       # decoupled; applied to matrices only (not norms/biases)
        max_grad_norm=1.0,       # global-norm clip; 0 disables
        frozen="",               # comma-separated regexes of parameter paths left untrained, e.g. "embed/"
    ))


def train_step_config() -> ml_collections.ConfigDict:
    """How one update call splits its batch, and memory knobs of the forward."""
    return ml_collections.ConfigDict(dict(
        mini_batch_size=0,       # rows per optimizer step; 0 = the whole batch (one step per update)
        micro_batch_size=0,      # rows per gradient computation (accumulated; rounded up to a multiple of the
                                 # data x fsdp devices); 0 = the whole mini-batch
        logprob_chunk=256,       # sequence positions per [B, chunk, V] float32 logits block
        remat=False,             # recompute each layer in the backward pass (ModelConfig.remat)
    ))


def checkpoint_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        directory="",            # "" = no checkpoints
        max_to_keep=3,
        save_interval_steps=1,   # in optimizer steps; `save(force=True)` ignores it
        async_save=True,
        save_on_sigterm=True,    # SIGTERM (preemption notice) sets `Trainer.preemption_requested()` instead of killing
        save_timeout_s=900.0,    # a save (or a SIGTERM-ed run) not done by then ends the process with an error
    ))


def get_config() -> ml_collections.ConfigDict:
    """The settings every trainer takes: optimizer, update, checkpoint, seed."""
    return ml_collections.ConfigDict(dict(
        optimizer=optimizer_config(), train_step=train_step_config(), checkpoint=checkpoint_config(), seed=0,
    ))
