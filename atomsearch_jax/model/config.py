"""Qwen2.5 and Qwen3 (dense) model configuration: presets for every published size, HF config.json in and out."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp

from atomsearch_jax.model.dtypes import DTYPES, dtype_name
from atomsearch_jax.kernels.blas_matmul import check_policy
from atomsearch_jax.model.attention import check_implementation

MODEL_TYPES = ("qwen2", "qwen3")
_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a Qwen2/Qwen2.5 or dense Qwen3 decoder plus how to run it.

    Architecture fields mirror HF `Qwen2Config` / `Qwen3Config`. The families differ in attention only:
    `model_type="qwen2"` has q/k/v biases (`attention_bias`), `"qwen3"` has none but RMS-normalises every
    query and key head before RoPE (`qk_norm`) and usually sets `head_dim` explicitly. `dtype` is the compute (activation) dtype,
    `param_dtype` the storage dtype of the parameters. `remat` recomputes each layer in the backward
    pass; `scan_layers` stacks the layers under one `lax.scan` (faster compiles, slower decoding on
    XLA CPU because every step copies the weight slices, so it is off by default). `attention` names
    the kernel (see model/attention.py: auto | reference | blockwise | dot_product | pallas) and
    `attention_block` its key-block size (slots); `matmul` the dense products' kernel (auto | xla | blas,
    see kernels/blas_matmul.py). None of the three changes the numbers beyond float rounding.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    scan_layers: bool = False
    model_type: str = "qwen2"
    attention_bias: bool = True
    qk_norm: bool = False
    attention: str = "auto"
    attention_block: int = 512
    matmul: str = "auto"

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"ModelConfig.model_type={self.model_type!r}; expected one of {list(MODEL_TYPES)}")
        if isinstance(self.eos_token_id, (list, tuple)):
            # Kept hashable: compiled programs are cached per config.
            object.__setattr__(self, "eos_token_id", tuple(int(i) for i in self.eos_token_id))
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"ModelConfig.hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "set head_dim explicitly"
            )
        if self.dims_per_head % 2:
            raise ValueError(f"ModelConfig head_dim={self.dims_per_head} must be even for rotary embeddings")
        check_implementation(self.attention)
        check_policy(self.matmul)
        if int(self.attention_block) <= 0:
            raise ValueError(f"ModelConfig.attention_block must be positive, got {self.attention_block}")
        for name in ("dtype", "param_dtype"):  # strings, numpy and jnp dtypes; stored as names (hashable)
            object.__setattr__(self, name, dtype_name(getattr(self, name), f"ModelConfig.{name}"))

    @property
    def dims_per_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    @property
    def compute_dtype(self) -> jnp.dtype:
        return DTYPES[self.dtype]

    @property
    def storage_dtype(self) -> jnp.dtype:
        return DTYPES[self.param_dtype]

    @property
    def eos_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Number of parameters (embedding counted once when tied)."""
        e, f, d = self.hidden_size, self.intermediate_size, self.dims_per_head
        attn = e * d * (self.num_heads + 2 * self.num_kv_heads) + self.num_heads * d * e
        if self.attention_bias:
            attn += d * (self.num_heads + 2 * self.num_kv_heads)
        if self.qk_norm:
            attn += 2 * d
        layer = attn + 3 * e * f + 2 * e
        head = 0 if self.tie_word_embeddings else self.vocab_size * e
        return self.vocab_size * e + self.num_layers * layer + e + head

    # ---- HF config.json ----------------------------------------------------------------------
    @classmethod
    def from_hf(cls, config: str | os.PathLike | dict, **overrides: Any) -> "ModelConfig":
        """Builds a config from an HF Qwen2 or Qwen3 `config.json` (path, directory or dict).

        Refuses what this port cannot honour (mixture-of-experts checkpoints, sliding-window attention
        switched on, rope scaling other than the default, activations other than SiLU, other model
        types), naming the field.
        """
        source = "config dict"
        if not isinstance(config, dict):
            path = os.fspath(config)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            source = path
            if not os.path.isfile(path):
                raise FileNotFoundError(f"HF config not found: {path}")
            with open(path, encoding="utf-8") as f:
                try:
                    config = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: not valid JSON ({e})") from None

        def refuse(field: str, why: str) -> None:
            raise ValueError(f"{source}: field {field!r} = {config.get(field)!r}: {why}")

        model_type = config.get("model_type", "qwen2")
        if "moe" in str(model_type) or config.get("num_experts"):
            refuse("model_type" if "moe" in str(model_type) else "num_experts",
                   "mixture-of-experts checkpoints (e.g. Qwen3-30B-A3B, qwen3_moe) are not supported; "
                   "use a dense Qwen2/Qwen2.5/Qwen3 checkpoint")
        if model_type not in MODEL_TYPES:
            refuse("model_type", f"only dense Qwen2/Qwen2.5 ('qwen2') and Qwen3 ('qwen3') checkpoints are supported")
        if config.get("use_sliding_window", False):
            refuse("use_sliding_window", "sliding-window attention is not implemented")
        if any(kind != "full_attention" for kind in config.get("layer_types") or ()):
            refuse("layer_types", "only full-attention layers are implemented")
        if config.get("hidden_act", "silu") != "silu":
            refuse("hidden_act", "only 'silu' (SwiGLU) is implemented")
        rope_theta = config.get("rope_theta")
        rope_params = config.get("rope_parameters") or {}
        if rope_theta is None:
            rope_theta = rope_params.get("rope_theta", 1_000_000.0)
        for field, value in (("rope_scaling", config.get("rope_scaling")), ("rope_parameters", rope_params)):
            rope_type = (value or {}).get("rope_type", (value or {}).get("type", "default"))
            if rope_type not in (None, "default"):
                refuse(field, f"rope type {rope_type!r} is not implemented (only the default RoPE)")
        for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if field not in config:
                raise ValueError(f"{source}: required field {field!r} is missing")
        num_heads = int(config["num_attention_heads"])
        kwargs = dict(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(config.get("num_key_value_heads") or num_heads),
            head_dim=config.get("head_dim"),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            max_position_embeddings=int(config.get("max_position_embeddings", 32768)),
            bos_token_id=config.get("bos_token_id"),
            eos_token_id=config.get("eos_token_id"),
            model_type=model_type,
            attention_bias=bool(config.get("attention_bias", model_type == "qwen2")),
            qk_norm=model_type == "qwen3",
        )
        if kwargs["head_dim"] is not None and kwargs["head_dim"] == kwargs["hidden_size"] // num_heads:
            kwargs["head_dim"] = None
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` dict for this architecture (loads as `Qwen2ForCausalLM` / `Qwen3ForCausalLM`)."""
        out: dict[str, Any] = {
            "architectures": [_ARCHITECTURES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "use_sliding_window": False,
            "attention_dropout": 0.0,
            "torch_dtype": self.param_dtype,
        }
        if self.head_dim is not None or self.model_type == "qwen3":
            out["head_dim"] = self.dims_per_head
        if self.model_type == "qwen3":
            out["attention_bias"] = self.attention_bias
        if self.bos_token_id is not None:
            out["bos_token_id"] = self.bos_token_id
        if self.eos_token_id is not None:
            out["eos_token_id"] = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
        return out


def _preset(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, tied: bool) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_layers=layers, num_heads=heads,
        num_kv_heads=kv, rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=tied,
        max_position_embeddings=32768, bos_token_id=151643, eos_token_id=151645,
    )


def _qwen3(hidden: int, inter: int, layers: int, heads: int, tied: bool, **changes: Any) -> ModelConfig:
    fields = dict(head_dim=128, model_type="qwen3", attention_bias=False, qk_norm=True, max_position_embeddings=40960)
    return _preset(hidden, inter, layers, heads, 8, 151936, tied).replace(**{**fields, **changes})


# Values of the published Qwen2.5-*-Instruct and Qwen3-* config.json files.
PRESETS: dict[str, ModelConfig] = {
    "qwen2.5-0.5b": _preset(896, 4864, 24, 14, 2, 151936, True),
    "qwen2.5-1.5b": _preset(1536, 8960, 28, 12, 2, 151936, True),
    "qwen2.5-3b": _preset(2048, 11008, 36, 16, 2, 151936, True),
    "qwen2.5-7b": _preset(3584, 18944, 28, 28, 4, 152064, False),
    "qwen2.5-14b": _preset(5120, 13824, 48, 40, 8, 152064, False),
    "qwen2.5-32b": _preset(5120, 27648, 64, 40, 8, 152064, False),
    "qwen2.5-72b": _preset(8192, 29568, 80, 64, 8, 152064, False),
    "qwen3-0.6b": _qwen3(1024, 3072, 28, 16, True),
    "qwen3-1.7b": _qwen3(2048, 6144, 28, 16, True),
    "qwen3-4b": _qwen3(2560, 9728, 36, 32, True),
    # DemyAgent-4B's base: the Qwen3-4B architecture with a 256K context (rope theta 5e6).
    "qwen3-4b-instruct-2507": _qwen3(2560, 9728, 36, 32, True, rope_theta=5_000_000.0, max_position_embeddings=262144),
    "qwen3-8b": _qwen3(4096, 12288, 36, 32, False),
    "qwen3-14b": _qwen3(5120, 17408, 40, 40, False),
    "qwen3-32b": _qwen3(5120, 25600, 64, 64, False),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset by name (`qwen2.5-0.5b` … `qwen2.5-72b`, `qwen3-0.6b` … `qwen3-32b`), with field overrides."""
    key = name.lower()
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[key].replace(**overrides)


def tiny_config(**overrides: Any) -> ModelConfig:
    """A few-thousand-parameter Qwen2.5-shaped config for tests (`tiny_qwen3_config` for Qwen3)."""
    base = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                rms_norm_eps=1e-6, rope_theta=10_000.0, tie_word_embeddings=False, max_position_embeddings=8192)
    base.update(overrides)
    return ModelConfig(**base)


def tiny_qwen3_config(**overrides: Any) -> ModelConfig:
    """A tiny Qwen3-shaped config: no q/k/v bias, q/k norm, head_dim (16) != hidden / heads (8)."""
    return tiny_config(**{"model_type": "qwen3", "attention_bias": False, "qk_norm": True, "head_dim": 16, **overrides})
