"""Hermes-style tool calling (Qwen2.5 / Qwen3 function calling): the DemyAgent / GRPO-TCR agent format.

The model reasons in plain text and calls tools as
`<tool_call>\\n{"name": "code_interpreter", "arguments": {"code": "..."}}\\n</tool_call>` (and, when the
prompt version offers search, `{"name": "web_search", "arguments": {"query": [..]}}`). Generation stops at
`</tool_call>`; the host runs the tool and inserts the Qwen chat template's tool turn:
`<|im_end|>\\n<|im_start|>user\\n<tool_response>\\n...\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n`.
The final turn contains no tool call and puts the answer in `\\boxed{}`; it ends at EOS.

A response validates when every tool call is well formed, names an offered tool and is followed by a
tool turn, the model never writes `<tool_response>` itself, the call count is within `max_tool_calls`,
and the final turn has a complete `\\boxed{}`.
"""
from __future__ import annotations

import json
from typing import Sequence

from atomsearch_jax.formats.atom_searcher import search_call_queries, search_payload
from atomsearch_jax.formats.base import (
    CODE_TOOL,
    SEARCH_TOOL,
    TOOL_RESPONSE_TURN,
    AgentFormat,
    AtomicThought,
    FormatReport,
    ToolCall,
    call_arguments,
    check_tool_turn,
    neutralize,
    tool_call_object,
    strip_trailing_specials,
    tool_response_turn,
)
from atomsearch_jax.formats.research import last_boxed_content

SEARCH_FUNCTION = "web_search"
_FUNCTIONS = {
    CODE_TOOL: {
        "type": "function",
        "function": {
            "name": CODE_TOOL,
            "description": "Run Python 3 code in a sandbox and return what it prints (stdout and stderr). "
                           "No network; numpy and sympy are available; each call starts a fresh interpreter.",
            "parameters": {"type": "object", "properties": {"code": {"type": "string", "description":
                           "The Python code to run. Print the values you need."}}, "required": ["code"]},
        },
    },
    SEARCH_TOOL: {
        "type": "function",
        "function": {
            "name": SEARCH_FUNCTION,
            "description": "Search the web. Returns the top results (title and text) for each query.",
            "parameters": {"type": "object", "properties": {"query": {"type": "array", "items": {"type": "string"},
                           "description": "One or more search queries."}}, "required": ["query"]},
        },
    },
}


def _prompt(tools: Sequence[str]) -> str:
    listing = "\n".join(json.dumps(_FUNCTIONS[t]) for t in tools)
    return (
        "You are a helpful assistant that solves problems by careful reasoning. Think before you act: plan, "
        "then call a tool only when it will settle a concrete step (a computation, a check, a fact), and "
        "read its result critically.\n\n"
        "# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listing}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>\n\n"
        "When you are done, give the final answer within \\boxed{}."
    )


PROMPT_TOOLS: dict[str, tuple[str, ...]] = {
    "hermes_code_v1": (CODE_TOOL,),
    "hermes_code_search_v1": (CODE_TOOL, SEARCH_TOOL),
}
PROMPTS: dict[str, str] = {version: _prompt(tools) for version, tools in PROMPT_TOOLS.items()}


def _parse_code_call(call: dict) -> tuple[str | None, str | None]:
    args, reason = call_arguments(call)
    if reason:
        return None, reason
    if not isinstance(args, dict) or not isinstance(args.get("code"), str):
        return None, f"{CODE_TOOL} call needs arguments {{\"code\": <string>}}"
    if not args["code"].strip():
        return None, f"{CODE_TOOL} call has empty code"
    return args["code"], None


class HermesFormat(AgentFormat):
    name = "hermes"
    generation_prefix = ""
    stop_strings = ("</tool_call>",)
    prompts = PROMPTS
    default_prompt_version = "hermes_code_v1"
    answer_kind = "math"

    def __init__(self, prompt_version: str | None = None, *, max_tool_calls: int = 8, max_queries_per_call: int = 8):
        super().__init__(prompt_version)
        self.tools = PROMPT_TOOLS[self.prompt_version]
        self.max_tool_calls = max_tool_calls
        self.max_queries_per_call = max_queries_per_call

    # -- tool calls -----------------------------------------------------------------------------------
    def parse_tool_call_with_reason(self, segment_text: str) -> tuple[ToolCall | None, str | None]:
        call, raw, reason = tool_call_object(segment_text)
        if call is None:
            return None, reason
        name = call.get("name")
        if name == CODE_TOOL and CODE_TOOL in self.tools:
            code, reason = _parse_code_call(call)
            return (None, reason) if code is None else (ToolCall([], raw, CODE_TOOL, {"code": code}), None)
        if name == SEARCH_FUNCTION and SEARCH_TOOL in self.tools:
            queries, reason = search_call_queries(call, self.max_queries_per_call)
            if queries is None:
                return None, reason
            return ToolCall(queries, raw, SEARCH_TOOL, {"query": queries}), None
        offered = [CODE_TOOL if t == CODE_TOOL else SEARCH_FUNCTION for t in self.tools]
        return None, f"unknown tool {str(name)[:40]!r} (offered: {offered})"

    def render_results(self, results: Sequence[Sequence[dict]], *, max_chars_per_doc: int | None = None) -> str:
        return tool_response_turn(search_payload(results, max_chars_per_doc))

    def render_failure(self, error: str) -> str:
        return tool_response_turn(json.dumps({"error": neutralize(error.strip())}, ensure_ascii=False))

    def render_code_result(self, stdout: str, stderr: str, error: str | None) -> str:
        parts = []
        if stdout:
            parts.append(stdout.rstrip("\n"))
        if stderr.strip():
            parts.append("[stderr]\n" + stderr.rstrip("\n"))
        if error is not None and not stderr.strip().endswith(error.split(": ", 1)[-1]):
            parts.append(f"[error] {error}")
        return tool_response_turn(neutralize("\n".join(parts) if parts else "(no output)"))

    def render_turn(self, thoughts: Sequence[tuple[str, str]], *, queries: Sequence[str] | None = None,
                    answer: str | None = None) -> str:
        self._check_render_turn_args(queries, answer)
        reasoning = "\n\n".join(neutralize(text.strip()) for _, text in thoughts)
        if queries is not None:
            call = {"name": SEARCH_FUNCTION, "arguments": {"query": [neutralize(q.strip()) for q in queries]}}
            return f"{reasoning}\n<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>"
        return f"{reasoning}\n\nThe final answer is \\boxed{{{neutralize(answer.strip())}}}."

    def render_code_call(self, reasoning: str, code: str) -> str:
        """One model turn that runs `code` (for teacher / SFT trajectories)."""
        call = {"name": CODE_TOOL, "arguments": {"code": code}}
        return f"{neutralize(reasoning.strip())}\n<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>"

    # -- reading a finished response ------------------------------------------------------------------
    @staticmethod
    def _final_turn(response: str) -> str:
        """The text after the last tool turn (the whole response when there is none)."""
        last = None
        for last in TOOL_RESPONSE_TURN.finditer(response):
            pass
        return response[last.end():] if last else response

    def extract_answer(self, response: str) -> str | None:
        boxed = last_boxed_content(self._final_turn(strip_trailing_specials(response)))
        return boxed.strip() if boxed is not None and boxed.strip() else None

    def atomic_thoughts(self, response: str) -> list[AtomicThought]:
        return []  # free-text reasoning: nothing for a reasoning reward model to grade piecewise

    def validate(self, response: str) -> FormatReport:
        text = strip_trailing_specials(response)
        errors: list[str] = []
        pos, n_calls = 0, 0
        while True:
            call_at = text.find("<tool_call>", pos)
            stray = text.find("<tool_response>", pos)
            if 0 <= stray < (call_at if call_at >= 0 else len(text)):
                errors.append(f"<tool_response> written by the model (turn {n_calls})")
                break
            if call_at < 0:
                final = text[pos:]
                if "</tool_call>" in final:
                    errors.append("</tool_call> without a preceding <tool_call>")
                elif last_boxed_content(final) is None:
                    errors.append("no \\boxed{} answer in the final turn")
                break
            check = check_tool_turn(self, text, call_at, n_calls)
            errors.extend(check.errors)
            n_calls += check.closed
            if check.end is None:
                break
            pos = check.end
        if n_calls > self.max_tool_calls:
            errors.append(f"too many tool calls ({n_calls} > {self.max_tool_calls})")
        return FormatReport.from_errors(errors)

