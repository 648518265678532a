"""What the training job shows its user: progress bars, where the time went, rollout samples, and the
final report (stdout table, <workdir>/report.json, <workdir>/report.md with PNG plots).

report.json holds, per held-out stage (untrained, sft, grpo), `heldout_em_<stage>` and
`heldout_f1_<stage>` (greedy, official SQuAD EM/F1 over the held-out split), `heldout_questions`,
`wall_seconds` (process start to the report), `time_seconds` (the breakdown by phase, seconds) and
`heldout` (every evaluation metric per stage).
"""
from __future__ import annotations

import collections
import json
import math
import os
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

STAGES = ("untrained", "sft", "grpo")
REPORT_JSON, REPORT_MD, SAMPLES_DIR, PLOTS_DIR = "report.json", "report.md", "samples", "plots"

# Time-breakdown keys, in the order the table lists them.
PHASES = ("setup", "eval", "sft", "grpo_decode", "grpo_search", "grpo_reward", "grpo_update", "export")


def process_start_time() -> float:
    """Wall-clock time (s since the epoch) at which this process started (Linux /proc; else now)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


class PhaseClock:
    """Seconds spent per named phase, and in XLA compilation (whatever phase triggered it).

        clock = PhaseClock()
        with clock("sft"):
            ...
        clock.add("grpo_search", 1.5)
        clock.seconds()    # {"sft": ..., "grpo_search": 1.5, "compile": ...}
    """

    def __init__(self) -> None:
        self._seconds: dict[str, float] = collections.defaultdict(float)
        self._compile, self._compiles = 0.0, 0
        import jax.monitoring
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            self._compile += duration
            self._compiles += 1

    def add(self, phase: str, seconds: float) -> None:
        self._seconds[phase] += float(seconds)

    def __call__(self, phase: str) -> "_Timed":
        return _Timed(self, phase)

    def seconds(self) -> dict[str, float]:
        """Per phase (PHASES first, then any other), plus "compile" (included in the phases' time) and
        "compiles" (how many XLA compilations; a count, not seconds)."""
        ordered = {p: round(self._seconds.get(p, 0.0), 2) for p in PHASES}
        ordered.update({p: round(s, 2) for p, s in self._seconds.items() if p not in ordered})
        ordered["compile"] = round(self._compile, 2)
        ordered["compiles"] = self._compiles
        return ordered


class _Timed:
    def __init__(self, clock: PhaseClock, phase: str) -> None:
        self.clock, self.phase = clock, phase

    def __enter__(self) -> "_Timed":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.clock.add(self.phase, time.perf_counter() - self.start)


def progress_enabled() -> bool:
    """Progress bars on: stderr is a terminal, or ATOMSEARCH_PROGRESS=1 (e.g. a log file)."""
    return sys.stderr.isatty() or os.environ.get("ATOMSEARCH_PROGRESS") == "1"


def progress(total: int, desc: str, *, initial: int = 0, unit: str = "step"):
    """A tqdm bar on stderr with rate and ETA (see `progress_enabled`; redrawn every 30 s into a file)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not progress_enabled(), mininterval=0.5 if sys.stderr.isatty() else 30.0, leave=True)


def write_samples(workdir: str, update: int, trajectories: Sequence[Any], rewards: np.ndarray,
                  components: Mapping[str, Any], fmt: Any) -> str:
    """<workdir>/samples/grpo_update_<update>.jsonl: one line per rollout with the full text (atomic
    thoughts, tool calls, results), its stop reason, tool calls and every reward component."""
    directory = os.path.join(workdir, SAMPLES_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"grpo_update_{update:04d}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(trajectories):
            parts = {k: _json_value(v[i]) for k, v in components.items() if isinstance(v, (np.ndarray, list))}
            f.write(json.dumps({
                "update": update, "question": t.question, "golden_answers": t.golden_answers,
                "sample_index": t.sample_index, "response": t.response, "answer": fmt.extract_answer(t.response),
                "atomic_thoughts": [{"tag": a.tag, "text": a.text} for a in fmt.atomic_thoughts(t.response)]
                if hasattr(fmt, "atomic_thoughts") else [],
                "tool_calls": t.tool_calls, "stop_reason": t.stop_reason, "response_tokens": t.response_length,
                "reward": float(rewards[i]), "components": parts}, ensure_ascii=False) + "\n")
    return path


def _json_value(x: Any) -> Any:
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def heldout_fields(heldout: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The report's headline fields from per-stage held-out metrics ({stage: {"em", "f1", "n", ...}})."""
    fields: dict[str, Any] = {}
    for stage in STAGES:
        if stage in heldout:
            fields[f"heldout_em_{stage}"] = round(float(heldout[stage]["em"]), 4)
            fields[f"heldout_f1_{stage}"] = round(float(heldout[stage]["f1"]), 4)
    counts = {int(m["n"]) for m in heldout.values()}
    if len(counts) > 1:
        raise ValueError(f"held-out stages were evaluated on different question counts: {sorted(counts)}")
    fields["heldout_questions"] = counts.pop() if counts else 0
    return fields


def read_metrics(jsonl_path: str) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a resumed run may log a step twice, the last line wins per (prefix, step)."""
    if not os.path.exists(jsonl_path):
        return []
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    with open(jsonl_path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            prefixes = sorted({k.split("/", 1)[0] for k in row if "/" in k})
            rows[(",".join(prefixes), int(row["step"]))] = row
    return list(rows.values())


def _series(rows: Iterable[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = sorted((int(r["step"]), float(r[key])) for r in rows if key in r and isinstance(r[key], (int, float)))
    return [s for s, _ in points], [v for _, v in points]


# (file name, title, y label, metrics.jsonl keys)
PLOTS = (
    ("reward.png", "GRPO reward and its components", "mean over rollouts",
     ("rl/reward/mean", "rl/reward/outcome_mean", "rl/reward/atr_mean", "rl/reward/f1_mean")),
    ("atr_vs_outcome.png", "process reward (ATR) vs outcome reward", "mean over rollouts",
     ("rl/reward/atr_mean", "rl/reward/outcome_mean", "rl/reward/alpha_mean")),
    ("response_length.png", "response length", "tokens after the prompt", ("rl/rollout/response_tokens_mean",)),
    ("tool_calls.png", "tool calls per question", "calls", ("rl/rollout/tool_calls_mean",)),
    ("entropy.png", "policy entropy on generated tokens", "nats / token", ("rl/entropy",)),
    ("sft_loss.png", "SFT loss", "NLL / trained token", ("sft/loss",)),
)


def _plot_lines(path: str, title: str, ylabel: str, rows: list[dict[str, Any]], keys: Sequence[str]) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    series = [(k, *_series(rows, k)) for k in keys]
    series = [s for s in series if s[1]]
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, x, y in series:
        ax.plot(x, y, marker="o" if len(x) < 40 else None, markersize=3, label=key.split("/", 1)[1])
    ax.set(title=title, xlabel="update" if keys[0].startswith("rl/") else "step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _plot_stages(path: str, heldout: Mapping[str, Mapping[str, float]]) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    stages = [s for s in STAGES if s in heldout]
    if not stages:
        return False
    x = np.arange(len(stages))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for offset, metric in ((-0.2, "em"), (0.2, "f1")):
        values = [heldout[s][metric] for s in stages]
        bars = ax.bar(x + offset, values, width=0.4, label=metric.upper())
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, stages)
    ax.set(title=f"held-out EM / F1 per stage (n = {int(heldout[stages[0]]['n'])})", ylabel="score", ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def render_table(report: Mapping[str, Any]) -> str:
    """The stdout table: held-out metrics per stage, then the time breakdown."""
    heldout = report.get("heldout", {})
    lines = [f"held-out questions: {report.get('heldout_questions', 0)} (greedy)",
             f"{'stage':<10} {'EM':>6} {'F1':>6} {'format ok':>9} {'searches':>8} {'generated':>9}"]
    for stage in STAGES:
        if stage in heldout:
            m = heldout[stage]
            lines.append(f"{stage:<10} {m['em']:>6.3f} {m['f1']:>6.3f} {m['format_ok']:>9.2f} {m['tool_calls']:>8.2f} "
                         f"{m['generated_tokens']:>9.1f}")
    times = report.get("time_seconds", {})
    cpu = f" (process CPU {report['cpu_seconds']:.1f} s)" if "cpu_seconds" in report else ""
    lines.append(f"wall {report.get('wall_seconds', float('nan')):.1f} s{cpu}: " +
                 ", ".join(f"{k} {v:.1f}" for k, v in times.items() if v and k != "compiles") +
                 f" ({times.get('compiles', 0)} compilations)")
    return "\n".join(lines)


def write_report(workdir: str, report: Mapping[str, Any], metrics_rows: list[dict[str, Any]]) -> dict[str, str]:
    """Writes report.json, the plots and report.md; returns their paths."""
    plots_dir = os.path.join(workdir, PLOTS_DIR)
    os.makedirs(plots_dir, exist_ok=True)
    made = []
    if _plot_stages(os.path.join(plots_dir, "heldout_stages.png"), report.get("heldout", {})):
        made.append(("heldout_stages.png", "held-out EM / F1 per stage"))
    for name, title, ylabel, keys in PLOTS:
        if _plot_lines(os.path.join(plots_dir, name), title, ylabel, metrics_rows, keys):
            made.append((name, title))
    paths = {"json": os.path.join(workdir, REPORT_JSON), "md": os.path.join(workdir, REPORT_MD)}
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    md = ["# Training report", "", "```", render_table(report), "```", ""]
    for key in ("command", "load_average"):
        if key in report:
            md.append(f"- {key}: `{report[key]}`")
    md.append("")
    md += [f"## {title}\n\n![{title}]({PLOTS_DIR}/{name})\n" for name, title in made]
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    return paths
