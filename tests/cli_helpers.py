"""Running the package's commands as a user types them: `python -m atomsearch_jax.<tool> --flags` in a
subprocess from the repository root (so `--config=configs/...` resolves), on one CPU device."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return env


def run_cli(module: str, *flags: str, timeout_s: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `python -m atomsearch_jax.<module> flags...`; with check, raises with its output when it exits
    non-zero."""
    cmd = [sys.executable, "-m", f"atomsearch_jax.{module}", *flags]
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                             f"--- stderr\n{proc.stderr[-6000:]}")
    return proc


def tiny_qwen_policy(path: pathlib.Path, tokenizer_dir: pathlib.Path) -> pathlib.Path:
    """A random 1-layer Qwen2.5-shaped HF checkpoint with the real Qwen2.5 tokenizer saved next to it."""
    import jax
    from transformers import AutoTokenizer

    from atomsearch_jax.experiment import end_token_ids
    from atomsearch_jax.model import ModelConfig, init_params, save_hf_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = ModelConfig(vocab_size=-(-len(tokenizer) // 128) * 128, hidden_size=16, intermediate_size=32,
                         num_layers=1, num_heads=2, num_kv_heads=1, eos_token_id=end_token_ids(tokenizer))
    save_hf_checkpoint(config, init_params(config, jax.random.PRNGKey(0)), path)
    tokenizer.save_pretrained(path)
    return path
