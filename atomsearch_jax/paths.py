"""Paths of a run as `etils.epath` paths: local directories and URLs (gs://, s3://, ...) alike.

A run's work directory may be a bucket (`gs://bucket/run`): checkpoints, logs, reports, the tokenizer
copy and the exported policy all go through here, so nothing lands on local disk as `<cwd>/gs:/...`.
"""
from __future__ import annotations

import os
import tempfile

from etils import epath


def is_url(path: str | os.PathLike) -> bool:
    """True for scheme://... paths (gs://, s3://, ...), which local file APIs cannot open."""
    return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> epath.Path:
    """An epath.Path: URLs as given, local paths made absolute (so a later chdir cannot move them)."""
    path = os.fspath(path)
    return epath.Path(path if is_url(path) else os.path.abspath(path))


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copies the files of directory `src` (recursively) into `dst` (created; any epath on either side)."""
    src, dst = epath.Path(src), epath.Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_dir():
            copy_tree(item, dst / item.name)
        else:
            item.copy(dst / item.name, overwrite=True)


def local_copy(path: str | os.PathLike) -> str:
    """A local directory with the contents of `path`: `path` itself when local, else a fresh temporary
    copy (for readers that need local files, e.g. memory-mapped safetensors or tokenizer files)."""
    if not is_url(path):
        return os.fspath(path)
    local = tempfile.mkdtemp(prefix="atomsearch_")
    copy_tree(path, local)
    return local
