"""Evaluation of search agents on QA sets: per-set EM / F1 / substring / LLM-judge accuracy, answer rate,
format validity, avg@k / pass@k / maj@k and test-time statistics; the table the papers report.

Used by `python -m atomsearch_jax.evaluate` and by validation during training.
"""
from atomsearch_jax.evaluation.answer_judge import AnswerJudge, AnswerJudgeConfig, Verdict, parse_verdict
from atomsearch_jax.evaluation.at_k import k_values, majority_index, pass_at_k
from atomsearch_jax.evaluation.datasets import EvalDataset, load_datasets
from atomsearch_jax.evaluation.loop import (EvalResult, evaluate_datasets, judge_failure_report, judge_rows,
                                            summarize_rows)
from atomsearch_jax.evaluation.report import render_markdown, write_results
from atomsearch_jax.evaluation.scoring import average, score_sample, summarize

__all__ = ["AnswerJudge", "AnswerJudgeConfig", "EvalDataset", "EvalResult", "Verdict", "average",
           "evaluate_datasets", "judge_failure_report", "judge_rows", "k_values", "load_datasets", "majority_index", "parse_verdict", "pass_at_k",
           "render_markdown", "score_sample", "summarize", "summarize_rows", "write_results"]
