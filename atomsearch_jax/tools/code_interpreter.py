"""A sandboxed Python code interpreter: the tool of the DemyAgent / GRPO-TCR recipe.

    result = execute("print(2 ** 100)", timeout_s=5)
    result.stdout, result.stderr, result.error   # error is None when the code ran to completion

Each execution is a fresh `python -I -u main.py` inside the strongest isolation `isolation.probe()` finds
(pid / network / mount / IPC / UTS namespaces, an unprivileged uid of its own, a read-only root, a private
size-limited tmpfs as working directory; cgroup pids and memory limits when writable), with rlimits on CPU
time, address space, file size, open files and processes, and a scrubbed environment. The host enforces
the wall-clock limit and caps the output: past `kill_output_bytes` the run is killed, and what is kept is
the head and tail of each stream (`max_output_bytes`) with the middle cut. On a timeout the whole process
group is killed; the namespace's pid 1 exits, so the kernel kills everything the code started.

Without namespaces `execute` raises SandboxUnavailable unless `allow_unsandboxed=True`.

`CodeInterpreter` runs many executions at once on a thread pool (each waits on its child in a thread that
holds no GIL while blocked), so a rollout loop can submit calls and keep decoding.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Sequence

from atomsearch_jax.tools import isolation as isolation_lib
from atomsearch_jax.tools.output_capture import HeadTailBuffer

_INIT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_init.py")
# Executions run as uids from this range when the host is real root: far above any real account, one per
# execution, so RLIMIT_NPROC counts only that execution's processes.
SANDBOX_UID_RANGE = (1_000_000, 1_000_000 + (1 << 30))
_uid_counter = itertools.count()
_uid_lock = threading.Lock()
_SCRUBBED_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}


class SandboxUnavailable(RuntimeError):
    """No namespace isolation on this machine and the caller did not allow unsandboxed execution."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-execution limits. timeout_s: wall clock (host-enforced); cpu_s: CPU seconds of the user process
    (RLIMIT_CPU); memory_bytes: address space per process (RLIMIT_AS) and, with a memory cgroup, resident
    memory of the whole execution (that cgroup also holds the private tmpfs and page cache, so its limit is
    memory_bytes + disk_bytes + CGROUP_PAGE_CACHE_BYTES); max_processes: processes and threads (RLIMIT_NPROC
    under the private uid, cgroup pids.max); disk_bytes: size of the private tmpfs and of any written file;
    max_output_bytes: kept per stream (head + tail); kill_output_bytes: total output past which the run is
    killed."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    max_processes: int = 32
    max_open_files: int = 256
    disk_bytes: int = 64 << 20
    max_output_bytes: int = 8192
    kill_output_bytes: int = 4 << 20

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"sandbox limit {field.name} must be > 0, got {getattr(self, field.name)}")


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """stdout / stderr: captured text (middle cut past the limit); error: None when the code exited with
    status 0 within its limits, else a short reason ("timeout: ...", "memory limit exceeded", "killed by
    signal SIGSEGV", "exit status 1: ZeroDivisionError: division by zero", ...); exit_code / signal: how the
    user process ended (None when unknown); wall_s: host wall-clock seconds; cpu_s: the user process's CPU
    seconds; isolation: the protections this run got."""

    stdout: str
    stderr: str
    error: str | None
    exit_code: int | None = None
    signal: int | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    output_truncated: bool = False
    isolation: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def _next_uid() -> int:
    with _uid_lock:
        n = next(_uid_counter)
    lo, hi = SANDBOX_UID_RANGE
    return lo + ((os.getpid() % 100_000) * 4096 + n % 4096) % (hi - lo)


# The cgroup charges the interpreter's file pages and the private tmpfs too. Without room for them, one
# process nearing its RLIMIT_AS fills the cgroup first; the kernel then evicts the interpreter's own code
# pages and re-reads them until RLIMIT_CPU fires, instead of Python raising MemoryError.
CGROUP_PAGE_CACHE_BYTES = 32 << 20


def _cgroup_memory_bytes(limits: Limits) -> int:
    """The execution cgroup's memory limit: every process's resident memory, the tmpfs and page cache."""
    return limits.memory_bytes + limits.disk_bytes + CGROUP_PAGE_CACHE_BYTES


class _Cgroups:
    """One execution's cgroups (a child of each writable controller group), removed by `close`."""

    def __init__(self, dirs: Sequence[tuple[str, str]], name: str, limits: Limits):
        self.paths: list[str] = []
        self.memory_path: str | None = None
        for controller, parent in dirs:
            path = os.path.join(parent, name)
            if path in self.paths:  # v2: one directory carries both controllers
                continue
            os.mkdir(path)
            self.paths.append(path)
        for controller, parent in dirs:
            path = os.path.join(parent, name)
            if controller == "pids":
                _write(path, "pids.max", str(limits.max_processes))
            elif controller == "memory":
                self.memory_path = path
                v1 = os.path.exists(os.path.join(path, "memory.limit_in_bytes"))
                _write(path, "memory.limit_in_bytes" if v1 else "memory.max", str(_cgroup_memory_bytes(limits)))
                if not v1:
                    _write(path, "memory.swap.max", "0", missing_ok=True)

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(p, "cgroup.procs") for p in self.paths]

    def memory_limit_hit(self) -> bool:
        if self.memory_path is None:
            return False
        for name, key in (("memory.failcnt", None), ("memory.events", "max")):
            try:
                with open(os.path.join(self.memory_path, name)) as f:
                    text = f.read()
            except OSError:
                continue
            if key is None:
                return int(text.strip() or 0) > 0
            counts = dict(line.split() for line in text.splitlines() if line.strip())
            return int(counts.get(key, 0)) > 0 or int(counts.get("oom_kill", 0)) > 0
        return False

    def close(self) -> None:
        for path in self.paths:
            for _ in range(200):  # the namespace's processes may take a moment to be reaped
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def _write(directory: str, name: str, value: str, missing_ok: bool = False) -> None:
    try:
        with open(os.path.join(directory, name), "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else ""


def _explain(status: dict, stderr: str, limits: Limits, memory_hit: bool) -> tuple[str | None, int | None, int | None]:
    """(error, exit_code, signal) from the status pid 1 reported."""
    if "setup_error" in status:
        return f"sandbox setup failed: {status['setup_error']}", None, None
    if status.get("watchdog"):
        return f"timeout: exceeded the wall-clock limit of {limits.timeout_s:g}s", None, None
    if "signal" in status:
        sig = status["signal"]
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and status.get("cpu_s", 0) >= limits.cpu_s):
            return f"CPU time limit exceeded ({limits.cpu_s}s)", None, sig
        if sig == signal.SIGKILL and memory_hit:
            return f"memory limit exceeded ({limits.memory_bytes} bytes)", None, sig
        return f"killed by signal {_signal_name(sig)}", None, sig
    code = status.get("exit")
    if code == 0:
        return None, 0, None
    last = _last_line(stderr)
    if last.startswith("MemoryError") or memory_hit:
        return f"memory limit exceeded ({limits.memory_bytes} bytes): {last}", code, None
    return f"exit status {code}" + (f": {last}" if last else ""), code, None


def _collect(proc: subprocess.Popen, status_r: int, limits: Limits) -> tuple[HeadTailBuffer, HeadTailBuffer, bytes, str | None]:
    """Reads stdout, stderr and the status pipe until all close or a limit is hit; kills on a limit."""
    out, err = HeadTailBuffer(limits.max_output_bytes), HeadTailBuffer(limits.max_output_bytes)
    status = bytearray()
    deadline = time.monotonic() + limits.timeout_s
    killed_for: str | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        sel.register(status_r, selectors.EVENT_READ, status)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed_for = f"timeout: exceeded the wall-clock limit of {limits.timeout_s:g}s"
                break
            for key, _ in sel.select(timeout=remaining):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                elif key.data is status:
                    status += data
                else:
                    key.data.add(data)
            if out.total + err.total > limits.kill_output_bytes:
                killed_for = f"output limit exceeded (more than {limits.kill_output_bytes} bytes)"
                break
    if killed_for:
        _kill_group(proc)
    return out, err, bytes(status), killed_for


def run_sandboxed(code: str, limits: Limits, *, allow_unsandboxed: bool = False,
                  isolation: isolation_lib.Isolation | None = None) -> ExecutionResult:
    """Runs `code` once under `limits` (see the module docstring)."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    iso = isolation or isolation_lib.probe()
    if not iso.sandboxed and not allow_unsandboxed:
        raise SandboxUnavailable(
            "no namespace isolation available (unshare missing or refused, no user namespaces); "
            "pass allow_unsandboxed=True to run model code with rlimits only")
    started = time.monotonic()
    uid = _next_uid() if iso.mode == "namespaces" else None
    host_dir = None if iso.sandboxed else tempfile.mkdtemp(prefix="code_interpreter_")
    cgroups = _Cgroups(iso.cgroup_dirs, f"run_{os.getpid()}_{uid or next(_uid_counter)}_{time.monotonic_ns()}", limits)
    status_r, status_w = os.pipe()
    config = {
        "status_fd": status_w, "mount": iso.sandboxed, "lock_mounts": iso.mode == "userns", "uid": uid,
        "work_dir": host_dir or "/tmp/work", "python": sys.executable, "env": {**_SCRUBBED_ENV, "HOME": host_dir or "/tmp/work",
                                                                               "TMPDIR": host_dir or "/tmp/work"},
        "cpu_s": int(max(1, limits.cpu_s)), "memory_bytes": limits.memory_bytes, "max_processes": limits.max_processes,
        "max_open_files": limits.max_open_files, "disk_bytes": limits.disk_bytes, "watchdog_s": limits.timeout_s + 1,
        "cgroup_procs": cgroups.procs_files, "reroutes": isolation_lib.interpreter_reroutes() if uid is not None else (),
    }
    try:
        proc = subprocess.Popen([*iso.unshare, sys.executable, "-I", "-S", _INIT_SCRIPT, json.dumps(config)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(status_w,), env=dict(_SCRUBBED_ENV), start_new_session=True)
    except BaseException:
        os.close(status_r)
        os.close(status_w)
        cgroups.close()
        raise
    os.close(status_w)
    try:
        try:
            proc.stdin.write(code.encode("utf-8", errors="surrogatepass"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        out, err, status_bytes, killed_for = _collect(proc, status_r, limits)
        proc.wait()
        wall_s = time.monotonic() - started  # before the cleanup below, which may wait for the kernel
        _kill_group(proc)  # stragglers of the unsandboxed mode (namespaces are already empty)
    finally:
        os.close(status_r)
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        memory_hit = cgroups.memory_limit_hit()
        cgroups.close()
        if host_dir:
            shutil.rmtree(host_dir, ignore_errors=True)
    lines = status_bytes.decode(errors="replace").splitlines()
    status = json.loads(lines[-1]) if lines else {}
    stderr = err.text()
    if killed_for:
        error, exit_code, sig = killed_for, None, None
    elif not status:
        error, exit_code, sig = f"sandbox failed (launcher exit status {proc.returncode}): {_last_line(stderr)}", None, None
    else:
        error, exit_code, sig = _explain(status, stderr, limits, memory_hit)
    return ExecutionResult(
        stdout=out.text(), stderr=stderr, error=error, exit_code=exit_code, signal=sig,
        wall_s=wall_s, cpu_s=float(status.get("cpu_s", 0.0)),
        output_truncated=out.truncated or err.truncated,
        isolation=iso.features() + tuple(status.get("obtained", ())))


def execute(code: str, *, timeout_s: float = 10.0, limits: Limits | None = None,
            allow_unsandboxed: bool = False) -> ExecutionResult:
    """Runs Python `code` in the sandbox and returns its result; `timeout_s` overrides the wall clock of
    `limits` (default `Limits()`); the CPU limit is capped at the wall clock."""
    base = limits or Limits()
    limits = dataclasses.replace(base, timeout_s=timeout_s, cpu_s=max(1, min(base.cpu_s, int(timeout_s + 0.999))))
    return run_sandboxed(code, limits, allow_unsandboxed=allow_unsandboxed)


class CodeInterpreter:
    """Concurrent sandboxed execution for the rollout loop: `submit` returns a Future at once.

    max_workers: executions in flight (each is one thread waiting on one child process).
    """

    name = "code_interpreter"

    def __init__(self, limits: Limits = Limits(), *, max_workers: int = 16, allow_unsandboxed: bool = False):
        iso = isolation_lib.probe()
        if not iso.sandboxed and not allow_unsandboxed:
            raise SandboxUnavailable(f"code interpreter: {iso.describe()}; pass allow_unsandboxed=True to run anyway")
        self.limits, self.allow_unsandboxed, self.isolation = limits, allow_unsandboxed, iso
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="code_interpreter")

    def submit(self, code: str) -> concurrent.futures.Future:
        """A Future of the ExecutionResult of `code`."""
        return self._pool.submit(run_sandboxed, code, self.limits, allow_unsandboxed=self.allow_unsandboxed,
                                 isolation=self.isolation)

    def run_many(self, codes: Sequence[str]) -> list[ExecutionResult]:
        """Results of `codes`, run concurrently, in order."""
        return [f.result() for f in [self.submit(c) for c in codes]]

    async def run(self, code: str) -> ExecutionResult:
        """Awaitable execution for asyncio hosts."""
        return await asyncio.wrap_future(self.submit(code))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "CodeInterpreter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
