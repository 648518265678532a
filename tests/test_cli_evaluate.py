"""`build_index` and `evaluate` as a user types them, on the shared HotpotQA / 2Wiki / MuSiQue samples
(BM25 over their own paragraphs) and the NQ / TriviaQA / PopQA samples, with a tiny random policy."""
import json

import pytest

from cli_helpers import run_cli, tiny_qwen_policy

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

SETS = {"hotpotqa": "hotpotqa/hotpot_dev_distractor_sample200.jsonl",
        "2wiki": "2wikimultihopqa/2wiki_dev_sample164.jsonl",
        "musique": "musique/musique_ans_dev_sample200.jsonl",
        "nq": "nq/flashrag_nq_test_sample17.jsonl",
        "triviaqa": "triviaqa/triviaqa_sm_sub.jsonl",
        "popqa": "popqa/popqa_sample1000_with_paragraphs.json"}


def test_build_index_then_evaluate_six_sets(tmp_path, shared_data, qwen_tokenizer_dir):
    paragraphs = ",".join(str(shared_data / SETS[k]) for k in ("hotpotqa", "2wiki", "musique", "popqa"))
    run_cli("build_index", f"--qa_files={paragraphs}", f"--corpus_out={tmp_path / 'corpus.jsonl'}",
            f"--output_dir={tmp_path / 'index'}")
    assert (tmp_path / "index" / "corpus.jsonl").is_file()
    assert sum(1 for _ in open(tmp_path / "corpus.jsonl")) > 5000

    policy = tiny_qwen_policy(tmp_path / "policy", qwen_tokenizer_dir)
    specs = [f"{name}={shared_data / path}" for name, path in SETS.items()]
    specs[3] += ":1"  # nq: its own limit
    out = tmp_path / "eval"
    proc = run_cli("evaluate", "--config=configs/default.py", "--config.data.source=files",
                   f"--config.model.hf_path={policy}", "--config.model.max_len=640",
                   f"--config.search.retriever=bm25:{tmp_path / 'index'}",
                   "--config.rl.rollout.max_response_tokens=16", "--config.rl.rollout.segment_steps=16",
                   f"--datasets={','.join(specs)}", "--limit_per_dataset=2", "--n=2", "--temperature=1.0",
                   f"--workdir={tmp_path / 'work'}", f"--out_dir={out}")
    results = json.loads((out / "results.json").read_text())
    assert list(results["datasets"]) == list(SETS)
    assert {k: v["n"] for k, v in results["datasets"].items()} == {k: 1 if k == "nq" else 2 for k in SETS}
    assert results["average"]["n"] == 11
    for metrics in results["datasets"].values():
        assert metrics["samples_per_question"] == 2
        for key in ("em", "f1", "substring", "answered", "format_ok", "avg@2", "pass@1", "pass@2", "maj@2"):
            assert 0.0 <= metrics[key] <= 1.0
        assert 0 < metrics["generated_tokens"] <= 16 and metrics["judge_acc"] is None
    assert results["meta"]["sets"]["popqa"]["total"] == 1000
    rows = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert [r["dataset"] for r in rows].count("hotpotqa") == 2 and len(rows) == 11
    golds = {json.loads(line)["question"]: json.loads(line)["golden_answers"]
             for line in open(shared_data / SETS["nq"])}
    nq = [r for r in rows if r["dataset"] == "nq"]
    assert nq[0]["golden_answers"] == golds[nq[0]["question"]] and len(nq[0]["samples"]) == 2
    table = (out / "results.md").read_text()
    labels = [line.split("|")[1].strip() for line in table.splitlines()
              if line.startswith("| ") and not line.startswith("| Dataset")]
    assert labels == list(SETS) + ["**Average**"]
    assert "| Dataset | n | EM | F1 |" in proc.stdout  # the table is printed too
