"""Trajectory files: agent trajectories as chat messages, for SFT (teacher pipelines, veRL multi-turn SFT).

One record per line (JSON Lines; JSON lists and parquet with a `messages` column are read too):

    {"messages": [{"role": "system", "content": "..."},           # optional
                  {"role": "user", "content": "<question>"},
                  {"role": "assistant", "content": "<the model's turn, in the format's own syntax>"},
                  {"role": "tool", "content": "<results>", "rendered": "<exact environment text>"},
                  {"role": "assistant", "content": "... <answer>...</answer>"}],
     "golden_answers": [...], ...}                                 # other fields are kept as metadata

Assistant turns are the text the model writes (e.g. Atom-Searcher's `<PLAN>…</PLAN></think><tool_call>…`);
a turn that starts with the format's generation prefix (`<think>`) has it removed, since the prompt and
every environment insertion already end with it. A tool message becomes the environment's insertion: its
`rendered` text when present (what the trajectory's model saw, written by `make_sft_data`), else its
content rendered by the format (a JSON list of documents per query, a JSON list of documents, an
`{"error": ...}` object, or plain text: a code tool's output for formats with a code interpreter, else
one document). Tokenized with `sft_examples.tokenize_segments`,
assistant turns are trained and everything else is masked, exactly as in a rollout.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np

from atomsearch_jax.data.qa_files import iter_rows
from atomsearch_jax.data.sft_examples import tokenize_segments
from atomsearch_jax.formats import CODE_TOOL
from atomsearch_jax.search.documents import make_contents


class TrajectoryFileError(ValueError):
    """A trajectory record that cannot be read; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class TrajectoryRecord:
    """question: the first user turn; system: the file's system prompt (None when absent); segments:
    (text, trainable) pairs after the prompt; metadata: the record's other fields."""

    question: str
    system: str | None
    segments: list[tuple[str, bool]]
    metadata: dict[str, Any]
    location: str = ""


def _doc(d: Any) -> dict | None:
    """A retriever document ({"contents": '"Title"\\nText'}) from {"contents"} or {"title", "text"}."""
    if isinstance(d, dict) and isinstance(d.get("contents"), str):
        return d
    if isinstance(d, dict) and isinstance(d.get("text"), str):
        return {"contents": make_contents(str(d.get("title", "")), d["text"])}
    return None


def _docs_from_json(value: Any) -> list[list[dict]] | None:
    """One document list per query from a JSON list of lists of documents or a flat list of documents."""
    if not isinstance(value, list):
        return None
    queries = value if value and all(isinstance(q, list) for q in value) else [value]
    docs = [[_doc(d) for d in q] for q in queries]
    return None if any(d is None for q in docs for d in q) else docs


def render_tool_message(message: dict, fmt: Any) -> str:
    """The environment insertion for a tool message (see the module docstring)."""
    if isinstance(message.get("rendered"), str):
        return message["rendered"]
    content = message.get("content")
    if not isinstance(content, str):
        raise ValueError(f"tool message content must be text, got {type(content).__name__}")
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return fmt.render_failure(value["error"])
    docs = _docs_from_json(value)
    if docs is None and CODE_TOOL in getattr(fmt, "tools", ()):
        return fmt.render_code_result(content, "", None)  # plain text from a format with a code tool: its output
    return fmt.render_results(docs if docs is not None else [[{"contents": content}]])


def parse_messages(messages: Any, fmt: Any) -> tuple[str, str | None, list[tuple[str, bool]]]:
    """(question, system prompt or None, segments) of one messages list in `fmt`."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' must be a list of {role, content} objects")
    system, question, segments = None, None, []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role == "system" and question is None:
            system = content
        elif role == "user" and question is None:
            if not isinstance(content, str) or not content.strip():
                raise ValueError(f"message {i}: the user turn (the question) must be non-empty text")
            question = content.strip()
        elif role == "assistant" and question is not None:
            if m.get("tool_calls") and fmt.parse_tool_call(content or "") is None:
                raise ValueError(f"message {i}: structured tool_calls without the {fmt.name} call in the text; "
                                 "assistant turns must hold the format's own syntax")
            if not isinstance(content, str) or not content:
                raise ValueError(f"message {i}: assistant content must be non-empty text")
            prefix = fmt.generation_prefix
            segments.append((content[len(prefix):] if prefix and content.startswith(prefix) else content, True))
        elif role == "tool" and segments and segments[-1][1]:
            segments.append((render_tool_message(m, fmt), False))
        else:
            raise ValueError(f"message {i}: unexpected role {role!r} here (expected [system], user, then "
                             "assistant turns each followed by at most one tool message)")
    if question is None or not segments:
        raise ValueError("a trajectory needs a user turn and at least one assistant turn")
    if not segments[-1][1]:
        raise ValueError("a trajectory must end with an assistant turn, not a tool result")
    return question, system, segments


def read_trajectory_file(path: str, fmt: Any) -> list[TrajectoryRecord]:
    """Every record of a trajectory file; a malformed one raises TrajectoryFileError naming its line."""
    records = []
    for row, location in iter_rows(path):
        try:
            if not isinstance(row, dict) or "messages" not in row:
                raise ValueError("a trajectory record is an object with a 'messages' list")
            messages = row["messages"]
            if isinstance(messages, str):  # parquet writers sometimes store nested lists as JSON text
                messages = json.loads(messages)
            question, system, segments = parse_messages(list(messages), fmt)
        except ValueError as err:
            raise TrajectoryFileError(f"{location}: {err}") from None
        metadata = {k: v for k, v in row.items() if k != "messages"}
        records.append(TrajectoryRecord(question, system, segments, metadata, location))
    if not records:
        raise TrajectoryFileError(f"{path}: no trajectories")
    return records


def trajectory_example(record: TrajectoryRecord, fmt: Any, tokenizer: Any, *, system_prompt: str = "format"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [L] int32, loss_mask [L] float32) behind the prompt: the format's own system prompt
    (system_prompt="format", as RL will prompt the policy) or the file's ("file")."""
    if system_prompt not in ("format", "file"):
        raise ValueError(f"system_prompt must be 'format' or 'file', got {system_prompt!r}")
    messages = fmt.messages(record.question)
    if system_prompt == "file" and record.system is not None:  # replaces the format's system turn, if any
        messages = [{"role": "system", "content": record.system}] + [m for m in messages if m["role"] != "system"]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + fmt.generation_prefix
    return tokenize_segments(tokenizer, prompt, record.segments)


def trajectory_messages(question: str, system: str, segments: Sequence[tuple[str, bool]],
                        tool_contents: Sequence[str]) -> list[dict[str, str]]:
    """The messages of a trajectory whose environment segments are `tool_contents` (the results as
    JSON text, one per environment segment) with their exact insertion text under "rendered"."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    tools = iter(tool_contents)
    for text, trainable in segments:
        if trainable:
            messages.append({"role": "assistant", "content": text})
        else:
            messages.append({"role": "tool", "content": next(tools), "rendered": text})
    return messages
