"""Writing an evaluation: DIR/results.md (a table laid out like the papers'), DIR/results.json
(``{"datasets": {name: metrics}, "average": metrics}``) and DIR/questions.jsonl (one row per question)."""
from __future__ import annotations

import json
from typing import Any

from etils import epath

from atomsearch_jax.evaluation.loop import EvalResult

# (metric key, column header, scale): rates are shown in percent as the papers do.
_COLUMNS = [("n", "n", None), ("em", "EM", 100), ("f1", "F1", 100), ("substring", "Sub", 100),
            ("judge_acc", "LJ", 100), ("answered", "Ans", 100), ("format_ok", "Fmt", 100)]
_TEST_TIME = [("generated_tokens", "Tok", 1), ("think_tokens", "Think", 1), ("atomic_thoughts", "Atoms", 1),
              ("tool_calls", "Calls", 1)]


def _at_k_columns(result: EvalResult) -> list[tuple[str, str, int]]:
    keys = [k for k in result.average if "@" in k]
    return [(k, k, 100) for k in keys]


def _cell(value: Any, scale: int | None) -> str:
    if value is None:
        return "–"
    if scale is None:
        return str(int(value))
    return f"{value * scale:.1f}" if scale == 100 else f"{value:.1f}"


def render_markdown(result: EvalResult, title: str = "") -> str:
    """A markdown table: one row per dataset, then the average over datasets."""
    columns = _COLUMNS + _at_k_columns(result) + _TEST_TIME
    lines = [f"# {title}", ""] if title else []
    lines.append("| Dataset | " + " | ".join(header for _, header, _ in columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    for name, metrics in list(result.summaries.items()) + [("Average", result.average)]:
        label = f"**{name}**" if name == "Average" else name
        lines.append(f"| {label} | " + " | ".join(_cell(metrics.get(k), s) for k, _, s in columns) + " |")
    failures = sum(s["judge_failures"] for s in result.summaries.values())
    judged = sum(s["judged"] for s in result.summaries.values())
    lines += ["", "EM / F1 / Sub(string accuracy) / LJ (LLM-judge accuracy) / Ans(wer rate) / Fmt (format valid) "
              "in percent, means over samples; Tok / Think / Atoms / Calls: generated tokens, think tokens, atomic "
              "thoughts and tool calls per sample. Average: unweighted over datasets.",
              f"Judge: {judged} answers judged, {failures} judge failures (not counted in LJ)."]
    return "\n".join(lines) + "\n"


def write_results(result: EvalResult, out_dir: str, *, title: str = "", meta: dict[str, Any] | None = None) -> None:
    """Writes results.md, results.json (plus `meta` under "meta") and questions.jsonl into out_dir."""
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(render_markdown(result, title))
    (out / "results.json").write_text(json.dumps(result.to_json() | ({"meta": meta} if meta else {}), indent=2))
    with (out / "questions.jsonl").open("w") as f:
        for row in result.rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
