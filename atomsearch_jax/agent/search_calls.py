"""Answering the tool calls of many rollout rows with one batched retrieval (shared by the token-level
`RolloutRunner` and the text-level `TextRollout`)."""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Mapping, Sequence

from atomsearch_jax.formats.base import split_title_text, truncate_chars
from atomsearch_jax.search import Retriever, SearchResult


@dataclasses.dataclass(frozen=True)
class CallOutcome:
    """rendered: the environment text to insert; content: the results as JSON text (a list of
    [{"title", "text"}] per query, or {"error": ...}) for trajectory files; error: the first retrieval
    error of the call (None when every query succeeded)."""

    rendered: str
    content: str
    error: str | None


def answer_calls(retriever: Retriever, fmt: Any, calls: Mapping[int, Sequence[str]], *, topk: int,
                 max_chars_per_doc: int | None) -> dict[int, CallOutcome]:
    """{row: CallOutcome} for {row: queries}: one retriever call for every query of every row. A
    retriever that raises fails every query (recorded, never raised); a row whose queries all failed
    gets the format's failure message."""
    flat = [(row, q) for row, queries in calls.items() for q in queries]
    results: list[SearchResult]
    try:
        results = retriever.search([q for _, q in flat], topk) if flat else []
    except Exception as err:  # a backend bug must not kill the run: record it per sample
        logging.exception("retriever raised; recording the failure on %d rows", len(calls))
        results = [SearchResult(docs=[], error=f"retriever error: {err}") for _ in flat]
    per_row: dict[int, list[SearchResult]] = {row: [] for row in calls}
    for (row, _), result in zip(flat, results):
        per_row[row].append(result)
    out = {}
    for row, row_results in per_row.items():
        errors = [r.error for r in row_results if not r.ok]
        if errors and all(not r.ok for r in row_results):
            out[row] = CallOutcome(fmt.render_failure(errors[0]), json.dumps({"error": errors[0]}), errors[0])
            continue
        docs = [r.docs for r in row_results]
        content = [[dict(zip(("title", "text"), split_title_text(d))) for d in q] for q in docs]
        for q in content:
            for d in q:
                d["text"] = truncate_chars(d["text"], max_chars_per_doc)
        out[row] = CallOutcome(fmt.render_results(docs, max_chars_per_doc=max_chars_per_doc),
                               json.dumps(content, ensure_ascii=False), errors[0] if errors else None)
    return out
