"""The README's train -> evaluate -> make_sft_data chain as a user types it, at toy size on the synthetic
world: SFT from a trajectory file, then GRPO; the exported policy evaluated by `evaluate` with the
config's own eval split; the same policy as a JAX-engine teacher for `make_sft_data`."""
import json

import pytest

from atomsearch_jax.data.sft_examples import turn_segments
from atomsearch_jax.data.trajectory_files import trajectory_messages
from atomsearch_jax.data.world import build_world, teacher_turns
from atomsearch_jax.formats import get_format
from atomsearch_jax.search import BM25Retriever
from cli_helpers import run_cli

pytestmark = pytest.mark.slow

TINY = ["--config=configs/default.py", "--config.model.hidden_size=32", "--config.model.intermediate_size=64",
        "--config.model.num_layers=1", "--config.model.num_heads=2", "--config.model.num_kv_heads=1",
        "--config.model.max_len=768", "--config.rl.rollout.max_response_tokens=24",
        "--config.rl.rollout.segment_steps=12"]


def write_teacher_file(path, n):
    """n of the world's teacher trajectories as a trajectory file (what a teacher pipeline writes)."""
    world, fmt = build_world(), get_format("atom_searcher")
    retriever = BM25Retriever.from_documents(world.corpus)
    with open(path, "w") as f:
        for record in world.splits["train"][:n]:
            turns = teacher_turns(record, retriever, topk=3)
            tools = [json.dumps(t.results) for t in turns if t.queries is not None]
            messages = trajectory_messages(record.question, fmt.system_prompt(),
                                           turn_segments(turns, fmt, max_chars_per_doc=300), tools)
            f.write(json.dumps({"messages": messages, "golden_answers": record.golden_answers}) + "\n")
    return path


def test_train_from_trajectory_file_then_evaluate_and_make_sft_data(tmp_path):
    data = write_teacher_file(tmp_path / "teacher.jsonl", 12)
    run = tmp_path / "run"
    proc = run_cli("train", *TINY, f"--workdir={run}", f"--config.sft.trajectory_files={data}",
                   "--config.sft.steps=2", "--config.sft.batch_size=4", "--config.sft.optimizer.total_steps=2",
                   "--config.sft.optimizer.warmup_steps=0",
                   "--config.rl.steps=1", "--config.rl.prompts_per_step=2", "--config.rl.group_size=2",
                   "--config.data.eval_size=2", "--config.data.heldout_size=2", "--config.eval.every=0",
                   "--config.eval.initial=False")
    assert f"SFT data: 12 trajectories from {data}" in proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_after_sft"]["n"] == 2 and "eval_after_grpo" in summary
    logged = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "sft/loss" in r] == [1, 2]
    assert [r["step"] for r in logged if "rl/loss" in r] == [1]
    validation = [json.loads(line) for line in (run / "eval_trajectories.jsonl").read_text().splitlines()]
    assert {v["tag"] for v in validation} == {"after SFT", "after GRPO"} and "eval_initial" not in summary
    assert all(v["dataset"] == "world" and v["samples"][0]["response"] is not None for v in validation)

    policy = run / "hf_policy"
    run_cli("evaluate", *TINY, f"--config.model.hf_path={policy}", "--limit_per_dataset=3",
            f"--workdir={tmp_path / 'eval_work'}", f"--out_dir={tmp_path / 'eval'}")
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert list(results["datasets"]) == ["world"] and results["datasets"]["world"]["n"] == 3
    assert (tmp_path / "eval" / "results.md").read_text().count("| world |") == 1

    out = tmp_path / "sft" / "world.jsonl"
    proc = run_cli("make_sft_data", *TINY, f"--config.model.hf_path={policy}", "--num_questions=3",
                   "--samples_per_question=2", "--questions_per_batch=3", f"--workdir={tmp_path / 'sft_work'}",
                   f"--out={out}")
    stats = json.loads((tmp_path / "sft" / "world.jsonl.stats.json").read_text())
    assert stats["questions"] == 3 and stats["samples"] == 6
    assert stats["kept"] + sum(stats["rejected"].values()) == 6 and stats["generation_errors"] == 0
    assert stats["expansion"] == {"seeds": 10}  # no teacher-side expansion with a local engine
    assert len(out.read_text().splitlines()) == stats["kept"]
