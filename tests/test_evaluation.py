"""The evaluation library: pass@k against its closed form, @k / judge summaries on hand-made rows, the
LLM judge against a loopback server with scripted verdicts and failures, and dataset specs."""
import itertools
import json
import math

import pytest

from atomsearch_jax.clients import EndpointConfig
from atomsearch_jax.data import QARecord
from atomsearch_jax.evaluation import (AnswerJudge, AnswerJudgeConfig, judge_failure_report, judge_rows, load_datasets,
                                       pass_at_k, parse_verdict, render_markdown, summarize, summarize_rows)
from atomsearch_jax.evaluation.answer_judge import ANSWER_JUDGE_PROMPTS
from atomsearch_jax.evaluation.datasets import subsample
from chat_fakes import ScriptedChatServer


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 2, 1 - 3 / 10),        # 1 - C(3,2)/C(5,2)
    (6, 1, 3, 1 - 10 / 20),       # 1 - C(5,3)/C(6,3)
    (10, 3, 1, 0.3),              # pass@1 = c/n
    (4, 0, 4, 0.0), (4, 4, 1, 1.0), (4, 1, 4, 1.0),
    (8, 2, 4, 1 - 15 / 70),       # 1 - C(6,4)/C(8,4)
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_formula_and_rejects_bad_input():
    for n in range(1, 13):
        for c, k in itertools.product(range(n + 1), range(1, n + 1)):
            assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
    for bad in [(4, 5, 1), (4, 1, 0), (4, 1, 5)]:
        with pytest.raises(ValueError, match="pass@k"):
            pass_at_k(*bad)


def sample(answer, em, f1=None, judge=None, judge_error=None, **stats):
    base = dict(answer=answer, em=em, f1=em if f1 is None else f1, substring=em, answered=float(answer is not None),
                format_ok=1.0, judge=judge, judge_error=judge_error, generated_tokens=10, think_tokens=4,
                atomic_thoughts=2, tool_calls=1, search_failures=0, stop_reason="answer", response="")
    return base | stats


def row(dataset, samples, question="q", golds=("a",)):
    return {"dataset": dataset, "id": question, "question": question, "golden_answers": list(golds),
            "samples": samples}


def test_at_k_summary_on_hand_made_rows():
    rows = [
        # 1 of 4 correct; majority answer "b" (wrong): avg 0.25, pass@2 = 1 - C(3,2)/C(4,2) = 0.5, maj 0
        row("s", [sample("a", 1.0), sample("b", 0.0), sample("B.", 0.0), sample(None, 0.0)]),
        # 2 of 4 correct, tie between "a" and "c" broken by first appearance ("c", wrong)
        row("s", [sample("c", 0.0), sample("a", 1.0), sample("a", 1.0), sample("c", 0.0)]),
        # nothing answered
        row("s", [sample(None, 0.0)] * 4),
    ]
    m = summarize(rows)
    assert m["n"] == 3 and m["samples_per_question"] == 4
    assert m["avg@4"] == pytest.approx((0.25 + 0.5 + 0) / 3) == pytest.approx(m["em"])
    assert m["pass@1"] == pytest.approx(m["avg@4"])
    assert m["pass@2"] == pytest.approx((0.5 + (1 - 1 / 6) + 0) / 3)
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert m["maj@4"] == 0.0
    assert m["answered"] == pytest.approx(7 / 12)
    assert m["judge_acc"] is None and m["judged"] == 0


def test_average_is_unweighted_over_sets_and_table_has_one_row_per_set():
    rows = [row("big", [sample("a", 1.0)]) for _ in range(3)] + [row("small", [sample("x", 0.0)])]
    result = summarize_rows(rows, ["big", "small"])
    assert result.average["em"] == pytest.approx(0.5) and result.average["n"] == 4
    assert result.average["samples_per_question"] == 1 and result.average["judge_failures"] == 0
    table = render_markdown(result)
    body = [line for line in table.splitlines() if line.startswith("| ") and "Dataset" not in line]
    assert [line.split("|")[1].strip() for line in body] == ["big", "small", "**Average**"]
    assert "| 100.0 |" in body[0]


def verdict_script(body, attempt):
    """The judge's verdict depends on the predicted answer in the prompt."""
    prediction = body["messages"][1]["content"].split("Predicted answer: ")[1].split("\n")[0]
    if prediction.startswith("right"):
        return "<think>The reference says incorrect things sometimes.</think>\nVerdict: correct"
    if prediction.startswith("wrong"):
        return "incorrect"
    if prediction == "flaky":
        return (503, b"busy") if attempt == 1 else "Correct."
    if prediction == "down":
        return 500, b"internal error"
    if prediction == "mumble":
        return "I am not sure what to say."
    raise AssertionError(prediction)


def test_judge_accuracy_against_scripted_server_is_exact():
    answers = ["right1", "wrong1", "flaky", "down", "mumble", None, "right2", "wrong2"]
    rows = [row("s", [sample(a, 0.0)], question=f"q{i}") for i, a in enumerate(answers)]
    with ScriptedChatServer(verdict_script) as server:
        judge = AnswerJudge(AnswerJudgeConfig(EndpointConfig(
            base_url=server.url, model="judge", max_attempts=2, backoff_s=0.01, max_workers=4)))
        judge_rows(judge, rows)
        seen = [body for _, body, _ in server.requests]
    verdicts = [r["samples"][0]["judge"] for r in rows]
    assert verdicts == [True, False, True, None, None, False, True, False]
    errors = [r["samples"][0]["judge_error"] for r in rows]
    assert errors[3].startswith("HTTP 500") and "no verdict" in errors[4]
    assert sum(e is not None for e in errors) == 2
    m = summarize(rows)
    assert m["judged"] == 6 and m["judge_failures"] == 2
    assert m["judge_acc"] == pytest.approx(3 / 6)  # failures are neither right nor wrong
    # No request for the unanswered sample; every request carries the versioned prompt and the model name.
    assert len({json.dumps(b["messages"]) for b in seen}) == 7
    assert all(b["model"] == "judge" and b["messages"][0]["content"] == ANSWER_JUDGE_PROMPTS["answer_judge_v1"]["system"]
               for b in seen)


def test_parse_verdict():
    assert parse_verdict("CORRECT") is True
    assert parse_verdict("The answer is correct... no wait, incorrect.") is False
    assert parse_verdict("<think>incorrect?</think> correct") is True
    assert parse_verdict("no idea") is None


def write_jsonl(path, n, prefix):
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "question": f"question {i}?",
                                        "golden_answers": [f"answer {i}"]}) + "\n" for i in range(n)))
    return path


def test_dataset_specs_names_files_limits_and_errors(tmp_path):
    (tmp_path / "nq").mkdir()
    write_jsonl(tmp_path / "nq" / "test.jsonl", 10, "nq")
    write_jsonl(tmp_path / "nq" / "train.jsonl", 50, "nqtrain")
    write_jsonl(tmp_path / "bamboogle_all.jsonl", 7, "b")
    write_jsonl(tmp_path / "popqa_a.jsonl", 3, "p")
    write_jsonl(tmp_path / "popqa_b.jsonl", 3, "p")
    own = write_jsonl(tmp_path / "mine.jsonl", 20, "m")
    sets = load_datasets(["nq", "bamboogle:2", f"custom={own}"], data_dir=str(tmp_path), limit_per_dataset=5, seed=3)
    assert [(d.name, len(d.records), d.total) for d in sets] == [("nq", 5, 10), ("bamboogle", 2, 7), ("custom", 5, 20)]
    assert all(r.id.startswith("nq") and not r.id.startswith("nqtrain") for r in sets[0].records)
    again = load_datasets(["nq"], data_dir=str(tmp_path), limit_per_dataset=5, seed=3)
    assert [r.id for r in again[0].records] == [r.id for r in sets[0].records]  # seeded per set
    assert [r.id for r in load_datasets(["nq"], data_dir=str(tmp_path), limit_per_dataset=0)[0].records] == [
        f"nq{i}" for i in range(10)]
    with pytest.raises(ValueError, match="ambiguous.*popqa"):
        load_datasets(["popqa"], data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no QA file.*hotpotqa"):
        load_datasets(["hotpotqa"], data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="twice"):
        load_datasets([f"x={own}", f"x={own}"])


def test_subsample_keeps_file_order_and_differs_by_set():
    records = [QARecord(str(i), f"q{i}", ["a"], "s") for i in range(100)]
    a, b = subsample(records, 10, 0, "a"), subsample(records, 10, 0, "b")
    assert [int(r.id) for r in a] == sorted(int(r.id) for r in a) and a != b
    assert subsample(records, 200, 0, "a") == records


class ScriptedRunner:
    """A RolloutRunner stand-in that returns scripted Atom-Searcher responses (question -> responses)."""

    def __init__(self, fmt, tokenizer, script):
        self.fmt, self.tokenizer, self.script, self.calls = fmt, tokenizer, script, []

    def run(self, records, n=1, *, seed=0, temperature=None, first_record=0):
        import numpy as np

        from atomsearch_jax.agent import Trajectory
        self.calls.append((len(records), n))
        out = []
        for i, r in enumerate(records):
            for j in range(n):
                response = self.script[r.question][j]
                ids = np.asarray(self.tokenizer.encode(response), np.int32)
                out.append(Trajectory(i, j, r.question, list(r.golden_answers), ids, np.ones(len(ids), np.float32),
                                      np.zeros(len(ids), np.float32), 0, response, "answer",
                                      tool_calls=response.count("<tool_call>")))
        return out


def test_evaluation_loop_scores_judges_and_batches_scripted_trajectories():
    from atomsearch_jax.evaluation import EvalDataset, evaluate_datasets
    from atomsearch_jax.formats import get_format

    class CharTokenizer:
        def encode(self, text, add_special_tokens=False):
            return [ord(c) % 256 for c in text]

    fmt = get_format("atom_searcher")
    right = fmt.render_turn([("PLAN", "look it up"), ("VERIFICATION", "sure")], answer="Paris")
    wrong = fmt.render_turn([("PLAN", "guess")], answer="Lyon")
    broken = "<PLAN>never closes"
    script = {"capital of France?": [right, wrong, right], "largest city of France?": [wrong, wrong, broken],
              "capital of Italy?": [broken, broken, broken]}
    sets = [EvalDataset("fr", "", [QARecord("1", "capital of France?", ["Paris"], "fr"),
                                   QARecord("2", "largest city of France?", ["Paris"], "fr")], 2),
            EvalDataset("it", "", [QARecord("3", "capital of Italy?", ["Rome"], "it")], 1)]
    runner = ScriptedRunner(fmt, CharTokenizer(), script)
    with ScriptedChatServer(lambda body, attempt: "correct" if "Predicted answer: Paris" in
                            body["messages"][1]["content"] else "incorrect") as server:
        judge = AnswerJudge(AnswerJudgeConfig(EndpointConfig(base_url=server.url, model="j")))
        result = evaluate_datasets(runner, sets, n=3, rows_per_batch=6, judge=judge, progress=False)
    assert runner.calls == [(2, 3), (1, 3)]  # 6 rollouts per batch = 2 questions of 3 samples
    fr, it = result.summaries["fr"], result.summaries["it"]
    assert fr["n"] == 2 and it["n"] == 1
    assert fr["em"] == pytest.approx(2 / 6) and fr["answered"] == pytest.approx(5 / 6)
    assert fr["pass@3"] == pytest.approx(0.5) and fr["maj@3"] == pytest.approx(0.5)
    # Unanswered samples are incorrect without a request; only answered ones reach the judge.
    assert fr["judge_acc"] == pytest.approx(2 / 6) and fr["judged"] == 6 and it["judge_acc"] == 0.0
    assert len(server.requests) == 5
    assert fr["atomic_thoughts"] == pytest.approx((2 + 1 + 2 + 1 + 1 + 0) / 6)
    assert fr["think_tokens"] == pytest.approx(sum(len(b.split("</think>")[0]) for b in (right, wrong, right, wrong,
                                                                                       wrong)) / 6)
    assert it["em"] == 0.0 and it["answered"] == 0.0 and it["format_ok"] == 0.0
    assert result.average["em"] == pytest.approx((2 / 6 + 0) / 2)
    assert [r["dataset"] for r in result.rows] == ["fr", "fr", "it"]


def test_a_judge_failing_past_its_rate_is_no_longer_asked():
    from atomsearch_jax.evaluation import EvalDataset, evaluate_datasets
    from atomsearch_jax.formats import get_format

    class CharTokenizer:
        def encode(self, text, add_special_tokens=False):
            return [ord(c) % 256 for c in text]

    fmt = get_format("atom_searcher")
    paris, broken = fmt.render_turn([("PLAN", "x")], answer="Paris"), "<PLAN>never closes"
    script = {"a?": [paris], "b?": [paris], "c?": [broken], "d?": [paris]}
    records = [QARecord(q[0], q, ["Paris"], "s") for q in script]

    def run(max_rate):
        with ScriptedChatServer(lambda body, attempt: (500, b"judge down")) as server:
            judge = AnswerJudge(AnswerJudgeConfig(EndpointConfig(base_url=server.url, model="j", max_attempts=1)))
            result = evaluate_datasets(ScriptedRunner(fmt, CharTokenizer(), script), [EvalDataset("s", "", records, 4)],
                                       rows_per_batch=1, judge=judge, max_judge_failure_rate=max_rate, progress=False)
        return result, len(server.requests)

    result, asked = run(0.5)  # the first answer's failure (1 of 1) passes 50%: no later request
    samples = [row["samples"][0] for row in result.rows]
    assert asked == 1 and samples[0]["judge_error"].startswith("HTTP 500")
    stop = "judge not asked: the answer judge failed on 1 of 1 answers (100% > max judge failure rate 50%)"
    assert samples[1]["judge_error"].startswith(stop) and samples[1]["judge"] is None
    assert samples[2]["judge"] is False and samples[2]["judge_error"] is None  # no answer: incorrect, as always
    assert samples[3]["judge_error"].startswith(stop)
    assert result.summaries["s"]["judge_failures"] == 3 and result.summaries["s"]["judge_acc"] == 0.0
    report = judge_failure_report(result.rows, 0.5)
    assert report == ("the answer judge failed on 3 of 3 answers (100% > max judge failure rate 50%), 2 of them not "
                      "asked after it had failed too often; last errors: ['HTTP 500: judge down']")
    assert judge_failure_report(result.rows, 1.0) is None
    result, asked = run(1.0)  # the default: every answer is sent
    assert asked == 3 and judge_failure_report(result.rows, 0.99) is not None


def test_training_validation_logs_per_set_metrics_and_trajectories(tmp_path):
    from atomsearch_jax.report import PhaseClock

    import configs.default as default
    from atomsearch_jax.formats import get_format
    from atomsearch_jax.train import run_eval

    class CharTokenizer:
        def encode(self, text, add_special_tokens=False):
            return [ord(c) % 256 for c in text]

    class Writer:
        def __init__(self):
            self.logged = []

        def write(self, step, scalars):
            self.logged.append((step, scalars))

    fmt = get_format("atom_searcher")
    right = fmt.render_turn([("PLAN", "x")], answer="Paris")
    wrong = fmt.render_turn([("PLAN", "x")], answer="Rome")
    records = [QARecord("1", "a?", ["Paris"], "nq"), QARecord("2", "b?", ["Paris"], "nq"),
               QARecord("3", "c?", ["Paris"], "hotpotqa")]
    runner = ScriptedRunner(fmt, CharTokenizer(), {"a?": [right], "b?": [wrong], "c?": [right]})
    config = default.get_config()
    config.workdir, config.eval.log_trajectories = str(tmp_path), 2
    writer = Writer()
    clock = PhaseClock()
    average = run_eval(runner, records, config, writer, 7, "after SFT", clock)
    assert average["em"] == pytest.approx((0.5 + 1.0) / 2) and average["n"] == 3
    ((step, scalars),) = writer.logged
    assert step == 7 and scalars["eval/nq/em"] == 0.5 and scalars["eval/hotpotqa/em"] == 1.0
    logged = [json.loads(line) for line in (tmp_path / "eval_trajectories.jsonl").read_text().splitlines()]
    assert [(r["tag"], r["step"], r["question"]) for r in logged] == [("after SFT", 7, "a?"), ("after SFT", 7, "b?")]
    assert logged[0]["samples"][0]["response"] == right
