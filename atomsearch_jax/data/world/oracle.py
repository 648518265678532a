"""OracleJudge: scores each atomic thought against the world's facts (the stand-in for the LLM RRM).

How a thought is read:
  * entity mentions: every world entity name found in the text (longest names first, whole words);
  * claims: in each sentence, the first-mentioned entity paired with every other mention, and each
    pair of adjacent mentions; a pair *claims* a relation when the entity types fit the relation and
    one of its keywords appears in the sentence outside the entity names ("born", "directed", ...);
  * an answer statement: "... answer is X".
The entities that matter are those of the question's hop chain (looked up in the world; for a question
the world does not know, the entities it names plus everything reachable from them in three hops).

Scores (one per thought, in [0, 1]):
  SCORE_FALSE          a claim the world contradicts (hallucinated fact, wrong bridge entity),
                       or an answer statement that is not a golden answer;
  SCORE_OFF_CHAIN      no claim, but it names entities off the chain (pursuing the wrong entity);
  SCORE_TRUE_IRRELEVANT  only true claims, none linking two chain entities;
  SCORE_GENERIC        names no entity at all (filler);
  SCORE_RELEVANT       true claims about the chain, a correct answer statement, or a plan/query
                       naming only chain entities.
The trajectory's first PLAN thought is its route: when it names chain entities but leaves out a hop of the
question's chain (no keyword of that hop's relation outside the entity names: "I will find the country of
Loza." for the capital of the country of Loza), it scores SCORE_PARTIAL_PLAN instead of SCORE_RELEVANT. An
RRM reading the plan against the question would not call a route that stops at the bridge entity right;
scored right, it made an agent that stops early look as sound as one that searches on (BENCHMARKS.md).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from atomsearch_jax.data.world.relations import RELATIONS, relations_between
from atomsearch_jax.data.world.world import World

SCORE_FALSE = 0.0
SCORE_OFF_CHAIN = 0.2
SCORE_TRUE_IRRELEVANT = 0.3
SCORE_GENERIC = 0.5
SCORE_RELEVANT = 1.0
SCORE_PARTIAL_PLAN = 0.2

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_ANSWER_STATEMENT = re.compile(r"\banswer is\s+(.+?)\s*[.!]?\s*$", re.IGNORECASE)
_FALLBACK_DEPTH = 3


@dataclasses.dataclass(frozen=True)
class Claim:
    head: str
    relation: str
    tail: str
    holds: bool


@dataclasses.dataclass(frozen=True)
class ThoughtAssessment:
    """Why a thought got its score: the claims read from it, the entities it names, and the verdict."""

    score: float
    reason: str
    claims: tuple[Claim, ...]
    mentions: tuple[str, ...]


def _answer_key(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _thought_text(thought) -> str:
    return thought.text if hasattr(thought, "text") else thought[1]


def _thought_tag(thought) -> str:
    return thought.tag if hasattr(thought, "tag") else thought[0]


class OracleJudge:
    """`score(question, thoughts, golden_answers) -> list[float]`, one score per thought."""

    def __init__(self, world: World):
        self._world = world
        self._graph = world.graph
        names = sorted(self._graph.entities, key=len, reverse=True)
        self._mention = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)")
        self._keywords = {name: rel.keyword_pattern() for name, rel in RELATIONS.items()}

    # -- reading text ----------------------------------------------------------------------------------
    def mentions(self, text: str) -> list[re.Match]:
        return list(self._mention.finditer(text))

    def claims(self, sentence: str) -> list[Claim]:
        """The relation claims one sentence makes (see the module docstring)."""
        found = self.mentions(sentence)
        if len(found) < 2:
            return []
        masked = self._mention.sub(" ", sentence)
        names = [m.group(0) for m in found]
        pairs = [(names[0], other) for other in names[1:]] + list(zip(names, names[1:]))
        claims, seen = [], set()
        for a, b in pairs:
            if a == b:
                continue
            types = (self._graph.entities[a].type, self._graph.entities[b].type)
            for relation, a_is_head in relations_between(*types):
                head, tail = (a, b) if a_is_head else (b, a)
                key = (head, relation.name, tail)
                if key in seen or not self._keywords[relation.name].search(masked):
                    continue
                seen.add(key)
                claims.append(Claim(head, relation.name, tail, self._graph.holds(head, relation.name, tail)))
        return claims

    def chain_entities(self, question: str) -> set[str]:
        """Entities the question's answer depends on (see the module docstring)."""
        record = self._world.record_for(question)
        if record is not None:
            chain = record.metadata["chain"]
            return {hop["head"] for hop in chain} | {hop["tail"] for hop in chain}
        frontier = {m.group(0) for m in self.mentions(question)}
        reachable = set(frontier)
        for _ in range(_FALLBACK_DEPTH):
            frontier = {self._graph.facts[(h, r)] for h in frontier for r, _ in self._graph.facts_about(h)} - reachable
            reachable |= frontier
        return reachable

    # -- scoring ------------------------------------------------------------------------------------
    def assess(self, text: str, relevant: set[str], golden_answers: Sequence[str]) -> ThoughtAssessment:
        sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
        claims = tuple(c for s in sentences for c in self.claims(s))
        mentions = tuple(dict.fromkeys(m.group(0) for m in self.mentions(text)))
        statements = [m.group(1) for s in sentences if (m := _ANSWER_STATEMENT.search(s.strip()))]
        golden = {_answer_key(a) for a in golden_answers}

        def verdict(score: float, reason: str) -> ThoughtAssessment:
            return ThoughtAssessment(score, reason, claims, mentions)

        false = [c for c in claims if not c.holds]
        if false:
            c = false[0]
            return verdict(SCORE_FALSE, f"false claim: {c.head} {c.relation} {c.tail}")
        wrong = [s for s in statements if _answer_key(s) not in golden]
        if wrong:
            return verdict(SCORE_FALSE, f"wrong answer stated: {wrong[0]!r}")
        if claims:
            if any(c.head in relevant and c.tail in relevant for c in claims):
                return verdict(SCORE_RELEVANT, "true claims about the chain")
            return verdict(SCORE_TRUE_IRRELEVANT, "true claims off the chain")
        if statements:
            return verdict(SCORE_RELEVANT, "correct answer stated")
        off_chain = [m for m in mentions if m not in relevant]
        if off_chain:
            return verdict(SCORE_OFF_CHAIN, f"names entities off the chain: {off_chain}")
        if mentions:
            return verdict(SCORE_RELEVANT, "about chain entities")
        return verdict(SCORE_GENERIC, "names no entity")

    def assess_route(self, assessment: ThoughtAssessment, text: str, chain: Sequence) -> ThoughtAssessment:
        """The first PLAN thought's assessment, lowered to SCORE_PARTIAL_PLAN when it names chain entities
        (and nothing false or off the chain) but no keyword of some hop's relation (see the module docstring)."""
        if assessment.score != SCORE_RELEVANT or assessment.claims or not assessment.mentions or not chain:
            return assessment
        masked = self._mention.sub(" ", text)
        missing = [hop["relation"] for hop in chain if not self._keywords[hop["relation"]].search(masked)]
        if not missing:
            return assessment
        return dataclasses.replace(assessment, score=SCORE_PARTIAL_PLAN, reason=f"plan leaves out hops: {missing}")

    def assess_all(self, question: str, thoughts: Sequence, golden_answers: Sequence[str]) -> list[ThoughtAssessment]:
        relevant = self.chain_entities(question)
        record = self._world.record_for(question)
        chain = record.metadata["chain"] if record is not None else ()
        out, planned = [], False
        for thought in thoughts:
            text = _thought_text(thought)
            assessment = self.assess(text, relevant, golden_answers)
            if not planned and _thought_tag(thought).upper() == "PLAN":
                planned = True
                assessment = self.assess_route(assessment, text, chain)
            out.append(assessment)
        return out

    def score(self, question: str, thoughts: Sequence, golden_answers: Sequence[str]) -> list[float]:
        """One score in [0, 1] per thought (`AtomicThought` or `(tag, text)`)."""
        return [a.score for a in self.assess_all(question, thoughts, golden_answers)]
