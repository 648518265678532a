"""Qwen2 / Qwen3 building blocks as Flax Linen modules: RMSNorm, RoPE, GQA attention with a KV cache, SwiGLU.

Shapes: B batch, T new tokens, S cache slots, E hidden, H query heads, K kv heads, G = H // K,
D head dim, F intermediate size. Parameters carry logical axis names (see parallel/rules.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from atomsearch_jax.kernels import blas_matmul
from atomsearch_jax.model.attention import KeyMask, attend
from atomsearch_jax.model.config import ModelConfig

Array = jax.Array


def _param(module: nn.Module, name: str, init, shape: tuple[int, ...], axes: tuple[str | None, ...],
           cfg: ModelConfig) -> Array:
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, cfg.storage_dtype)


@dataclasses.dataclass(frozen=True)
class Constrainer:
    """Applies logical sharding constraints to activations when a mesh is given (no-op otherwise).

    Frozen (hashable) so it can be a Linen module attribute.
    """

    mesh: Any = None
    rules: Any = None

    def __call__(self, x: Array, axes: tuple[str | None, ...]) -> Array:
        if self.mesh is None:
            return x
        return nn.with_logical_constraint(x, axes, rules=self.rules, mesh=self.mesh)

    def per_device(self, kernel, q: Array, k: Array, v: Array, mask: KeyMask) -> Array:
        """kernel(q, k, v, mask) run on each device's shard (for custom calls XLA cannot partition):
        rows over the batch axes, heads over the head axes; k/v are widened to the query heads first so
        every shard holds the kv heads of its query heads."""
        if self.mesh is None:
            return kernel(q, k, v, mask)
        group = q.shape[2] // k.shape[2]
        k, v = (jnp.repeat(x, group, axis=2) for x in (k, v))
        spec = lambda axes: nn.logical_to_mesh_axes(axes, self.rules)  # noqa: E731
        heads = spec(("batch", "length", "act_heads", "head_dim"))
        rows = spec(("batch", "length"))
        mask_spec = KeyMask(q_slots=rows, kv_valid=None if mask.kv_valid is None else rows, aligned=mask.aligned)
        return jax.shard_map(kernel, mesh=self.mesh, in_specs=(heads, heads, heads, mask_spec), out_specs=heads,
                             check_vma=False)(q, k, v, mask)


class RMSNorm(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("norm",), self.cfg)
        # As HF: normalise in float32, cast back, then scale.
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
        return scale.astype(x.dtype) * x32.astype(x.dtype)


Rotary = tuple[Array, Array]  # (cos, sin): RoPE's float32 tables [B, T, 1, D] at a forward's positions


def rotary_tables(positions: Array, dims_per_head: int, theta: float, max_position: int | None = None) -> Rotary:
    """RoPE's (cos, sin) at integer positions [B, T] (HF's rotate-half layout), float32 [B, T, 1, D].

    With max_position (static; every position below it) they are rows of [max_position, D] tables, gathered
    by position. Computed from the positions, XLA fused cos and sin into each query and key element (14 per
    table entry: ~30 us a layer in Qwen2.5-0.5B's decode step); the whole tables depend on no position, so
    in a decode loop XLA computes them once, outside the loop. Both ways give the same values."""
    d = dims_per_head
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    if max_position is None:
        freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
        emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
        return jnp.cos(emb), jnp.sin(emb)
    freqs = jnp.arange(max_position, dtype=jnp.float32)[:, None] * inv_freq  # [P, D/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb)[positions][:, :, None, :], jnp.sin(emb)[positions][:, :, None, :]


def rotary_embedding(x: Array, rotary: Rotary) -> Array:
    """Applies RoPE (HF's rotate-half layout) to x [B, T, N, D] with the `rotary_tables` of its positions."""
    d = x.shape[-1]
    cos, sin = (table.astype(x.dtype) for table in rotary)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return x * cos + rotated * sin


def write_cache(cache: Array, new: Array, index: Array) -> Array:
    """Writes new [B, K, T, D] into cache [B, K, S, D] at each row's own slot index [B]."""
    return jax.vmap(lambda c, n, i: jax.lax.dynamic_update_slice(c, n, (0, i, 0)))(cache, new, index)


class Projection(nn.Module):
    """y = einsum(spec, x, kernel) (+ bias): a dense layer over named multi-dimensional axes.

    Every spec here contracts x's last dim with the kernel's first ("bte,ehd->bthd"), or with flat=True
    x's trailing dims with all kernel dims but the last ("bthd,hde->bte"). flat products run as one 2-D
    matmul over the flattened dims: as an einsum over two contracting dims, XLA CPU transposed the whole
    kernel on every call (a weight-sized copy per decode step). When cfg.matmul takes the OpenBLAS
    handler, every product runs 2-D through it (kernels/blas_matmul.py).
    """

    cfg: ModelConfig
    spec: str
    kernel_shape: tuple[int, ...]
    kernel_axes: tuple[str | None, ...]
    bias_shape: tuple[int, ...] | None = None
    bias_axes: tuple[str | None, ...] | None = None
    flat: bool = False

    @nn.compact
    def __call__(self, x: Array, *, weights_only: bool = False) -> Array | tuple[Array, Array | None]:
        """y, or with weights_only the (kernel in x's dtype, bias or None) that y would use."""
        kernel = _param(self, "kernel", nn.initializers.normal(0.02), self.kernel_shape, self.kernel_axes, self.cfg)
        kernel = kernel.astype(x.dtype)
        bias = None
        if self.bias_shape is not None:
            bias = _param(self, "bias", nn.initializers.zeros, self.bias_shape, self.bias_axes, self.cfg).astype(x.dtype)
        if weights_only:
            return kernel, bias
        if self.flat:
            n = kernel.ndim - 1
            y = blas_matmul.matmul(x.reshape(*x.shape[:-n], -1), kernel.reshape(-1, kernel.shape[-1]),
                                   policy=self.cfg.matmul)
        elif blas_matmul.uses_blas(x.dtype, kernel.dtype, self.cfg.matmul, rows=math.prod(x.shape[:-1]),
                                   weight_elements=kernel.size):
            y = blas_matmul.matmul(x, kernel.reshape(kernel.shape[0], -1), policy="blas")
            y = y.reshape(*x.shape[:-1], *kernel.shape[1:])
        else:
            y = jnp.einsum(self.spec, x, kernel)
        return y if bias is None else y + bias


class Attention(nn.Module):
    cfg: ModelConfig
    constrain: Constrainer

    def _project(self, x: Array, projections: tuple[Projection, ...]) -> tuple[Array, ...]:
        """q, k, v of x [B, T, E]: while decoding (a few rows, float32 on the OpenBLAS handler's few-row loop)
        as one handler call over the three kernels, else one product each."""
        rows = math.prod(x.shape[:-1])
        elements = sum(math.prod(p.kernel_shape) for p in projections)
        if not blas_matmul.groups_few_rows(x.dtype, self.cfg.storage_dtype, self.cfg.matmul, rows=rows,
                                           weight_elements=elements):
            return tuple(p(x) for p in projections)
        weights = [p(x, weights_only=True) for p in projections]
        ys = blas_matmul.few_row_products(x, tuple(w.reshape(w.shape[0], -1) for w, _ in weights))
        shaped = (y.reshape(*x.shape[:-1], *w.shape[1:]) for y, (w, _) in zip(ys, weights))
        return tuple(y if b is None else y + b for y, (_, b) in zip(shaped, weights))

    @nn.compact
    def __call__(self, x: Array, rotary: Rotary, mask: KeyMask, cache: dict | None,
                 cache_index: Array | None) -> tuple[Array, dict | None]:
        """x [B, T, E]; rotary: `rotary_tables` of the positions [B, T]; mask: the keys each query sees (over S
        slots with a cache, else T).

        With a cache ({"k", "v"}: [B, K, S, D]) the new keys/values are first written at slots
        cache_index[b] .. cache_index[b] + T - 1, then attention runs over all S slots. Keys and values
        are laid out heads-major ([B, K, S, D]) so both attention matmuls read the cache as stored
        (batch dims B, K leading); with [B, S, K, D] XLA CPU copied the whole cache into that order in
        every layer of every decode step.
        Returns (output [B, T, E], updated cache or None).
        """
        cfg, c = self.cfg, self.constrain
        e, h, kv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.dims_per_head
        bias = cfg.attention_bias
        projections = (
            Projection(cfg, "bte,ehd->bthd", (e, h, d), ("embed", "heads", "head_dim"), (h, d) if bias else None,
                       ("heads", "head_dim"), name="q"),
            Projection(cfg, "bte,ekd->btkd", (e, kv, d), ("embed", "kv_heads", "head_dim"), (kv, d) if bias else None,
                       ("kv_heads", "head_dim"), name="k"),
            Projection(cfg, "bte,ekd->btkd", (e, kv, d), ("embed", "kv_heads", "head_dim"), (kv, d) if bias else None,
                       ("kv_heads", "head_dim"), name="v"))
        q, k, v = self._project(x, projections)
        if cfg.qk_norm:  # Qwen3: every query and key head RMS-normalised over head_dim before RoPE
            q, k = RMSNorm(cfg, name="q_norm")(q), RMSNorm(cfg, name="k_norm")(k)
        q = c(rotary_embedding(q, rotary), ("batch", "length", "act_heads", "head_dim"))
        k = c(rotary_embedding(k, rotary), ("batch", "length", "act_kv_heads", "head_dim"))
        v = c(v, ("batch", "length", "act_kv_heads", "head_dim"))
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, D]
        if cache is not None:
            k_all = write_cache(cache["k"], k.astype(cache["k"].dtype), cache_index)
            v_all = write_cache(cache["v"], v.astype(cache["v"].dtype), cache_index)
            cache = {"k": k_all, "v": v_all}
            k, v = k_all.astype(x.dtype), v_all.astype(x.dtype)
        shard = c.per_device if c.mesh is not None else None
        out = attend(q, k, v, mask, implementation=cfg.attention, block=cfg.attention_block, shard=shard,
                     kv_layout="bksd")
        out = c(out, ("batch", "length", "act_heads", "head_dim"))
        out = Projection(cfg, "bthd,hde->bte", (h, d, e), ("heads", "head_dim", "embed"), name="o", flat=True)(out)
        return out, cache


class MLP(nn.Module):
    """SwiGLU with the gate and up projections fused into one [E, 2, F] matmul."""

    cfg: ModelConfig
    constrain: Constrainer

    @nn.compact
    def __call__(self, x: Array) -> Array:
        e, f = self.cfg.hidden_size, self.cfg.intermediate_size
        gate_up = Projection(self.cfg, "bte,ecf->btcf", (e, 2, f), ("embed", "gate_up", "mlp"), name="gate_up")(x)
        gate_up = self.constrain(gate_up, ("batch", "length", None, "act_mlp"))
        hidden = jax.nn.silu(gate_up[:, :, 0]) * gate_up[:, :, 1]
        return Projection(self.cfg, "btf,fe->bte", (f, e), ("mlp", "embed"), name="down")(hidden)


class DecoderLayer(nn.Module):
    cfg: ModelConfig
    constrain: Constrainer

    @nn.compact
    def __call__(self, x: Array, rotary: Rotary, mask: KeyMask, cache: dict | None = None,
                 cache_index: Array | None = None) -> tuple[Array, dict | None]:
        h, cache = Attention(self.cfg, self.constrain, name="attn")(
            RMSNorm(self.cfg, name="input_norm")(x), rotary, mask, cache, cache_index)
        x = self.constrain(x + h, ("batch", "length", "act_embed"))
        x = x + MLP(self.cfg, self.constrain, name="mlp")(RMSNorm(self.cfg, name="post_attn_norm")(x))
        return self.constrain(x, ("batch", "length", "act_embed")), cache
