"""Atom-Searcher format (DeepResearcher lineage, atomic thoughts).

Generation starts after the prefix `<think>`. A turn is `<think>` holding atomic thoughts -- sub-tags the
model names itself (`<PLAN>…</PLAN>`, `<RISK_ANALYSIS>…</RISK_ANALYSIS>`, …) -- then `</think>` and either
`<tool_call>{"name": "web_search", "arguments": {"query": [..]}}</tool_call>` or `<answer>…</answer>`.
Results return through the Qwen chat template's tool role:
`<|im_end|>\\n<|im_start|>user\\n<tool_response>\\n{json}\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n<think>`.
The insertion ends with the generation prefix, so every turn the model writes (the first included) starts
right after `<think>`; `render_turn` writes turns in that form and trajectories are the plain
concatenation `turn, results, turn, results, …, turn`.

Atomic-thought grammar (checked by `validate` when `strict_atomic`): each `<think>` block holds one or more
top-level sub-tags, balanced and properly nested (nested sub-tags belong to their parent's text), with
only whitespace between them; structural tags (think, answer, tool_call, …) and chat tokens may not appear
inside. Sub-tag names match `[A-Za-z_][A-Za-z0-9_-]*`.
"""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

from atomsearch_jax.formats.base import (
    AgentFormat,
    AtomicThought,
    FormatReport,
    ToolCall,
    call_arguments,
    check_tool_turn,
    find_blocks,
    neutralize,
    split_title_text,
    strip_trailing_specials,
    tool_call_object,
    tool_response_turn,
    truncate_chars,
)

TOOL_NAME = "web_search"
STRUCTURAL_TAGS = frozenset({"think", "answer", "tool_call", "tool_response", "search", "result", "information"})
_TAG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
_TAG = re.compile(r"<(/?)([A-Za-z_][A-Za-z0-9_\-]*)>|<\|[A-Za-z0-9_]+\|>")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

_TOOL_SCHEMA = {
    "name": TOOL_NAME,
    "description": "Search the web. Returns the top results (title and text) for each query.",
    "parameters": {
        "type": "object",
        "properties": {
            "query": {"type": "array", "items": {"type": "string"}, "description": "One or more search queries."}
        },
        "required": ["query"],
    },
}

PROMPTS: dict[str, str] = {
    "atom_searcher_v1": (
        "You are a deep research assistant. The question you are given may need several searches and careful "
        "reasoning to answer.\n\n"
        "Think before every action. Write your thinking inside <think> </think> as a sequence of atomic "
        "thoughts: each atomic thought is the smallest self-contained reasoning step, wrapped in a tag you name "
        "after its function, for example <PLAN> … </PLAN>, <OBSERVATION> … </OBSERVATION>, "
        "<HYPOTHESIS_TESTING> … </HYPOTHESIS_TESTING>, <RISK_ANALYSIS> … </RISK_ANALYSIS>, "
        "<REFLECTION> … </REFLECTION>, <VERIFICATION> … </VERIFICATION>, <ACTION> … </ACTION>. Choose the kinds "
        "of atomic thoughts that fit the situation; the names above are only examples.\n\n"
        "You have one tool:\n"
        f"<tools>\n{json.dumps(_TOOL_SCHEMA)}\n</tools>\n"
        "Call it as <tool_call>\n"
        f'{{"name": "{TOOL_NAME}", "arguments": {{"query": ["first query", "second query"]}}}}\n'
        "</tool_call>\n"
        "Its results come back inside <tool_response> </tool_response>.\n\n"
        "Each of your turns has exactly one of these two forms:\n"
        "<think>\n<PLAN>\n…\n</PLAN>\n…\n</think>\n<tool_call>\n…\n</tool_call>\n"
        "or\n"
        "<think>\n<VERIFICATION>\n…\n</VERIFICATION>\n…\n</think>\n<answer>\n…\n</answer>\n\n"
        "Put only the final answer (a few words, a number or a name) inside <answer> </answer>, without "
        "explanation. If the question is a yes-or-no question, answer only yes or no."
    ),
    # For small models trained from scratch (the embedded default): the same protocol in a few words. Such a
    # model learns the protocol from SFT, not from instructions, and every row pays for the prompt's tokens.
    "atom_searcher_brief_v1": (
        "Answer the question. Think in atomic thoughts inside <think> </think>, search with "
        f'<tool_call>{{"name": "{TOOL_NAME}", "arguments": {{"query": [...]}}}}</tool_call>, '
        "and give only the final answer inside <answer> </answer>."
    ),
}


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def scan_think(body: str, turn: int) -> tuple[list[AtomicThought], list[str]]:
    """Top-level atomic thoughts of one `<think>` body and the grammar violations found in it.

    Never raises. Properly closed top-level sub-tags become thoughts even when other parts are broken.
    """
    thoughts: list[AtomicThought] = []
    errors: list[str] = []
    stack: list[tuple[str, int]] = []  # (tag name, end offset of its opening tag)
    pos = 0
    for m in _TAG.finditer(body):
        if not stack and body[pos : m.start()].strip():
            errors.append(f"text outside atomic thoughts in <think> (turn {turn})")
        pos = m.end()
        name = m.group(2)
        if name is None:
            errors.append(f"chat token {m.group(0)} inside <think> (turn {turn})")
            continue
        if name.lower() in STRUCTURAL_TAGS:
            errors.append(f"<{m.group(1)}{name}> inside <think> (turn {turn})")
            continue
        if not m.group(1):
            stack.append((name, m.end()))
        elif not stack:
            errors.append(f"</{name}> without opening tag in <think> (turn {turn})")
        else:
            if stack[-1][0] != name:
                errors.append(f"misnested </{name}> (open <{stack[-1][0]}>) in <think> (turn {turn})")
            names = [n for n, _ in stack]
            if name not in names:
                continue
            # Close the innermost opener of this name (and whatever was left open inside it).
            depth = len(names) - 1 - names[::-1].index(name)
            content_start = stack[depth][1]
            del stack[depth:]
            if not stack:
                thoughts.append(AtomicThought(tag=name, text=body[content_start : m.start()].strip(), turn=turn))
    if stack:
        errors.append(f"unclosed <{stack[-1][0]}> in <think> (turn {turn})")
    elif body[pos:].strip():
        errors.append(f"text outside atomic thoughts in <think> (turn {turn})")
    if not thoughts:
        errors.append(f"<think> block without atomic thoughts (turn {turn})")
    return thoughts, errors


def search_payload(results: Sequence[Sequence[dict]], max_chars_per_doc: int | None) -> str:
    """Search results as the JSON a `<tool_response>` carries: per query a list of {title, text}, neutralized."""
    payload = []
    for docs in results:
        entries = []
        for doc in docs:
            title, text = split_title_text(doc)
            entries.append({"title": neutralize(title), "text": neutralize(truncate_chars(text, max_chars_per_doc))})
        payload.append(entries)
    return _dump(payload)


def search_call_queries(call: dict, max_queries: int) -> tuple[list[str] | None, str | None]:
    """Queries of a decoded search call (`{"name": "web_search", "arguments": {"query": [..]}}`), at most
    `max_queries` of them.

    Tolerates a single string query and `arguments` serialized as a JSON string; rejects anything else
    with a reason.
    """
    if call.get("name") != TOOL_NAME:
        return None, f"unknown tool {str(call.get('name'))[:40]!r} (expected {TOOL_NAME!r})"
    args, reason = call_arguments(call)
    if reason:
        return None, reason
    if not isinstance(args, dict) or "query" not in args:
        return None, "tool call arguments have no 'query'"
    query = args["query"]
    queries = [query] if isinstance(query, str) else query
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        return None, "tool call 'query' must be a string or a list of strings"
    queries = [q.strip() for q in queries if q.strip()]
    if not queries:
        return None, "tool call has no non-empty query"
    if len(queries) > max_queries:
        return None, f"too many queries in one call ({len(queries)} > {max_queries})"
    return queries, None


class AtomSearcherFormat(AgentFormat):
    name = "atom_searcher"
    generation_prefix = "<think>"
    stop_strings = ("</tool_call>", "</answer>")

    prompts = PROMPTS
    default_prompt_version = "atom_searcher_v1"

    def __init__(self, prompt_version: str | None = None, *, strict_atomic: bool = True, max_tool_calls: int = 10,
                 max_queries_per_call: int = 8):
        super().__init__(prompt_version)
        self.strict_atomic = strict_atomic
        self.max_tool_calls = max_tool_calls
        self.max_queries_per_call = max_queries_per_call

    # -- tool calls -----------------------------------------------------------------------------------
    def parse_tool_call_with_reason(self, segment_text: str) -> tuple[ToolCall | None, str | None]:
        call, raw, reason = tool_call_object(segment_text)
        if call is None:
            return None, reason
        queries, reason = search_call_queries(call, self.max_queries_per_call)
        if queries is None:
            return None, reason
        return ToolCall(queries=queries, raw=raw), None

    def render_results(self, results: Sequence[Sequence[dict]], *, max_chars_per_doc: int | None = None) -> str:
        return tool_response_turn(search_payload(results, max_chars_per_doc), self.generation_prefix)

    def render_failure(self, error: str) -> str:
        return tool_response_turn(_dump({"error": neutralize(error.strip())}), self.generation_prefix)

    def render_turn(self, thoughts, *, queries=None, answer=None) -> str:
        self._check_render_turn_args(queries, answer)
        if not thoughts:
            raise ValueError("render_turn needs at least one atomic thought")
        parts = [""]  # the turn starts right after the generation prefix "<think>"
        for tag, text in thoughts:
            if not _TAG_NAME.match(tag) or tag.lower() in STRUCTURAL_TAGS:
                raise ValueError(f"invalid atomic thought tag {tag!r}")
            parts.append(f"<{tag}>\n{neutralize(text.strip())}\n</{tag}>")
        parts.append("</think>")
        if queries is not None:
            call = {"name": TOOL_NAME, "arguments": {"query": [neutralize(q.strip()) for q in queries]}}
            parts.append(f"<tool_call>\n{_dump(call)}\n</tool_call>")
        else:
            parts.append(f"<answer>\n{neutralize(answer.strip())}\n</answer>")
        return "\n".join(parts)

    # -- reading a finished response ------------------------------------------------------------------
    def extract_answer(self, response: str) -> str | None:
        matches = _ANSWER.findall(response)
        if not matches or not matches[-1].strip():
            return None
        return matches[-1].strip()

    def atomic_thoughts(self, response: str) -> list[AtomicThought]:
        thoughts = []
        for turn, body in enumerate(find_blocks(self.generation_prefix + response, "<think>", "</think>")):
            thoughts.extend(scan_think(body, turn)[0])
        return thoughts

    def validate(self, response: str) -> FormatReport:
        text = strip_trailing_specials(self.generation_prefix + response)
        errors: list[str] = []
        pos, turn, n_calls = 0, 0, 0
        while True:
            pos = _skip_space(text, pos)
            if not text.startswith("<think>", pos):
                errors.append(f"expected <think> at turn {turn}")
                break
            end = text.find("</think>", pos)
            if end < 0:
                errors.append(f"unclosed <think> (turn {turn})")
                break
            if self.strict_atomic:
                errors.extend(scan_think(text[pos + len("<think>") : end], turn)[1])
            pos = _skip_space(text, end + len("</think>"))
            if text.startswith("<tool_call>", pos):
                check = check_tool_turn(self, text, pos, turn)
                errors.extend(check.errors)
                n_calls += check.closed
                if check.end is None:
                    break
                pos, turn = check.end, turn + 1
            elif text.startswith("<answer>", pos):
                close = text.find("</answer>", pos)
                if close < 0:
                    errors.append("unclosed <answer>")
                elif text[close + len("</answer>") :].strip():
                    errors.append("text after </answer>")
                elif not text[pos + len("<answer>") : close].strip():
                    errors.append("empty answer")
                break
            else:
                errors.append("no answer" if pos == len(text)
                              else f"expected <tool_call> or <answer> after </think> (turn {turn})")
                break
        if n_calls > self.max_tool_calls:
            errors.append(f"too many tool calls ({n_calls} > {self.max_tool_calls})")
        return FormatReport.from_errors(errors)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos
