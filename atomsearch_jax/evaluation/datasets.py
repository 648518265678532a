"""Evaluation sets from `--datasets` specs: names resolved in a data directory, or files.

Spec forms (comma-separated on the command line):
  ``nq``                         a dataset name, looked up in the data directory (below)
  ``path/to/file.jsonl``         a QA file in any `load_qa_file` format; named after its dataset
  ``bamboogle=path/to/file.csv`` a file under an explicit name
Any form may end in ``:N`` to set that set's size limit (overriding `limit_per_dataset`).

A name resolves, in the data directory, to ``<name>/test.*`` or else ``<name>/dev.*`` (FlashRAG's
layout), or else to the one file whose name or directory names the dataset; several candidates are an
error listing them. A set larger than its limit is cut to a random subset drawn with its own seed
(``seed`` and the set's name), so adding a set does not change the others; the papers use 512 per set.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import random
import re
import zlib

from atomsearch_jax.data import QARecord, load_qa_file
from atomsearch_jax.data.qa_files import guess_source

QA_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv", ".tsv")
_LIMIT = re.compile(r"^(.*):(\d+)$")


@dataclasses.dataclass(frozen=True)
class EvalDataset:
    """name: the row label of the results table; path: where the records came from; records: the
    evaluated subset (in file order); total: how many records the file holds."""

    name: str
    path: str
    records: list[QARecord]
    total: int


def _candidates(data_dir: str, name: str) -> list[str]:
    for split in ("test", "dev"):
        found = sorted(p for p in glob.glob(os.path.join(data_dir, name, f"{split}.*")) if p.endswith(QA_EXTENSIONS))
        if found:
            return found[:1]
    files = [p for p in glob.glob(os.path.join(data_dir, "**", "*"), recursive=True)
             if p.endswith(QA_EXTENSIONS) and os.path.isfile(p)]
    return sorted(p for p in files if guess_source(p) == name)


def resolve_path(name: str, data_dir: str) -> str:
    """The file a dataset name stands for in `data_dir` (see the module docstring)."""
    if not data_dir or not os.path.isdir(data_dir):
        raise ValueError(f"dataset {name!r} is a name, but --data_dir={data_dir!r} is not a directory; "
                         "give a file path or name=path instead")
    found = _candidates(data_dir, name)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"dataset {name!r}: no QA file for it under {data_dir} (looked for {name}/test.*, "
                         f"{name}/dev.* and files named after it); give name=path")
    raise ValueError(f"dataset {name!r} is ambiguous under {data_dir}: {found}; choose one with {name}=<path>")


def subsample(records: list[QARecord], limit: int, seed: int, name: str) -> list[QARecord]:
    """`limit` records drawn at random (seeded by seed and name), kept in file order; all when fewer."""
    if limit <= 0 or len(records) <= limit:
        return list(records)
    rng = random.Random(seed * 1_000_003 + zlib.crc32(name.encode()))
    keep = sorted(rng.sample(range(len(records)), limit))
    return [records[i] for i in keep]


def parse_spec(spec: str) -> tuple[str | None, str, int | None]:
    """(explicit name or None, name-or-path, limit or None) of one spec."""
    limit = None
    if m := _LIMIT.match(spec):
        spec, limit = m.group(1), int(m.group(2))
    name, sep, target = spec.partition("=")
    if not sep:
        name, target = None, spec
    if not target.strip() or (sep and not name.strip()):
        raise ValueError(f"dataset spec {spec!r} is empty on one side of '='")
    return (name.strip() if name else None), target.strip(), limit


def load_datasets(specs: list[str], *, data_dir: str = "", limit_per_dataset: int = 512, seed: int = 0
                  ) -> list[EvalDataset]:
    """One EvalDataset per spec, in the given order; names must be unique."""
    datasets: list[EvalDataset] = []
    for spec in specs:
        name, target, limit = parse_spec(spec)
        is_file = os.path.isfile(target) or os.sep in target or target.endswith(QA_EXTENSIONS)
        path = target if is_file else resolve_path(target, data_dir)
        name = name or (None if is_file else target) or guess_source(path) or os.path.splitext(os.path.basename(path))[0]
        if any(d.name == name for d in datasets):
            raise ValueError(f"dataset name {name!r} appears twice in --datasets; name them with name=path")
        records = load_qa_file(path)
        chosen = subsample(records, limit_per_dataset if limit is None else limit, seed, name)
        datasets.append(EvalDataset(name, path, chosen, len(records)))
    return datasets
