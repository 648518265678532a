"""Counterfactual teacher trajectories: the same reasoning with the world's entity names permuted.

A small policy trained on one fixed world can fit its SFT data by memorising the world's facts and the
most frequent entity of each type instead of reading the question and the search results (measured on
the default job: after SFT the plan names the same city for every "capital of the country of X"
question, on training questions too). A counterfactual copy renames every entity mentioned anywhere in
a trajectory (question, thoughts, queries, retrieved documents, answer) by one random permutation of the
names of each entity type, so its facts contradict the real world and only copying from the context
predicts them. Entities in `keep` (the held-out splits' start entities) are never used as a replacement
name and keep their own, so no held-out question's start entity is ever the start of a training question.
"""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Callable, Collection, Sequence

from atomsearch_jax.data.records import QARecord
from atomsearch_jax.data.world.graph import KnowledgeGraph
from atomsearch_jax.data.world.teacher import TeacherTurn

Renamer = Callable[[str], str]


def held_out_starts(world) -> set[str]:
    """Start entities of the validation and test questions: the names renaming must keep."""
    return {r.metadata["start"] for split in ("validation", "test") for r in world.splits[split]}


class EntityRenaming:
    """Random same-type permutations of a world's entity names, applied to whole words of any text.

    Names in `keep` map to themselves and are never a replacement. Longer names are matched first (a
    university named after its city is renamed as the university)."""

    def __init__(self, graph: KnowledgeGraph, keep: Collection[str] = ()):
        self._fixed = {name: name for name in graph.entities if name in keep}
        by_type: dict[str, list[str]] = {}
        for name, entity in sorted(graph.entities.items()):
            if name not in keep:
                by_type.setdefault(entity.type, []).append(name)
        self._by_type = by_type
        names = sorted(graph.entities, key=len, reverse=True)
        self._pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in names) + r")(?!\w)")

    def sample(self, rng: random.Random) -> Renamer:
        """One random permutation (per entity type) as a text-renaming function."""
        mapping = dict(self._fixed)
        for names in self._by_type.values():
            targets = names[:]
            rng.shuffle(targets)
            mapping.update(zip(names, targets))
        return lambda text: self._pattern.sub(lambda m: mapping[m.group(1)], text)


def rename_turns(turns: Sequence[TeacherTurn], rename: Renamer) -> list[TeacherTurn]:
    """`turns` with every string renamed (thought texts, queries, document contents and titles, answer)."""
    def docs(results):
        return [[{k: rename(v) if isinstance(v, str) and k != "id" else v for k, v in doc.items()} for doc in r]
                for r in results]

    return [dataclasses.replace(
        turn, thoughts=[(tag, rename(text)) for tag, text in turn.thoughts],
        queries=None if turn.queries is None else [rename(q) for q in turn.queries],
        results=None if turn.results is None else docs(turn.results),
        answer=None if turn.answer is None else rename(turn.answer)) for turn in turns]


def rename_record(record: QARecord, rename: Renamer, suffix: str) -> QARecord:
    """`record` with its question, answers and hop chain renamed; id `<id>~<suffix>`."""
    chain = [{k: rename(v) if k in ("head", "tail") else v for k, v in hop.items()}
             for hop in record.metadata.get("chain", [])]
    metadata = {**record.metadata, "chain": chain}
    if "start" in metadata:
        metadata["start"] = rename(metadata["start"])
    supporting = [{k: rename(v) if isinstance(v, str) else v for k, v in p.items()} for p in record.supporting]
    return dataclasses.replace(record, id=f"{record.id}~{suffix}", question=rename(record.question),
                               golden_answers=[rename(a) for a in record.golden_answers], supporting=supporting,
                               metadata=metadata)
