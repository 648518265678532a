"""The Qwen2 port against HF transformers' PyTorch Qwen2ForCausalLM (the independent reference)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_utils import hf_logits, make_hf_checkpoint, make_hf_model

from atomsearch_jax.model import (ModelConfig, declared_logical_axes, forward, get_preset, init_params,
                                  load_hf_checkpoint, param_shapes, save_hf_checkpoint, PRESETS)
from atomsearch_jax.model.config import tiny_config
from atomsearch_jax.model.transformer import forward_cached, init_cache

CONFIGS = {
    "untied_gqa2": dict(),
    "tied_gqa2": dict(tie_word_embeddings=True),
    "mha_gqa1": dict(num_attention_heads=4, num_key_value_heads=4),
    "gqa7_headdim6": dict(hidden_size=42, num_attention_heads=7, num_key_value_heads=1, intermediate_size=40),
    "explicit_headdim10": dict(hidden_size=24, num_attention_heads=4, num_key_value_heads=2, head_dim=10,
                               num_hidden_layers=3),
}


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hf_pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model = make_hf_model(seed=len(request.param), **CONFIGS[request.param])
    model.save_pretrained(path)
    cfg, params = load_hf_checkpoint(path)
    return model, cfg, params, path


def test_logits_match_hf(hf_pair):
    model, cfg, params, _ = hf_pair
    tokens = np.random.RandomState(1).randint(0, cfg.vocab_size, (3, 11))
    np.testing.assert_array_less(rel_err(np.asarray(forward(cfg, params, tokens)), hf_logits(model, tokens)), 1e-5)


def test_logits_match_hf_with_padding_and_large_positions(hf_pair):
    model, cfg, params, _ = hf_pair
    rng = np.random.RandomState(2)
    tokens = rng.randint(0, cfg.vocab_size, (3, 9))
    mask = np.ones((3, 9), np.int64)
    mask[1, 6:] = 0  # right padding
    mask[2, :3] = 0  # left padding
    # Large, non-contiguous, per-row positions: gaps change relative distances, so RoPE is really tested.
    positions = np.stack([np.sort(rng.choice(np.arange(4096, 6000), 9, replace=False)) for _ in range(3)])
    ours = np.asarray(forward(cfg, params, tokens, positions=positions, attention_mask=mask))
    ref = hf_logits(model, tokens, attention_mask=mask, positions=positions)
    valid = mask.astype(bool)
    assert rel_err(ours[valid], ref[valid]) < 1e-5


def test_positions_matter(hf_pair):
    """Guards the test above: a different position pattern must change the logits."""
    _, cfg, params, _ = hf_pair
    tokens = np.arange(6)[None] % cfg.vocab_size
    a = forward(cfg, params, tokens, positions=np.array([[4096, 4100, 4101, 4200, 4300, 4301]]))
    b = forward(cfg, params, tokens, positions=np.array([[4096, 4097, 4098, 4099, 4100, 4101]]))
    assert rel_err(np.asarray(a)[0, 1:], np.asarray(b)[0, 1:]) > 1e-4


def test_save_load_save_is_bit_exact_and_loads_in_transformers(hf_pair, tmp_path):
    import torch
    from transformers import Qwen2ForCausalLM

    model, cfg, params, _ = hf_pair
    save_hf_checkpoint(cfg, params, tmp_path / "a")
    cfg2, params2 = load_hf_checkpoint(tmp_path / "a")
    save_hf_checkpoint(cfg2, params2, tmp_path / "b")
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    reloaded = Qwen2ForCausalLM.from_pretrained(tmp_path / "a", torch_dtype=torch.float32).eval()
    tokens = np.random.RandomState(3).randint(0, cfg.vocab_size, (2, 8))
    assert rel_err(hf_logits(reloaded, tokens), hf_logits(model, tokens)) < 1e-6


def test_sharded_checkpoints_load(tmp_path):
    model = make_hf_model(seed=5)
    model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")  # HF's own sharded layout
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    cfg, params = load_hf_checkpoint(tmp_path / "hf")
    tokens = np.arange(10)[None]
    assert rel_err(np.asarray(forward(cfg, params, tokens)), hf_logits(model, tokens)) < 1e-5
    save_hf_checkpoint(cfg, params, tmp_path / "ours", max_shard_bytes=30_000)  # our sharded export
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    _, params2 = load_hf_checkpoint(tmp_path / "ours")
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)


def test_sharded_mesh_forward_equals_single_device(tmp_path):
    from atomsearch_jax.parallel import make_mesh

    assert jax.device_count() == 8, "conftest forces 8 CPU devices"
    model = make_hf_model(seed=7, num_attention_heads=4, num_key_value_heads=2, vocab_size=96)
    model.save_pretrained(tmp_path)
    cfg, params = load_hf_checkpoint(tmp_path)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    cfg_m, params_m = load_hf_checkpoint(tmp_path, mesh=mesh)
    q = params_m["layers_0"]["attn"]["q"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (16, 2, 8)
    tokens = np.random.RandomState(4).randint(0, 96, (4, 12))
    single = np.asarray(forward(cfg, params, tokens))
    fn = jax.jit(lambda p, t: forward(cfg_m, p, t, mesh=mesh))
    sharded = np.asarray(fn(params_m, tokens))
    assert rel_err(sharded, single) < 1e-5


def test_bfloat16_params_and_compute(hf_pair):
    model, cfg, params, path = hf_pair
    cfg16, params16 = load_hf_checkpoint(path, dtype="bfloat16")
    assert params16["embed"]["embedding"].dtype == jnp.bfloat16
    tokens = np.arange(8)[None] % cfg.vocab_size
    logits = np.asarray(forward(cfg16, params16, tokens))
    assert np.isfinite(logits).all()
    assert rel_err(logits, hf_logits(model, tokens)) < 0.1
    cfg_mixed, _ = load_hf_checkpoint(path, dtype="bfloat16", compute_dtype="float32")
    assert cfg_mixed.compute_dtype == jnp.float32 and cfg_mixed.storage_dtype == jnp.bfloat16


def test_scan_and_remat_match_unrolled(hf_pair):
    _, cfg, params, path = hf_pair
    tokens = np.arange(7)[None] % cfg.vocab_size
    ref = np.asarray(forward(cfg, params, tokens))
    cfg_s, params_s = load_hf_checkpoint(path, scan_layers=True, remat=True)
    assert "layers" in params_s and params_s["layers"]["layer"]["attn"]["q"]["kernel"].shape[0] == cfg.num_layers
    assert rel_err(np.asarray(forward(cfg_s, params_s, tokens)), ref) < 1e-6
    grads = jax.grad(lambda p: forward(cfg_s, p, tokens).sum())(params_s)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


# ---- bad checkpoints: each error names the file or tensor ------------------------------------------


@pytest.fixture
def good_ckpt(tmp_path):
    return make_hf_checkpoint(tmp_path / "ckpt", seed=9)


def _rewrite(path, mutate):
    from safetensors.numpy import load_file, save_file
    tensors = load_file(path / "model.safetensors")
    mutate(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_file_is_named(tmp_path, good_ckpt):
    (good_ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_checkpoint(good_ckpt)


def test_index_pointing_to_missing_shard_is_named(tmp_path):
    model = make_hf_model(seed=1)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    victim = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        load_hf_checkpoint(tmp_path)


def test_absent_tensor_is_named(good_ckpt):
    _rewrite(good_ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensors.*model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf_checkpoint(good_ckpt)


def test_extra_tensor_is_named(good_ckpt):
    _rewrite(good_ckpt, lambda t: t.__setitem__("model.layers.7.mystery.weight", np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match=r"unexpected tensors.*model\.layers\.7\.mystery\.weight"):
        load_hf_checkpoint(good_ckpt)


def test_wrong_shape_is_named(good_ckpt):
    _rewrite(good_ckpt, lambda t: t.__setitem__("model.layers.0.self_attn.k_proj.weight", np.zeros((3, 32), np.float32)))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight.*shape \(3, 32\)"):
        load_hf_checkpoint(good_ckpt)


def test_wrong_dtype_is_named(good_ckpt):
    _rewrite(good_ckpt, lambda t: t.__setitem__("model.norm.weight", np.ones(32, np.int32)))
    with pytest.raises(ValueError, match=r"model\.norm\.weight.*dtype int32"):
        load_hf_checkpoint(good_ckpt)


def test_corrupt_file_is_named(good_ckpt):
    (good_ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_hf_checkpoint(good_ckpt)


# ---- configs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value,match", [
    ("use_sliding_window", True, "use_sliding_window"),
    ("rope_scaling", {"type": "yarn", "factor": 4.0}, "rope_scaling"),
    ("hidden_act", "gelu", "hidden_act"),
    ("model_type", "llama", "model_type"),
])
def test_from_hf_refuses_what_it_cannot_honour(tmp_path, field, value, match):
    cfg = json.loads((make_hf_checkpoint(tmp_path, seed=0) / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf(tmp_path)


def test_presets_match_published_shapes():
    assert {k for k in PRESETS if k.startswith("qwen2.5")} == {f"qwen2.5-{s}" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")}
    # Parameter counts published by Qwen (billions, embeddings included).
    published = {"0.5b": 0.49, "1.5b": 1.54, "3b": 3.09, "7b": 7.61, "14b": 14.7, "32b": 32.5, "72b": 72.7}
    for size, billions in published.items():
        assert abs(get_preset(f"qwen2.5-{size}").num_params() / 1e9 - billions) / billions < 0.02, size
    shapes = param_shapes(get_preset("qwen2.5-0.5b"))
    assert shapes["layers_23"]["attn"]["k"]["kernel"].shape == (896, 2, 64)


def test_param_rule_table_agrees_with_module_declarations():
    from atomsearch_jax.parallel import param_logical_axes
    for cfg in (get_preset("qwen2.5-7b").replace(num_layers=2), get_preset("qwen2.5-0.5b").replace(num_layers=1)):
        assert param_logical_axes(param_shapes(cfg)) == declared_logical_axes(cfg)


def test_init_params_runs(hf_pair):
    _, cfg, params, _ = hf_pair
    fresh = init_params(cfg, jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(fresh) == jax.tree_util.tree_structure(params)


def test_logits_through_openblas_match_hf(hf_pair):
    from atomsearch_jax.kernels import blas_matmul
    if not blas_matmul.available():
        pytest.skip("OpenBLAS handler not built here")
    model, cfg, params, _ = hf_pair
    tokens = np.random.RandomState(1).randint(0, cfg.vocab_size, (3, 11))
    got = np.asarray(forward(cfg.replace(matmul="blas"), params, tokens))
    np.testing.assert_array_less(rel_err(got, hf_logits(model, tokens)), 1e-5)


def test_rotary_tables_gathered_by_position_equal_computed_ones():
    """forward_cached gathers RoPE's cos/sin from [cache size, D] tables (slots lie below it): the same
    float32 values as computing them at each position, so HF parity is unchanged."""
    from atomsearch_jax.model.layers import rotary_tables

    positions = jnp.asarray(np.random.default_rng(0).integers(0, 4096, (3, 7)), jnp.int32)
    for d, theta in ((64, 1e6), (32, 1e4), (128, 5e5)):
        direct = jax.jit(lambda p: rotary_tables(p, d, theta))(positions)
        gathered = jax.jit(lambda p: rotary_tables(p, d, theta, max_position=4096))(positions)
        for a, b in zip(direct, gathered):
            assert a.shape == b.shape == (3, 7, 1, d)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_decoding_computes_rope_tables_once_outside_the_loop():
    """Inside a decode loop, cos and sin are computed once (the position-free tables, hoisted out of the
    loop), not fused into every layer's query and key elements (2 per layer before: 20-40 us a layer at
    Qwen2.5-0.5B's decode)."""
    cfg = tiny_config(num_layers=3)
    params = init_params(cfg, jax.random.PRNGKey(0))

    def decode(params, cache):
        def step(i, carry):
            tokens, cache = carry
            hidden, cache = forward_cached(cfg, params, tokens, cache, jnp.full((2,), i, jnp.int32))
            return jnp.argmax(hidden[:, :, :8], axis=-1).astype(jnp.int32), cache
        return jax.lax.fori_loop(0, 4, step, (jnp.zeros((2, 1), jnp.int32), cache))

    hlo = jax.jit(decode).lower(params, init_cache(cfg, 2, 16)).compile().as_text()
    assert hlo.count(" cosine(") == 1 and hlo.count(" sine(") == 1
