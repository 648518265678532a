"""The world's BPE tokenizer: a normal HF tokenizer directory with Qwen chat roles and template."""
import json
import statistics

import pytest
from transformers import AutoTokenizer

from atomsearch_jax.data.world import build_world
from atomsearch_jax.data.world.measure import token_lengths
from atomsearch_jax.data.world.teacher import teacher_trajectory
from atomsearch_jax.data.world.tokenizer import SPECIAL_TOKENS, STRUCTURAL_TAGS, train_tokenizer
from atomsearch_jax.formats import FORMATS, SEARCH_TOOL, get_format
from atomsearch_jax.search import BM25Retriever

# The world teacher writes search trajectories: every format that offers search by default.
SEARCH_FORMATS = sorted(n for n in FORMATS if SEARCH_TOOL in get_format(n).tools)


@pytest.fixture(scope="module")
def world():
    return build_world()


@pytest.fixture(scope="module")
def tokenizer_dir(world, tmp_path_factory):
    return train_tokenizer(world, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_loads_with_autotokenizer_and_chat_roles(tokenizer):
    assert 1000 <= len(tokenizer) <= 4096
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert ids == [0, 1, 2]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert set(SPECIAL_TOKENS) <= set(tokenizer.all_special_tokens)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who directed Iron Door?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho directed Iron Door?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    encoded = tokenizer(text)["input_ids"]
    assert encoded.count(1) == 3 and encoded.count(2) == 2  # role tokens are single ids
    tool_turn = messages + [{"role": "tool", "content": "[]"}]
    assert "<|im_start|>user\n<tool_response>\n[]\n</tool_response><|im_end|>\n" in tokenizer.apply_chat_template(
        tool_turn, tokenize=False)


def test_round_trips_and_keeps_tags_whole(world, tokenizer):
    retriever = BM25Retriever.from_documents(world.corpus)
    for name in SEARCH_FORMATS:
        fmt = get_format(name)
        record = world.splits["validation"][0]
        text = fmt.prompt_text(record.question, tokenizer) + teacher_trajectory(record, fmt, retriever)
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    for tag in [f"<{t}>" for t in STRUCTURAL_TAGS] + [f"</{t}>" for t in STRUCTURAL_TAGS]:
        assert len(tokenizer(tag)["input_ids"]) == 1, tag
        assert tokenizer.decode(tokenizer(f"x{tag}y")["input_ids"], skip_special_tokens=True) == f"x{tag}y"
    # text no world ever saw still round-trips (byte-level BPE)
    odd = "Zürich — 東京 😀 \t tabs\r\n"
    assert tokenizer.decode(tokenizer(odd)["input_ids"]) == odd


def test_training_is_deterministic(world, tokenizer_dir, tmp_path):
    again = train_tokenizer(world, tmp_path)
    with open(f"{tokenizer_dir}/tokenizer.json") as a, open(f"{again}/tokenizer.json") as b:
        assert json.load(a) == json.load(b)


def test_trajectories_are_a_few_hundred_tokens(world, tokenizer):
    retriever = BM25Retriever.from_documents(world.corpus)
    lengths = token_lengths(world, tokenizer, retriever, SEARCH_FORMATS, split="validation")
    for name, summary in lengths.items():
        assert 150 <= summary["trajectory"]["mean"] <= 600, (name, summary)
        assert summary["total"]["max"] <= 1024, (name, summary)
    assert statistics.fmean(s["trajectory"]["mean"] for s in lengths.values()) < 500
