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
from typing import Callable, Collection, Iterable, Sequence

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
    university named after its city is renamed as the university).

    words=True permutes the words of multi-word names instead, per entity type and word position (first
    names among first names, last names among last names, title nouns among title nouns, ...), over the
    words of every entity, kept ones included: a renamed person is then a new combination of known words
    ("Sidul Kumes"), so the second word of a name can only be predicted by copying it, not recalled as
    the completion of the first. Single-word names (cities, countries) are permuted whole among the
    unkept names as before. A kept full name is still never produced: `sample` with the names a text
    mentions draws again until none of them maps onto a kept name or onto another's replacement.
    """

    MAX_DRAWS = 1000

    def __init__(self, graph: KnowledgeGraph, keep: Collection[str] = (), *, words: bool = False):
        self._keep = frozenset(name for name in graph.entities if name in keep)
        self._words = words
        by_type: dict[str, list[str]] = {}
        for name, entity in sorted(graph.entities.items()):
            if name not in self._keep:
                by_type.setdefault(entity.type, []).append(name)
        self._by_type = by_type
        self._word_pools: dict[tuple[str, int, int], list[str]] = {}
        if words:
            for name, entity in sorted(graph.entities.items()):
                parts = name.split()
                for i, word in enumerate(parts if len(parts) > 1 else ()):
                    pool = self._word_pools.setdefault((entity.type, len(parts), i), [])
                    if word not in pool:
                        pool.append(word)
        self._types = {name: (entity.type, len(name.split())) for name, entity in graph.entities.items()}
        names = sorted(graph.entities, key=len, reverse=True)
        self._pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in names) + r")(?!\w)")

    def mentions(self, texts: Iterable[str]) -> set[str]:
        """The entity names the texts mention (whole names, longest first)."""
        return {m.group(1) for text in texts for m in self._pattern.finditer(text)}

    def _mapping(self, rng: random.Random) -> dict[str, str]:
        mapping = {name: name for name in self._keep}
        word_maps = {}
        for key, pool in self._word_pools.items():
            targets = pool[:]
            rng.shuffle(targets)
            word_maps[key] = dict(zip(pool, targets))
        for entity_type, names in self._by_type.items():
            whole = [n for n in names if not (self._words and self._types[n][1] > 1)]
            targets = whole[:]
            rng.shuffle(targets)
            mapping.update(zip(whole, targets))
            for name in names:
                parts = name.split()
                if self._words and len(parts) > 1:
                    mapping[name] = " ".join(word_maps[(entity_type, len(parts), i)][w] for i, w in enumerate(parts))
        return mapping

    def sample(self, rng: random.Random, names: Collection[str] = ()) -> Renamer:
        """One random renaming as a text-renaming function. `names`: the entities the renamed text mentions;
        the renaming is drawn again until it maps them one-to-one and none of the unkept ones onto a kept
        name (always so for whole-name permutations)."""
        for _ in range(self.MAX_DRAWS):
            mapping = self._mapping(rng)
            images = [mapping[n] for n in names]
            if len(set(images)) == len(images) and not any(
                    mapping[n] in self._keep for n in names if n not in self._keep):
                return lambda text: self._pattern.sub(lambda m: mapping[m.group(1)], text)
        raise RuntimeError(f"no renaming of {sorted(names)} avoids the kept names in {self.MAX_DRAWS} draws")


def trajectory_texts(record: QARecord, turns: Sequence[TeacherTurn]) -> list[str]:
    """Every string of a record and its teacher turns that renaming rewrites (see rename_record, rename_turns)."""
    texts = [record.question, *record.golden_answers]
    for turn in turns:
        texts += [text for _, text in turn.thoughts] + list(turn.queries or []) + ([turn.answer] if turn.answer else [])
        texts += [v for docs in turn.results or [] for doc in docs for k, v in doc.items() if isinstance(v, str) and k != "id"]
    return texts


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
