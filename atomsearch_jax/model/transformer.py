"""The Qwen2 decoder and its functional entry points.

`forward` runs a whole sequence (training, scoring, reference checks); `forward_cached` runs new tokens
against a fixed-size KV cache with a per-row write position (prefill, decode, append). Both take the
plain `params` pytree; nothing in the model holds state.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import Mesh

from atomsearch_jax.kernels import blas_matmul
from atomsearch_jax.model.attention import KeyMask
from atomsearch_jax.model.config import ModelConfig
from atomsearch_jax.model.layers import Constrainer, DecoderLayer, RMSNorm, Rotary, rotary_tables
from atomsearch_jax.parallel.rules import SAMPLE_RULES, TRAIN_RULES, LogicalRules

Array = jax.Array
KVCache = list  # one {"k": [B, K, S, D], "v": [B, K, S, D]} dict per layer (heads-major, see layers.Attention)


class _ScannedLayer(nn.Module):
    """DecoderLayer in (carry, out) form for nn.scan (training without a cache only)."""

    cfg: ModelConfig
    constrain: Constrainer

    @nn.compact
    def __call__(self, x: Array, rotary: Rotary, mask: KeyMask) -> tuple[Array, None]:
        layer = nn.remat(DecoderLayer) if self.cfg.remat else DecoderLayer
        x, _ = layer(self.cfg, self.constrain, name="layer")(x, rotary, mask)
        return x, None


class Qwen2(nn.Module):
    """Token ids -> final hidden states (and the per-layer caches when given)."""

    cfg: ModelConfig
    constrain: Constrainer = Constrainer()

    @nn.compact
    def __call__(self, tokens: Array, positions: Array, mask: KeyMask, cache: KVCache | None = None,
                 cache_index: Array | None = None, max_position: int | None = None) -> tuple[Array, KVCache | None]:
        """tokens, positions [B, T]; max_position: a static bound on every position (see `rotary_tables`)."""
        cfg = self.cfg
        embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype,
                         embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
                         name="embed")
        x = embed(tokens).astype(cfg.compute_dtype)
        x = self.constrain(x, ("batch", "length", "act_embed"))
        rotary = rotary_tables(positions, cfg.dims_per_head, cfg.rope_theta, max_position)
        if cfg.scan_layers:
            if cache is not None:
                raise ValueError("scan_layers=True models cannot decode with a KV cache; load with scan_layers=False")
            scan = nn.scan(_ScannedLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                           metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = scan(cfg, self.constrain, name="layers")(x, rotary, mask)
            new_cache = None
        else:
            layer_cls = nn.remat(DecoderLayer) if cfg.remat else DecoderLayer
            new_cache = [] if cache is not None else None
            for i in range(cfg.num_layers):
                x, layer_cache = layer_cls(cfg, self.constrain, name=f"layers_{i}")(
                    x, rotary, mask, None if cache is None else cache[i], cache_index)
                if cache is not None:
                    new_cache.append(layer_cache)
        return RMSNorm(cfg, name="final_norm")(x), new_cache


def lm_head_weight(config: ModelConfig, params: Any) -> Array:
    """The [E, V] output projection (the transposed embedding when tied)."""
    if config.tie_word_embeddings:
        return params["embed"]["embedding"].T
    return params["lm_head"]["kernel"]


def lm_head_operand(config: ModelConfig, params: Any) -> tuple[Array, bool]:
    """The output projection as stored, for `blas_matmul.matmul`: the [V, E] embedding and transposed=True
    when tied (sgemm reads it in place, no [E, V] copy), else the [E, V] kernel and False."""
    if config.tie_word_embeddings:
        return params["embed"]["embedding"], True
    return params["lm_head"]["kernel"], False


def head_logits(hidden: Array, w: Array, transposed: bool, matmul: str) -> Array:
    """hidden [..., E] @ w ([E, V], or the stored [V, E] read transposed) -> float32 logits [..., V], through
    the dense-product kernel that the `matmul` policy picks (kernels/blas_matmul.py)."""
    if blas_matmul.uses_blas(hidden.dtype, w.dtype, matmul, rows=math.prod(hidden.shape[:-1]),
                             transposed=transposed, weight_elements=w.size):
        return blas_matmul.matmul(hidden, w, transposed=transposed, policy="blas")
    w = w.astype(hidden.dtype)
    return jnp.einsum("...e,ev->...v", hidden, w.T if transposed else w, preferred_element_type=jnp.float32)


def lm_logits(config: ModelConfig, params: Any, hidden: Array) -> Array:
    """Logits [..., V] (float32) from final hidden states [..., E]."""
    w, transposed = lm_head_operand(config, params)
    return head_logits(hidden, w, transposed, config.matmul)


def _model(config: ModelConfig, mesh: Mesh | None, rules: LogicalRules) -> Qwen2:
    return Qwen2(config, Constrainer(mesh, rules if mesh is not None else None))


def _split_head(params: Any) -> tuple[Any, Any]:
    """Separates the untied LM head (not part of the Qwen2 body module) from the body params."""
    body = {k: v for k, v in params.items() if k != "lm_head"}
    return body, params.get("lm_head")


def hidden_states(config: ModelConfig, params: Any, tokens: Array, *, positions: Array | None = None,
                  attention_mask: Array | None = None, mesh: Mesh | None = None,
                  rules: LogicalRules = TRAIN_RULES) -> Array:
    """Final hidden states [B, T, E] for tokens [B, T] (causal; padding keys masked by attention_mask)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    b, t = tokens.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    kv_valid = None if attention_mask is None else jnp.asarray(attention_mask, bool)
    mask = KeyMask(q_slots=jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)), kv_valid=kv_valid, aligned=True)
    body, _ = _split_head(params)
    hidden, _ = _model(config, mesh, rules).apply({"params": body}, tokens, jnp.asarray(positions, jnp.int32), mask)
    return hidden


def forward(config: ModelConfig, params: Any, tokens: Array, *, positions: Array | None = None,
            attention_mask: Array | None = None, mesh: Mesh | None = None,
            rules: LogicalRules = TRAIN_RULES) -> Array:
    """Logits [B, T, V] (float32) for tokens [B, T].

    positions [B, T] default to 0..T-1; attention_mask [B, T] (1 = real token) masks padding keys.
    With `mesh`, activations carry sharding constraints from `rules`.
    """
    hidden = hidden_states(config, params, tokens, positions=positions, attention_mask=attention_mask,
                           mesh=mesh, rules=rules)
    return lm_logits(config, params, hidden)


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype: Any = None) -> KVCache:
    """A zero KV cache: per layer {"k", "v"} of shape [batch, K, max_len, D] in the compute dtype."""
    shape = (batch, config.num_kv_heads, max_len, config.dims_per_head)
    dtype = dtype or config.compute_dtype
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(config.num_layers)]


def forward_cached(config: ModelConfig, params: Any, tokens: Array, cache: KVCache, cache_index: Array, *,
                   positions: Array | None = None, mesh: Mesh | None = None,
                   rules: LogicalRules = SAMPLE_RULES) -> tuple[Array, KVCache]:
    """Runs new tokens [B, T] against the cache; row b's tokens go to slots cache_index[b] + 0..T-1.

    Each new token attends to every slot up to its own (rows hold contiguous histories from slot 0).
    positions default to the slot indices. Returns (final hidden states [B, T, E], updated cache);
    apply `lm_logits` to the rows/positions whose logits are needed.
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    b, t = tokens.shape
    slots = cache_index[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]  # [B, T]
    # Slots lie below the cache size: RoPE's tables are then gathered (see layers.rotary_tables).
    max_position = cache[0]["k"].shape[2] if positions is None else None
    if positions is None:
        positions = slots
    mask = KeyMask(q_slots=slots)
    body, _ = _split_head(params)
    return _model(config, mesh, rules).apply({"params": body}, tokens, positions, mask, cache, cache_index,
                                             max_position)


def init_params(config: ModelConfig, rng: Array) -> Any:
    """Randomly initialised params (plain pytree, logical-axis boxes removed)."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    variables = _model(config, None, TRAIN_RULES).init(rng, tokens, tokens, KeyMask(q_slots=tokens))
    params = nn.unbox(variables["params"])
    if not config.tie_word_embeddings:
        rng_head = jax.random.fold_in(rng, 1)
        params["lm_head"] = {"kernel": (0.02 * jax.random.normal(
            rng_head, (config.hidden_size, config.vocab_size))).astype(config.storage_dtype)}
    return params


def param_shapes(config: ModelConfig) -> Any:
    """ShapeDtypeStructs of the params tree, without allocating anything."""
    return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def declared_logical_axes(config: ModelConfig) -> Any:
    """Logical axes the modules declare for each body parameter (lm_head is ("embed", "vocab"))."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: _model(config, None, TRAIN_RULES).init(
        jax.random.PRNGKey(0), tokens, tokens, KeyMask(q_slots=tokens))["params"])
    axes = jax.tree_util.tree_map(lambda x: tuple(x.names), boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    if not config.tie_word_embeddings:
        axes["lm_head"] = {"kernel": ("embed", "vocab")}
    return axes
