"""Token rows with loss masks for SFT: prompt and environment text masked, the model's own turns trained.

Each segment is tokenized on its own, exactly as a rollout produces it (the model's tokens, then the
environment's insertion tokenized separately and appended), so SFT and RL see the same token boundaries.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from atomsearch_jax.data.records import QARecord
from atomsearch_jax.data.world.teacher import RetrieverLike, TeacherTurn, teacher_turns


def tokenize_segments(tokenizer: Any, prompt_text: str, segments: Sequence[tuple[str, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [L] int32, loss_mask [L] float32): the prompt (mask 0) then each (text, trainable) segment."""
    ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    mask = [0.0] * len(ids)
    for text, trainable in segments:
        seg = tokenizer.encode(text, add_special_tokens=False)
        ids += seg
        mask += [1.0 if trainable else 0.0] * len(seg)
    return np.asarray(ids, np.int32), np.asarray(mask, np.float32)


def turn_segments(turns: Sequence[TeacherTurn], fmt: Any, *, max_chars_per_doc: int | None = None) -> list[tuple[str, bool]]:
    """The (text, trainable) segments of teacher turns in `fmt`: model turns trainable, results not."""
    segments = []
    for turn in turns:
        if turn.queries is not None:
            segments.append((fmt.render_turn(turn.thoughts, queries=turn.queries), True))
            segments.append((fmt.render_results(turn.results, max_chars_per_doc=max_chars_per_doc), False))
        else:
            segments.append((fmt.render_turn(turn.thoughts, answer=turn.answer), True))
    return segments


def turns_example(question: str, turns: Sequence[TeacherTurn], fmt: Any, tokenizer: Any, *,
                  max_chars_per_doc: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Teacher `turns` answering `question` as (tokens, loss_mask) behind the format's prompt."""
    return tokenize_segments(tokenizer, fmt.prompt_text(question, tokenizer),
                             turn_segments(turns, fmt, max_chars_per_doc=max_chars_per_doc))


def first_turn_example(question: str, turns: Sequence[TeacherTurn], fmt: Any, tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """The prompt and the teacher's first model turn only (plan, action and the first search call): the
    one turn whose entity must be read from the question, at a fraction of a whole trajectory's tokens."""
    return tokenize_segments(tokenizer, fmt.prompt_text(question, tokenizer), turn_segments(turns[:1], fmt)[:1])


def teacher_sft_example(record: QARecord, fmt: Any, retriever: RetrieverLike, tokenizer: Any, *, topk: int = 3,
                        max_chars_per_doc: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A teacher trajectory for a world `record` as (tokens, loss_mask) behind the format's prompt."""
    return turns_example(record.question, teacher_turns(record, retriever, topk=topk), fmt, tokenizer,
                         max_chars_per_doc=max_chars_per_doc)


def document_rows(texts: Sequence[str], tokenizer: Any, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Plain texts (e.g. corpus documents) as language-modelling rows: tokenized, joined by blank lines and
    cut into rows of `width` tokens (the last may be shorter), every token after a row's first trained (no
    chat template; nothing in the row predicts its first token)."""
    if width < 2:
        raise ValueError(f"document rows need width >= 2 tokens, got {width}")
    ids = [i for text in texts for i in tokenizer.encode(text + "\n\n", add_special_tokens=False)]
    rows = [np.asarray(ids[start:start + width], np.int32) for start in range(0, len(ids), width)]
    return [(row, np.concatenate([[0.0], np.ones(len(row) - 1)]).astype(np.float32)) for row in rows if len(row) >= 2]


def pad_rows(rows: Sequence[tuple[np.ndarray, np.ndarray]], width: int) -> dict[str, np.ndarray]:
    """A trainer batch {tokens, loss_mask, lengths} from (tokens, loss_mask) rows, right-padded to `width`."""
    b = len(rows)
    tokens = np.zeros((b, width), np.int32)
    mask = np.zeros((b, width), np.float32)
    lengths = np.zeros((b,), np.int32)
    for i, (t, m) in enumerate(rows):
        if len(t) > width:
            raise ValueError(f"row {i} has {len(t)} tokens, more than the batch width {width}")
        tokens[i, : len(t)], mask[i, : len(m)], lengths[i] = t, m, len(t)
    return {"tokens": tokens, "loss_mask": mask, "lengths": lengths}
