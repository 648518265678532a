"""The world's corpus: one short document per entity stating its facts, plus partial-fact distractors.

Documents use the wire format of `atomsearch_jax.search.documents`: `{"id": str, "contents": '"Title"\\nText'}`.
Distractor documents mention an entity (and some other place) without stating any relation the world
asks about: none of their sentences carries a relation keyword for the types it names, so they add
retrieval noise but no contradicting fact.
"""
from __future__ import annotations

import random

from atomsearch_jax.data.world.graph import KnowledgeGraph
from atomsearch_jax.data.world.relations import RELATIONS

# entity type -> (title suffix, sentence); {e} the entity, {city} / {country} a random one.
PARTIAL_TEMPLATES: dict[str, tuple[str, str]] = {
    "person": ("interview", "In an interview, {e} spoke about a long stay in {city}."),
    "film": ("soundtrack", "The soundtrack of {e} was recorded in {city}."),
    "book": ("review", "A review praised {e} for its ending and its setting in {city}."),
    "company": ("history", "{e} once opened a small office in {city}."),
    "city": ("festival", "Each summer {e} holds a festival with visitors from {country}."),
    "university": ("sports", "The rowing team of {e} won a race in {city}."),
    "country": ("economy", "The economy of {e} depends on trade with {country}."),
}


def make_doc(doc_id: str, title: str, text: str) -> dict[str, str]:
    return {"id": doc_id, "contents": f'"{title}"\n{text}'}


def entity_text(graph: KnowledgeGraph, name: str) -> str:
    """The facts whose head is `name`, one sentence each."""
    return " ".join(RELATIONS[rel].fact_sentence(name, tail) for rel, tail in graph.facts_about(name))


def write_corpus(graph: KnowledgeGraph, partial_fraction: float,
                 rng: random.Random) -> tuple[list[dict[str, str]], dict[str, str]]:
    """(documents, entity name -> id of the document stating its facts). Entity documents come first,
    in entity order; distractors follow."""
    docs: list[dict[str, str]] = []
    doc_of: dict[str, str] = {}
    for name in graph.entities:
        doc_id = f"world-{len(docs)}"
        docs.append(make_doc(doc_id, name, entity_text(graph, name)))
        doc_of[name] = doc_id
    cities, countries = graph.of_type("city"), graph.of_type("country")
    names = list(graph.entities)
    for name in rng.sample(names, round(partial_fraction * len(names))):
        suffix, template = PARTIAL_TEMPLATES[graph.entities[name].type]
        text = template.format(e=name, city=rng.choice(cities),
                               country=rng.choice([c for c in countries if c != name]))
        docs.append(make_doc(f"world-{len(docs)}", f"{name} ({suffix})", text))
    return docs, doc_of
