"""The text-level rollout loop on a scripted generation backend: stop reasons, tool calls answered by
one batched retrieval, invalid calls rendered as failures, budgets, backend errors recorded per row."""
import json

from atomsearch_jax.agent.backends import Completion, GenerationBackend
from atomsearch_jax.agent.rollout import RolloutConfig
from atomsearch_jax.agent.text_rollout import TextRollout
from atomsearch_jax.data import QARecord
from atomsearch_jax.formats import get_format
from atomsearch_jax.search import BM25Retriever
from test_agent import CORPUS, bigram_engine, script, tokenizer  # noqa: F401 -- tokenizer: the world's (fixture)

FMT = get_format("atom_searcher")
CALL = FMT.render_turn([("PLAN", "look")], queries=["capital France"])
ANSWER = FMT.render_turn([("VERIFICATION", "ok")], answer="Paris")


class WordTokenizer:
    def encode(self, text, add_special_tokens=False):
        return text.split()

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class ScriptedBackend(GenerationBackend):
    def __init__(self):
        self.calls = []

    def generate(self, prompts, *, stop, max_tokens, temperature, seed=0):
        self.calls.append((len(prompts), max_tokens))
        out = []
        for p in prompts:
            question = p.split("<user>")[1].split("<assistant>")[0]
            turn = p.count("<|im_start|>assistant")  # one per environment insertion
            if question == "down":
                out.append(Completion("", "error", "HTTP 500"))
            elif question == "loop" or (question in ("good", "batch") and turn == 0):
                out.append(Completion(CALL, "stop"))
            elif question == "bad call":
                out.append(Completion('<PLAN>x</PLAN>\n</think>\n<tool_call>\n{"name": 1}\n</tool_call>', "stop")
                           if turn == 0 else Completion(ANSWER, "stop"))
            elif question == "long":
                out.append(Completion("<PLAN>" + "word " * 50, "length"))
            else:
                out.append(Completion(ANSWER, "stop"))
        return out


def test_text_rollout_stop_reasons_tools_and_failures():
    retriever = BM25Retriever.from_documents([{"id": "1", "contents": '"Paris"\nParis is the capital of France.'}])
    backend = ScriptedBackend()
    rollout = TextRollout(backend, WordTokenizer(), FMT, retriever,
                          RolloutConfig(max_response_tokens=400, max_tool_calls=2, topk=1))
    questions = ["good", "down", "loop", "bad call", "long", "batch"]
    rows = rollout.run([(QARecord(q, q, ["Paris"], "t"), "SYSTEM") for q in questions], n=1)
    by = {r.record.question: r for r in rows}
    assert {q: r.stop_reason for q, r in by.items()} == {"good": "answer", "down": "error", "loop": "tool_limit",
                                                        "bad call": "answer", "long": "length", "batch": "answer"}
    assert by["down"].error == "HTTP 500" and by["down"].segments == []
    good = by["good"]
    assert [t for _, t in good.segments] == [True, False, True] and good.tool_calls == 1
    assert json.loads(good.tool_contents[0]) == [[{"title": "Paris", "text": "Paris is the capital of France."}]]
    assert good.response == CALL + FMT.render_results([[{"contents": '"Paris"\nParis is the capital of France.'}]]) + ANSWER
    assert by["loop"].tool_calls == 2 and len(by["loop"].segments) == 5
    assert by["bad call"].invalid_tool_calls == 1 and "invalid tool call" in by["bad call"].tool_contents[0]
    assert backend.calls[0][0] == 6 and backend.calls[1][0] == 4  # live rows only, batched per turn
    assert good.prompt.startswith("<system>SYSTEM<user>good")


def test_engine_backend_rollout_writes_what_the_token_level_rollout_writes(tokenizer):
    """Our JAX engine behind the text-level interface (the teacher pipeline's backend) gives, for the
    scripted policy of test_agent, exactly the trajectory the token-level `RolloutRunner` gives there
    (test_search_then_answer_one_cache_masked_results): search, results, answer."""
    from atomsearch_jax.agent.backends import EngineBackend

    fmt = get_format("research")
    retriever = BM25Retriever.from_documents(CORPUS)
    record = QARecord("q", "Where is Velmora?", ["Ostrand"], "t")
    backend = EngineBackend(bigram_engine(tokenizer, script(tokenizer, fmt)), tokenizer, segment_steps=8)
    text = TextRollout(backend, tokenizer, fmt, retriever, RolloutConfig(max_response_tokens=256, topk=2,
                                                                        max_chars_per_doc=None))
    (t,) = text.run([(record, fmt.system_prompt())])
    assert t.prompt == fmt.prompt_text(record.question, tokenizer)
    rendered = fmt.render_results([retriever.search(["capital"], 2)[0].docs], max_chars_per_doc=None)
    assert t.segments == [("<search> capital</search>", True), (rendered, False), ("<answer> country</answer>", True)]
    assert (t.tool_calls, t.stop_reason, t.search_failures) == (1, "answer", 0)
    assert t.generated_tokens == len(tokenizer.encode("<search> capital</search><answer> country</answer>",
                                                      add_special_tokens=False))


def test_engine_backend_ends_a_prompt_that_fills_the_cache_and_generates_the_others(tokenizer):
    """make_sft_data re-sends a whole conversation every turn; one that outgrew the engine's max_len ends
    with finish "length" (dropped by the length filter) instead of failing the batch."""
    from atomsearch_jax.agent.backends import EngineBackend

    fmt = get_format("research")
    prompt = fmt.prompt_text("Where is Velmora?", tokenizer)
    length = len(tokenizer.encode(prompt, add_special_tokens=False))
    backend = EngineBackend(bigram_engine(tokenizer, script(tokenizer, fmt), max_len=length + 16), tokenizer,
                            segment_steps=8)
    too_long = prompt + " capital" * 16
    kwargs = dict(stop=fmt.stop_strings, max_tokens=12, temperature=0.0)
    alone = backend.generate([prompt], **kwargs)
    assert alone == [Completion("<search> capital</search>", "stop")]
    assert backend.generate([too_long, prompt, too_long], **kwargs) == [Completion("", "length"), *alone,
                                                                         Completion("", "length")]
    assert backend.generate([too_long], **kwargs) == [Completion("", "length")]
