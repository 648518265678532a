"""Training metrics to a jsonl file and TensorBoard event files (tensorboardX), from process 0 only."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from etils import epath

from atomsearch_jax.paths import is_url, resolve

JSONL_NAME = "metrics.jsonl"


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Host floats from scalar jax/numpy/python values; a non-scalar value is an error naming its key."""
    out = {}
    for key, value in jax.device_get(dict(metrics)).items():
        arr = np.asarray(value)
        if arr.size != 1:
            raise ValueError(f"metric {key!r} is not a scalar (shape {arr.shape})")
        out[key] = float(arr.reshape(()))
    return out


class MetricsWriter:
    """`write(step, metrics)` appends {"step", "time", **metrics} to <logdir>/metrics.jsonl and adds
    each metric as a TensorBoard scalar (tag = its name, e.g. "rl/pg_loss").

    logdir: a local directory or a URL (gs://...; object stores cannot append, so the jsonl file is
    rewritten whole after each write; TensorBoard's gs:// writer needs google-cloud-storage)."""

    def __init__(self, logdir: str | os.PathLike, *, tensorboard: bool = True) -> None:
        self.logdir = os.fspath(logdir)
        self._active = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if not self._active:
            return
        path = resolve(self.logdir)
        path.mkdir(parents=True, exist_ok=True)
        self._jsonl = _JsonlFile(path / JSONL_NAME)
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(self.logdir)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = scalar_metrics(metrics)
        if not self._active:
            return
        # JSON has no NaN/inf literals: write them as strings so every line stays valid JSON.
        record = {k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}
        self._jsonl.append(json.dumps({"step": int(step), "time": time.time(), **record}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, int(step))
            self._tb.flush()

    def close(self) -> None:
        self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class _JsonlFile:
    """Lines appended to a file that may live on an object store: local files are appended to and
    flushed; elsewhere the whole text (kept in memory, after what the file held) is rewritten."""

    def __init__(self, path: epath.Path) -> None:
        self.path = path
        self._local = not is_url(path)
        self._text = "" if self._local or not path.exists() else path.read_text()

    def append(self, line: str) -> None:
        if self._local:
            with self.path.open("a") as f:
                f.write(line)
        else:
            self._text += line
            self.path.write_text(self._text)
