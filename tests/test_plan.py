"""The AOT memory planner: compiled per-device bytes at a recipe's shapes, and the verdict (exit code)."""
import os
import pathlib
import subprocess
import sys

import pytest

import configs.default as default
from atomsearch_jax.agent.chunking import groups_per_chunk, kv_cache_bytes_per_device, state_rows
from atomsearch_jax.model import get_preset, tiny_config
from atomsearch_jax.parallel import make_mesh

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.model.max_len=128", "--config.model.hidden_size=32", "--config.model.intermediate_size=64",
        "--config.model.num_layers=2", "--config.rl.prompts_per_step=4",
        "--config.rl.group_size=2"]


def _tiny_recipe():
    c = default.get_config()
    c.model.update(max_len=128, hidden_size=32, intermediate_size=64, num_layers=2)
    c.rl.update(prompts_per_step=4, group_size=2)
    c.mesh.update(data=1, fsdp=-1, tensor=2)
    return c


def test_plan_of_a_tiny_recipe_counts_its_parts(tmp_path):
    from atomsearch_jax.plan import plan_recipe

    c = _tiny_recipe()
    plan = plan_recipe(c, hbm_gb=1.0, prompt_len=32, hlo_dir=str(tmp_path / "hlo"))
    for name in ("grpo_update", "prefill", "decode"):
        assert (tmp_path / "hlo" / f"{name}.hlo.txt").read_text().startswith("HloModule")
    assert plan.fits
    mesh = make_mesh(data=1, fsdp=-1, tensor=2)
    cfg = tiny_config(vocab_size=2048, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    assert plan.components["KV cache (chunk)"] == kv_cache_bytes_per_device(cfg, 8, 128, mesh)
    # float32 train params, split over at most the 8 devices
    assert cfg.num_params() * 4 // 8 <= plan.components["params (train)"] <= cfg.num_params() * 4 // 2
    assert {p.name for p in plan.programs} == {"grpo_update", "prefill", "decode"}
    assert "RESULT plan fits=1" in plan.format()


def test_plan_cli_flags_a_recipe_that_cannot_fit():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "atomsearch_jax.plan", "--config=configs/default.py", "--devices=2",
           "--hbm_gb=0.001", "--prompt_len=32", *TINY]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "DOES NOT FIT" in out.stdout and "RESULT plan fits=0" in out.stdout
    assert "devices: 2 " in out.stdout


def test_chunk_size_from_the_kv_budget():
    cfg = get_preset("qwen2.5-7b", dtype="bfloat16")
    mesh = make_mesh(data=1, fsdp=2, tensor=4)  # 8 forced devices
    per_row = kv_cache_bytes_per_device(cfg, 2, 16384, mesh)  # 2 rows = one per row device
    assert per_row == 28 * 2 * 16384 * 1 * 128 * 2  # kv heads 4 over tensor 4
    # the most whole groups whose power-of-two state fits 2 GB per device
    g = groups_per_chunk(cfg, groups=256, group_size=2, max_len=16384, budget_gb=2.0, mesh=mesh)
    assert kv_cache_bytes_per_device(cfg, state_rows(g * 2, mesh), 16384, mesh) <= 2e9
    assert kv_cache_bytes_per_device(cfg, state_rows((g + 1) * 2, mesh), 16384, mesh) > 2e9
    assert groups_per_chunk(cfg, groups=7, group_size=2, max_len=16384, budget_gb=0, mesh=mesh) == 7
    with pytest.raises(ValueError, match="kv_cache_gb=0.01"):
        groups_per_chunk(cfg, groups=8, group_size=16, max_len=16384, budget_gb=0.01, mesh=mesh)
