"""Qwen2.5 and dense Qwen3 as pure-functional Flax Linen, with HF safetensors checkpoints in and out."""
from atomsearch_jax.model.config import PRESETS, ModelConfig, get_preset, tiny_config, tiny_qwen3_config
from atomsearch_jax.model.hf_io import load_hf_checkpoint, save_hf_checkpoint, stack_layers, unstack_layers
from atomsearch_jax.model.transformer import (
    KVCache,
    declared_logical_axes,
    forward,
    forward_cached,
    hidden_states,
    init_cache,
    init_params,
    lm_head_operand,
    lm_head_weight,
    lm_logits,
    param_shapes,
)

__all__ = [
    "PRESETS", "ModelConfig", "get_preset", "tiny_config", "tiny_qwen3_config", "load_hf_checkpoint", "save_hf_checkpoint", "stack_layers", "unstack_layers", "KVCache",
    "declared_logical_axes", "forward", "forward_cached", "hidden_states", "init_cache", "init_params",
    "lm_head_operand", "lm_head_weight", "lm_logits", "param_shapes",
]
