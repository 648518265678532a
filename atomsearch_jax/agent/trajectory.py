"""A finished agent trajectory and its conversion to a trainer batch."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from atomsearch_jax.parallel.multihost import global_max


@dataclasses.dataclass
class Trajectory:
    """One sample: the prompt, what the model wrote and what the environment inserted, in one token row.

    tokens [L] int32 (prompt + response), loss_mask [L] (1 on model-generated tokens only; prompt and
    environment tokens are 0), logprobs [L] (sampler log-probs of generated tokens, 0 elsewhere).
    response: the decoded text after the prompt (environment blocks included), for rewards.
    stop_reason: "answer" (stopped at the answer/EOS), "length" (ran out of tokens), "tool_limit"
    (asked for more tool calls than allowed), "no_room" (a tool result did not fit).
    search_failures: tool calls whose environment failed -- retrieval, or the code sandbox itself (recorded,
    rendered as a failure message). code_calls / code_errors: code-interpreter calls, and those whose code
    failed (exception, timeout, limit: the model's own error, shown to it, not an environment failure).
    """

    record_index: int
    sample_index: int
    question: str
    golden_answers: list[str]
    tokens: np.ndarray
    loss_mask: np.ndarray
    logprobs: np.ndarray
    prompt_length: int
    response: str
    stop_reason: str
    tool_calls: int = 0
    search_failures: int = 0
    invalid_tool_calls: int = 0
    code_calls: int = 0
    code_errors: int = 0
    result_tokens: int = 0
    search_errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def length(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def response_length(self) -> int:
        """Tokens after the prompt (generated and inserted)."""
        return self.length - self.prompt_length

    @property
    def generated_tokens(self) -> int:
        return int(np.sum(self.loss_mask))

    @property
    def truncated(self) -> bool:
        return self.stop_reason in ("length", "no_room", "tool_limit")


def training_batch(trajectories: Sequence[Trajectory], rewards: np.ndarray, *, pad_to_multiple: int = 64,
                   widths: Sequence[int] = (), exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Trainer batch fields: tokens, loss_mask, logprobs ("sampler_logprobs"), lengths, rewards, valid.

    Rows keep the given order (group by group). The batch is padded to the smallest of `widths` that
    holds its longest row, else (no widths, or all too short) to a multiple of `pad_to_multiple`, so the
    update compiles for few shapes; on a multi-process job every process pads for the longest row of any
    process (the global batch needs one width; every process must call it). valid [B] is
    False for samples whose retrieval failed or that `exclude` [B] names (e.g. the judge failed on
    them): the trainer leaves them out of the update and of their group's advantage statistics.
    """
    if len(trajectories) != len(rewards):
        raise ValueError(f"{len(trajectories)} trajectories but {len(rewards)} rewards")
    longest = global_max(max(t.length for t in trajectories))
    width = min([w for w in widths if w >= longest], default=-(-longest // pad_to_multiple) * pad_to_multiple)
    b = len(trajectories)
    tokens = np.zeros((b, width), np.int32)
    loss_mask = np.zeros((b, width), np.float32)
    logprobs = np.zeros((b, width), np.float32)
    lengths = np.zeros((b,), np.int32)
    for i, t in enumerate(trajectories):
        n = t.length
        tokens[i, :n], logprobs[i, :n], lengths[i], loss_mask[i, :n] = t.tokens, t.logprobs, n, t.loss_mask
    valid = np.array([t.search_failures == 0 for t in trajectories])
    if exclude is not None:
        valid &= ~np.asarray(exclude, bool)
    return {"tokens": tokens, "loss_mask": loss_mask, "sampler_logprobs": logprobs, "lengths": lengths,
            "rewards": np.asarray(rewards, np.float32), "valid": valid}
