"""HF Qwen2 / Qwen3 checkpoints (config.json + safetensors, single or sharded) <-> our params pytree.

Layouts: HF linear weights are [out, in]; ours are einsum kernels [in, ...out] with heads split out
(q: [E, H, D], o: [H, D, E]) and gate/up fused into [E, 2, F]. Loading converts one tensor at a time
on the host from a memory-mapped file and hands each device only its own shard
(`jax.make_array_from_callback`), so the whole model never sits on one host device.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding

from atomsearch_jax.model.config import ModelConfig
from atomsearch_jax.model.safetensors_io import SafetensorsFile, save_file
from atomsearch_jax.paths import copy_tree, is_url, local_copy
from atomsearch_jax.parallel.rules import TRAIN_RULES, LogicalRules, param_shardings, param_spec

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


@dataclasses.dataclass(frozen=True)
class _TensorMap:
    """One of our params (path) built from HF tensors (sources) by `to_ours`; `to_hf` inverts it."""

    path: tuple[str, ...]
    sources: tuple[str, ...]
    hf_shapes: tuple[tuple[int, ...], ...]
    to_ours: Callable[..., np.ndarray]
    to_hf: Callable[[np.ndarray], tuple[np.ndarray, ...]]


def _tensor_maps(cfg: ModelConfig) -> list[_TensorMap]:
    e, f, h, k, d, v = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                        cfg.dims_per_head, cfg.vocab_size)
    same = (lambda x: x, lambda x: (x,))
    maps = [_TensorMap(("embed", "embedding"), ("model.embed_tokens.weight",), ((v, e),), *same),
            _TensorMap(("final_norm", "scale"), ("model.norm.weight",), ((e,),), *same)]
    for i in range(cfg.num_layers):
        hf, ours = f"model.layers.{i}.", f"layers_{i}"
        maps += [
            _TensorMap((ours, "input_norm", "scale"), (hf + "input_layernorm.weight",), ((e,),), *same),
            _TensorMap((ours, "post_attn_norm", "scale"), (hf + "post_attention_layernorm.weight",), ((e,),), *same),
            _TensorMap((ours, "mlp", "down", "kernel"), (hf + "mlp.down_proj.weight",), ((e, f),),
                       lambda w: w.T, lambda x: (x.T,)),
            _TensorMap((ours, "mlp", "gate_up", "kernel"), (hf + "mlp.gate_proj.weight", hf + "mlp.up_proj.weight"),
                       ((f, e), (f, e)), lambda g, u: np.stack([g.T, u.T], axis=1),
                       lambda x: (x[:, 0].T, x[:, 1].T)),
            _TensorMap((ours, "attn", "o", "kernel"), (hf + "self_attn.o_proj.weight",), ((e, h * d),),
                       lambda w: w.T.reshape(h, d, e), lambda x: (x.reshape(h * d, e).T,)),
        ]
        for name, heads in (("q", h), ("k", k), ("v", k)):
            maps.append(
                _TensorMap((ours, "attn", name, "kernel"), (hf + f"self_attn.{name}_proj.weight",), ((heads * d, e),),
                           lambda w, n=heads: w.T.reshape(e, n, d), lambda x, n=heads: (x.reshape(e, n * d).T,)))
            if cfg.attention_bias:
                maps.append(_TensorMap((ours, "attn", name, "bias"), (hf + f"self_attn.{name}_proj.bias",),
                                       ((heads * d,),), lambda b, n=heads: b.reshape(n, d),
                                       lambda x, n=heads: (x.reshape(n * d),)))
        if cfg.qk_norm:
            maps += [_TensorMap((ours, "attn", f"{name}_norm", "scale"), (hf + f"self_attn.{name}_norm.weight",),
                                ((d,),), *same) for name in ("q", "k")]
    if not cfg.tie_word_embeddings:
        maps.append(_TensorMap(("lm_head", "kernel"), ("lm_head.weight",), ((v, e),), lambda w: w.T, lambda x: (x.T,)))
    return maps


def _open_checkpoint(path: str) -> dict[str, SafetensorsFile]:
    """Tensor name -> the open file holding it, for a single-file or index-sharded checkpoint dir."""
    index_path = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as fh:
            try:
                weight_map = json.load(fh)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{index_path}: not a valid safetensors index ({e!r})") from None
        files: dict[str, SafetensorsFile] = {}
        by_name = {}
        for name, fname in weight_map.items():
            if fname not in files:
                fpath = os.path.join(path, fname)
                if not os.path.isfile(fpath):
                    raise FileNotFoundError(f"{index_path} maps tensor {name!r} to missing file {fpath}")
                files[fname] = SafetensorsFile(fpath)
            if name not in files[fname].names:
                raise ValueError(f"{index_path} maps tensor {name!r} to {fname}, which does not contain it")
            by_name[name] = files[fname]
        return by_name
    single = os.path.join(path, SINGLE_FILE)
    if not os.path.isfile(single):
        raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in checkpoint directory {path}")
    st = SafetensorsFile(single)
    return {name: st for name in st.names}


def _set(tree: dict, path: Sequence[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Any, path: Sequence[str]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def load_hf_checkpoint(path: str | os.PathLike, *, dtype: Any = "float32", compute_dtype: Any = None,
                       mesh: Mesh | None = None, rules: LogicalRules = TRAIN_RULES, scan_layers: bool = False,
                       remat: bool = False) -> tuple[ModelConfig, Any]:
    """Loads an HF Qwen2/Qwen2.5/Qwen3 (dense) checkpoint directory -> (ModelConfig, params).

    dtype: storage dtype of the params (float32, bfloat16 or float16, as a string, numpy or jnp dtype);
    compute_dtype defaults to it.
    mesh: place each tensor's shards straight onto the mesh by the parameter rule table (`rules`);
    without a mesh, params go to the default device.
    path: a local directory or a URL (gs://..., read through a local copy).
    Errors name the offending file or tensor (missing file, absent/extra tensor, wrong shape or dtype).
    """
    path = local_copy(path)
    cfg = ModelConfig.from_hf(path, param_dtype=dtype, dtype=compute_dtype or dtype, remat=remat)
    files = _open_checkpoint(path)
    maps = _tensor_maps(cfg)
    expected = {src for m in maps for src in m.sources}
    ignorable = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    extra = sorted(n for n in files if n not in expected and n not in ignorable and not n.endswith("rotary_emb.inv_freq"))
    if extra:
        raise ValueError(f"checkpoint {path} has unexpected tensors: {extra[:5]}{' …' if len(extra) > 5 else ''}")
    missing = sorted(expected - set(files))
    if missing:
        raise ValueError(f"checkpoint {path} is missing tensors: {missing[:5]}{' …' if len(missing) > 5 else ''}")
    for m in maps:
        for src, want in zip(m.sources, m.hf_shapes):
            shape, src_dtype = files[src].info(src)
            if shape != want:
                raise ValueError(f"tensor {src!r} in {files[src].path} has shape {shape}, expected {want}")
            if src_dtype.kind != "f" and src_dtype.name != "bfloat16":
                raise ValueError(f"tensor {src!r} in {files[src].path} has dtype {src_dtype}, expected a float type")

    target_dtype = cfg.storage_dtype
    params: dict = {}
    for m in maps:
        # One tensor at a time on the host (a view into the mapped file where the layout allows).
        host = np.asarray(m.to_ours(*[files[src].get(src) for src in m.sources])).astype(target_dtype, copy=False)
        if mesh is not None:
            sharding = NamedSharding(mesh, param_spec("/".join(m.path), host.shape, mesh, rules))
        else:
            sharding = SingleDeviceSharding(jax.local_devices()[0])
        _set(params, m.path, jax.make_array_from_callback(host.shape, sharding, lambda idx, a=host: np.asarray(a[idx])))
    if scan_layers:
        cfg = cfg.replace(scan_layers=True)
        params = stack_layers(cfg, params, mesh=mesh, rules=rules)
    return cfg, params


def stack_layers(cfg: ModelConfig, params: dict, *, mesh: Mesh | None = None,
                 rules: LogicalRules = TRAIN_RULES) -> dict:
    """Unrolled params (layers_0 … layers_{L-1}) -> the scan layout (layers/layer/... with a leading L)."""
    layers = [params[f"layers_{i}"] for i in range(cfg.num_layers)]
    rest = {k: v for k, v in params.items() if not k.startswith("layers_")}
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)
    out = {**rest, "layers": {"layer": stacked}}
    if mesh is not None:
        out = jax.device_put(out, param_shardings(out, mesh, rules))
    return out


def unstack_layers(cfg: ModelConfig, params: dict) -> dict:
    """The scan layout -> unrolled layers_i (inverse of `stack_layers`)."""
    if "layers" not in params:
        return params
    rest = {k: v for k, v in params.items() if k != "layers"}
    for i in range(cfg.num_layers):
        rest[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], params["layers"]["layer"])
    return rest


def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save_hf_checkpoint(config: ModelConfig, params: Any, path: str | os.PathLike, *,
                       max_shard_bytes: int | None = None, dtype: str | None = None) -> None:
    """Writes params as an HF Qwen2 / Qwen3 checkpoint (config.json + safetensors) loadable by transformers/vLLM.

    max_shard_bytes: split into model-0000i-of-0000n.safetensors + index when the model is larger.
    dtype: storage dtype of the written tensors (default: the params' own).
    path: a local directory or a URL (gs://...: written locally, then copied).
    On multi-host runs every process gathers, only process 0 writes.
    """
    target = os.fspath(path)
    params = unstack_layers(config, params)
    tensors: dict[str, np.ndarray] = {}
    for m in _tensor_maps(config):
        host = _to_host(_get(params, m.path))
        if dtype is not None:
            host = host.astype(jnp.dtype(dtype))
        for name, arr in zip(m.sources, m.to_hf(host)):
            tensors[name] = np.ascontiguousarray(arr)
    if jax.process_index() != 0:
        return
    path = tempfile.mkdtemp(prefix="atomsearch_hf_") if is_url(target) else target
    _write_hf_files(config, tensors, path, max_shard_bytes, dtype)
    if path != target:
        copy_tree(path, target)
        shutil.rmtree(path)


def _write_hf_files(config: ModelConfig, tensors: dict[str, np.ndarray], path: str, max_shard_bytes: int | None,
                    dtype: str | None) -> None:
    """config.json and the safetensors file(s) (+ index when sharded) in the local directory `path`."""
    os.makedirs(path, exist_ok=True)
    hf_config = config.replace(param_dtype=str(jnp.dtype(dtype or config.param_dtype).name)).to_hf()
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    total = sum(a.nbytes for a in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, os.path.join(path, SINGLE_FILE))
        return
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        if shards[-1] and size + tensors[name].nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += tensors[name].nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(path, fname))
        weight_map.update({name: fname for name in shard})
    with open(os.path.join(path, INDEX_FILE), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
