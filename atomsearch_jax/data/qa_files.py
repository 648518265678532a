"""Reading QA files of any supported format into `QARecord`s.

Containers: JSON Lines, a JSON list (or an object holding the list under "data"/"Data"), parquet,
CSV / TSV by extension (header names lower-cased: Bamboogle's "Question,Answer", PopQA's popQA.tsv).
The record format (FlashRAG, Search-R1, HotpotQA, ...; see `qa_formats.py`) is detected from the first
record unless given. Every error names the file and the line (text files) or row (parquet); malformed
records either raise `QAFileError` or, with `on_error="skip"`, are skipped and listed.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import re
from typing import Any, Iterator, Literal

from absl import logging

from atomsearch_jax.data.qa_formats import QA_FORMATS, QAFormat, RecordError, detect_row_format
from atomsearch_jax.data.records import QARecord

PathLike = str | os.PathLike

# Dataset names recognised in a file or directory name (e.g. "nq_open_test_qa_3610.json" -> "nq").
_SOURCE_ALIASES = {"nq": "nq", "hotpot": "hotpotqa", "hotpotqa": "hotpotqa", "2wiki": "2wiki",
                   "2wikimultihopqa": "2wiki", "wikimultihop": "2wiki", "musique": "musique", "popqa": "popqa",
                   "triviaqa": "triviaqa", "tq": "triviaqa", "bamboogle": "bamboogle"}


class QAFileError(ValueError):
    """A QA file (or one of its records) that cannot be read; the message names file and line."""


@dataclasses.dataclass(frozen=True)
class SkippedRecord:
    location: str  # "path:line" or "path row N"
    reason: str


@dataclasses.dataclass
class QAFileContents:
    """What `read_qa_file` found: the records, the detected format name, and what was skipped."""

    records: list[QARecord]
    format: str
    skipped: list[SkippedRecord]


@dataclasses.dataclass(frozen=True)
class _RawRow:
    row: Any
    location: str


# ---------------------------------------------------------------- containers

def _is_parquet(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def _parquet_rows(path: str) -> Iterator[_RawRow]:
    import pyarrow.parquet as pq  # heavy import, only for parquet files

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several unrelated types for corrupt files
        raise QAFileError(f"{path}: unreadable parquet file: {err}") from None
    for index, row in enumerate(table.to_pylist()):
        yield _RawRow(row, f"{path} row {index}")


def _delimited_rows(path: str, delimiter: str) -> Iterator[_RawRow]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if reader.fieldnames is None:
            return
        reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
        line = reader.line_num + 1
        for row in reader:
            if None in row:
                raise QAFileError(f"{path}:{line}: more fields than the header has")
            yield _RawRow(row, f"{path}:{line}")
            line = reader.line_num + 1


def _jsonl_rows(path: str, text: str) -> Iterator[_RawRow]:
    # Split on "\n" only: str.splitlines() also breaks at U+0085 and U+2028, which occur inside
    # JSON strings of real files (TriviaQA).
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise QAFileError(f"{path}:{line_no}: invalid JSON ({err.msg} at column {err.colno})") from None
        yield _RawRow(row, f"{path}:{line_no}")


def _json_list_rows(path: str, text: str, start: int) -> Iterator[_RawRow]:
    """Walk a JSON list element by element so every record keeps the line it starts on."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos, line, counted_to = ws.match(text, start + 1).end(), 1 + text.count("\n", 0, start), start
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        try:
            row, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise QAFileError(f"{path}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
        yield _RawRow(row, f"{path}:{line}")
        pos = ws.match(text, end).end()
        if pos >= len(text):
            raise QAFileError(f"{path}:{text.count(chr(10)) + 1}: unterminated JSON list")
        if text[pos] == "]":
            return
        if text[pos] != ",":
            bad_line = text.count("\n", 0, pos) + 1
            raise QAFileError(f"{path}:{bad_line}: expected ',' or ']' between list items, got {text[pos]!r}")
        pos = ws.match(text, pos + 1).end()


def _json_object_rows(path: str, text: str) -> Iterator[_RawRow]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise QAFileError(f"{path}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    for key in ("data", "Data"):
        if isinstance(doc, dict) and isinstance(doc.get(key), list):
            for index, row in enumerate(doc[key]):
                yield _RawRow(row, f"{path} {key}[{index}]")
            return
    raise QAFileError(f"{path}:1: a JSON object that is not one record per line must hold its records "
                      "in a list under 'data' or 'Data'")


def _raw_rows(path: str) -> Iterator[_RawRow]:
    if _is_parquet(path):
        yield from _parquet_rows(path)
        return
    extension = os.path.splitext(path)[1].lower()
    if extension in (".csv", ".tsv"):
        yield from _delimited_rows(path, "," if extension == ".csv" else "\t")
        return
    with open(path, encoding="utf-8") as f:
        try:
            text = f.read()
        except UnicodeDecodeError as err:
            raise QAFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return
    if text[start] == "[":
        yield from _json_list_rows(path, text, start)
        return
    first_line = text[start:].split("\n", 1)[0]
    try:
        json.loads(first_line)
    except json.JSONDecodeError:
        yield from _json_object_rows(path, text)  # a pretty-printed object, not JSON Lines
        return
    yield from _jsonl_rows(path, text)


def iter_rows(path: PathLike) -> Iterator[tuple[Any, str]]:
    """(row, "path:line" or "path row N") for every record of a JSON / JSON Lines / parquet / CSV / TSV
    file, whatever the record schema (the containers `read_qa_file` reads)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")
    for raw in _raw_rows(path):
        yield raw.row, raw.location


# ---------------------------------------------------------------- records

def guess_source(path: PathLike) -> str | None:
    """The dataset a file belongs to, from its name or its directory's name (None if unknown)."""
    path = os.fspath(path)
    for name in (os.path.basename(path), os.path.basename(os.path.dirname(os.path.abspath(path)))):
        for token in re.split(r"[^0-9a-z]+", name.lower()):
            if token in _SOURCE_ALIASES:
                return _SOURCE_ALIASES[token]
    return None


def _resolve_format(fmt: str, first_row: _RawRow | None) -> QAFormat:
    if fmt != "auto":
        if fmt not in QA_FORMATS:
            raise ValueError(f"unknown QA format {fmt!r}; known: {sorted(QA_FORMATS)} or 'auto'")
        return QA_FORMATS[fmt]
    detected = detect_row_format(first_row.row) if first_row else None
    if detected is None:
        keys = sorted(first_row.row) if first_row and isinstance(first_row.row, dict) else type(first_row.row).__name__
        raise QAFileError(f"{first_row.location}: cannot detect the QA format from this record (fields: {keys}); "
                          f"pass fmt= one of {sorted(QA_FORMATS)}")
    return detected


def read_qa_file(path: PathLike, fmt: str = "auto", *, source: str | None = None,
                 on_error: Literal["raise", "skip"] = "raise") -> QAFileContents:
    """Reads every record of a QA file.

    Args:
      path: a .json / .jsonl / .parquet / .csv / .tsv file in one of the formats of `QA_FORMATS`.
      fmt: a key of `QA_FORMATS`, or "auto" to detect it from the first record.
      source: dataset name stored in each record; default: the format's dataset, the dataset named in
        the path (`guess_source`), else the file stem.
      on_error: "raise" -> `QAFileError` at the first malformed record (naming file and line);
        "skip" -> malformed records (bad fields, duplicate ids) are left out and listed in `.skipped`.
        Invalid JSON always raises: the rest of the file cannot be trusted.
    """
    path = os.fspath(path)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"QA file not found: {path}")
    rows = _raw_rows(path)
    first = next(rows, None)
    if first is None:
        raise QAFileError(f"{path}: no records")
    qa_format = _resolve_format(fmt, first)
    source = source or qa_format.default_source or guess_source(path) or os.path.splitext(os.path.basename(path))[0]

    records: list[QARecord] = []
    skipped: list[SkippedRecord] = []
    first_seen: dict[str, str] = {}
    for index, raw in enumerate(itertools.chain([first], rows)):
        try:
            if not isinstance(raw.row, dict):
                raise RecordError("<record>", f"expected a JSON object, got {type(raw.row).__name__}")
            record = qa_format.parse(raw.row, index, source)
            if record.id in first_seen:
                raise RecordError("id", f"duplicate id {record.id!r} (first at {first_seen[record.id]})")
        except (RecordError, ValueError) as err:
            if on_error == "raise":
                raise QAFileError(f"{raw.location}: malformed {qa_format.name} record: {err}") from None
            skipped.append(SkippedRecord(raw.location, str(err)))
            continue
        first_seen[record.id] = raw.location
        records.append(record)
    if skipped:
        logging.warning("%s: skipped %d malformed %s record(s); first: %s: %s", path, len(skipped),
                        qa_format.name, skipped[0].location, skipped[0].reason)
    return QAFileContents(records=records, format=qa_format.name, skipped=skipped)


def load_qa_file(path: PathLike, fmt: str = "auto", *, source: str | None = None,
                 skip_malformed: bool = False) -> list[QARecord]:
    """The records of a QA file (see `read_qa_file`; skipped records are counted in a warning)."""
    return read_qa_file(path, fmt, source=source, on_error="skip" if skip_malformed else "raise").records
