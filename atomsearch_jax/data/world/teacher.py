"""Teacher trajectories: how a careful agent answers a world question, in any agent format.

The teacher follows the question's hop chain with real searches: it plans the hops, searches each one
with a sensible query, reads the fact from the retrieved document, and finally verifies the whole chain
before answering. Atomic thoughts: PLAN, ACTION, OBSERVATION, REFLECTION (after a search that missed),
VERIFICATION. If the document a hop needs is not in the results, it reflects and searches again with a
shorter query; after `max_attempts` misses on one hop it gives up (`TeacherSearchMiss`) rather than
teach an answer the results do not support.

`teacher_turns` builds the format-free structure; `render_trajectory` writes it with a format's
`render_turn` / `render_results`; `teacher_trajectory` does both (the `formats.AgentFormat` contract).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from atomsearch_jax.data.records import QARecord
from atomsearch_jax.data.world.relations import RELATIONS

if TYPE_CHECKING:
    from atomsearch_jax.formats import AgentFormat

Hop = Mapping[str, str]  # {"head", "relation", "tail", "doc_id"}
QUESTION_PLAN = "To answer, I will search the question itself, then follow the facts one at a time."


class RetrieverLike(Protocol):
    """What the teacher needs from a retriever (atomsearch_jax.search.Retriever has it): one result per
    query, each with `.docs` (`{"id", "contents"}` dicts) and `.error` (None on success)."""

    def search(self, queries: Sequence[str], topk: int) -> list[Any]: ...


class TeacherSearchMiss(RuntimeError):
    """The retriever never returned the document a hop needs."""


@dataclasses.dataclass
class TeacherTurn:
    """One model turn: thoughts (tag, text), then either a search (`queries`, with the `results` the
    retriever returned, one doc list per query) or the `answer`."""

    thoughts: list[tuple[str, str]]
    queries: list[str] | None = None
    results: list[list[dict]] | None = None
    answer: str | None = None


def _plan(chain: Sequence[Hop], graph_types: Sequence[str]) -> str:
    steps = [RELATIONS[chain[0]["relation"]].noun_phrase(chain[0]["head"])]
    for hop, head_type in zip(chain[1:], graph_types[1:]):
        steps.append(RELATIONS[hop["relation"]].noun_phrase(f"that {head_type}"))
    return "To answer, I will find " + ", then ".join(steps) + "."


def _path_types(chain: Sequence[Hop]) -> list[str]:
    return [RELATIONS[chain[0]["relation"]].head_type] + [RELATIONS[h["relation"]].tail_type for h in chain]


def _search(retriever: RetrieverLike, query: str, topk: int) -> list[dict]:
    result = retriever.search([query], topk)[0]
    return [] if getattr(result, "error", None) else list(result.docs)


def _search_hop(retriever: RetrieverLike, hop: Hop, first_thoughts: list[tuple[str, str]], topk: int,
                max_attempts: int, record_id: str, first_query: str | None = None) -> list[TeacherTurn]:
    """Turns searching for one hop's document: the first with `first_thoughts`, retries with a reflection.
    first_query: tried before the hop's own queries (one more attempt)."""
    relation = RELATIONS[hop["relation"]]
    queries = [relation.search_query(hop["head"]), f"{hop['head']} {relation.keywords[0]}"]
    if first_query is not None:
        queries, max_attempts = [first_query] + queries, max_attempts + 1
    turns = []
    thoughts = list(first_thoughts)
    for attempt in range(max_attempts):
        query = queries[min(attempt, len(queries) - 1)]
        docs = _search(retriever, query, topk)
        turns.append(TeacherTurn(thoughts=thoughts, queries=[query], results=[docs]))
        if any(doc.get("id") == hop["doc_id"] for doc in docs):
            return turns
        phrase = relation.noun_phrase(hop["head"])
        thoughts = [("REFLECTION", f"The results do not state {phrase}. I will search again with a shorter query.")]
    raise TeacherSearchMiss(f"{record_id}: no search returned {hop['doc_id']} ({hop['head']} {hop['relation']}) "
                            f"in the top {topk} after {max_attempts} attempt(s)")


def teacher_turns(record: QARecord, retriever: RetrieverLike, *, topk: int = 3, max_attempts: int = 2,
                  chain: Sequence[Hop] | None = None, sentence_answer: bool = False,
                  question_query: bool = False, answer_after: int | None = None) -> list[TeacherTurn]:
    """The teacher's turns for `record`, following `chain` (default: the record's true hop chain;
    a corrupted chain gives a corrupted but equally fluent trajectory). sentence_answer: the final answer
    is the last hop's fact as a sentence ("The capital of Zovomark is Lunar.") instead of the bare entity,
    as LLM-written trajectories often answer: right, but word-F1 0.25-0.4 and EM 0. question_query: the
    first search is the question itself, after a plan that names no entity (the other strategy agents
    write: the first hop's entity is then read from the results instead of copied from the question; if
    the results miss it, the teacher reflects and searches the hop's own query). answer_after: follow only
    the first `answer_after` hops and answer the last one's tail, after a plan that names the whole chain:
    a teacher that plans the right route and stops early (its trajectory matches the faithful one up to
    the thought after the first observation)."""
    chain = list(chain if chain is not None else record.metadata["chain"])
    if not chain:
        raise ValueError(f"{record.id}: empty hop chain")
    if answer_after is not None and not 1 <= answer_after <= len(chain):
        raise ValueError(f"{record.id}: answer_after={answer_after} is not in [1, {len(chain)}] (hops of the chain)")
    followed = chain[:answer_after] if answer_after is not None else chain
    turns: list[TeacherTurn] = []
    first = RELATIONS[chain[0]["relation"]].noun_phrase(chain[0]["head"])
    if question_query:
        thoughts = [("PLAN", QUESTION_PLAN), ("ACTION", "Search for the question.")]
    else:
        thoughts = [("PLAN", _plan(chain, _path_types(chain))), ("ACTION", f"Search for {first}.")]
    for i, hop in enumerate(followed):
        turns.extend(_search_hop(retriever, hop, thoughts, topk, max_attempts, record.id,
                                 first_query=record.question if question_query and i == 0 else None))
        observation = ("OBSERVATION", RELATIONS[hop["relation"]].fact_sentence(hop["head"], hop["tail"]))
        if i + 1 < len(followed):
            need = RELATIONS[chain[i + 1]["relation"]].noun_phrase(hop["tail"])
            thoughts = [observation, ("PLAN", f"Next I need {need}."), ("ACTION", f"Search for {need}.")]
    facts = " ".join(RELATIONS[h["relation"]].fact_sentence(h["head"], h["tail"]) for h in followed)
    answer = followed[-1]["tail"]
    stated = RELATIONS[followed[-1]["relation"]].fact_sentence(followed[-1]["head"], answer) if sentence_answer else answer
    turns.append(TeacherTurn(thoughts=[observation, ("VERIFICATION", f"{facts} So the answer is {answer}.")],
                             answer=stated))
    return turns


def render_trajectory(turns: Sequence[TeacherTurn], fmt: "AgentFormat", *,
                      max_chars_per_doc: int | None = None) -> str:
    """The response text after the prompt: each turn as `fmt` writes it, each search followed by the
    environment's insertion of its results."""
    parts = []
    for turn in turns:
        if turn.queries is not None:
            parts.append(fmt.render_turn(turn.thoughts, queries=turn.queries))
            parts.append(fmt.render_results(turn.results, max_chars_per_doc=max_chars_per_doc))
        else:
            parts.append(fmt.render_turn(turn.thoughts, answer=turn.answer))
    return "".join(parts)


def teacher_trajectory(record: QARecord, fmt: "AgentFormat", retriever: RetrieverLike, *, topk: int = 3,
                       max_attempts: int = 2) -> str:
    """The teacher's response to `record` in `fmt` (text after the prompt, environment blocks rendered
    by `fmt`, no end-of-turn token). Raises `TeacherSearchMiss` if retrieval never finds a hop's document."""
    return render_trajectory(teacher_turns(record, retriever, topk=topk, max_attempts=max_attempts), fmt)
