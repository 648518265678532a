"""Rollouts with the code interpreter (hermes tool calls), driven by a scripted bigram policy on the real
engine: the sandbox really runs the policy's code, its output comes back as a tool turn with loss mask 0,
and a format offering both tools dispatches each call to its own backend."""
import numpy as np
import pytest
from test_agent import CORPUS, bigram_engine, single_token

from atomsearch_jax.agent import RolloutConfig, RolloutRunner, rollout_metrics, training_batch
from atomsearch_jax.data import QARecord
from atomsearch_jax.formats import HermesFormat
from atomsearch_jax.search import BM25Retriever
from atomsearch_jax.tools import CodeInterpreter, Limits, probe

CODE_HEAD = '{"name": "code_interpreter", "arguments": {"code": "'
SEARCH_HEAD = '{"name": "web_search", "arguments": {"query": ["'
CODE = "print(6 * 7)"
TAIL = '"}}'
QUESTION = QARecord(id="q", question="What is 6 times 7?", golden_answers=["42"], source="test")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from atomsearch_jax.data.world import WorldConfig, build_world, train_tokenizer
    tok = AutoTokenizer.from_pretrained(train_tokenizer(build_world(WorldConfig(seed=0)), tmp_path_factory.mktemp("tok")))
    # One token per piece of the scripted calls, so a bigram policy can write them.
    tok.add_tokens([CODE_HEAD, SEARCH_HEAD, CODE, "Velmora", '"]}}', TAIL])
    return tok


def call_script(tokenizer, fmt, pieces):
    """Successors: end of the prompt (and of every tool turn) -> <tool_call> pieces... </tool_call>."""
    prompt = tokenizer.encode(fmt.prompt_text(QUESTION.question, tokenizer), add_special_tokens=False)
    chain = [prompt[-1], single_token(tokenizer, "<tool_call>")] + [single_token(tokenizer, p) for p in pieces]
    chain.append(single_token(tokenizer, "</tool_call>"))
    return dict(zip(chain[:-1], chain[1:]))


class CountingInterpreter(CodeInterpreter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.submitted = []

    def submit(self, code):
        self.submitted.append(code)
        return super().submit(code)


@pytest.fixture(scope="module")
def interpreter():
    with CountingInterpreter(Limits(timeout_s=20.0, cpu_s=5), max_workers=4,
                             allow_unsandboxed=not probe().sandboxed) as ci:
        yield ci


def test_code_calls_run_in_the_sandbox_and_results_are_masked(tokenizer, interpreter):
    fmt = HermesFormat()
    engine = bigram_engine(tokenizer, call_script(tokenizer, fmt, [CODE_HEAD, CODE, TAIL]), max_len=384)
    runner = RolloutRunner(engine, tokenizer, fmt, None, RolloutConfig(max_response_tokens=300, max_tool_calls=2),
                           code_interpreter=interpreter)
    interpreter.submitted.clear()
    trajs = runner.run([QUESTION], n=4, seed=0)

    call = f"<tool_call>{CODE_HEAD}{CODE}{TAIL}</tool_call>"
    result = fmt.render_code_result("42\n", "", None)
    assert "42" in result
    assert interpreter.submitted == [CODE] * 8, "two executions per row, four rows"
    for t in trajs:
        # A third call exceeds max_tool_calls=2 and ends the row.
        assert (t.tool_calls, t.code_calls, t.code_errors, t.stop_reason) == (2, 2, 0, "tool_limit")
        assert t.response == call + result + call + result + call
        response_tokens, response_mask = t.tokens[t.prompt_length:], t.loss_mask[t.prompt_length:]
        assert tokenizer.decode(response_tokens[response_mask == 1].tolist()) == call * 3
        assert tokenizer.decode(response_tokens[response_mask == 0].tolist()) == result * 2
        assert t.result_tokens == int(np.sum(response_mask == 0))
        assert np.all(t.logprobs[t.loss_mask == 0] == 0)
    batch = training_batch(trajs, np.ones(4))
    assert batch["loss_mask"].sum() == sum(t.generated_tokens for t in trajs)
    assert rollout_metrics(trajs)["rollout/code_calls_mean"] == 2.0


def test_one_agent_with_search_and_code_dispatches_each_call(tokenizer, interpreter):
    fmt = HermesFormat("hermes_code_search_v1")
    retriever_calls = []
    bm25 = BM25Retriever.from_documents(CORPUS)

    class Recording:
        def search(self, queries, topk):
            retriever_calls.append(list(queries))
            return bm25.search(queries, topk)

    config = RolloutConfig(max_response_tokens=300, max_tool_calls=1, topk=1, max_chars_per_doc=30)
    search_engine = bigram_engine(tokenizer, call_script(tokenizer, fmt, [SEARCH_HEAD, "Velmora", '"]}}']), max_len=384)
    interpreter.submitted.clear()
    (t,) = RolloutRunner(search_engine, tokenizer, fmt, Recording(), config, code_interpreter=interpreter).run([QUESTION])
    assert retriever_calls == [["Velmora"]] and interpreter.submitted == []
    assert fmt.render_results([bm25.search(["Velmora"], 1)[0].docs], max_chars_per_doc=30) in t.response
    assert (t.tool_calls, t.code_calls) == (1, 0)

    code_engine = bigram_engine(tokenizer, call_script(tokenizer, fmt, [CODE_HEAD, CODE, TAIL]), max_len=384)
    (t,) = RolloutRunner(code_engine, tokenizer, fmt, Recording(), config, code_interpreter=interpreter).run([QUESTION])
    assert retriever_calls == [["Velmora"]] and interpreter.submitted == [CODE]
    assert fmt.render_code_result("42\n", "", None) in t.response and t.code_calls == 1


def test_code_call_without_interpreter_is_a_rendered_failure(tokenizer):
    fmt = HermesFormat()
    engine = bigram_engine(tokenizer, call_script(tokenizer, fmt, [CODE_HEAD, CODE, TAIL]), max_len=384)
    (t,) = RolloutRunner(engine, tokenizer, fmt, None, RolloutConfig(max_response_tokens=300, max_tool_calls=1)).run([QUESTION])
    assert fmt.render_failure("the code interpreter is not available in this run") in t.response
