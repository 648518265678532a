"""Field mappings from each public QA file format to `QARecord`.

One parser per format: `parse(row, index) -> QARecord`, raising `RecordError(field, reason)` when the
row lacks or garbles a field; `matches(row)` says whether a row looks like that format (used to detect
the format of a file from its first record). File handling (json / jsonl / parquet, line numbers,
skip-or-raise) lives in `qa_files.py`.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping

from atomsearch_jax.data.records import QARecord, dedupe_answers
from atomsearch_jax.formats.research import last_boxed_content


class RecordError(ValueError):
    """A row that does not fit its format; `field` names the offending field."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"field {field!r}: {reason}")
        self.field = field
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class QAFormat:
    """How to recognise and parse one file format. `default_source` names the dataset when the
    format implies it (None: the caller's source or the file stem)."""

    name: str
    matches: Callable[[Mapping[str, Any]], bool]
    parse: Callable[[Mapping[str, Any], int, str], QARecord]
    default_source: str | None = None


# ---------------------------------------------------------------- field helpers

def _require(row: Mapping[str, Any], field: str) -> Any:
    if field not in row or row[field] is None:
        raise RecordError(field, "missing")
    return row[field]


def _text(row: Mapping[str, Any], field: str) -> str:
    value = _require(row, field)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(field, f"expected a non-empty string, got {_short(value)}")
    return value.strip()


def _answer_list(value: Any, field: str) -> list[str]:
    """A str or a list of str (numbers are accepted and written as text) -> non-empty answer list."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise RecordError(field, f"expected a string or a list of strings, got {_short(value)}")
    if not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in items):
        raise RecordError(field, f"expected a string or a list of strings, got {_short(value)}")
    answers = dedupe_answers([str(a) for a in items])
    if not answers:
        raise RecordError(field, "no non-empty answer")
    return answers


def _json_list_field(row: Mapping[str, Any], field: str) -> list:
    """A list, or a JSON-encoded list (PopQA stores its answer lists as strings)."""
    value = _require(row, field)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RecordError(field, f"not a JSON list: {err.msg}") from None
    if not isinstance(value, list):
        raise RecordError(field, f"expected a list, got {_short(value)}")
    return value


def _record_id(row: Mapping[str, Any], fields: tuple[str, ...], source: str, index: int) -> str:
    for field in fields:
        value = row.get(field)
        if value is not None and str(value) != "":
            return str(value)
    return f"{source}-{index}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _paragraph(title: Any, text: Any, field: str, is_supporting: Any = None) -> dict:
    if not isinstance(title, str) or not isinstance(text, str):
        raise RecordError(field, "paragraph title and text must be strings")
    para = {"title": title, "text": text.strip()}
    if is_supporting is not None:
        para["is_supporting"] = bool(is_supporting)
    return para


# ---------------------------------------------------------------- formats

def _parse_flashrag(row, index, source):
    metadata = row.get("metadata")
    return QARecord(id=_record_id(row, ("id",), source, index), question=_text(row, "question"),
                    golden_answers=_answer_list(_require(row, "golden_answers"), "golden_answers"),
                    source=source, metadata=dict(metadata) if isinstance(metadata, Mapping) else {})


def _parse_qarecord(row, index, source):
    """This package's own rows (`QARecord.to_json_dict`, e.g. a saved world split): kept as written."""
    supporting, metadata = row.get("supporting") or [], row.get("metadata") or {}
    if not isinstance(supporting, list) or not all(isinstance(p, Mapping) for p in supporting):
        raise RecordError("supporting", f"expected a list of objects, got {_short(supporting)}")
    if not isinstance(metadata, Mapping):
        raise RecordError("metadata", f"expected an object, got {_short(metadata)}")
    return QARecord(id=_text(row, "id"), question=_text(row, "question"),
                    golden_answers=_answer_list(_require(row, "golden_answers"), "golden_answers"),
                    source=_text(row, "source"), supporting=[dict(p) for p in supporting], metadata=dict(metadata))


def _searchr1_question(row: Mapping[str, Any]) -> str:
    """Search-R1 keeps FlashRAG's `question` column beside `prompt`; older files only have the prompt,
    whose user message ends with `Question: <q>`."""
    if isinstance(row.get("question"), str) and row["question"].strip():
        return row["question"].strip()
    prompt = _require(row, "prompt")
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise RecordError("prompt", f"expected a list of chat messages, got {_short(prompt)}")
    users = [m.get("content") for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users or not isinstance(users[-1], str) or not users[-1].strip():
        raise RecordError("prompt", "no user message with text")
    content = users[-1]
    marker = content.rfind("Question:")
    question = content[marker + len("Question:"):] if marker >= 0 else content
    return question.strip()


def _parse_searchr1(row, index, source):
    reward_model = _require(row, "reward_model")
    if not isinstance(reward_model, Mapping) or "ground_truth" not in reward_model:
        raise RecordError("reward_model.ground_truth", "missing")
    truth = reward_model["ground_truth"]
    if isinstance(truth, Mapping):
        if "target" not in truth:
            raise RecordError("reward_model.ground_truth.target", "missing")
        truth = truth["target"]
    answers = _answer_list(truth, "reward_model.ground_truth.target")
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), Mapping) else {}
    data_source = row.get("data_source")
    source = data_source if isinstance(data_source, str) and data_source else source
    rid = _record_id(row, ("id",), "", -1) if row.get("id") not in (None, "") else None
    if rid is None:
        rid = f"{source}-{extra['index']}" if extra.get("index") is not None else f"{source}-{index}"
    return QARecord(id=rid, question=_searchr1_question(row), golden_answers=answers, source=source,
                    metadata={k: v for k, v in {"split": extra.get("split"), "ability": row.get("ability")}.items()
                              if v is not None})


def _hotpot_context(row) -> list[dict]:
    """HotpotQA / 2Wiki `context`: [[title, [sentence, ...]], ...]; supporting titles from
    `supporting_facts` ([[title, sentence_index], ...])."""
    context = _require(row, "context")
    facts = _require(row, "supporting_facts")
    if not isinstance(facts, list) or not all(isinstance(f, (list, tuple)) and len(f) == 2 for f in facts):
        raise RecordError("supporting_facts", "expected a list of [title, sentence_index] pairs")
    supporting_titles = {f[0] for f in facts}
    if not isinstance(context, list):
        raise RecordError("context", f"expected a list of [title, sentences] pairs, got {_short(context)}")
    paragraphs = []
    for item in context:
        if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[1], list)
                or not all(isinstance(s, str) for s in item[1])):
            raise RecordError("context", f"expected [title, [sentences]], got {_short(item)}")
        text = " ".join(s.strip() for s in item[1] if s.strip())
        paragraphs.append(_paragraph(item[0], text, "context", item[0] in supporting_titles))
    return paragraphs


def _parse_hotpot_like(row, index, source):
    metadata = {k: row[k] for k in ("type", "level", "supporting_facts", "evidences") if k in row}
    return QARecord(id=_record_id(row, ("_id", "id"), source, index), question=_text(row, "question"),
                    golden_answers=_answer_list(_require(row, "answer"), "answer"), source=source,
                    supporting=_hotpot_context(row), metadata=metadata)


def _parse_musique(row, index, source):
    answers = _answer_list(_require(row, "answer"), "answer")
    aliases = row.get("answer_aliases") or []
    answers = dedupe_answers(answers + _answer_list(aliases, "answer_aliases")) if aliases else answers
    paragraphs = []
    for para in row.get("paragraphs") or []:
        if not isinstance(para, Mapping):
            raise RecordError("paragraphs", f"expected objects, got {_short(para)}")
        paragraphs.append(_paragraph(para.get("title"), para.get("paragraph_text"), "paragraphs",
                                     para.get("is_supporting")))
    decomposition = row.get("question_decomposition") or []
    metadata = {"hops": len(decomposition), "question_decomposition": decomposition}
    if "answerable" in row:
        metadata["answerable"] = bool(row["answerable"])
    return QARecord(id=_record_id(row, ("id",), source, index), question=_text(row, "question"),
                    golden_answers=answers, source=source, supporting=paragraphs, metadata=metadata)


def _ircot_answers(row) -> list[str]:
    objects = _require(row, "answers_objects")
    if not isinstance(objects, list) or not objects:
        raise RecordError("answers_objects", "expected a non-empty list")
    answers: list[str] = []
    for obj in objects:
        if not isinstance(obj, Mapping):
            raise RecordError("answers_objects", f"expected objects, got {_short(obj)}")
        spans = [s for s in obj.get("spans") or [] if isinstance(s, str)]
        if spans:
            answers.extend(spans)
        elif str(obj.get("number") or "").strip():
            answers.append(str(obj["number"]))
        elif isinstance(obj.get("date"), Mapping):
            date = " ".join(str(obj["date"].get(k) or "") for k in ("day", "month", "year")).split()
            if date:
                answers.append(" ".join(date))
    return _answer_list(answers, "answers_objects")


def _parse_ircot(row, index, source):
    paragraphs = []
    for para in row.get("contexts") or []:
        if not isinstance(para, Mapping):
            raise RecordError("contexts", f"expected objects, got {_short(para)}")
        paragraphs.append(_paragraph(para.get("title"), para.get("paragraph_text"), "contexts",
                                     para.get("is_supporting")))
    return QARecord(id=_record_id(row, ("question_id",), source, index), question=_text(row, "question_text"),
                    golden_answers=_ircot_answers(row), source=source, supporting=paragraphs)


def _parse_popqa(row, index, source):
    answers = _answer_list(_json_list_field(row, "possible_answers"), "possible_answers")
    paragraphs = []
    for para in row.get("paragraphs") or []:
        if not isinstance(para, Mapping):
            raise RecordError("paragraphs", f"expected objects, got {_short(para)}")
        paragraphs.append(_paragraph(para.get("title"), para.get("text"), "paragraphs", para.get("is_supporting")))
    metadata = {k: row[k] for k in ("subj", "prop", "obj", "s_pop", "o_pop") if k in row}
    return QARecord(id=_record_id(row, ("id",), source, index), question=_text(row, "question"),
                    golden_answers=answers, source=source, supporting=paragraphs, metadata=metadata)


_TRIVIAQA_PREFIX, _TRIVIAQA_SUFFIX = "Question:", "Answer:"


def _triviaqa_question(row) -> str:
    if "question" in row or "Question" in row:
        return _text(row, "question" if "question" in row else "Question")
    context = _text(row, "context")  # llm-foundry ICL form: "Question: ...\nAnswer:"
    if context.startswith(_TRIVIAQA_PREFIX):
        context = context[len(_TRIVIAQA_PREFIX):]
    if context.endswith(_TRIVIAQA_SUFFIX):
        context = context[: -len(_TRIVIAQA_SUFFIX)]
    if not context.strip():
        raise RecordError("context", "no question text between 'Question:' and 'Answer:'")
    return context.strip()


def _parse_triviaqa(row, index, source):
    answer = row.get("answer", row.get("Answer"))
    if isinstance(answer, Mapping):  # official / HF form: {"value"|"Value", "aliases"|"Aliases", ...}
        value = answer.get("value", answer.get("Value"))
        aliases = answer.get("aliases", answer.get("Aliases")) or []
        field = "answer"
    else:
        value, aliases, field = answer, row.get("aliases") or [], "answer"
    if value is None:
        raise RecordError(field, "missing")
    answers = _answer_list(value, field)
    if aliases:
        answers = dedupe_answers(answers + _answer_list(aliases, "aliases"))
    return QARecord(id=_record_id(row, ("id", "question_id", "QuestionId"), source, index),
                    question=_triviaqa_question(row), golden_answers=answers, source=source)


def _parse_qa_list(row, index, source):
    return QARecord(id=_record_id(row, ("id", "_id", "qid"), source, index), question=_text(row, "question"),
                    golden_answers=_answer_list(_require(row, "answer"), "answer"), source=source)


def _first_field(row: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if row.get(n) not in (None, "")), None)


def _parse_math(row, index, source):
    """AIME / MATH / DAPO-Math style rows: `problem` (or `Problem`) and `answer` (or `Answer`, a number
    or LaTeX), else the last \\boxed{} of `solution` (the MATH dataset)."""
    problem = _first_field(row, ("problem", "Problem"))
    if problem is None:
        raise RecordError("problem", "missing")
    answer_field = _first_field(row, ("answer", "Answer"))
    if answer_field is not None:
        answers = _answer_list(row[answer_field], answer_field)
    else:
        solution_field = _first_field(row, ("solution", "Solution"))
        boxed = last_boxed_content(str(row[solution_field])) if solution_field else None
        if not boxed:
            raise RecordError("answer", "missing (and no solution with a \\boxed{} answer)")
        answers = [boxed]
    metadata = {k: row[k] for k in ("level", "type", "subject", "year") if k in row}
    return QARecord(id=_record_id(row, ("id", "ID", "unique_id", "idx"), source, index), question=_text(row, problem),
                    golden_answers=answers, source=source, metadata=metadata)


def _is_math(row) -> bool:
    return (("problem" in row or "Problem" in row)
            and any(k in row for k in ("answer", "Answer", "solution", "Solution")))


def _is_triviaqa(row) -> bool:
    answer = row.get("answer", row.get("Answer"))
    return "aliases" in row or (isinstance(answer, Mapping) and ("aliases" in answer or "Aliases" in answer))


# Detection order matters: the most specific signatures first, the bare question/answer list last.
QA_FORMATS: dict[str, QAFormat] = {f.name: f for f in (
    QAFormat("searchr1", lambda r: "reward_model" in r and "prompt" in r, _parse_searchr1),
    QAFormat("qarecord", lambda r: {"id", "question", "golden_answers", "source"} <= set(r), _parse_qarecord),
    QAFormat("flashrag", lambda r: "golden_answers" in r and "question" in r, _parse_flashrag),
    QAFormat("musique", lambda r: "paragraphs" in r and ("answer_aliases" in r or "question_decomposition" in r),
             _parse_musique, "musique"),
    QAFormat("2wiki", lambda r: "supporting_facts" in r and "context" in r and "evidences" in r,
             _parse_hotpot_like, "2wiki"),
    QAFormat("hotpotqa", lambda r: "supporting_facts" in r and "context" in r, _parse_hotpot_like, "hotpotqa"),
    QAFormat("ircot", lambda r: "question_text" in r and "answers_objects" in r, _parse_ircot),
    QAFormat("popqa", lambda r: "possible_answers" in r, _parse_popqa, "popqa"),
    QAFormat("triviaqa", _is_triviaqa, _parse_triviaqa, "triviaqa"),
    QAFormat("math", _is_math, _parse_math),
    QAFormat("qa_list", lambda r: "question" in r and "answer" in r, _parse_qa_list),
)}


def detect_row_format(row: Any) -> QAFormat | None:
    """The first format whose signature fits this row, or None."""
    if not isinstance(row, Mapping):
        return None
    return next((fmt for fmt in QA_FORMATS.values() if fmt.matches(row)), None)
