"""`make_sft_data` as a user runs it, against a loopback OpenAI-compatible server playing the teacher
(scripted, malformed, slow, failing and stop-string-less replies): exactly the expected filtered set,
loss masks on the teacher's own turns only, failures counted; a teacher failing past the failure rate
stops the run with the data kept so far; plus the filters on hand-made samples."""
import dataclasses
import json
import re

import numpy as np
import pytest
from transformers import AutoTokenizer

from atomsearch_jax.agent.text_rollout import TextTrajectory
from atomsearch_jax.data import QARecord
from atomsearch_jax.data.trajectory_files import read_trajectory_file, trajectory_example
from atomsearch_jax.formats import get_format
from atomsearch_jax.sft_data import (FailureLimits, FilterConfig, SystemPrompt, TooManyFailures, filter_question,
                                    expand_prompts, generate_sft_data, seed_prompts)
from atomsearch_jax.sft_data.seed_prompts import SEED_PROMPTS
from chat_fakes import ScriptedChatServer, completion_body
from cli_helpers import run_cli

FMT = get_format("atom_searcher")
CALL = FMT.render_turn([("PLAN", "Find the capital."), ("ACTION", "Search for it.")], queries=["capital of France"])
ANSWER = FMT.render_turn([("OBSERVATION", "The result names Paris."), ("VERIFICATION", "Supported.")], answer="Paris")
WRONG = FMT.render_turn([("GUESS", "Probably Lyon.")], answer="Lyon")
QUESTIONS = ["good", "wrong", "malformed", "slow", "fail", "flaky", "nocall", "loop", "garbage", "withstop"]
_QUESTION = re.compile(r"<\|im_start\|>user\n(\w+):")


def strip_stop(text):
    return text[: -len("</tool_call>")]


def teacher(body, attempt):
    if "messages" in body:  # prompt expansion
        seed = body["messages"][0]["content"]
        variant = "<prompt>A careful style.\n<think><PLAN>a</PLAN>\n<CHECK>b</CHECK></think>" + "x" * 80 + "</prompt>"
        if "sceptical" in seed:
            return "Sure, here is a variant without the block."
        if "hypothesis early" in seed:
            return 500, b"overloaded"
        if "Plan first" in seed or "Work backwards" in seed:
            return variant  # the same variant twice: one is a duplicate
        return variant.replace("A careful style", seed.split("Reasoning style: ")[1].split(".")[0])
    prompt = body["prompt"]
    kind = _QUESTION.findall(prompt)[0]
    turn = prompt.count("<|im_start|>assistant") - 1
    assert body["stop"] == list(FMT.stop_strings) and body["model"] == "teacher-72b"
    if kind == "fail":
        return 500, b"internal error"
    if kind == "garbage":
        return 200, b"<html>bad gateway</html>"
    if kind == "flaky" and attempt == 1:
        return 503, b"busy"
    if kind == "malformed":
        return "<PLAN>no idea</PLAN>\n</think>\nI give up."
    if kind == "nocall":
        return ANSWER
    if kind == "loop" or turn == 0:
        if kind == "withstop":  # servers that keep the stop string in the text
            return CALL
        # vLLM/SGLang style: the stop string is left out of the text and named in stop_reason
        reply = completion_body(strip_stop(CALL))
        reply["choices"][0]["stop_reason"] = "</tool_call>"
        return ("sleep", 0.3, reply) if kind == "slow" else reply
    return WRONG if kind == "wrong" else ANSWER


@pytest.mark.shared_data
def test_make_sft_data_against_a_scripted_teacher(tmp_path, qwen_tokenizer_dir):
    corpus, questions = write_inputs(tmp_path, QUESTIONS)
    out = tmp_path / "sft" / "data.jsonl"
    with ScriptedChatServer(teacher) as server:
        run_cli("make_sft_data", "--config=configs/default.py", "--config.data.source=files",
                f"--config.model.tokenizer_path={qwen_tokenizer_dir}", f"--config.search.retriever=bm25:{corpus}",
                "--config.search.topk=1", "--config.model.max_len=2048", f"--qa_files={questions}",
                f"--teacher_url={server.url}/v1", "--teacher_model=teacher-72b", "--teacher_max_attempts=2",
                "--teacher_timeout_s=5", "--prompts_per_seed=1", "--samples_per_question=3", "--max_tool_calls=2",
                "--questions_per_batch=4", f"--workdir={tmp_path / 'work'}", f"--out={out}")
    stats = json.loads((tmp_path / "sft" / "data.jsonl.stats.json").read_text())
    assert stats["expansion"] == {"seeds": 10, "requested": 10, "accepted": 7, "rejected": 1, "failed": 1,
                                  "duplicates": 1}
    assert stats["kept"] == 4 and stats["questions"] == 10 and stats["samples"] == 30
    assert stats["rejected"] == {"generation_failed": 6, "search_failed": 0, "format": 6, "tool_calls": 3,
                                 "length": 0, "f1": 3, "majority": 0, "duplicate": 8}
    assert stats["generation_errors"] == 6
    assert stats["atomic_tags"] == {"PLAN": 4, "ACTION": 4, "OBSERVATION": 4, "VERIFICATION": 4}

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["flaky", "good", "slow", "withstop"]
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    for row, record in zip(rows, read_trajectory_file(str(out), FMT)):
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant", "tool", "assistant"]
        assert row["messages"][0]["content"].startswith(FMT.system_prompt())
        assert json.loads(row["messages"][3]["content"])[0][0]["title"] == "Paris"
        tokens, mask = trajectory_example(record, FMT, tokenizer)
        trained = tokenizer.decode(tokens[mask == 1])
        assert trained == CALL + ANSWER  # exactly the teacher's turns, the tool call's stop string included
        environment = tokenizer.decode(tokens[int(np.argmax(mask)):][mask[int(np.argmax(mask)):] == 0])
        assert "Paris is the capital of France." in environment and "<tool_response>" in environment


def write_inputs(tmp_path, kinds):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "contents": c}) + "\n" for i, c in enumerate(
        ['"Paris"\nParis is the capital of France.', '"Lyon"\nLyon is a city in France.', '"Rome"\nRome is in Italy.'])))
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": k, "question": f"{k}: what is the capital of France?",
                                             "golden_answers": ["Paris"]}) + "\n" for k in kinds))
    return corpus, questions


@pytest.mark.shared_data
def test_make_sft_data_stops_past_the_teacher_failure_rate(tmp_path, qwen_tokenizer_dir):
    def failing_teacher(body, attempt):
        if _QUESTION.findall(body["prompt"])[0].startswith("down"):
            return 500, b"teacher overloaded"
        return teacher(body, attempt)

    corpus, questions = write_inputs(tmp_path, ["good1", "down1", "down2", "down3", "good2"])
    out = tmp_path / "data.jsonl"
    with ScriptedChatServer(failing_teacher) as server:
        proc = run_cli("make_sft_data", "--config=configs/default.py", "--config.data.source=files",
                       f"--config.model.tokenizer_path={qwen_tokenizer_dir}", f"--config.search.retriever=bm25:{corpus}",
                       "--config.search.topk=1", "--config.model.max_len=2048", f"--qa_files={questions}",
                       f"--teacher_url={server.url}/v1", "--teacher_model=teacher-72b", "--teacher_max_attempts=1",
                       "--prompts_per_seed=0", "--samples_per_question=2", "--max_tool_calls=2",
                       "--questions_per_batch=2", "--max_teacher_failure_rate=0.5", f"--workdir={tmp_path / 'work'}",
                       f"--out={out}", check=False)
        asked = {_QUESTION.findall(body["prompt"])[0] for _, body, _ in server.requests}
    # Batch 1 (good1, down1): 2 of 4 samples failed, not more than half; batch 2 (down2, down3): 6 of 8.
    assert proc.returncode != 0
    assert ("make_sft_data stopped after 4 of 5 questions: the teacher failed on 6 of 8 samples (75% > max teacher "
            "failure rate 50%); last errors: ['HTTP 500: teacher overloaded'") in proc.stderr, proc.stderr[-3000:]
    assert asked == {"good1", "down1", "down2", "down3"}  # good2 was never rolled out
    stats = json.loads((tmp_path / "data.jsonl.stats.json").read_text())
    assert stats["questions"] == 4 and stats["samples"] == 8 and stats["generation_errors"] == 6
    assert stats["stopped"].startswith("the teacher failed on 6 of 8 samples")
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["good1"]  # kept so far


def sample(answer, *, calls=1, stop="answer", failures=0, response=None):
    record = QARecord("q", "capital of France?", ["Paris"], "t")
    text = response or (CALL + FMT.render_results([[{"contents": '"P"\nParis'}]]) +
                        FMT.render_turn([("VERIFICATION", f"so {answer}")], answer=answer))
    return TextTrajectory(record, 0, "", "", segments=[(text, True)], stop_reason=stop, tool_calls=calls,
                          search_failures=failures)


class CharTokenizer:  # characters as tokens, a plain chat layout
    @staticmethod
    def encode(text, add_special_tokens=False):
        return list(text)

    @staticmethod
    def apply_chat_template(messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def test_search_failures_past_their_rate_stop_with_the_data_kept_so_far():
    class Rollout:  # question "cut": every sample's search failed
        fmt = FMT

        tokenizer = CharTokenizer

        def run(self, items, n, seed, temperature):
            return [dataclasses.replace(sample("Paris", failures=int(record.id == "cut")), record=record)
                    for record, _ in items for _ in range(n)]

    records = [QARecord(i, f"{i}?", ["Paris"], "t") for i in ("ok", "cut", "never")]
    prompts = [SystemPrompt("seed01", "Plan first.")]
    with pytest.raises(TooManyFailures, match=r"the search failed on 2 of 4 samples \(50% > max search failure "
                                              r"rate 40%\)$") as stop:
        generate_sft_data(Rollout(), records, prompts, k=2, filters=FilterConfig(min_tool_calls=1), progress=False,
                          questions_per_batch=1, failure_limits=FailureLimits(teacher=0.0, search=0.4))
    assert [t.record.id for t, _ in stop.value.partial.kept] == ["ok"]
    assert stop.value.partial.stats["questions"] == 2 and stop.value.partial.stats["rejected"]["search_failed"] == 2
    # Within the limit the whole set is processed.
    result = generate_sft_data(Rollout(), records, prompts, k=2, filters=FilterConfig(min_tool_calls=1),
                               progress=False, failure_limits=FailureLimits(search=0.5))
    assert result.stats["questions"] == 3 and result.stats["samples_with_search_failures"] == 2
    with pytest.raises(ValueError, match=r"max search failure rate must be in \[0, 1\], got 1.5"):
        FailureLimits(search=1.5)


def test_seed_version_none_rolls_out_behind_the_formats_own_system_prompt():
    """A teacher SFT-trained behind the format's prompt (the world check) gets exactly that prompt: no seed
    text, nothing for a remote teacher to rewrite."""
    seen = []

    class Rollout:
        fmt = FMT
        tokenizer = CharTokenizer

        def run(self, items, n, seed, temperature):
            seen.extend(system for _, system in items)
            return [dataclasses.replace(sample("Paris"), record=record) for record, _ in items for _ in range(n)]

    class NoClient:
        def post_many(self, *args, **kwargs):
            raise AssertionError("an empty seed must not be sent for expansion")

    records = [QARecord("q", "q?", ["Paris"], "t")]
    prompts, stats = expand_prompts(NoClient(), seed_prompts("none"), 3)
    assert [p.text for p in prompts] == [""] and stats == {"seeds": 1}
    generate_sft_data(Rollout(), records, prompts, k=1, filters=FilterConfig(min_tool_calls=1), progress=False)
    v1 = seed_prompts()[:1]
    generate_sft_data(Rollout(), records, [SystemPrompt(s.id, s.text()) for s in v1], k=1,
                      filters=FilterConfig(min_tool_calls=1), progress=False)
    assert seen == [FMT.system_prompt(), f"{FMT.system_prompt()}\n\n{v1[0].text()}"]


def test_filters_majority_threshold_bounds_and_dedup():
    cfg = FilterConfig(f1_threshold=0.5, min_agreement=0.5, min_tool_calls=1, max_tool_calls=2, max_tokens=1000,
                       max_per_question=2)
    def tokens(t):
        return len(t.response)
    # Majority "Paris" (2 of 4); the "Paris France" answer has F1 0.67 but is not the majority answer.
    group = [sample("Paris"), sample("Paris France"), sample("Paris", calls=3), sample("Lyon")]
    kept, why = filter_question(group, FMT, cfg, tokens)
    assert kept == [group[0]] and why == {"majority": 1, "tool_calls": 1, "f1": 1}
    # No majority share >= 0.5: nothing kept even when right.
    group = [sample("Paris"), sample("Lyon"), sample("Rome"), sample("Nice")]
    assert filter_question(group, FMT, cfg, tokens)[1]["majority"] == 1
    # Identical responses are kept once; a second distinct one fills max_per_question; the third is dropped.
    group = [sample("Paris"), sample("Paris"), sample("paris"), sample("PARIS")]
    kept, why = filter_question(group, FMT, cfg, tokens)
    assert len(kept) == 2 and why == {"duplicate": 2}
    # Length, search failures and a truncated row.
    short = FilterConfig(max_tokens=10)
    assert filter_question([sample("Paris")], FMT, short, tokens)[1] == {"length": 1}
    assert filter_question([sample("Paris", failures=1)], FMT, cfg, tokens)[1] == {"search_failed": 1}
    assert filter_question([sample("Paris", stop="length")], FMT, cfg, tokens)[1] == {"format": 1}


def test_ten_versioned_seed_prompts_with_two_atomic_examples_each():
    seeds = seed_prompts()
    assert len(seeds) == 10 and len({s.id for s in seeds}) == 10 and list(SEED_PROMPTS) == ["atomic_seeds_v1", "none"]
    for seed in seeds:
        assert all(len(re.findall(r"<([A-Z_]+)>.*?</\1>", e, re.DOTALL)) >= 2 for e in seed.examples)
        report = FMT.validate(FMT.render_turn([("PLAN", "x")], answer="y"))
        assert report.ok
        # every example is a valid think block of the format
        turn = seed.examples[0] + "\n</think>\n<answer>\nx\n</answer>"
        assert FMT.validate(turn).ok, (seed.id, FMT.validate(turn))
    with pytest.raises(ValueError, match="seed-prompt version"):
        seed_prompts("nope")
