"""Atom-Searcher's teacher SFT-data pipeline: seed prompts -> teacher-expanded system prompts -> k teacher
rollouts per question with the real search tool -> filters -> deduplicated trajectory file + statistics.

    prompts, expansion_stats = expand_prompts(client, seed_prompts(), per_seed=3)
    result = generate_sft_data(rollout, records, prompts, k=4, filters=FilterConfig(...))
    write_sft_data(result, "sft.jsonl")      # trajectory-file format, + sft.jsonl.stats.json

Questions are rolled out in batches; each question gets one system prompt (cycling through the prompts
in a seeded random order) for all its k samples, so the majority vote compares like with like. Failed
teacher requests and searches are retried by their clients, then recorded per sample; when, after a
batch, the share of samples the teacher failed on (or whose searches failed) passes its `FailureLimits`
rate, the pipeline stops with `TooManyFailures`, which carries what was kept so far.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import random
from typing import Any, Sequence

from etils import epath
from tqdm import tqdm

from atomsearch_jax.agent.text_rollout import TextRollout, TextTrajectory
from atomsearch_jax.data.trajectory_files import trajectory_messages
from atomsearch_jax.sft_data.expansion import SystemPrompt
from atomsearch_jax.sft_data.filters import REJECTIONS, FilterConfig, filter_question


@dataclasses.dataclass
class SFTDataResult:
    """kept: accepted trajectories with the id of their system prompt; stats: counters (rejections per
    filter, failures, atomic-thought tag use)."""

    kept: list[tuple[TextTrajectory, str]]
    stats: dict[str, Any]
    format_name: str


@dataclasses.dataclass(frozen=True)
class FailureLimits:
    """Largest tolerated shares of samples (over all batches so far) that the teacher failed on, and that
    had a failed search; past either the run stops. 1.0 = never stop."""

    teacher: float = 0.5
    search: float = 0.5

    def __post_init__(self):
        for name in ("teacher", "search"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"max {name} failure rate must be in [0, 1], got {getattr(self, name)}")


class TooManyFailures(RuntimeError):
    """The teacher or the search service failed too often; `partial` holds the data kept until then (its
    stats say why it stopped under "stopped")."""

    def __init__(self, message: str, partial: SFTDataResult):
        super().__init__(message)
        self.partial = partial


def _failure_message(counters: collections.Counter, limits: FailureLimits, last_errors: Sequence[str]) -> str | None:
    samples = counters["samples"]
    for service, key, limit in (("teacher", "generation_errors", limits.teacher),
                                ("search", "samples_with_search_failures", limits.search)):
        if counters[key] > limit * samples:
            last = f"; last errors: {list(last_errors)}" if service == "teacher" and last_errors else ""
            return (f"the {service} failed on {counters[key]} of {samples} samples "
                    f"({counters[key] / samples:.0%} > max {service} failure rate {limit:.0%}){last}")
    return None


def _tag_stats(kept: Sequence[TextTrajectory], fmt: Any) -> dict[str, Any]:
    tags = collections.Counter()
    per_trajectory = []
    for t in kept:
        thoughts = fmt.atomic_thoughts(t.response)
        tags.update(th.tag for th in thoughts)
        per_trajectory.append(len(thoughts))
    return {"atomic_tags": dict(tags.most_common()), "distinct_atomic_tags": len(tags),
            "atomic_thoughts_per_trajectory": sum(per_trajectory) / len(per_trajectory) if per_trajectory else 0.0}


def generate_sft_data(rollout: TextRollout, records: Sequence[Any], prompts: Sequence[SystemPrompt], *, k: int,
                      filters: FilterConfig, questions_per_batch: int = 8, seed: int = 0,
                      temperature: float | None = None, progress: bool = True,
                      failure_limits: FailureLimits = FailureLimits()) -> SFTDataResult:
    """k samples per record, filtered (see `filters`); returns the kept trajectories and statistics.
    Raises `TooManyFailures` (with the partial result) past `failure_limits`."""
    if k < 1 or not prompts:
        raise ValueError(f"generate_sft_data needs k >= 1 and at least one system prompt (k={k})")
    fmt, tokenizer = rollout.fmt, rollout.tokenizer
    order = list(prompts)
    random.Random(seed).shuffle(order)
    rejected: collections.Counter = collections.Counter()
    counters: collections.Counter = collections.Counter()
    kept: list[tuple[TextTrajectory, str]] = []
    last_errors: collections.deque = collections.deque(maxlen=3)

    def sft_tokens(t: TextTrajectory) -> int:  # the trained row: the format's prompt, then the trajectory
        prompt = len(tokenizer.encode(fmt.prompt_text(t.record.question, tokenizer), add_special_tokens=False))
        return prompt + sum(len(tokenizer.encode(s, add_special_tokens=False)) for s, _ in t.segments)

    bar = tqdm(total=len(records), desc="teacher rollouts", unit="question", disable=not progress)
    for start in range(0, len(records), questions_per_batch):
        batch = records[start: start + questions_per_batch]
        chosen = [order[(start + i) % len(order)] for i in range(len(batch))]
        systems = [f"{fmt.system_prompt()}\n\n{p.text}" if p.text else fmt.system_prompt() for p in chosen]
        samples = rollout.run(list(zip(batch, systems)), n=k, seed=seed + start, temperature=temperature)
        for q, prompt in enumerate(chosen):
            group = samples[q * k:(q + 1) * k]
            counters["samples"] += len(group)
            counters["generation_errors"] += sum(t.stop_reason == "error" for t in group)
            counters["search_failures"] += sum(t.search_failures for t in group)
            counters["samples_with_search_failures"] += sum(t.search_failures > 0 for t in group)
            last_errors.extend(t.error for t in group if t.error)
            mine, why = filter_question(group, fmt, filters, sft_tokens)
            rejected.update(why)
            kept += [(t, prompt.id) for t in mine]
            counters["questions_with_data"] += bool(mine)
        bar.update(len(batch))
        stopped = _failure_message(counters, failure_limits, last_errors)
        if stopped:
            bar.close()
            partial = _result(start + len(batch), kept, counters, rejected, fmt)
            partial.stats["stopped"] = stopped
            raise TooManyFailures(stopped, partial)
    bar.close()
    return _result(len(records), kept, counters, rejected, fmt)


def _result(questions: int, kept: list[tuple[TextTrajectory, str]], counters: collections.Counter,
            rejected: collections.Counter, fmt: Any) -> SFTDataResult:
    stats = {"questions": questions, "kept": len(kept), **counters,
             "rejected": {reason: rejected.get(reason, 0) for reason in REJECTIONS},
             "system_prompts_used": len({pid for _, pid in kept}),
             **_tag_stats([t for t, _ in kept], fmt)}
    return SFTDataResult(kept, stats, fmt.name)


def write_sft_data(result: SFTDataResult, path: str, extra_stats: dict[str, Any] | None = None) -> None:
    """The kept trajectories as a trajectory file (`data.trajectory_files`) and PATH.stats.json."""
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for t, prompt_id in result.kept:
            row = {"messages": trajectory_messages(t.record.question, t.system_prompt, t.segments, t.tool_contents),
                   "id": t.record.id, "question": t.record.question, "golden_answers": list(t.record.golden_answers),
                   "format": result.format_name, "system_prompt_id": prompt_id, "tool_calls": t.tool_calls,
                   "generated_tokens": t.generated_tokens}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    stats = result.stats | (extra_stats or {})
    epath.Path(f"{path}.stats.json").write_text(json.dumps(stats, indent=2))
