"""ReSearch format (Agent-RL/ReSearch, instruct-model template).

Model text: `<think> … </think>`, `<search> query </search>`; the host inserts
` <result>\\n{docs}\\n</result>` (docs: contents joined by blank lines); the final answer is
`<answer> The final answer is \\[ \\boxed{X} \\] </answer>`. Generation stops at `</search>` / `</answer>`.
Validation follows ReSearch's reward code: balanced `<think>` tags (at least one), exactly one answer,
each `<search>` followed in order by `</search>`, `<result>`, `</result>`, and `\\boxed{` in the answer.
"""
from __future__ import annotations

from typing import Sequence

from atomsearch_jax.formats.base import (
    FormatReport,
    braced_group,
    doc_contents,
    last_block,
    neutralize,
    truncate_chars,
)
from atomsearch_jax.formats.search_tags import SearchTagFormat

PROMPTS: dict[str, str] = {
    # The system prompt of ReSearch's instruction-tuned models, whitespace tidied.
    "research_v1": (
        "You are a helpful assistant that can solve the given question step by step with the help of the "
        "wikipedia search tool. Given a question, you need to first think about the reasoning process in the "
        "mind and then provide the answer. During thinking, you can invoke the wikipedia search tool to search "
        "for fact information about specific topics if needed. The reasoning process and answer are enclosed "
        "within <think> </think> and <answer> </answer> tags respectively, and the search query and result are "
        "enclosed within <search> </search> and <result> </result> tags respectively. For example, "
        "<think> This is the reasoning process. </think> <search> search query here </search> "
        "<result> search result here </result> <think> This is the reasoning process. </think> "
        "<answer> The final answer is \\[ \\boxed{answer here} \\] </answer>. In the last part of the answer, "
        "the final exact answer is enclosed within \\boxed{} with latex format."
    ),
}

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed_content(text: str) -> str | None:
    """Content of the last `\\boxed{…}` (or `\\fbox{…}`, or `\\boxed x`) in `text`, nested braces
    balanced; None when there is none or its braces never close."""
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    i = start + len(cmd)
    if text.startswith(" ", i) and not text.startswith("{", i):
        # "\boxed 42" form: the argument runs to the next "$" or whitespace.
        rest = text[i + 1 :]
        arg = rest.split("$", 1)[0].split()
        return arg[0] if arg else None
    group = braced_group(text, i) if text.startswith("{", i) else None
    return group[0] if group else None


class ReSearchFormat(SearchTagFormat):
    name = "research"
    prompts = PROMPTS
    default_prompt_version = "research_v1"

    def render_results(self, results: Sequence[Sequence[dict]], *, max_chars_per_doc: int | None = None) -> str:
        contents = []
        for docs in results:
            for doc in docs:
                contents.append(neutralize(truncate_chars(doc_contents(doc).strip(), max_chars_per_doc)))
        body = "\n\n".join(c for c in contents if c) or "No results found."
        return f" <result>\n{body}\n</result>"

    def render_failure(self, error: str) -> str:
        return f" <result>\nSearch failed: {neutralize(error.strip())}\n</result>"

    def answer_body(self, answer: str) -> str:
        return f"The final answer is \\[ \\boxed{{{answer}}} \\]"

    def extract_answer(self, response: str) -> str | None:
        block = last_block(response, "<answer>", "</answer>")
        if block is None:
            return None
        boxed = last_boxed_content(block)
        if boxed is None or not boxed.strip():
            return None
        return boxed.strip()

    def validate(self, response: str) -> FormatReport:
        errors = []
        n_think_open, n_think_close = response.count("<think>"), response.count("</think>")
        if n_think_open != n_think_close:
            errors.append(f"unbalanced <think> tags ({n_think_open} open, {n_think_close} close)")
        elif n_think_open == 0:
            errors.append("no <think> block")
        n_answer_open, n_answer_close = response.count("<answer>"), response.count("</answer>")
        if n_answer_open == 0 and n_answer_close == 0:
            errors.append("no answer")
        elif n_answer_open != 1 or n_answer_close != 1:
            errors.append(f"expected exactly one answer block ({n_answer_open} <answer>, {n_answer_close} </answer>)")
        errors.extend(self._search_order_errors(response))
        if n_answer_open == 1 and n_answer_close == 1:
            start, end = response.find("<answer>"), response.find("</answer>")
            if start > end:
                errors.append("</answer> before <answer>")
            elif "\\boxed{" not in response[start:end]:
                errors.append("answer without \\boxed{}")
        return FormatReport.from_errors(errors)

    @staticmethod
    def _search_order_errors(response: str) -> list[str]:
        pos = 0
        while True:
            search = response.find("<search>", pos)
            if search < 0:
                return []
            search_end = response.find("</search>", search)
            result = response.find("<result>", search)
            result_end = response.find("</result>", result) if result >= 0 else -1
            if search_end < 0:
                return ["unclosed <search>"]
            if result < 0 or result_end < 0:
                return ["search without result block"]
            if not search < search_end < result < result_end:
                return ["search/result tags out of order"]
            next_search = response.find("<search>", search + 1)
            if 0 <= next_search < result:
                return ["search without result block"]
            pos = result_end
