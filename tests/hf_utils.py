"""Tiny random HF Qwen2 / Qwen3 checkpoints for reference checks (built locally; no hub)."""
from __future__ import annotations

import pathlib

import numpy as np


def make_hf_model(seed: int = 0, family: str = "qwen2", **config):
    """A randomly initialised transformers Qwen2ForCausalLM or (family="qwen3") Qwen3ForCausalLM (float32)
    with every weight non-trivial."""
    import torch
    import transformers

    base = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
                max_position_embeddings=8192, attn_implementation="eager")
    base.update(config)
    attn = base.pop("attn_implementation")
    torch.manual_seed(seed)
    prefix = {"qwen2": "Qwen2", "qwen3": "Qwen3"}[family]
    config_cls, model_cls = getattr(transformers, f"{prefix}Config"), getattr(transformers, f"{prefix}ForCausalLM")
    model = model_cls(config_cls(**base)).to(torch.float32)
    model.config._attn_implementation = attn
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    model.eval()
    return model


def make_hf_checkpoint(path: pathlib.Path, seed: int = 0, family: str = "qwen2", **config) -> pathlib.Path:
    """Saves a random tiny Qwen2 / Qwen3 checkpoint (config.json + model.safetensors) to `path`."""
    model = make_hf_model(seed, family, **config)
    model.save_pretrained(path, safe_serialization=True)
    return pathlib.Path(path)


def hf_logits(model, tokens: np.ndarray, attention_mask: np.ndarray | None = None,
              positions: np.ndarray | None = None) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(np.asarray(tokens), dtype=torch.long),
                    attention_mask=None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask)),
                    position_ids=None if positions is None else torch.as_tensor(np.asarray(positions), dtype=torch.long))
    return out.logits.float().numpy()
