"""The evaluation loop: rollouts of every question of every set (n samples each), scored, judged.

    result = evaluate_datasets(runner, datasets, n=1, judge=None)
    result.summaries["hotpotqa"]["f1"], result.average["f1"], result.rows[0]["samples"][0]["answer"]

Questions of all sets are pooled into fixed-size rollout batches (sets smaller than a batch share one).
On a multi-process job each process evaluates its contiguous share of the pooled questions on its own
devices (sample r of question i draws from the PRNG stream of global row i * n + r, whatever the
split) and the rows of all processes are gathered, so every process returns the whole result.

Judge failures are recorded per sample (`judge_error`). Once more than `max_judge_failure_rate` of the
answers a process sent to the judge failed, that process stops asking it (rollouts go on; its later
answers get the error "judge not asked: …"); `judge_failure_report` then says why the run should fail.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from tqdm import tqdm

from atomsearch_jax.agent import RolloutRunner
from atomsearch_jax.evaluation.answer_judge import AnswerJudge
from atomsearch_jax.evaluation.datasets import EvalDataset
from atomsearch_jax.evaluation.scoring import average, score_sample, summarize
from atomsearch_jax.parallel.multihost import gather_objects, process_bounds


@dataclasses.dataclass
class EvalResult:
    """rows: one per question (see `scoring`), in set order; summaries: metrics per set name;
    average: the unweighted mean over sets."""

    rows: list[dict[str, Any]]
    summaries: dict[str, dict[str, Any]]
    average: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"datasets": self.summaries, "average": self.average}


def summarize_rows(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> EvalResult:
    """Groups rows by their dataset (in the order of `names`) and summarizes each and their average."""
    summaries = {name: summarize([r for r in rows if r["dataset"] == name]) for name in names}
    summaries = {name: s for name, s in summaries.items() if s["n"]}
    return EvalResult(list(rows), summaries, average(summaries))


def judge_rows(judge: AnswerJudge, rows: Sequence[dict[str, Any]]) -> None:
    """Sets every sample's judge verdict (None on failure) and judge_error in place."""
    samples = [(row, s) for row in rows for s in row["samples"]]
    verdicts = judge.judge([(row["question"], row["golden_answers"], s["answer"]) for row, s in samples])
    for (_, sample), verdict in zip(samples, verdicts):
        sample["judge"], sample["judge_error"] = verdict.correct, verdict.error


NOT_ASKED = "judge not asked: "  # the judge_error of answers kept from a judge that failed too often


def _answered(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for row in rows for s in row["samples"] if s["answer"] is not None]


def _skip_judge(rows: Sequence[dict[str, Any]], reason: str) -> None:
    """The verdicts of a judge that is no longer asked: unanswered samples are incorrect as always,
    answered ones failures with `reason`."""
    for row in rows:
        for sample in row["samples"]:
            answered = sample["answer"] is not None
            sample["judge"], sample["judge_error"] = (None, reason) if answered else (False, None)


def judge_failure_report(rows: Sequence[dict[str, Any]], max_rate: float) -> str | None:
    """Why the run failed when more than `max_rate` of the answers got no verdict (failed, or no longer
    asked), naming the judge's last errors; None otherwise."""
    answered = _answered(rows)
    errors = [s["judge_error"] for s in answered if s["judge_error"] is not None]
    if len(errors) <= max_rate * len(answered):
        return None
    seen = [e for e in errors if not e.startswith(NOT_ASKED)]
    report = (f"the answer judge failed on {len(errors)} of {len(answered)} answers "
              f"({len(errors) / len(answered):.0%} > max judge failure rate {max_rate:.0%})")
    if len(seen) < len(errors):
        report += f", {len(errors) - len(seen)} of them not asked after it had failed too often"
    return report + f"; last errors: {list(dict.fromkeys(reversed(seen)))[:3]}"


def evaluate_datasets(runner: RolloutRunner, datasets: Sequence[EvalDataset], *, n: int = 1,
                      temperature: float = 0.0, rows_per_batch: int = 32, seed: int = 0,
                      judge: AnswerJudge | None = None, max_judge_failure_rate: float = 1.0,
                      progress: bool = True) -> EvalResult:
    """n rollouts per question (greedy when temperature is 0 and n is 1), at most `rows_per_batch`
    rollouts per engine batch; returns every question's rows and their summaries (every process of a
    multi-process job must call it). The judge is no longer asked once this process's failure rate
    passes `max_judge_failure_rate` (module docstring)."""
    if n < 1 or rows_per_batch < 1:
        raise ValueError(f"evaluation needs n >= 1 and rows_per_batch >= 1, got {n}, {rows_per_batch}")
    pooled = [(d.name, r) for d in datasets for r in d.records]
    first, last = process_bounds(len(pooled))
    mine = [(i, name, r) for i, (name, r) in enumerate(pooled)][first:last]
    per_batch = max(1, rows_per_batch // n)
    rows: list[dict[str, Any]] = []
    judge_stopped: str | None = None
    bar = tqdm(total=len(mine), desc="evaluating", unit="question", disable=not progress)
    for start in range(0, len(mine), per_batch):
        batch = mine[start: start + per_batch]
        trajectories = runner.run([r for _, _, r in batch], n=n, seed=seed, temperature=temperature,
                                  first_record=batch[0][0])
        batch_rows = []
        for q, (_, name, record) in enumerate(batch):
            samples = [score_sample(t, runner.fmt, runner.tokenizer) for t in trajectories[q * n:(q + 1) * n]]
            batch_rows.append({"dataset": name, "id": record.id, "question": record.question,
                               "golden_answers": list(record.golden_answers), "samples": samples})
        if judge is not None and judge_stopped:
            _skip_judge(batch_rows, judge_stopped)
        elif judge is not None:
            judge_rows(judge, batch_rows)
            report = judge_failure_report(rows + batch_rows, max_judge_failure_rate)
            judge_stopped = report and NOT_ASKED + report
        rows += batch_rows
        bar.update(len(batch))
    bar.close()
    return summarize_rows(gather_objects(rows), [d.name for d in datasets])
