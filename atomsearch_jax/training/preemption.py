"""SIGTERM as a preemption notice, seen even while the main thread is stuck in native code.

A Python-level signal handler only runs when the main thread returns to the interpreter; a step or a
save blocked inside XLA or a collective (a dead peer) never does, and the kernel may deliver the signal
to any of XLA's threads. So the handler installed here does nothing itself: CPython's C-level handler
writes the signal number into a wakeup pipe (`signal.set_wakeup_fd`) from whichever thread took it, and
a daemon thread reading that pipe records the request, starts the grace timer and, on a second SIGTERM,
ends the process at once.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Callable

SIGTERM_EXIT = 143  # the conventional status of a SIGTERM-ed process


def exit_with_error(status: int, message: str) -> None:
    """Logs `message` and ends the process at once (from any thread, even with the main one blocked)."""
    logging.error("%s", message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(status)


class SigtermWatcher:
    """Turns SIGTERM into `requested` (polled by the training loop after each step).

    grace_s: seconds after the first SIGTERM until the process ends without a final checkpoint (the
    loop's save or step hangs); a second SIGTERM ends it at once. One pipe and reader thread serve the
    process; each `install` makes that watcher the one signals go to (the SFT stage's, then GRPO's).
    """

    def __init__(self, grace_s: float, on_exit: Callable[[int, str], None] = exit_with_error) -> None:
        self.grace_s = float(grace_s)
        self.requested = False
        self._on_exit = on_exit

    def install(self) -> bool:
        """Routes SIGTERM to this watcher; False (and a warning) off the main thread, where Python cannot
        install signal handlers."""
        global _active
        if threading.current_thread() is not threading.main_thread():
            logging.warning("not in the main thread: cannot install the SIGTERM handler; preemption saves rely "
                            "on JAX's preemption sync point only")
            return False
        if _active is None:
            _start_reader()
        _active = self
        return True

    def _on_sigterm(self, signum: int) -> None:
        if self.requested:
            self._on_exit(SIGTERM_EXIT, f"received signal {signum} again: stopping now")
            return
        self.requested = True
        # The loop saves and exits after its current step; if that step or the save hangs (a dead peer,
        # an unreachable directory), the process still ends.
        grace = threading.Timer(self.grace_s, self._on_exit, args=(
            SIGTERM_EXIT, f"received signal {signum} {self.grace_s:g} s ago and the run has not stopped "
            "(checkpoint.save_timeout_s): stopping without a final checkpoint"))
        grace.daemon = True
        grace.start()
        logging.warning("received signal %d: will checkpoint and stop after the current step", signum)


_active: SigtermWatcher | None = None  # where the reader thread sends SIGTERM


def _start_reader() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block on a full pipe
    # Another owner of the wakeup fd (an asyncio loop) keeps getting its bytes.
    forward_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    threading.Thread(target=_read_wakeups, args=(read_fd, forward_fd), name="sigterm-watcher", daemon=True).start()


def _read_wakeups(read_fd: int, forward_fd: int) -> None:
    while True:
        signums = os.read(read_fd, 64)
        if forward_fd >= 0:
            try:
                os.write(forward_fd, signums)
            except OSError:
                pass  # the other owner closed its fd; its wakeups are its business
        for signum in signums:
            if signum == signal.SIGTERM and _active is not None:
                _active._on_sigterm(signum)  # noqa: SLF001
