"""The README's `evaluate` command with its LLM judge (`--config.eval.judge_url/judge_model`) and sets
named in `--data_dir`, as a user types it, run as a 2-process JAX job: a scripted (bigram) policy that
always answers "Paris", a loopback judge whose verdict is scripted per question (right, wrong, a retried
failure, a server error, a reply without a verdict). LJ accuracy, judged and failure counts, per-sample
verdicts and the judge's request count are exact; only process 0 writes the report. 3 of the 7 answers get
no verdict, more than --max_judge_failure_rate=0.4: with the results written, both processes exit
non-zero saying so."""
import json

import pytest
from transformers import AddedToken, AutoTokenizer

from chat_fakes import ScriptedChatServer
from multiprocess_helpers import start_job

ANSWER = "<PLAN>\nrecall it\n</PLAN>\n</think>\n<answer>\nParis\n</answer>"
# kind -> (gold answer, verdict the judge gives: True / False / None = judging fails, judge requests).
KINDS = {"right": ("Paris", True, 1), "wrong": ("Lyon", False, 1), "flaky": ("Paris", True, 2),
         "down": ("Paris", None, 2), "mumble": ("Paris", None, 2)}
MAX_ATTEMPTS = 2

pytestmark = pytest.mark.slow  # two JAX processes compile on 2 loaded cores (~60 s)


def judge_script(body, attempt):
    kind = body["messages"][1]["content"].split("Question: ")[1].split("-")[0]
    assert "Predicted answer: Paris\n" in body["messages"][1]["content"]
    if kind == "right" or (kind == "flaky" and attempt > 1):
        return "<think>Lyon? No.</think> Paris names the same city. Verdict: correct"
    if kind == "wrong":
        return "incorrect"
    if kind == "flaky":
        return 503, b"busy"
    if kind == "down":
        return 500, b"internal error"
    return "I cannot tell."  # mumble: no verdict, retried, then a failure


@pytest.fixture(scope="module")
def paris_policy(tmp_path_factory):
    """An HF checkpoint + tokenizer of a bigram policy whose whole Atom-Searcher turn, after any prompt,
    is one added token: a well-formed answer "Paris"."""
    from test_agent import bigram_params, single_token

    from atomsearch_jax.data.world import WorldConfig, build_world, train_tokenizer
    from atomsearch_jax.formats import get_format
    from atomsearch_jax.model import save_hf_checkpoint

    tok = AutoTokenizer.from_pretrained(train_tokenizer(build_world(WorldConfig(seed=0)),
                                                        tmp_path_factory.mktemp("tok")))
    tok.add_tokens([AddedToken(ANSWER, normalized=False)])
    prompt = tok.encode(get_format("atom_searcher").prompt_text("any question?", tok), add_special_tokens=False)
    cfg, params = bigram_params(tok, {prompt[-1]: single_token(tok, ANSWER)}, sharpness=100.0)
    path = tmp_path_factory.mktemp("policy")
    save_hf_checkpoint(cfg, params, path)
    tok.save_pretrained(path)
    return path


def write_questions(path, kinds, prefix):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "question": f"{kind}-{prefix}{i}: capital of France?",
                                        "golden_answers": [KINDS[kind][0]]}) + "\n" for i, kind in enumerate(kinds)))


def expected_metrics(kinds):
    verdicts = [KINDS[k][1] for k in kinds]
    judged = [v for v in verdicts if v is not None]
    return {"n": len(kinds), "em": sum(KINDS[k][0] == "Paris" for k in kinds) / len(kinds),
            "judged": len(judged), "judge_failures": len(kinds) - len(judged),
            "judge_acc": sum(judged) / len(judged) if judged else None}


def test_evaluate_with_llm_judge_on_two_processes(paris_policy, tmp_path):
    data = tmp_path / "data"
    write_questions(data / "nq" / "test.jsonl", ["right", "wrong", "flaky", "down", "mumble"], "nq")
    write_questions(data / "nq" / "train.jsonl", ["right"] * 3, "train")  # the test split wins
    write_questions(data / "bamboogle_all.jsonl", ["wrong", "right", "mumble", "flaky"], "bb")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "0", "contents": '"Paris"\nParis is the capital of France.'}) + "\n")
    out = tmp_path / "eval"
    with ScriptedChatServer(judge_script) as judge:
        job = start_job("atomsearch_jax.evaluate", [
            "--config=configs/default.py", "--config.data.source=files", f"--config.model.hf_path={paris_policy}",
            f"--config.search.retriever=bm25:{corpus}", "--config.rl.rollout.max_response_tokens=8",
            f"--config.eval.judge_url={judge.url}/v1", "--config.eval.judge_model=judge-72b",
            f"--config.eval.judge_max_attempts={MAX_ATTEMPTS}", "--config.eval.judge_timeout_s=10",
            "--datasets=nq,bamboogle:2", f"--data_dir={data}", "--limit_per_dataset=10",
            "--max_judge_failure_rate=0.4", f"--workdir={tmp_path / 'work'}", f"--out_dir={out}"],
            processes=2, devices=1, log_prefix=str(tmp_path / "log"))
        codes = [proc.wait(timeout=600) for proc, _ in job]
        requests = [body for _, body, _ in judge.requests]
    logs = [open(log).read() for _, log in job]
    stop = "evaluate: the answer judge failed on 3 of 7 answers (43% > max judge failure rate 40%); last errors: ["
    for code, log in zip(codes, logs):
        last_line = log.strip().splitlines()[-1]
        assert code == 1 and last_line.startswith(stop), log[-3000:]
        assert "'HTTP 500: internal error'" in last_line and "no verdict (correct/incorrect)" in last_line

    results = json.loads((out / "results.json").read_text())
    rows = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert [r["dataset"] for r in rows] == ["nq"] * 5 + ["bamboogle"] * 2  # limit 2 of 4, both processes' rows
    assert all(r["id"].startswith("bb") for r in rows[5:]) and rows[5]["id"] < rows[6]["id"]
    kinds = {name: [r["question"].split("-")[0] for r in rows if r["dataset"] == name] for name in ("nq", "bamboogle")}
    assert kinds["nq"] == ["right", "wrong", "flaky", "down", "mumble"]
    for name, expected in {name: expected_metrics(k) for name, k in kinds.items()}.items():
        got = results["datasets"][name]
        assert {key: got[key] for key in expected} == pytest.approx(expected), name
        assert got["answered"] == 1.0 and got["format_ok"] == 1.0
    expected = [expected_metrics(k) for k in kinds.values()]
    totals = (sum(e["judged"] for e in expected), sum(e["judge_failures"] for e in expected))
    assert (results["average"]["judged"], results["average"]["judge_failures"]) == totals
    assert results["meta"]["judge_prompt_version"] == "answer_judge_v1"
    assert results["meta"]["judge_failed"].startswith("the answer judge failed on 3 of 7 answers")
    for row in rows:
        (sample,) = row["samples"]
        gold, verdict, _ = KINDS[row["question"].split("-")[0]]
        assert sample["answer"] == "Paris" and sample["judge"] is verdict
        assert (sample["judge_error"] is None) == (verdict is not None)
    errors = {r["question"].split("-")[0]: r["samples"][0]["judge_error"] for r in rows}
    assert errors["down"].startswith("HTTP 500") and "no verdict" in errors["mumble"]
    # Every answer is judged (retried up to the limit), never re-judged, with the model's name.
    assert len(requests) == sum(KINDS[r["question"].split("-")[0]][2] for r in rows)
    assert all(body["model"] == "judge-72b" for body in requests)
    # One writer: process 0 prints the table (with its judge line), process 1 wrote nothing of it.
    assert "| Dataset | n | EM | F1 | Sub | LJ |" in logs[0] and "| Dataset |" not in logs[1]
    assert f"Judge: {totals[0]} answers judged, {totals[1]} judge failures" in (out / "results.md").read_text()
