"""Orbax checkpoints of a run: the train state plus named JSON items, async, keep-last-N, preemption.

Layout: <directory>/<step>/state (params, optimizer state, step, PRNG key, skipped count) and one
<directory>/<step>/<name> per JSON item (e.g. "data_iterator", "reward_schedule",
"entropy_regulation"). Orbax writes each step into a temporary directory and renames it (or writes
commit_success.txt on object stores) only once complete, so a save killed half-way never appears as
a step. A step directory that is there but incomplete (no commit marker) or cannot be read (files
lost or truncated later) is skipped on restore in favour of the newest complete one, and moved aside
so the run can save that step number again. Restoring onto a different mesh only needs a target with
the new shardings.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from typing import Any, Iterator, Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from atomsearch_jax.paths import resolve
from atomsearch_jax.training.preemption import SigtermWatcher, exit_with_error
from atomsearch_jax.training.train_state import TrainState

STATE_ITEM = "state"
COMMIT_MARKER = "commit_success.txt"  # written by orbax into a step directory once it is complete
_ITEM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SAVE_TIMEOUT_EXIT = 75  # EX_TEMPFAIL: the save did not complete; rerunning resumes from the last good step


class Checkpointer:
    """Saves and restores (step, TrainState, JSON items) under one directory."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, save_interval_steps: int = 1,
                 async_save: bool = True, save_timeout_s: float = 900.0) -> None:
        if max_to_keep < 1:
            raise ValueError(f"checkpoint.max_to_keep={max_to_keep} must be >= 1")
        if save_interval_steps < 1:
            raise ValueError(f"checkpoint.save_interval_steps={save_interval_steps} must be >= 1")
        if save_timeout_s <= 0:
            raise ValueError(f"checkpoint.save_timeout_s={save_timeout_s} must be > 0")
        self.save_timeout_s = float(save_timeout_s)
        self.directory = resolve(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
                                               enable_async_checkpointing=async_save, create=True,
                                               cleanup_tmp_directories=True,
                                               async_options=ocp.AsyncOptions(timeout_secs=int(save_timeout_s)))
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._sigterm = SigtermWatcher(self.save_timeout_s)

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> "Checkpointer":
        return cls(cfg.directory, max_to_keep=cfg.max_to_keep, save_interval_steps=cfg.save_interval_steps,
                   async_save=cfg.async_save, save_timeout_s=cfg.get("save_timeout_s", 900.0))

    # ---- saving ------------------------------------------------------------------------------
    def save(self, step: int, state: TrainState, json_items: Mapping[str, Any] | None = None, *,
             force: bool = False) -> bool:
        """Starts saving (returns once device arrays are copied out; the write continues in the
        background when async). Skipped unless `step` is on the save interval or `force`.
        Returns whether a save was started."""
        args = {STATE_ITEM: ocp.args.StandardSave(state.to_dict())}
        for name, value in (json_items or {}).items():
            if name == STATE_ITEM or not _ITEM_NAME.match(name):
                raise ValueError(f"checkpoint JSON item name {name!r} is reserved or not an identifier")
            args[name] = ocp.args.JsonSave(value)
        if int(step) in self._manager.all_steps():
            # Saved already (e.g. on its interval, then again, forced, when a preemption notice arrives):
            # a step's state does not change, and Orbax refuses to write a step twice.
            return False
        with self._deadline(f"save of step {step}"):
            return bool(self._manager.save(int(step), args=ocp.args.Composite(**args), force=force))

    def wait(self) -> None:
        """Blocks until any background save has been committed."""
        with self._deadline("wait for the background save"):
            self._manager.wait_until_finished()

    @contextlib.contextmanager
    def _deadline(self, what: str) -> Iterator[None]:
        """Ends the process with a clear error if the block takes longer than save_timeout_s. A save that
        cannot complete (e.g. processes that do not share the checkpoint directory) blocks inside a
        cross-process barrier, where no Python exception can reach the main thread, hence the exit."""
        timer = threading.Timer(self.save_timeout_s, exit_with_error, args=(
            SAVE_TIMEOUT_EXIT, f"checkpoint {what} in {self.directory} did not finish within "
            f"checkpoint.save_timeout_s={self.save_timeout_s:g} s; on a multi-process job every process must see "
            "the same checkpoint directory (a gs:// bucket or a shared file system). Stopping."))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- restoring ---------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Committed steps on disk (waits for a save in flight first)."""
        self.wait()
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def _json_items(self, step: int) -> list[str]:
        step_dir = self.directory / str(step)
        return sorted(p.name for p in step_dir.iterdir()
                      if p.name != STATE_ITEM and _ITEM_NAME.match(p.name) and p.is_dir())

    def _restore_step(self, step: int, target: TrainState) -> tuple[TrainState, dict[str, Any]]:
        names = self._json_items(step)
        args = {STATE_ITEM: ocp.args.StandardRestore(target.to_dict())}
        args.update({n: ocp.args.JsonRestore() for n in names})
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        return TrainState.from_dict(restored[STATE_ITEM]), {n: restored[n] for n in names}

    def _committed(self, step: int) -> bool:
        return (self.directory / str(step) / COMMIT_MARKER).exists()

    def restore(self, target: TrainState, step: int | None = None) -> tuple[int, TrainState, dict[str, Any]] | None:
        """(step, state, JSON items) of `step`, or of the newest complete, readable step; None if none.

        target: the state's ShapeDtypeStructs with the shardings to restore onto (any mesh).
        A step without orbax's commit marker (when this orbax writes one) is a save interrupted on a
        non-atomic file system and is skipped, as is a step that fails to read. Once an older step has
        restored, the skipped newer ones are moved aside to <step>.unreadable-<unix time> (so a wrong
        target, which fails on every step, never moves anything).
        """
        if step is not None:
            return (step, *self._restore_step(step, target))
        steps = self.all_steps()
        uses_marker = any(self._committed(s) for s in steps)
        skipped: list[tuple[int, str]] = []
        for candidate in reversed(steps):
            if uses_marker and not self._committed(candidate):
                reason = f"no {COMMIT_MARKER}: the save was interrupted"
            else:
                try:
                    state, items = self._restore_step(candidate, target)
                except Exception as e:  # noqa: BLE001  any read failure (tensorstore, JSON, missing files) means skip
                    reason = f"{type(e).__name__}: {e}"
                else:
                    for bad, _ in skipped:
                        self._move_aside(bad)
                    return candidate, state, items
            logging.warning("checkpoint step %d in %s is incomplete or unreadable (%s); trying an older step",
                            candidate, self.directory, reason)
            skipped.append((candidate, reason))
        if skipped:
            raise RuntimeError(f"no checkpoint in {self.directory} could be restored; newest (step {skipped[0][0]}): "
                               f"{skipped[0][1]}")
        return None

    def _move_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            src = self.directory / str(step)
            dst = src.parent / f"{src.name}.unreadable-{int(time.time())}"
            src.rename(dst)
            logging.warning("moved unreadable checkpoint step %d to %s", step, dst)
        self._manager.reload()

    # ---- preemption --------------------------------------------------------------------------
    def install_sigterm_handler(self) -> None:
        """Makes SIGTERM (how TPU VMs and schedulers announce preemption) request a final save instead
        of killing the process; the training loop polls `preemption_requested` after each step. The
        process still ends checkpoint.save_timeout_s after the signal if that step or save hangs."""
        self._sigterm.install()

    def preemption_requested(self, step: int) -> bool:
        """True on every process once any process got SIGTERM or JAX's preemption sync point is reached."""
        requested = self._sigterm.requested
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            requested = bool(np.any(multihost_utils.process_allgather(np.asarray(requested))))
        return requested or bool(self._manager.reached_preemption(int(step)))
