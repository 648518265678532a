"""The job report: headline fields from per-stage held-out metrics, metrics.jsonl reading across a
resume, the stdout table, report.json / report.md with PNG plots, and the phase clock."""
import json
import time

import jax
import numpy as np
import pytest

from atomsearch_jax import report as job_report


def stage(em, f1, n=200):
    return {"em": em, "f1": f1, "n": float(n), "format_ok": 0.9, "tool_calls": 2.0, "generated_tokens": 300.0}


def test_heldout_fields_and_table():
    heldout = {"untrained": stage(0.0, 0.01), "sft": stage(0.2, 0.25), "grpo": stage(0.3, 0.35)}
    fields = job_report.heldout_fields(heldout)
    assert fields == {"heldout_em_untrained": 0.0, "heldout_f1_untrained": 0.01, "heldout_em_sft": 0.2,
                      "heldout_f1_sft": 0.25, "heldout_em_grpo": 0.3, "heldout_f1_grpo": 0.35, "heldout_questions": 200}
    table = job_report.render_table({**fields, "heldout": heldout, "wall_seconds": 12.5,
                                     "time_seconds": {"sft": 3.0, "eval": 0.0}})
    assert "held-out questions: 200" in table and "grpo" in table and "0.350" in table
    assert "sft 3.0" in table and "eval" not in table.splitlines()[-1]  # zero phases are left out
    with pytest.raises(ValueError, match="different question counts"):
        job_report.heldout_fields({"untrained": stage(0, 0, n=10), "sft": stage(0, 0, n=20)})


def test_read_metrics_keeps_the_last_line_per_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "rl/loss": 1.0}, {"step": 2, "rl/loss": 2.0}, {"step": 2, "rl/loss": 5.0},
             {"step": 2, "eval/f1": 0.5}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = job_report.read_metrics(str(path))
    assert sorted((r["step"], r.get("rl/loss", -1), r.get("eval/f1", -1)) for r in rows) == [
        (1, 1.0, -1), (2, -1, 0.5), (2, 5.0, -1)]


def test_write_report_files(tmp_path):
    rows = [{"step": s, "rl/reward/mean": 0.1 * s, "rl/reward/outcome_mean": 0.2, "rl/reward/atr_mean": 0.5,
             "rl/entropy": 1.0 / s} for s in (1, 2, 3)]
    heldout = {"untrained": stage(0.0, 0.0), "sft": stage(0.2, 0.25)}
    report = {**job_report.heldout_fields(heldout), "heldout": heldout, "wall_seconds": 1.0, "time_seconds": {}}
    paths = job_report.write_report(str(tmp_path), report, rows)
    assert json.loads(open(paths["json"]).read()) == report
    md = open(paths["md"]).read()
    for name in ("heldout_stages.png", "reward.png", "atr_vs_outcome.png", "entropy.png"):
        assert f"(plots/{name})" in md
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert "tool_calls.png" not in md  # no data, no plot


def test_phase_clock_sums_phases():
    clock = job_report.PhaseClock()
    with clock("sft"):
        time.sleep(0.05)
    clock.add("sft", 1.0)
    clock.add("custom", 2.0)
    seconds = clock.seconds()
    assert list(seconds)[: len(job_report.PHASES)] == list(job_report.PHASES)
    assert 1.04 <= seconds["sft"] < 1.5 and seconds["custom"] == 2.0
    compiles = seconds["compiles"]
    jax.jit(lambda x: x * 3 + 1)(np.arange(7))  # a fresh program: one more compilation, counted
    assert clock.seconds()["compiles"] == compiles + 1 and clock.seconds()["compile"] > 0
