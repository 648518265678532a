"""export_hf: a few SFT steps with checkpoints, then the policy exported from the Orbax checkpoint loads in
transformers and gives the trained params' logits; step choice, dtype, tokenizer copy, clear errors."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from atomsearch_jax import sft
from atomsearch_jax.export_hf import committed_steps, export_checkpoint
from atomsearch_jax.model import forward, load_hf_checkpoint
from atomsearch_jax.parallel import make_mesh
from generate_helpers import tiny_bpe_tokenizer
from hf_utils import hf_logits, make_hf_checkpoint
from training_helpers import rollout_batch

STEPS = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An SFT run from a random HF checkpoint: its dirs and a host copy of the params after every step."""
    root = tmp_path_factory.mktemp("export")
    base = make_hf_checkpoint(root / "base", seed=5, eos_token_id=3)
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 4]}))
    cfg, params = load_hf_checkpoint(base)
    config = sft.get_config()
    config.optimizer.update(learning_rate=3e-2, warmup_steps=0)
    config.checkpoint.update(directory=str(root / "ckpt"), max_to_keep=5)
    trainer = sft.SFTTrainer(cfg, params, config, mesh=make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    snapshots = {0: jax.device_get(params)}
    for i in range(STEPS):
        trainer.update(rollout_batch(i, cfg.vocab_size, batch=4))
        snapshots[trainer.step] = jax.device_get(trainer.state.params)
        trainer.save()
    trainer.close()
    tokenizer_dir = root / "tokenizer"
    from transformers import PreTrainedTokenizerFast
    PreTrainedTokenizerFast(tokenizer_object=tiny_bpe_tokenizer(), eos_token="<|endoftext|>").save_pretrained(tokenizer_dir)
    return dict(root=root, base=base, ckpt=root / "ckpt", cfg=cfg, snapshots=snapshots, tokenizer=tokenizer_dir)


def tokens_for(vocab_size):
    return np.random.default_rng(0).integers(0, vocab_size, (2, 9))


def test_export_loads_in_transformers_with_the_trained_logits(run):
    out = run["root"] / "hf_latest"
    assert committed_steps(run["ckpt"]) == [1, 2, 3]
    assert export_checkpoint(run["ckpt"], run["base"], out, tokenizer_path=run["tokenizer"]) == STEPS

    from transformers import AutoTokenizer, Qwen2ForCausalLM
    model = Qwen2ForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
    tokens = tokens_for(run["cfg"].vocab_size)
    got = hf_logits(model, tokens)
    want = np.asarray(forward(run["cfg"], run["snapshots"][STEPS], tokens))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    before = np.asarray(forward(run["cfg"], run["snapshots"][0], tokens))
    assert np.abs(want - before).max() > 1e-2  # training moved the weights, so the export is not the base model

    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [3, 4]
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 3
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.decode(tok.encode("we search for cats")) == "we search for cats"


def test_cli_exports_an_older_step_in_bfloat16(run):
    out = run["root"] / "hf_step1"
    subprocess.run([sys.executable, "-m", "atomsearch_jax.export_hf", f"--checkpoint_dir={run['ckpt']}", "--step=1",
                    f"--model_config={run['base'] / 'config.json'}", f"--out={out}", "--dtype=bfloat16"],
                   check=True, capture_output=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    _, exported = load_hf_checkpoint(out)
    want = run["snapshots"][1]
    for (path, got), w in zip(jax.tree_util.tree_flatten_with_path(exported)[0], jax.tree_util.tree_leaves(want)):
        w = np.asarray(w)
        np.testing.assert_array_equal(np.asarray(got), w.astype(jax.numpy.bfloat16).astype(np.float32), err_msg=str(path))
    assert not np.array_equal(want["embed"]["embedding"], run["snapshots"][STEPS]["embed"]["embedding"])


def test_bad_inputs_get_clear_errors(run, tmp_path):
    with pytest.raises(ValueError, match=r"step 7 is not a committed step .*available: \[1, 2, 3\]"):
        export_checkpoint(run["ckpt"], run["base"], tmp_path / "a", step=7)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_checkpoint(tmp_path / "nowhere", run["base"], tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no committed checkpoint step"):
        export_checkpoint(tmp_path, run["base"], tmp_path / "a")
    other = json.loads((run["base"] / "config.json").read_text())
    other.update(intermediate_size=48, num_hidden_layers=3)
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"do not fit the model config: layers_0/mlp/down/kernel has shape "
                                         r"\(64, 32\), the config gives \(48, 32\);.* 11 missing \(e.g. layers_2/"):
        export_checkpoint(run["ckpt"], tmp_path / "other.json", tmp_path / "a")
    export_checkpoint(run["ckpt"], run["base"], tmp_path / "b", step=2, max_shard_bytes=20_000)
    assert (tmp_path / "b" / "model.safetensors.index.json").is_file()
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_checkpoint(run["ckpt"], run["base"], tmp_path / "b")
    export_checkpoint(run["ckpt"], run["base"], tmp_path / "b", overwrite=True)  # one file now; old shards removed
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["config.json", "generation_config.json",
                                                                  "model.safetensors"]
