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


def scripted_qwen_policy(path: pathlib.Path, tokenizer_dir: pathlib.Path, turns: dict[str, str],
                         sharpness: float = 100.0) -> pathlib.Path:
    """A Qwen2.5-shaped HF checkpoint (the real Qwen2.5 tokenizer, hidden size 8) of a bigram policy: each
    turn text of `turns` becomes one added token, written whenever the context ends with the last token of
    its key; after any other token the policy ends its turn. Sharp enough to be deterministic at
    temperature 1. The tokenizer (with the added tokens) is saved next to it."""
    import jax
    import numpy as np
    from transformers import AddedToken, AutoTokenizer

    from atomsearch_jax.experiment import end_token_ids
    from atomsearch_jax.model import ModelConfig, init_params, save_hf_checkpoint

    if len(turns) > 7:
        raise ValueError(f"a hidden size of 8 holds 7 scripted turns, got {len(turns)}")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens([AddedToken(text, normalized=False) for text in turns.values()])
    successors = {tokenizer.encode(key, add_special_tokens=False)[-1]: tokenizer.convert_tokens_to_ids(text)
                  for key, text in turns.items()}
    ends = end_token_ids(tokenizer)
    config = ModelConfig(vocab_size=-(-len(tokenizer) // 128) * 128, hidden_size=8, intermediate_size=8,
                         num_layers=1, num_heads=2, num_kv_heads=1, tie_word_embeddings=False, eos_token_id=ends)
    # Zeroed layers pass each token's embedding to the head: direction 0 (every unscripted token) -> end of
    # turn; direction i (the i-th trigger) -> its turn.
    params = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, np.float32), init_params(config, jax.random.PRNGKey(0)))
    for norm in (params["final_norm"], params["layers_0"]["input_norm"], params["layers_0"]["post_attn_norm"]):
        norm["scale"][:] = 1.0
    embedding, head = params["embed"]["embedding"], params["lm_head"]["kernel"]
    embedding[:, 0], head[0, ends[0]] = 1.0, sharpness
    for direction, (trigger, turn) in enumerate(successors.items(), start=1):
        embedding[trigger] = 0.0
        embedding[trigger, direction], head[direction, turn] = 1.0, sharpness
    save_hf_checkpoint(config, params, path)
    tokenizer.save_pretrained(path)
    return path
