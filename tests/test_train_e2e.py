"""The embedded default end to end at toy size: world -> tokenizer -> SFT -> GRPO with search -> held-out
evaluation -> report files and export; then resuming from a checkpoint reproduces the same report."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

import configs.default as default_config
from atomsearch_jax.model import load_hf_checkpoint
from atomsearch_jax.train import train

REPORT_FIELDS = ("heldout_f1_untrained", "heldout_f1_sft", "heldout_f1_grpo", "heldout_em_untrained",
                 "heldout_em_sft", "heldout_em_grpo", "heldout_questions", "wall_seconds", "time_seconds")


def tiny_config(rl_steps):
    """The default config (format, prompt, world, schedule shapes) shortened to seconds of compute."""
    c = default_config.get_config()
    c.data.update(eval_size=3, heldout_size=4)
    c.model.update(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1)
    c.sft.steps, c.sft.batch_size = 3, 8  # conftest forces 8 devices: the mesh is (1, 8, 1)
    c.rl.steps, c.rl.prompts_per_step, c.rl.group_size = rl_steps, 2, 4
    c.rl.rollout.max_response_tokens, c.rl.rollout.segment_steps = 48, 24
    c.eval.update(every=1, rows_per_batch=4)
    c.report.samples_every = 1
    return c


def metrics_lines(workdir):
    return [json.loads(line) for line in (workdir / "logs" / "metrics.jsonl").read_text().splitlines()]


def outcome(report):
    """The report without what legitimately differs between two runs (timings, machine load)."""
    return {k: v for k, v in report.items() if k not in ("wall_seconds", "time_seconds", "cpu_seconds", "load_average")}


@pytest.mark.slow
def test_default_pipeline_reports_resumes_and_exports(tmp_path, capsys):
    first = tmp_path / "first"
    report = train(tiny_config(rl_steps=2), str(first))
    on_disk = json.loads((first / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    for field in REPORT_FIELDS:
        assert field in on_disk, field
    assert on_disk["heldout_questions"] == 4
    assert 0 < on_disk["wall_seconds"] and on_disk["time_seconds"]["sft"] > 0 and on_disk["time_seconds"]["eval"] > 0
    for stage in ("untrained", "sft", "grpo"):
        assert 0.0 <= on_disk[f"heldout_f1_{stage}"] <= 1.0 and on_disk["heldout"][stage]["n"] == 4
    assert "held-out questions: 4" in capsys.readouterr().out  # the final table on stdout
    md = (first / "report.md").read_text()
    images = [line.split("](", 1)[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert "plots/heldout_stages.png" in images and "plots/reward.png" in images
    for image in images:
        assert (first / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    samples = sorted(os.listdir(first / "samples"))
    assert samples == ["grpo_update_0001.jsonl", "grpo_update_0002.jsonl"]
    rows = [json.loads(line) for line in (first / "samples" / samples[0]).read_text().splitlines()]
    assert len(rows) == 8 and {"response", "tool_calls", "reward", "components", "atomic_thoughts"} <= set(rows[0])
    assert {"outcome", "f1", "format_ok"} <= set(rows[0]["components"])
    logged = metrics_lines(first)
    assert [r["step"] for r in logged if "rl/loss" in r] == [1, 2]
    assert [r["step"] for r in logged if "eval/f1" in r] == [1]  # validation between updates, not after the last
    assert len([r for r in logged if "heldout/f1" in r]) == 3
    cfg, params = load_hf_checkpoint(report["hf_policy"])
    assert cfg.num_layers == 2

    # Resume: a copy of the run with its last GRPO checkpoint removed continues from update 1 and reports
    # exactly what the uninterrupted run reported.
    second = tmp_path / "second"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns("report.*", "hf_policy"))
    grpo_steps = sorted(int(p) for p in os.listdir(second / "checkpoints" / "grpo") if p.isdigit())
    assert grpo_steps[-1] == 2
    shutil.rmtree(second / "checkpoints" / "grpo" / "2")
    resumed = train(tiny_config(rl_steps=2), str(second))
    assert outcome(json.loads(json.dumps(resumed))) == outcome(on_disk) | {"hf_policy": resumed["hf_policy"]}
    assert [r["step"] for r in metrics_lines(second) if "rl/loss" in r] == [1, 2, 2]
    # The redone update saw the same rollouts and made the same step, so the exported policies match bitwise.
    redone, original = ([r for r in metrics_lines(d) if "rl/loss" in r][-1] for d in (second, first))
    deterministic = ("rl/loss", "rl/reward/mean", "rl/grad_norm", "rl/tokens", "rl/rollout/response_tokens_mean")
    assert {k: redone[k] for k in deterministic} == {k: original[k] for k in deterministic}
    _, params_resumed = load_hf_checkpoint(resumed["hf_policy"])
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params_resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
