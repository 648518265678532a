"""LLM-as-judge accuracy of final answers (ReSearch's "LJ", Atom-Searcher's judge scores) over any
OpenAI-compatible chat-completions server.

The prompt is versioned (`ANSWER_JUDGE_PROMPTS`; a text never changes under its name). The judge replies
"correct" or "incorrect" (reasoning before it is allowed and ignored: the last verdict word counts). A
reply without a verdict is retried, and a request that still fails is recorded as a failure: it is never
counted as correct or incorrect, and accuracy is over judged answers only. Samples without an answer are
incorrect without asking.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from atomsearch_jax.clients import EndpointConfig, OpenAIClient
from atomsearch_jax.clients.openai_compat import read_chat_content

ANSWER_JUDGE_PROMPTS: dict[str, dict[str, str]] = {
    "answer_judge_v1": {
        "system": (
            "You grade answers to questions. Given a question, the reference answer(s) and a predicted answer, "
            "decide whether the predicted answer means the same as one of the references (aliases, different "
            "wording, units or level of detail that still identifies the same entity, date or number are "
            "fine; a different or only partially matching entity is not). Reply with one word: correct or "
            "incorrect."
        ),
        "user": "Question: {question}\nReference answer(s): {golds}\nPredicted answer: {prediction}\nVerdict:",
    },
}

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_VERDICT = re.compile(r"\b(incorrect|correct)\b", re.IGNORECASE)


def judge_messages(question: str, golds: Sequence[str], prediction: str, version: str = "answer_judge_v1"
                   ) -> list[dict[str, str]]:
    if version not in ANSWER_JUDGE_PROMPTS:
        raise ValueError(f"unknown answer-judge prompt version {version!r}; known: {sorted(ANSWER_JUDGE_PROMPTS)}")
    template = ANSWER_JUDGE_PROMPTS[version]
    user = template["user"].format(question=question, golds=" | ".join(golds), prediction=prediction)
    return [{"role": "system", "content": template["system"]}, {"role": "user", "content": user}]


def parse_verdict(reply: str) -> bool | None:
    """True / False from the last verdict word after any <think> block; None when there is none."""
    words = _VERDICT.findall(_THINK.sub(" ", reply))
    return None if not words else words[-1].lower() == "correct"


def _read_verdict(body: Any) -> tuple[bool | None, str | None, str]:
    content, error, raw = read_chat_content(body)
    if error:
        return None, error, raw
    verdict = parse_verdict(content)
    if verdict is None:
        return None, f"no verdict (correct/incorrect) in judge reply {content[:120]!r}", raw
    return verdict, None, raw


@dataclasses.dataclass(frozen=True)
class Verdict:
    """correct: the judge's verdict, None when judging failed (error says why)."""

    correct: bool | None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class AnswerJudgeConfig:
    """The endpoint (`clients.EndpointConfig`) plus the prompt version and sampling of the judge."""

    endpoint: EndpointConfig
    prompt_version: str = "answer_judge_v1"
    max_tokens: int = 512
    temperature: float = 0.0


class AnswerJudge:
    """Judges (question, golds, prediction) triples over HTTP; see the module docstring."""

    def __init__(self, config: AnswerJudgeConfig):
        judge_messages("q", ["a"], "a", config.prompt_version)  # fails early on an unknown version
        self.config = config
        self.client = OpenAIClient(config.endpoint)

    def judge(self, items: Sequence[tuple[str, Sequence[str], str | None]]) -> list[Verdict]:
        """One Verdict per (question, golds, prediction); prediction None = no answer = incorrect."""
        cfg = self.config
        asked = [i for i, (_, _, prediction) in enumerate(items) if prediction is not None]
        payloads = [{"messages": judge_messages(items[i][0], items[i][1], items[i][2], cfg.prompt_version),
                     "max_tokens": cfg.max_tokens, "temperature": cfg.temperature} for i in asked]
        verdicts = [Verdict(False)] * len(items)
        for i, reply in zip(asked, self.client.post_many("chat/completions", payloads, read=_read_verdict)):
            verdicts[i] = Verdict(reply.value, None) if reply.ok else Verdict(None, reply.error)
        return verdicts
