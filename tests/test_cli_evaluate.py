"""`build_index` and `evaluate` as a user types them, on the shared HotpotQA / 2Wiki / MuSiQue samples
(BM25 over their own paragraphs), the NQ / TriviaQA / PopQA samples and a user's own file, with a tiny
scripted policy that searches the index once, then answers: every response is exactly its turns around
what the index returns, and every metric follows from the golds."""
import json
import re
import string

import pytest

from atomsearch_jax.formats import get_format
from atomsearch_jax.search import make_retriever
from cli_helpers import run_cli, scripted_qwen_policy

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

SETS = {"hotpotqa": "hotpotqa/hotpot_dev_distractor_sample200.jsonl",
        "2wiki": "2wikimultihopqa/2wiki_dev_sample164.jsonl",
        "musique": "musique/musique_ans_dev_sample200.jsonl",
        "nq": "nq/flashrag_nq_test_sample17.jsonl",
        "triviaqa": "triviaqa/triviaqa_sm_sub.jsonl",
        "popqa": "popqa/popqa_sample1000_with_paragraphs.json"}
FMT = get_format("research")
QUERY, ANSWER = "capital of France", "yes"
SEARCH = FMT.render_turn([("PLAN", "look it up")], queries=[QUERY])
FINAL = FMT.render_turn([("PLAN", "the results say so")], answer=ANSWER)


def squad_normalize(text):
    """SQuAD's answer normalization (lower case, no punctuation, articles or extra white space)."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def test_build_index_then_evaluate_six_sets(tmp_path, shared_data, qwen_tokenizer_dir):
    paragraphs = ",".join(str(shared_data / SETS[k]) for k in ("hotpotqa", "2wiki", "musique", "popqa"))
    run_cli("build_index", f"--qa_files={paragraphs}", f"--corpus_out={tmp_path / 'corpus.jsonl'}",
            f"--output_dir={tmp_path / 'index'}")
    assert (tmp_path / "index" / "corpus.jsonl").is_file()
    assert sum(1 for _ in open(tmp_path / "corpus.jsonl")) > 5000

    # The prompt ends with "<|im_start|>assistant\n", the results with "</result>".
    policy = scripted_qwen_policy(tmp_path / "policy", qwen_tokenizer_dir,
                                  {"<|im_start|>assistant\n": SEARCH, "</result>": FINAL})
    specs = [f"{name}={shared_data / path}" for name, path in SETS.items()]
    specs[3] += ":1"  # nq: its own limit
    mine = tmp_path / "mine.jsonl"  # a user's own set, whose golds the scripted answer matches
    mine.write_text("".join(json.dumps({"question": f"Is it {i}?", "golden_answers": [gold]}) + "\n"
                            for i, gold in enumerate(["yes", "Yes.", "YES"])))
    specs.append(f"mine={mine}")
    out = tmp_path / "eval"
    proc = run_cli("evaluate", "--config=configs/default.py", "--config.format=research", "--config.data.source=files",
                   f"--config.model.hf_path={policy}", "--config.model.max_len=1024",
                   f"--config.search.retriever=bm25:{tmp_path / 'index'}",
                   "--config.rl.rollout.max_response_tokens=512", "--config.rl.rollout.segment_steps=16",
                   f"--datasets={','.join(specs)}", "--limit_per_dataset=2", "--n=2", "--temperature=1.0",
                   f"--workdir={tmp_path / 'work'}", f"--out_dir={out}")
    results = json.loads((out / "results.json").read_text())
    assert list(results["datasets"]) == [*SETS, "mine"]
    assert {k: v["n"] for k, v in results["datasets"].items()} == {k: 1 if k == "nq" else 2 for k in [*SETS, "mine"]}
    assert results["average"]["n"] == 13
    assert results["meta"]["sets"]["popqa"]["total"] == 1000
    rows = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert [r["dataset"] for r in rows].count("hotpotqa") == 2 and len(rows) == 13
    golds = {json.loads(line)["question"]: json.loads(line)["golden_answers"]
             for line in open(shared_data / SETS["nq"])}
    nq = [r for r in rows if r["dataset"] == "nq"]
    assert nq[0]["golden_answers"] == golds[nq[0]["question"]] and len(nq[0]["samples"]) == 2

    # Every sample searched the index built from the sets' paragraphs once, then answered.
    docs = make_retriever(f"bm25:{tmp_path / 'index'}").search([QUERY], 3)[0].docs
    response = SEARCH + FMT.render_results([docs], max_chars_per_doc=300) + FINAL
    for row in rows:
        assert [(s["response"], s["answer"], s["tool_calls"]) for s in row["samples"]] == [(response, ANSWER, 1)] * 2
    for name, metrics in results["datasets"].items():
        right = [float(squad_normalize(ANSWER) in {squad_normalize(g) for g in r["golden_answers"]})
                 for r in rows if r["dataset"] == name]
        em = sum(right) / len(right)
        assert metrics["samples_per_question"] == 2
        assert (metrics["em"], metrics["avg@2"], metrics["pass@1"], metrics["pass@2"], metrics["maj@2"]) == (em,) * 5
        assert (metrics["answered"], metrics["format_ok"], metrics["tool_calls"]) == (1.0, 1.0, 1.0)
        assert metrics["judge_acc"] is None and metrics["search_failures"] == 0
    assert results["datasets"]["mine"]["em"] == 1.0
    table = (out / "results.md").read_text()
    labels = [line.split("|")[1].strip() for line in table.splitlines()
              if line.startswith("| ") and not line.startswith("| Dataset")]
    assert labels == [*SETS, "mine", "**Average**"]
    assert "| Dataset | n | EM | F1 |" in proc.stdout  # the table is printed too
