"""Per-sample scores of finished trajectories and per-dataset summaries of question rows.

A question row (one JSON line of the per-question output) is
``{"dataset", "id", "question", "golden_answers", "samples": [sample, ...]}`` with one sample per sampled
run; a sample holds the extracted answer, its scores (em, f1, substring: SQuAD-normalized, max over golds,
0 without an answer; for formats whose answers are math (`fmt.answer_kind == "math"`) em is the math
reward's equivalence: numbers and simple LaTeX normalised), format validity, the judge's verdict (None = not judged or judging failed) and the
test-time statistics (generated tokens, think tokens, atomic thoughts, tool calls). Summaries are pure
functions of rows, so rows evaluated on different hosts can be gathered and summarized once.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from atomsearch_jax.agent import Trajectory
from atomsearch_jax.evaluation.at_k import k_values, majority_index, pass_at_k
from atomsearch_jax.formats.base import find_blocks
from atomsearch_jax.rewards import answers_match, exact_match, f1_score, normalize_answer, substring_accuracy

# Means over samples, the columns every summary has (in table order).
SAMPLE_MEANS = ("em", "f1", "substring", "answered", "format_ok", "generated_tokens", "think_tokens",
                "atomic_thoughts", "tool_calls")


def think_token_count(response: str, fmt: Any, tokenizer: Any) -> int:
    """Tokens inside the response's <think>…</think> blocks (the generation prefix counts as written)."""
    blocks = find_blocks(fmt.generation_prefix + response, "<think>", "</think>")
    return sum(len(tokenizer.encode(b, add_special_tokens=False)) for b in blocks)


def answer_correct(answer: str, golds: Sequence[str], fmt: Any) -> float:
    """1.0 when `answer` matches a gold answer: SQuAD exact match, or math equivalence for math formats."""
    if getattr(fmt, "answer_kind", "text") == "math":
        return float(any(answers_match(answer, gold) for gold in golds))
    return exact_match(answer, golds)


def score_sample(t: Trajectory, fmt: Any, tokenizer: Any) -> dict[str, Any]:
    """One sample's answer, scores and statistics (see the module docstring)."""
    answer = fmt.extract_answer(t.response)
    golds = t.golden_answers
    return {
        "answer": answer,
        "em": answer_correct(answer, golds, fmt) if answer is not None else 0.0,
        "f1": f1_score(answer, golds) if answer is not None else 0.0,
        "substring": substring_accuracy(answer, golds) if answer is not None else 0.0,
        "answered": float(answer is not None),
        "format_ok": float(fmt.validate(t.response).ok and not t.truncated),
        "judge": None, "judge_error": None,
        "generated_tokens": t.generated_tokens,
        "think_tokens": think_token_count(t.response, fmt, tokenizer),
        "atomic_thoughts": len(fmt.atomic_thoughts(t.response)),
        "tool_calls": t.tool_calls, "search_failures": t.search_failures, "stop_reason": t.stop_reason,
        "response": t.response,
    }


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of one dataset's question rows: means over samples of SAMPLE_MEANS; judge_acc over judged
    samples (None when none was judged) with judge_failures counted apart; with k > 1 samples per
    question, avg@k, pass@j (unbiased, j in 1, 2, 4, …, k) and maj@k, all on exact match."""
    samples = [s for row in rows for s in row["samples"]]
    out: dict[str, Any] = {"n": len(rows), "samples_per_question": len(rows[0]["samples"]) if rows else 0}
    for key in SAMPLE_MEANS:
        out[key] = _mean([float(s[key]) for s in samples])
    verdicts = [s["judge"] for s in samples if s["judge"] is not None]
    out["judged"] = len(verdicts)
    out["judge_failures"] = sum(s["judge_error"] is not None for s in samples)
    out["judge_acc"] = _mean([float(v) for v in verdicts]) if verdicts else None
    out["search_failures"] = int(sum(s["search_failures"] for s in samples))
    k = out["samples_per_question"]
    if k > 1:
        if any(len(row["samples"]) != k for row in rows):
            raise ValueError("@k metrics need the same number of samples for every question")
        correct = [sum(s["em"] == 1.0 for s in row["samples"]) for row in rows]
        out[f"avg@{k}"] = _mean([c / k for c in correct])
        for j in k_values(k):
            out[f"pass@{j}"] = _mean([pass_at_k(k, c, j) for c in correct])
        majority = []
        for row in rows:
            keys = [None if s["answer"] is None else normalize_answer(s["answer"]) for s in row["samples"]]
            best = majority_index(keys)
            majority.append(0.0 if best is None else row["samples"][best]["em"])
        out[f"maj@{k}"] = _mean(majority)
    return out


_COUNTS = ("n", "judged", "judge_failures", "search_failures")


def average(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over datasets of every numeric metric (the papers' "Avg." column); counts (n,
    judged, judge and search failures) are summed. A metric missing or None in some dataset is averaged
    over the datasets that have it."""
    out: dict[str, Any] = {k: sum(s.get(k, 0) for s in summaries.values()) for k in _COUNTS}
    out["datasets"] = len(summaries)
    keys = [k for s in summaries.values() for k in s if k not in out]
    for key in dict.fromkeys(keys):
        values = [s[key] for s in summaries.values() if isinstance(s.get(key), (int, float))]
        out[key] = _mean(values) if values else None
    return out
