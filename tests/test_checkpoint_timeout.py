"""A checkpoint save that cannot complete ends the process with a clear error after
checkpoint.save_timeout_s, and SIGTERM ends a process even when its step or save hangs."""
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

WORKER = pathlib.Path(__file__).with_name("checkpoint_hang_worker.py")
TIMEOUT_S = 3


def start(mode, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(tmp_path / "ckpt"), str(TIMEOUT_S)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_hung_save_times_out_with_clear_error(tmp_path):
    proc = start("save", tmp_path)
    assert proc.stdout.readline() == "saving\n"
    began = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "save returned" not in out
    assert time.monotonic() - began >= TIMEOUT_S - 0.5
    assert "did not finish within checkpoint.save_timeout_s=3 s" in err and "same checkpoint directory" in err


@pytest.mark.parametrize("mode", ["sigterm", "sigterm_native"])
def test_sigterm_ends_a_hung_process(tmp_path, mode):
    proc = start(mode, tmp_path)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "has not stopped" in err


def test_second_sigterm_ends_the_process_at_once(tmp_path):
    proc = start("sigterm", tmp_path)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    # The second signal must arrive after the handler took the first: two signals pending at once are
    # handled once (a loaded machine can delay the handler past any fixed sleep).
    seen = []
    while not any("will checkpoint and stop" in line for line in seen):
        line = proc.stderr.readline()
        assert line, "".join(seen)[-2000:]
        seen.append(line)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    err = "".join(seen) + err
    assert proc.returncode == 143 and time.monotonic() - began < TIMEOUT_S, err[-2000:]
    assert "again: stopping now" in err


def test_sigterm_goes_to_the_latest_installed_watcher():
    """The SFT stage's checkpointer installs a watcher, then GRPO's: a SIGTERM during GRPO is GRPO's alone."""
    code = textwrap.dedent("""
        import os, signal, time
        from atomsearch_jax.training.preemption import SigtermWatcher
        calls = []
        first, second = (SigtermWatcher(60, on_exit=lambda *a: calls.append(a)) for _ in range(2))
        assert first.install() and second.install()
        deadline = time.monotonic() + 60
        os.kill(os.getpid(), signal.SIGTERM)
        while not second.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        print(first.requested, second.requested, calls)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False True [(143, 'received signal 15 again: stopping now')]", proc.stdout
