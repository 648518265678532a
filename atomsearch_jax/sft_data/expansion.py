"""Expanding the seed templates into many system prompts with the teacher (chat completions).

For each seed the teacher is asked for `per_seed` rewrites (different wording and emphasis, its own two
examples of atomic thoughts). A rewrite is kept when it arrives between <prompt> and </prompt>, has a
sane length and at least two atomic-thought tags; near-duplicates (same normalized text) are dropped.
Failed requests and rejected replies are counted, never fatal: the seeds themselves are always kept.
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Sequence

from atomsearch_jax.clients import OpenAIClient
from atomsearch_jax.clients.openai_compat import read_chat_content
from atomsearch_jax.sft_data.seed_prompts import SeedPrompt

EXPANSION_PROMPT_VERSION = "expand_v1"
_INSTRUCTION = (
    "Below is part of a system prompt that teaches a research assistant to think in atomic thoughts: small "
    "reasoning steps, each wrapped in a tag that names its function (for example <PLAN>...</PLAN>). Write a "
    "new variant of it: a different reasoning style description in your own words, and two new short "
    "examples of thinking blocks made of atomic thoughts with tags you choose (variant {variant}). Reply with "
    "the new text only, between <prompt> and </prompt>.\n\n{seed}"
)
_PROMPT = re.compile(r"<prompt>(.*?)</prompt>", re.DOTALL)
_ATOMIC_TAG = re.compile(r"<([A-Z][A-Z0-9_]*)>.*?</\1>", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class SystemPrompt:
    """id: "seed03" or "seed03-v2"; text: what follows the format's own system prompt."""

    id: str
    text: str


def check_variant(reply: str, *, min_chars: int = 80, max_chars: int = 4000) -> tuple[str | None, str | None]:
    """(variant text, None) or (None, why it was rejected)."""
    match = _PROMPT.search(reply)
    if not match:
        return None, "no <prompt>…</prompt> block"
    text = match.group(1).strip()
    if not min_chars <= len(text) <= max_chars:
        return None, f"length {len(text)} outside [{min_chars}, {max_chars}]"
    if len(set(_ATOMIC_TAG.findall(text))) < 2:
        return None, "fewer than two atomic-thought tags"
    return text, None


def expand_prompts(client: OpenAIClient | None, seeds: Sequence[SeedPrompt], per_seed: int, *,
                   temperature: float = 1.0, max_tokens: int = 1024) -> tuple[list[SystemPrompt], dict[str, int]]:
    """The seeds plus up to `per_seed` teacher variants of each; returns (prompts, counters)."""
    prompts = [SystemPrompt(s.id, s.text()) for s in seeds]
    stats: collections.Counter = collections.Counter(seeds=len(seeds))
    jobs = [(s, v) for s in seeds if s.text() for v in range(1, per_seed + 1)]  # an empty seed has nothing to vary
    if client is None or not jobs:
        return prompts, dict(stats)
    payloads = [{"messages": [{"role": "user", "content": _INSTRUCTION.format(variant=v, seed=s.text())}],
                 "temperature": temperature, "max_tokens": max_tokens} for s, v in jobs]
    seen = {" ".join(p.text.lower().split()) for p in prompts}
    for (seed, v), reply in zip(jobs, client.post_many("chat/completions", payloads, read=read_chat_content)):
        stats["requested"] += 1
        if not reply.ok:
            stats["failed"] += 1
            continue
        text, why = check_variant(reply.value)
        key = None if text is None else " ".join(text.lower().split())
        if text is None:
            stats["rejected"] += 1
        elif key in seen:
            stats["duplicates"] += 1
        else:
            seen.add(key)
            prompts.append(SystemPrompt(f"{seed.id}-v{v}", text))
            stats["accepted"] += 1
    return prompts, dict(stats)
