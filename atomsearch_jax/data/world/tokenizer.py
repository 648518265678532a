"""A small byte-level BPE tokenizer trained on a world's text, saved as a normal HF tokenizer directory.

Same design as Qwen2.5's tokenizer, scaled down: NFC normalization, Qwen's pre-tokenization regex, byte-
level BPE (any text round-trips), the chat special tokens <|endoftext|>, <|im_start|>, <|im_end|>, and
Qwen2.5's chat template, so `AutoTokenizer.from_pretrained(dir).apply_chat_template(...)` works like the
real one. The agent formats' structural tags (<think>, </search>, <tool_call>, ...) are single tokens
(plain added tokens, not special: they survive decoding). Training text: the corpus, the questions, the
formats' system prompts and teacher trajectories in every format with their
prompts as the chat template writes them.
"""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Iterator, Sequence

from atomsearch_jax.data.world.teacher import render_trajectory, teacher_turns
from atomsearch_jax.data.world.world import World

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
STRUCTURAL_TAGS = ("think", "search", "result", "information", "answer", "tool_call", "tool_response")
DEFAULT_VOCAB_SIZE = 2048

# Qwen2's pre-tokenization pattern (contractions, letter runs with one leading non-letter, single
# digits, punctuation runs, newlines, spaces).
QWEN_PRETOKENIZE_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                            r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen2.5-Instruct's chat template (tool role rendered as <tool_response> inside a user turn).
QWEN_CHAT_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are "
    "provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)


class _WordOverlapRetriever:
    """Ranks documents by how many query words they contain (title matches first): enough to render
    realistic teacher trajectories for tokenizer training without a search index."""

    def __init__(self, world: World):
        self._docs = [(doc, doc["contents"].split("\n", 1)[0].strip('"'), set(doc["contents"].lower().split()))
                      for doc in world.corpus]

    def search(self, queries: Sequence[str], topk: int) -> list[SimpleNamespace]:
        results = []
        for query in queries:
            words = set(query.lower().split())
            ranked = sorted(self._docs, key=lambda d: (d[1] not in query, -len(words & d[2])))
            results.append(SimpleNamespace(docs=[doc for doc, _, _ in ranked[:topk]], error=None))
        return results


def _chat_prefix(fmt, question: str) -> str:
    """The prompt as the chat template renders it (written out: the tokenizer does not exist yet)."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in fmt.messages(question))
    return f"{turns}<|im_start|>assistant\n{fmt.generation_prefix}"


def training_texts(world: World, format_names: Sequence[str] | None = None) -> Iterator[str]:
    """Every text the tokenizer learns from (see the module docstring)."""
    from atomsearch_jax.formats import FORMATS, get_format

    for doc in world.corpus:
        yield doc["contents"]
    for record in world.records():
        yield f"{record.question}\n{record.golden_answers[0]}"
    retriever = _WordOverlapRetriever(world)
    for name in format_names or sorted(FORMATS):
        fmt = get_format(name)
        for record in world.splits["train"]:
            trajectory = render_trajectory(teacher_turns(record, retriever, topk=3), fmt)
            yield _chat_prefix(fmt, record.question) + trajectory + "<|im_end|>"


def train_tokenizer(world: World, out_dir: str | os.PathLike, *, vocab_size: int = DEFAULT_VOCAB_SIZE,
                    format_names: Sequence[str] | None = None) -> str:
    """Trains the BPE on `world` and saves a tokenizer directory loadable by `AutoTokenizer`; returns it."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    # Added before training so the trainer splits them out of the text as encoding will.
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tags = [f"<{t}>" for t in STRUCTURAL_TAGS] + [f"</{t}>" for t in STRUCTURAL_TAGS]
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in tags])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(training_texts(world, format_names), trainer=trainer)

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"], chat_template=QWEN_CHAT_TEMPLATE,
        model_max_length=32768, clean_up_tokenization_spaces=False)
    out_dir = os.fspath(out_dir)
    wrapped.save_pretrained(out_dir)
    return out_dir
