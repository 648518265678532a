"""The synthetic world: build time, tokenizer training, BM25 hit rate, teacher and judge throughput, token lengths.

    python scripts/bench_world.py [--scales 1 3 10]

For each world scale (entity counts x scale): build time, size, BM25 index time and the share of teacher
queries whose document is in the top 1 / top 3, teacher trajectories per second (BM25 searches
included) and oracle-judge trajectories per second. For the default world: tokenizer training time,
vocabulary, and token lengths (prompt, teacher trajectory) per agent format.
Last line: RESULT world build_s=… tokenizer_s=… hit3=… traj_tokens_mean=…
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import best_time, print_table, probe_machine  # noqa: E402

from atomsearch_jax.data.world import build_world, scaled_config  # noqa: E402
from atomsearch_jax.data.world.measure import teacher_query_hit_rate, token_lengths  # noqa: E402
from atomsearch_jax.data.world.oracle import OracleJudge  # noqa: E402
from atomsearch_jax.data.world.teacher import teacher_trajectory  # noqa: E402
from atomsearch_jax.data.world.tokenizer import train_tokenizer  # noqa: E402
from atomsearch_jax.formats import FORMATS, get_format  # noqa: E402
from atomsearch_jax.search import BM25Retriever  # noqa: E402


def world_row(scale: float) -> list:
    cfg = scaled_config(scale)
    build_s = best_time(lambda: build_world(cfg))
    world = build_world(cfg)
    t0 = time.perf_counter()
    retriever = BM25Retriever.from_documents(world.corpus)
    index_s = time.perf_counter() - t0
    fmt = get_format("atom_searcher")
    records = world.splits["train"][:200]
    t0 = time.perf_counter()
    texts = [teacher_trajectory(r, fmt, retriever) for r in records]
    teacher_rate = len(records) / (time.perf_counter() - t0)
    judge = OracleJudge(world)
    thoughts = [fmt.atomic_thoughts(t) for t in texts]
    t0 = time.perf_counter()
    for record, ts in zip(records, thoughts):
        judge.score(record.question, ts, record.golden_answers)
    judge_rate = len(records) / (time.perf_counter() - t0)
    return [scale, len(world.corpus), len(world.records()), build_s, index_s,
            teacher_query_hit_rate(world, retriever, 1), teacher_query_hit_rate(world, retriever, 3),
            teacher_rate, judge_rate]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    args = parser.parse_args()
    print(probe_machine().line(), flush=True)

    rows = [world_row(scale) for scale in args.scales]
    print_table(["scale", "docs", "questions", "build s", "bm25 index s", "hit@1", "hit@3", "teacher traj/s",
                 "judge traj/s"], rows)

    from transformers import AutoTokenizer

    world = build_world()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_s = best_time(lambda: train_tokenizer(world, tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    retriever = BM25Retriever.from_documents(world.corpus)
    lengths = token_lengths(world, tokenizer, retriever, sorted(FORMATS))
    print(f"\ntokenizer: trained in {tokenizer_s:.3f} s, vocabulary {len(tokenizer)}")
    print_table(["format", "prompt mean", "prompt max", "trajectory mean", "trajectory min", "trajectory max",
                 "total max"],
                [[name, s["prompt"]["mean"], s["prompt"]["max"], s["trajectory"]["mean"], s["trajectory"]["min"],
                  s["trajectory"]["max"], s["total"]["max"]] for name, s in lengths.items()])
    default = rows[[r[0] for r in rows].index(1.0)] if 1.0 in args.scales else world_row(1.0)
    traj_mean = sum(s["trajectory"]["mean"] for s in lengths.values()) / len(lengths)
    print(f"RESULT world build_s={default[3]:.4f} tokenizer_s={tokenizer_s:.3f} hit3={default[6]:.4f} "
          f"traj_tokens_mean={traj_mean:.1f}")


if __name__ == "__main__":
    main()
