"""The evaluation loop: rollouts of every question of every set (n samples each), scored, judged.

    result = evaluate_datasets(runner, datasets, n=1, judge=None)
    result.summaries["hotpotqa"]["f1"], result.average["f1"], result.rows[0]["samples"][0]["answer"]

Questions of all sets are pooled into fixed-size rollout batches (sets smaller than a batch share one).
On a multi-process job each process evaluates its contiguous share of the pooled questions on its own
devices (sample r of question i draws from the PRNG stream of global row i * n + r, whatever the
split) and the rows of all processes are gathered, so every process returns the whole result.
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


def evaluate_datasets(runner: RolloutRunner, datasets: Sequence[EvalDataset], *, n: int = 1,
                      temperature: float = 0.0, rows_per_batch: int = 32, seed: int = 0,
                      judge: AnswerJudge | None = None, progress: bool = True) -> EvalResult:
    """n rollouts per question (greedy when temperature is 0 and n is 1), at most `rows_per_batch`
    rollouts per engine batch; returns every question's rows and their summaries (every process of a
    multi-process job must call it)."""
    if n < 1 or rows_per_batch < 1:
        raise ValueError(f"evaluation needs n >= 1 and rows_per_batch >= 1, got {n}, {rows_per_batch}")
    pooled = [(d.name, r) for d in datasets for r in d.records]
    first, last = process_bounds(len(pooled))
    mine = [(i, name, r) for i, (name, r) in enumerate(pooled)][first:last]
    per_batch = max(1, rows_per_batch // n)
    rows: list[dict[str, Any]] = []
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
        if judge is not None:
            judge_rows(judge, batch_rows)
        rows += batch_rows
        bar.update(len(batch))
    bar.close()
    return summarize_rows(gather_objects(rows), [d.name for d in datasets])
