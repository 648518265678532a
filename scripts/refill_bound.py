"""What continuous refill could save over chunk-by-chunk rollouts, from the row lengths of real rollouts.

Reads the per-rollout lines a GRPO run writes (<workdir>/samples/grpo_update_<n>.jsonl: one line per
trajectory, group by group, with `response_tokens` and `sample_index`) and, for each chunk size in
groups, compares per update:

- chunked: the rollout loop's way: chunks of whole groups one after another; a chunk's state decodes
  until its longest row finished, so it costs max(row length) decode steps;
- refill by groups (ideal): a state of the same rows whose group slots take the next pending group as
  soon as every row of their group finished (its prompt prefilled once for the group), list-scheduled;
- refill by rows (ideal): every row slot takes the next pending row as soon as its own row finished (the
  trajectories stay those of one big batch: a row's PRNG stream depends on its global index only).
Both are bounds: prefill is free in them, where real refill pays a prefill call and a host export per
refill.

Lengths are response tokens (generated + inserted): the cache slots a row fills, the decode loop's
clock. Prints the median (min-max) over updates of 1 - refill / chunked (the fraction of the rollout's
decode steps refill could save) and over chunks of the mean/max row length within a chunk.

    python scripts/refill_bound.py runs/default/samples --chunk_groups=1,2,4
"""
from __future__ import annotations

import argparse
import glob
import heapq
import json
import os
import statistics
from typing import Sequence


def read_updates(directory: str) -> dict[str, list[tuple[int, int]]]:
    """{file name: [(sample_index, response_tokens), ...] in file order} of every samples file."""
    paths = sorted(glob.glob(os.path.join(directory, "grpo_update_*.jsonl")))
    if not paths:
        raise SystemExit(f"{directory}: no grpo_update_*.jsonl files (the samples directory of a GRPO run)")
    updates = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        updates[os.path.basename(path)] = [(int(r["sample_index"]), int(r["response_tokens"])) for r in rows]
    return updates


def group_lengths(rows: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Row lengths split into groups (a group starts where sample_index is 0)."""
    groups: list[list[int]] = []
    for sample, length in rows:
        if sample == 0 or not groups:
            groups.append([])
        groups[-1].append(length)
    return groups


def chunked_steps(groups: Sequence[Sequence[int]], chunk_groups: int) -> int:
    """Decode steps of chunk-by-chunk rollouts: each chunk runs as long as its longest row."""
    return sum(max(max(g) for g in groups[i:i + chunk_groups]) for i in range(0, len(groups), chunk_groups))


def _list_schedule(durations: Sequence[int], slots: int) -> int:
    """When the last job ends if each job, in order, takes the slot that frees first."""
    free_at = [0] * min(slots, len(durations))
    heapq.heapify(free_at)
    end = 0
    for d in durations:
        done = heapq.heappop(free_at) + d
        end = max(end, done)
        heapq.heappush(free_at, done)
    return end


def refill_steps(groups: Sequence[Sequence[int]], chunk_groups: int) -> int:
    """Decode steps of ideal group-wise refill: chunk_groups group slots, each taking the next pending group
    when its group's longest row finished (the group's prompt prefilled once for its rows)."""
    return _list_schedule([max(g) for g in groups], chunk_groups)


def refill_rows_steps(groups: Sequence[Sequence[int]], chunk_groups: int) -> int:
    """Decode steps of ideal row-wise refill: every row slot of the state takes the next pending row as
    soon as its row finished (a refilled row's prompt prefilled for it alone)."""
    return _list_schedule([x for g in groups for x in g], chunk_groups * len(groups[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples_dir")
    ap.add_argument("--chunk_groups", default="1,2,4", help="comma-separated chunk sizes in groups")
    args = ap.parse_args()
    updates = read_updates(args.samples_dir)
    sizes = [int(s) for s in args.chunk_groups.split(",")]
    groups_per_update = {name: group_lengths(rows) for name, rows in updates.items()}
    some = next(iter(groups_per_update.values()))
    print(f"{len(updates)} updates, {len(some)} groups of {len(some[0])} rows each (first update)")
    for size in sizes:
        by_group, by_row, fills = [], [], []
        for groups in groups_per_update.values():
            chunked = chunked_steps(groups, size)
            by_group.append(1.0 - refill_steps(groups, size) / chunked)
            by_row.append(1.0 - refill_rows_steps(groups, size) / chunked)
            for i in range(0, len(groups), size):
                lengths = [x for g in groups[i:i + size] for x in g]
                fills.append(statistics.mean(lengths) / max(lengths))
        print(f"chunk of {size} groups: refill saves {_spread(by_group)} of the decode steps by groups, "
              f"{_spread(by_row)} by rows; mean/max row length in a chunk {_spread(fills)}")


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


if __name__ == "__main__":
    main()
