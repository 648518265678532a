"""Atom-Searcher's seed system-prompt templates for eliciting atomic thoughts from a teacher.

The paper generates its SFT data from prompts expanded out of 10 seed templates; it does not publish them.
These ten are ours (`SEED_PROMPTS["atomic_seeds_v1"]`; a text never changes under its version name). Each
seed is a reasoning style with two worked examples of atomic thoughts. A rollout's system prompt is the
format's own system prompt (tool schema, turn syntax) followed by the seed (or a teacher-written variant).
Version "none" is the format's system prompt alone: for a teacher that already writes atomic thoughts behind
it (a policy SFT-trained on that prompt, which a seed's unfamiliar text would only push off its training
distribution).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SeedPrompt:
    id: str
    style: str
    examples: tuple[str, str]

    def text(self) -> str:
        """The seed as it follows the format's system prompt ("" for the empty seed of version "none")."""
        if not self.style:
            return ""
        return (f"Reasoning style: {self.style}\n\n"
                f"Example of a thinking block:\n<think>\n{self.examples[0]}\n</think>\n\n"
                f"Another example:\n<think>\n{self.examples[1]}\n</think>")


def _seed(i: int, style: str, first: str, second: str) -> SeedPrompt:
    return SeedPrompt(f"seed{i:02d}", style, (first.strip(), second.strip()))


_V1 = (
    _seed(1, "Plan first, then act. Break the question into the facts you need and fetch them one at a time.",
          "<PLAN>The question needs the director of the film, then the director's birthplace.</PLAN>\n"
          "<ACTION>Search for the film's director first.</ACTION>",
          "<OBSERVATION>The result says the director was born in Lyon.</OBSERVATION>\n"
          "<VERIFICATION>Both hops are now supported by retrieved text, so Lyon answers the question.</VERIFICATION>"),
    _seed(2, "Be sceptical of every retrieved passage: check that it is about the right entity before using it.",
          "<SOURCE_CHECK>The passage describes a different person with the same surname.</SOURCE_CHECK>\n"
          "<ACTION>Search again with the full name and the film title.</ACTION>",
          "<OBSERVATION>This passage names the film and the actor together.</OBSERVATION>\n"
          "<RISK_ANALYSIS>Two actors share the name; the film title removes the ambiguity.</RISK_ANALYSIS>"),
    _seed(3, "Form a hypothesis early and test it against the evidence; drop it as soon as the evidence disagrees.",
          "<HYPOTHESIS>The river in question is probably the Danube, since the city is Vienna.</HYPOTHESIS>\n"
          "<ACTION>Search which river flows through the city to test this.</ACTION>",
          "<HYPOTHESIS_TESTING>The result confirms the Danube flows through the city.</HYPOTHESIS_TESTING>\n"
          "<CONCLUSION>The hypothesis holds; the answer is the Danube.</CONCLUSION>"),
    _seed(4, "Work backwards from what the answer must look like: a date, a place, a person or a number.",
          "<ANSWER_TYPE>The question asks 'in which year', so the answer is a year.</ANSWER_TYPE>\n"
          "<PLAN>Find the event, then the year it happened.</PLAN>",
          "<OBSERVATION>The passage gives 1987 as the founding year.</OBSERVATION>\n"
          "<VERIFICATION>A year was asked for and 1987 is stated directly.</VERIFICATION>"),
    _seed(5, "Keep a short ledger of what is known and what is still missing after every search.",
          "<KNOWN>The album was released by the band Rush.</KNOWN>\n"
          "<MISSING>The drummer of Rush is still unknown.</MISSING>",
          "<KNOWN>Rush's drummer was Neil Peart.</KNOWN>\n"
          "<MISSING>Nothing; every part of the question is answered.</MISSING>"),
    _seed(6, "Reflect on failed searches and rewrite the query instead of repeating it.",
          "<REFLECTION>The last query returned nothing relevant; it was too long.</REFLECTION>\n"
          "<QUERY_REWRITE>Use only the two key entities as the new query.</QUERY_REWRITE>",
          "<REFLECTION>The shorter query found the right article.</REFLECTION>\n"
          "<OBSERVATION>The article states the author's nationality.</OBSERVATION>"),
    _seed(7, "Compare candidates side by side when the question asks which of two things is bigger, older or first.",
          "<PLAN>Find the founding year of each of the two universities.</PLAN>\n"
          "<ACTION>Search both universities in one call.</ACTION>",
          "<COMPARISON>The first was founded in 1636 and the second in 1701.</COMPARISON>\n"
          "<CONCLUSION>The first is older.</CONCLUSION>"),
    _seed(8, "Think about the risks of each step: what could make the current conclusion wrong?",
          "<RISK_ANALYSIS>The question may refer to the remake, not the original film.</RISK_ANALYSIS>\n"
          "<ACTION>Search for the release year to tell the two apart.</ACTION>",
          "<OBSERVATION>Only the original film matches the stated release year.</OBSERVATION>\n"
          "<RISK_ANALYSIS>The remake risk is ruled out.</RISK_ANALYSIS>"),
    _seed(9, "Summarise the evidence before answering, citing which search result supports each fact.",
          "<PLAN>Two facts are needed: the capital and its population.</PLAN>\n"
          "<ACTION>Search for the capital first.</ACTION>",
          "<EVIDENCE_SUMMARY>Result 1 names the capital; result 2 gives its population.</EVIDENCE_SUMMARY>\n"
          "<VERIFICATION>Both facts come from retrieved text, not memory.</VERIFICATION>"),
    _seed(10, "Decompose multi-hop questions into explicit sub-questions and answer them in order.",
          "<SUB_QUESTION>Who wrote the novel?</SUB_QUESTION>\n"
          "<ACTION>Search for the novel's author.</ACTION>",
          "<SUB_ANSWER>The author is Chinua Achebe.</SUB_ANSWER>\n"
          "<SUB_QUESTION>Where was Chinua Achebe born? The previous result already says Ogidi.</SUB_QUESTION>"),
)

SEED_PROMPTS: dict[str, tuple[SeedPrompt, ...]] = {
    "atomic_seeds_v1": _V1,
    "none": (SeedPrompt("format_prompt", "", ("", "")),),
}


def seed_prompts(version: str = "atomic_seeds_v1") -> tuple[SeedPrompt, ...]:
    if version not in SEED_PROMPTS:
        raise ValueError(f"unknown seed-prompt version {version!r}; known: {sorted(SEED_PROMPTS)}")
    return SEED_PROMPTS[version]
