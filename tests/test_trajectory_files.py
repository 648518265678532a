"""Trajectory files (chat messages with tool results) -> SFT rows: the same tokens and loss mask as the
built-in teacher path in every format, veRL-style files without rendered text, and clear errors."""
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from atomsearch_jax.data.sft_examples import teacher_sft_example, turn_segments
from atomsearch_jax.data.trajectory_files import (TrajectoryFileError, read_trajectory_file, trajectory_example,
                                                  trajectory_messages)
from atomsearch_jax.data.world import build_world, teacher_turns
from atomsearch_jax.formats import get_format
from atomsearch_jax.search import BM25Retriever
from atomsearch_jax.search.documents import make_contents

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def world():
    return build_world()


@pytest.fixture(scope="module")
def tokenizer(qwen_tokenizer_dir):
    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("format_name", ["atom_searcher", "research", "search_r1", "hermes"])
def test_file_rows_equal_the_builtin_teacher_rows(tmp_path, world, tokenizer, format_name):
    fmt = get_format(format_name)
    retriever = BM25Retriever.from_documents(world.corpus)
    records = world.splits["train"][:4]
    rows, expected = [], []
    for record in records:
        turns = teacher_turns(record, retriever, topk=2)
        segments = turn_segments(turns, fmt, max_chars_per_doc=200)
        tools = [json.dumps(t.results) for t in turns if t.queries is not None]
        rows.append({"messages": trajectory_messages(record.question, "a teacher's own system prompt", segments,
                                                     tools), "golden_answers": record.golden_answers})
        expected.append(teacher_sft_example(record, fmt, retriever, tokenizer, topk=2, max_chars_per_doc=200))
    read = read_trajectory_file(write_jsonl(tmp_path / "t.jsonl", rows), fmt)
    assert [r.metadata["golden_answers"] for r in read] == [r.golden_answers for r in records]
    for record, (tokens, mask) in zip(read, expected):
        got_tokens, got_mask = trajectory_example(record, fmt, tokenizer)
        np.testing.assert_array_equal(got_tokens, tokens)
        np.testing.assert_array_equal(got_mask, mask)
        assert 0 < mask.sum() < len(mask)
    # Behind the file's own system prompt instead, only the prompt differs.
    tokens, mask = trajectory_example(read[0], fmt, tokenizer, system_prompt="file")
    assert "a teacher's own system prompt" in tokenizer.decode(tokens[mask == 0])
    assert mask.sum() == expected[0][1].sum()


def test_verl_style_messages_render_tool_results_and_mask_them(tmp_path, tokenizer):
    fmt = get_format("atom_searcher")
    docs = [[{"title": "Paris", "text": "Paris is the capital of France."}]]
    call = fmt.render_turn([("PLAN", "search the capital")], queries=["capital of France"])
    answer = fmt.render_turn([("VERIFICATION", "the result says Paris")], answer="Paris")
    row = {"messages": [{"role": "user", "content": "What is the capital of France?"},
                        {"role": "assistant", "content": "<think>" + call,
                         "tool_calls": [{"type": "function", "function": {"name": "web_search"}}]},
                        {"role": "tool", "content": json.dumps(docs)},
                        {"role": "assistant", "content": "<think>" + answer}]}
    (record,) = read_trajectory_file(write_jsonl(tmp_path / "v.jsonl", [row]), fmt)
    assert record.system is None and record.segments[0] == (call, True)
    as_retrieved = [[{"contents": make_contents("Paris", "Paris is the capital of France.")}]]
    assert record.segments[1] == (fmt.render_results(as_retrieved), False)
    tokens, mask = trajectory_example(record, fmt, tokenizer)
    trained = tokenizer.decode(tokens[mask == 1])
    assert "Paris is the capital" not in trained and "<PLAN>" in trained and "<answer>" in trained
    prompt = fmt.prompt_text(record.question, tokenizer)
    assert tokenizer.decode(tokens[: int(np.argmax(mask))]).startswith(prompt)


@pytest.mark.parametrize("row,message", [
    ({"question": "q"}, "'messages' list"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "unexpected role 'assistant'"),
    ({"messages": [{"role": "user", "content": "q"}]}, "at least one assistant turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "tool", "content": "r"}]}, "must end with an assistant turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "let me search",
                                                      "tool_calls": [{"id": "1"}]}]}, "structured tool_calls"),
])
def test_malformed_records_name_file_and_line(tmp_path, row, message):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<answer>a</answer>"}]}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(TrajectoryFileError, match=f"bad.jsonl:2: .*{message}"):
        read_trajectory_file(path, get_format("atom_searcher"))


def test_sft_steps_without_any_sft_data_is_a_clear_error():
    import types

    import configs.atom_searcher_qwen7b as paper
    from atomsearch_jax.train import run_sft

    config = paper.get_config()  # files source, SFT on: needs a trajectory file
    assert config.sft.steps > 0 and config.sft.trajectory_files == ""
    with pytest.raises(ValueError, match="sft.trajectory_files"):
        run_sft(config, types.SimpleNamespace(world=None), None, None, None, None)
