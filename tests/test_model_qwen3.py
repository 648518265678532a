"""Dense Qwen3 (q/k RMSNorm per head, no q/k/v bias, explicit head_dim) against HF transformers'
Qwen3ForCausalLM: logits, greedy generation, checkpoints both ways; MoE refused; presets."""
import json

import numpy as np
import pytest
from hf_utils import hf_logits, make_hf_checkpoint, make_hf_model

from atomsearch_jax.generate import Sampler
from atomsearch_jax.model import (ModelConfig, declared_logical_axes, forward, get_preset, load_hf_checkpoint,
                                  param_shapes, save_hf_checkpoint)

CONFIGS = {
    "headdim16_gqa2": dict(head_dim=16),
    "tied_headdim12_gqa4_3layers": dict(hidden_size=24, head_dim=12, num_attention_heads=4, num_key_value_heads=1,
                                        tie_word_embeddings=True, num_hidden_layers=3),
}


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def qwen3_pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model = make_hf_model(seed=len(request.param), family="qwen3", **CONFIGS[request.param])
    model.save_pretrained(path)
    cfg, params = load_hf_checkpoint(path)
    return model, cfg, params, path


def test_config_reads_qwen3_fields(qwen3_pair):
    _, cfg, params, _ = qwen3_pair
    assert cfg.model_type == "qwen3" and cfg.qk_norm and not cfg.attention_bias
    attn = params["layers_0"]["attn"]
    assert set(attn) == {"q", "k", "v", "o", "q_norm", "k_norm"} and "bias" not in attn["q"]
    assert attn["q_norm"]["scale"].shape == (cfg.dims_per_head,)


def test_logits_match_hf(qwen3_pair):
    model, cfg, params, _ = qwen3_pair
    tokens = np.random.RandomState(1).randint(0, cfg.vocab_size, (3, 11))
    assert rel_err(np.asarray(forward(cfg, params, tokens)), hf_logits(model, tokens)) < 1e-5


def test_logits_match_hf_with_padding_and_large_positions(qwen3_pair):
    model, cfg, params, _ = qwen3_pair
    rng = np.random.RandomState(2)
    tokens = rng.randint(0, cfg.vocab_size, (2, 9))
    mask = np.ones((2, 9), np.int64)
    mask[1, :3] = 0
    positions = np.stack([np.sort(rng.choice(np.arange(3000, 5000), 9, replace=False)) for _ in range(2)])
    ours = np.asarray(forward(cfg, params, tokens, positions=positions, attention_mask=mask))
    ref = hf_logits(model, tokens, attention_mask=mask, positions=positions)
    assert rel_err(ours[mask.astype(bool)], ref[mask.astype(bool)]) < 1e-5


def test_qk_norm_weights_matter(qwen3_pair):
    """Guards the parity tests: the per-head norms must actually be applied."""
    _, cfg, params, _ = qwen3_pair
    tokens = np.arange(8)[None] % cfg.vocab_size
    changed = {**params, "layers_0": {**params["layers_0"], "attn": {**params["layers_0"]["attn"],
                                                                      "k_norm": {"scale": params["layers_0"]["attn"]["k_norm"]["scale"] * 3.0}}}}
    assert rel_err(np.asarray(forward(cfg, changed, tokens)), np.asarray(forward(cfg, params, tokens))) > 1e-4


def test_greedy_generation_matches_hf_token_for_token(qwen3_pair):
    import torch

    model, cfg, params, _ = qwen3_pair
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, cfg.vocab_size, size=n).tolist() for n in (4, 9)]
    new = 10
    got = Sampler(cfg, params, max_len=32).generate(prompts, max_new_tokens=new, temperature=0.0, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 do_sample=False, max_new_tokens=new, min_new_tokens=new, eos_token_id=None,
                                 pad_token_id=0)
        assert got[i].tokens == ref[0, len(prompt):].tolist()


def test_save_loads_in_transformers_as_qwen3(qwen3_pair, tmp_path):
    import torch
    from transformers import Qwen3ForCausalLM

    model, cfg, params, _ = qwen3_pair
    save_hf_checkpoint(cfg, params, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == "qwen3" and written["architectures"] == ["Qwen3ForCausalLM"]
    assert written["head_dim"] == cfg.dims_per_head and written["attention_bias"] is False
    reloaded = Qwen3ForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    tokens = np.random.RandomState(3).randint(0, cfg.vocab_size, (2, 7))
    assert rel_err(hf_logits(reloaded, tokens), hf_logits(model, tokens)) < 1e-6


@pytest.mark.parametrize("changes,match", [
    ({"model_type": "qwen3_moe", "num_experts": 8}, "mixture-of-experts"),
    ({"num_experts": 8}, "num_experts"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
])
def test_refuses_moe_and_sliding_layers(tmp_path, changes, match):
    config = json.loads((make_hf_checkpoint(tmp_path, family="qwen3") / "config.json").read_text())
    config.update(changes)
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf(config)


def test_qwen3_presets_match_published_sizes():
    # Non-embedding parameter counts published on the Qwen3 model cards (billions).
    published = {"0.6b": 0.44, "1.7b": 1.4, "4b": 3.6, "8b": 6.95, "14b": 13.2, "32b": 31.2}
    for size, billions in published.items():
        cfg = get_preset(f"qwen3-{size}")
        embeddings = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
        assert abs((cfg.num_params() - embeddings) / 1e9 - billions) / billions < 0.02, size
    assert param_shapes(get_preset("qwen3-0.6b"))["layers_27"]["attn"]["q"]["kernel"].shape == (1024, 16, 128)
    assert ModelConfig.from_hf(get_preset("qwen3-4b").to_hf()) == get_preset("qwen3-4b")


def test_param_rule_table_covers_qwen3():
    from atomsearch_jax.parallel import param_logical_axes
    cfg = get_preset("qwen3-8b").replace(num_layers=2)
    assert param_logical_axes(param_shapes(cfg)) == declared_logical_axes(cfg)
