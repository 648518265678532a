"""Search-R1 format (PeterGriffinJin/Search-R1).

Model text: `<think> … </think>`, `<search> query </search>`; the host inserts
`\\n\\n<information>Doc 1(Title: …) …\\nDoc 2(Title: …) …</information>\\n\\n`; final `<answer> X </answer>`.
Validation is Search-R1's `is_valid_sequence` state machine: think -> (search -> information -> think)* ->
answer, only whitespace between blocks.

Search-R1 extracts the answer from the decoded prompt + response and ignores the answer example in its
prompt by requiring two or more `<answer>` matches. `extract_answer` here reads the response alone (no
prompt example to skip); for text that includes the prompt use `extract_answer_from_full_text`, which
skips exactly as many matches as the prompt itself holds (Search-R1's rule, generalized from "one").
"""
from __future__ import annotations

import re
from typing import Sequence

from atomsearch_jax.formats.base import (
    FormatReport,
    doc_contents,
    neutralize,
    strip_trailing_specials,
    truncate_chars,
)
from atomsearch_jax.formats.search_tags import SearchTagFormat

PROMPTS: dict[str, str] = {
    # Search-R1's instruction (its "Question: …" part is the user turn here).
    "search_r1_v1": (
        "Answer the given question. You must conduct reasoning inside <think> and </think> first every time "
        "you get new information. After reasoning, if you find you lack some knowledge, you can call a search "
        "engine by <search> query </search> and it will return the top searched results between <information> "
        "and </information>. You can search as many times as your want. If you find no further external "
        "knowledge needed, you can directly provide the answer inside <answer> and </answer>, without detailed "
        "illustrations. For example, <answer> Beijing </answer>."
    ),
}

# Search-R1's generation.py, verbatim.
INVALID_ACTION = ("\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
                  "</search>. If I want to give the final answer, I should put the answer between <answer> and "
                  "</answer>. Let me try again.\n")

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TAG = re.compile(r"(</?(?:think|search|information|answer)>)")

# state -> {tag: next state}; Search-R1's is_valid_sequence transitions.
_TRANSITIONS: dict[str, dict[str, str]] = {
    "start": {"<think>": "in_think"},
    "in_think": {"</think>": "after_think"},
    "after_think": {"<search>": "in_search", "<answer>": "in_answer"},
    "in_search": {"</search>": "after_search"},
    "after_search": {"<information>": "in_information"},
    "in_information": {"</information>": "after_information"},
    "after_information": {"<think>": "in_think"},
    "in_answer": {"</answer>": "end"},
    "end": {},
}
_EXPECTED = {
    "start": "expected <think>",
    "after_think": "expected <search> or <answer> after </think>",
    "after_search": "search without information block",
    "after_information": "expected <think> after </information>",
    "end": "text after </answer>",
}


class SearchR1Format(SearchTagFormat):
    name = "search_r1"
    prompts = PROMPTS
    default_prompt_version = "search_r1_v1"

    def user_content(self, question: str) -> str:
        """Search-R1's `make_prefix`: the instruction, then " Question: {question}\\n", in one user turn."""
        return f"{self.system_prompt()} Question: {question.strip()}\n"

    def messages(self, question: str) -> list[dict[str, str]]:
        """One user message holding the instruction and the question, as Search-R1 trains (no system
        message of ours; the chat template adds its default one)."""
        return [m for m in super().messages(question) if m["role"] == "user"]

    def render_results(self, results: Sequence[Sequence[dict]], *, max_chars_per_doc: int | None = None) -> str:
        """Search-R1's `_passages2string`: per document `Doc {i}(Title: {first line}) {other lines}\\n` with
        the title line verbatim (its quotes kept), the block stripped, wrapped in <information>."""
        lines = []
        for docs in results:
            for doc in docs:
                title, _, text = doc_contents(doc).partition("\n")
                text = truncate_chars(text, max_chars_per_doc)
                lines.append(f"Doc {len(lines) + 1}(Title: {neutralize(title)}) {neutralize(text)}\n")
        body = "".join(lines).strip() if lines else "No results found."
        return f"\n\n<information>{body}</information>\n\n"

    def render_failure(self, error: str) -> str:
        return f"\n\n<information>Search failed: {neutralize(error.strip())}</information>\n\n"

    def render_invalid_call(self, reason: str) -> str:
        """Search-R1's feedback after an action it cannot parse (the reason is not shown, as there)."""
        del reason
        return INVALID_ACTION

    def answer_body(self, answer: str) -> str:
        return answer

    def extract_answer(self, response: str) -> str | None:
        matches = _ANSWER.findall(response)
        if not matches or not matches[-1].strip():
            return None
        return matches[-1].strip()

    def extract_answer_from_full_text(self, full_text: str, prompt_text: str) -> str | None:
        """The last `<answer>` of prompt + response, ignoring the matches the prompt itself contains."""
        matches = _ANSWER.findall(full_text)
        if len(matches) <= len(_ANSWER.findall(prompt_text)) or not matches[-1].strip():
            return None
        return matches[-1].strip()

    def validate(self, response: str) -> FormatReport:
        content = strip_trailing_specials(response)
        errors = []
        for tag in ("think", "search", "information", "answer"):
            n_open, n_close = content.count(f"<{tag}>"), content.count(f"</{tag}>")
            if n_open != n_close:
                errors.append(f"unbalanced <{tag}> tags ({n_open} open, {n_close} close)")
        state = "start"
        for part in _TAG.split(content):
            if not part.strip():
                continue
            if _TAG.fullmatch(part):
                nxt = _TRANSITIONS[state].get(part)
                if nxt is None:
                    errors.append(f"unexpected {part} ({_EXPECTED.get(state, 'in ' + state)})")
                    break
                state = nxt
            elif state in _EXPECTED:
                errors.append(f"text outside tags ({_EXPECTED[state]})")
                break
        else:
            if state != "end":
                errors.append("no answer" if "<answer>" not in content else f"incomplete response (ended in {state})")
        return FormatReport.from_errors(errors)
