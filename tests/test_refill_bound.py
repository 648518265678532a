"""scripts/refill_bound.py: decode steps of chunk-by-chunk rollouts vs ideal group-wise refill."""
from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
import refill_bound  # noqa: E402


def test_chunked_and_refill_steps_by_hand():
    groups = [[10, 2], [3, 4], [5, 1], [2, 2]]  # longest rows 10, 4, 5, 2
    # chunks of 2 groups: max(10, 4) + max(5, 2)
    assert refill_bound.chunked_steps(groups, 2) == 15
    # two group slots: slot A runs 10; slot B runs 4, then 5 (ends at 9), then 2 (ends at 11)
    assert refill_bound.refill_steps(groups, 2) == 11
    # one group per state: nothing to refill, both are the sum
    assert refill_bound.chunked_steps(groups, 1) == refill_bound.refill_steps(groups, 1) == 21
    # every group in one state: both are the longest row
    assert refill_bound.chunked_steps(groups, 4) == refill_bound.refill_steps(groups, 4) == 10


def test_reads_groups_from_samples_files(tmp_path):
    rows = [(0, 7), (1, 3), (0, 2), (1, 9)]
    with open(tmp_path / "grpo_update_0001.jsonl", "w") as f:
        for sample, length in rows:
            f.write(json.dumps({"sample_index": sample, "response_tokens": length, "response": "x"}) + "\n")
    updates = refill_bound.read_updates(str(tmp_path))
    assert refill_bound.group_lengths(updates["grpo_update_0001.jsonl"]) == [[7, 3], [2, 9]]


def test_row_wise_refill_fills_the_slots_a_long_row_leaves():
    groups = [[10, 2], [3, 4], [5, 1], [2, 2]]
    # 4 row slots: 10 | 2 -> 5 (ends 7) | 3 -> 1 (4) -> 2 (6) | 4 -> 2 (6): the long row alone sets the end
    assert refill_bound.refill_rows_steps(groups, 2) == 10
    # 2 row slots: 10 -> 1 (11) -> 2 (13) -> 2 (15) | 2 -> 3 (5) -> 4 (9) -> 5 (14)
    assert refill_bound.refill_rows_steps(groups, 1) == 15
