"""Multi-hop questions over the knowledge graph, and their leak-free train/validation/test split.

A question follows a relation path from a start entity (`QUESTION_PATHS`); its text composes the
relations' noun phrases ("What is the country of the birthplace of the director of Glass Harbor?"), its
answer is the last tail, and its metadata holds the hop chain: one `{"head", "relation", "tail",
"doc_id"}` per hop, `doc_id` being the document that states that hop's fact.
"""
from __future__ import annotations

import random

from atomsearch_jax.data.records import QARecord
from atomsearch_jax.data.world.config import WorldConfig
from atomsearch_jax.data.world.corpus import entity_text
from atomsearch_jax.data.world.graph import KnowledgeGraph
from atomsearch_jax.data.world.relations import QUESTION_PATHS, RELATIONS

SOURCE = "world"


def question_text(start: str, path: tuple[str, ...]) -> str:
    phrase = start
    for relation in path:
        phrase = RELATIONS[relation].noun_phrase(phrase)
    wh = "Who" if RELATIONS[path[-1]].tail_type == "person" else "What"
    return f"{wh} is {phrase}?"


def follow(graph: KnowledgeGraph, start: str, path: tuple[str, ...]) -> list[tuple[str, str, str]] | None:
    """The hops (head, relation, tail) of `path` from `start`, or None when a fact is missing or the
    chain revisits an entity (the answer must not be named in the question or reached twice)."""
    hops, seen, head = [], {start}, start
    for relation in path:
        tail = graph.tail(head, relation)
        if tail is None or tail in seen:
            return None
        hops.append((head, relation, tail))
        seen.add(tail)
        head = tail
    return hops


def generate_questions(graph: KnowledgeGraph, doc_of: dict[str, str], cfg: WorldConfig) -> list[QARecord]:
    """Every question of the configured hop counts, in entity then path order (ids world-q0, ...)."""
    records = []
    for start, entity in graph.entities.items():
        for path in QUESTION_PATHS:
            if len(path) not in cfg.hops or RELATIONS[path[0]].head_type != entity.type:
                continue
            hops = follow(graph, start, path)
            if hops is None:
                continue
            chain = [{"head": h, "relation": r, "tail": t, "doc_id": doc_of[h]} for h, r, t in hops]
            records.append(QARecord(
                id=f"world-q{len(records)}", question=question_text(start, path), golden_answers=[hops[-1][2]],
                source=SOURCE,
                supporting=[{"title": h, "text": entity_text(graph, h), "is_supporting": True} for h, _, _ in hops],
                metadata={"hops": len(hops), "path": list(path), "start": start, "chain": chain}))
    return records


def split_by_start_entity(records: list[QARecord], cfg: WorldConfig,
                          rng: random.Random) -> dict[str, list[QARecord]]:
    """train / validation / test with every start entity in exactly one split (so no question, and no
    first hop, is shared across splits). Held-out splits are filled entity by entity until they reach
    their fraction of the questions."""
    if cfg.max_questions is not None and len(records) > cfg.max_questions:
        keep = set(rng.sample(range(len(records)), cfg.max_questions))
        records = [r for i, r in enumerate(records) if i in keep]
    by_start: dict[str, list[QARecord]] = {}
    for record in records:
        by_start.setdefault(record.metadata["start"], []).append(record)
    starts = list(by_start)
    rng.shuffle(starts)
    targets = {"test": cfg.test_fraction * len(records), "validation": cfg.validation_fraction * len(records)}
    splits: dict[str, list[QARecord]] = {"train": [], "validation": [], "test": []}
    for start in starts:
        split = next((s for s, target in targets.items() if len(splits[s]) < target), "train")
        splits[split].extend(by_start[start])
    for split in splits.values():
        split.sort(key=lambda r: int(r.id.removeprefix("world-q")))
    return splits


def split_off_starts(records: list[QARecord], fraction: float, rng: random.Random) -> tuple[list[QARecord], list[QARecord]]:
    """(kept, split_off): whole start entities moved to `split_off`, in `rng`'s order, until it holds
    `fraction` of the questions (so the two share no question and no first hop). Order within each is kept."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction of questions to split off must be in [0, 1), got {fraction}")
    starts = sorted({r.metadata["start"] for r in records})
    rng.shuffle(starts)
    target, moved, count = fraction * len(records), set(), 0
    per_start = {s: sum(r.metadata["start"] == s for r in records) for s in starts}
    for start in starts:
        if count >= target:
            break
        moved.add(start)
        count += per_start[start]
    return ([r for r in records if r.metadata["start"] not in moved],
            [r for r in records if r.metadata["start"] in moved])
