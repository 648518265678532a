"""The sandboxed code interpreter against hostile code: every attack contained and reported, the host
unharmed, nothing left running (no process under a sandbox uid, no cgroup left behind)."""
import os
import socket
import sys
import threading
import time

import pytest

from atomsearch_jax.tools import CodeInterpreter, Limits, SandboxUnavailable, execute, probe
from atomsearch_jax.tools.code_interpreter import SANDBOX_UID_RANGE, run_sandboxed
from atomsearch_jax.tools.isolation import CGROUP_GROUP, Isolation

ISO = probe()
needs_sandbox = pytest.mark.skipif(not ISO.sandboxed, reason=f"no namespace isolation here ({ISO.describe()})")
FAST = Limits(timeout_s=4.0, cpu_s=2, memory_bytes=256 << 20, max_processes=16, disk_bytes=8 << 20,
              max_output_bytes=2048, kill_output_bytes=1 << 20)


def _sandbox_processes() -> list[int]:
    """Processes running under the uids this test process hands out (other xdist workers have their own)."""
    lo = SANDBOX_UID_RANGE[0] + (os.getpid() % 100_000) * 4096
    hi = lo + 4096
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if lo <= uid < hi:
            found.append(int(entry))
    return found


def _leftover_cgroups() -> list[str]:
    return [os.path.join(parent, name) for _, parent in ISO.cgroup_dirs
            for name in os.listdir(parent) if name.startswith(f"run_{os.getpid()}_")]


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    deadline = time.monotonic() + 3.0
    while (_sandbox_processes() or _leftover_cgroups()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sandbox_processes() == [], "sandboxed processes still running"
    assert _leftover_cgroups() == [], "sandbox cgroups left behind"


def run(code: str, **overrides):
    import dataclasses
    return run_sandboxed(code, dataclasses.replace(FAST, **overrides))


@needs_sandbox
def test_plain_code_runs_and_reports_isolation():
    result = execute("import math\nprint(math.factorial(20))\nprint(sum(range(10)))", timeout_s=5)
    assert result.error is None and result.exit_code == 0
    assert result.stdout == "2432902008176640000\n45\n"
    for feature in ("pid_namespace", "network_namespace", "mount_namespace", "private_tmpfs", "rlimits"):
        assert feature in result.isolation
    failing = execute("print('before')\nraise ValueError('bad value')", timeout_s=5)
    assert failing.stdout == "before\n" and failing.error == "exit status 1: ValueError: bad value"


@needs_sandbox
def test_infinite_loop_ignoring_signals_hits_cpu_limit():
    code = ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU, signal.SIGALRM, signal.SIGHUP):\n"
            "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n")
    # The wall clock is generous so a loaded machine still lets the loop burn its CPU second(s).
    result = run(code, cpu_s=1, timeout_s=30)
    assert result.error.startswith("CPU time limit exceeded"), result
    assert 1.0 <= result.cpu_s <= 2.5


@needs_sandbox
def test_sleeping_loop_ignoring_signals_hits_wall_clock():
    code = ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
            "    signal.signal(s, signal.SIG_IGN)\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.1)\n")
    result = run(code, timeout_s=1.5)
    assert result.error.startswith("timeout"), result
    assert result.stdout == "started\n"
    assert 1.5 <= result.wall_s < 5.0


@needs_sandbox
def test_fork_bomb_is_capped_and_its_children_are_killed():
    # Children sleep forever (as if daemonized); the parent counts forks until refused, then exits.
    code = ("import os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        os.setsid()\n        time.sleep(1000)\n        os._exit(0)\n    n += 1\nprint(n)\n")
    result = run(code)
    assert result.error is None, result
    assert 0 < int(result.stdout) < FAST.max_processes
    classic = run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", timeout_s=2)
    assert classic.error is not None and classic.wall_s < 5


@needs_sandbox
def test_thread_bomb_is_capped():
    code = ("import threading, time\nn = 0\ntry:\n    while True:\n"
            "        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n        n += 1\n"
            "except (RuntimeError, MemoryError):\n    pass\nprint(n)\nimport os\nos._exit(0)\n")
    result = run(code)
    assert result.error is None, result
    assert int(result.stdout) < FAST.max_processes


@needs_sandbox
def test_memory_bomb_is_reported():
    # CPU headroom: near the cgroup's limit the kernel reclaims before it kills, and on a loaded machine that
    # reclaim once used up FAST's 2 CPU seconds first (reported as the CPU limit).
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(32 << 20))\n", cpu_s=10, timeout_s=15.0)
    assert result.error.startswith("memory limit exceeded"), result


@needs_sandbox
def test_memory_bomb_beside_a_full_tmpfs_still_raises_memory_error():
    # The tmpfs file is charged to the memory cgroup but not to RLIMIT_AS: the cgroup must leave room for it,
    # or the bomb is OOM-killed (or thrashes into the CPU limit) instead of seeing MemoryError.
    code = ("open('scratch.bin', 'wb').write(b'x' * (40 << 20))\nchunks = []\n"
            "while True:\n    chunks.append(bytearray(32 << 20))\n")
    result = run(code, disk_bytes=48 << 20, timeout_s=10)
    assert result.error is not None and result.error.endswith("MemoryError"), result


@needs_sandbox
@pytest.mark.skipif(not any(c == "memory" for c, _ in ISO.cgroup_dirs), reason="no writable memory cgroup")
def test_memory_bomb_spread_over_processes_hits_the_cgroup():
    # Each process stays under RLIMIT_AS (256 MiB), together they exceed the execution's memory cgroup.
    code = ("import os, time\npids = []\nfor _ in range(6):\n    pid = os.fork()\n    if pid == 0:\n"
            "        b = bytearray(150 << 20)\n        b[::4096] = b'x' * len(b[::4096])\n        time.sleep(0.5)\n"
            "        os._exit(0)\n    pids.append(pid)\n"
            "print(sum(os.WIFSIGNALED(os.waitpid(p, 0)[1]) for p in pids))\n")
    result = run(code, timeout_s=20)
    assert result.error is None, result
    assert int(result.stdout) >= 3  # at most one 150 MiB child fits at a time; most were OOM-killed


@needs_sandbox
def test_huge_output_is_cut_in_the_middle_or_killed():
    lines = run("for i in range(20000):\n    print(f'line {i}')\n")
    assert lines.error is None and lines.output_truncated
    assert lines.stdout.startswith("line 0\nline 1\n") and lines.stdout.endswith("line 19999\n")
    assert "bytes truncated" in lines.stdout and len(lines.stdout) < FAST.max_output_bytes + 100
    flood = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    assert flood.error.startswith("output limit exceeded"), flood
    assert len(flood.stdout) < FAST.max_output_bytes + 100


@needs_sandbox
def test_writes_outside_the_work_dir_fail(tmp_path):
    target = tmp_path / "escaped.txt"
    repo_file = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "escaped_by_sandbox.txt")
    code = (f"import os\nfor path in [{str(target)!r}, {repo_file!r}, '/etc/escaped', '/var/tmp/x', '/dev/shm/x']:\n"
            "    try:\n        open(path, 'w').write('pwned')\n        print('WROTE', path)\n"
            "    except OSError as e:\n        print('refused', path, type(e).__name__)\n"
            "open('local.txt', 'w').write('ok')\nprint(open('local.txt').read(), os.getcwd())\n")
    result = run(code)
    assert result.error is None, result
    assert "WROTE" not in result.stdout and result.stdout.count("refused") == 5
    assert "ok /tmp/work" in result.stdout
    assert not target.exists() and not os.path.exists(repo_file) and not os.path.exists("/etc/escaped")


@needs_sandbox
def test_parent_environment_is_invisible(monkeypatch):
    monkeypatch.setenv("ATOMSEARCH_TEST_SECRET", "hunter2-secret")
    code = ("import os\nprint(dict(os.environ))\n"
            f"for path in ['/proc/1/environ', '/proc/{os.getpid()}/environ', '/proc/{os.getppid()}/environ']:\n"
            "    try:\n        print(open(path, 'rb').read())\n    except OSError as e:\n        print('no', path, e)\n"
            "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n")
    result = run(code)
    assert result.error is None, result
    assert "hunter2-secret" not in result.stdout + result.stderr
    assert "ATOMSEARCH_TEST_SECRET" not in result.stdout
    # Only the sandbox's own processes are visible: its pid 1 and the user process (and none of the host's).
    assert result.stdout.strip().splitlines()[-1] == "['1', '2']"


@needs_sandbox
def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.1)
    port = server.getsockname()[1]
    code = ("import socket\nfor addr in [('127.0.0.1', %d), ('8.8.8.8', 53), ('1.1.1.1', 443)]:\n"
            "    try:\n        socket.create_connection(addr, timeout=1)\n        print('CONNECTED', addr)\n"
            "    except OSError as e:\n        print('failed', addr, type(e).__name__)\n" % port)
    result = run(code)
    assert result.error is None, result
    assert "CONNECTED" not in result.stdout and result.stdout.count("failed") == 3
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()


@needs_sandbox
def test_ctypes_crash_is_reported_and_the_host_survives():
    result = run("import ctypes\nprint('about to crash', flush=True)\nctypes.string_at(0)\n")
    assert result.error == "killed by signal SIGSEGV", result
    assert result.stdout == "about to crash\n"
    assert execute("print('still fine')", timeout_s=5).stdout == "still fine\n"


@needs_sandbox
def test_64_concurrent_executions_finish_within_limits():
    limits = Limits(timeout_s=30.0, cpu_s=1, memory_bytes=256 << 20, max_processes=16)
    codes = [f"print({i} * {i})" for i in range(60)] + ["while True:\n    pass\n"] * 4
    started = time.monotonic()
    with CodeInterpreter(limits, max_workers=64) as interpreter:
        results = interpreter.run_many(codes)
    elapsed = time.monotonic() - started
    assert [r.stdout for r in results[:60]] == [f"{i * i}\n" for i in range(60)]
    assert all(r.error is None for r in results[:60])
    assert all(r.error is not None for r in results[60:])
    assert all(r.wall_s <= limits.timeout_s + 1.0 for r in results)
    assert elapsed < limits.timeout_s + 5.0


@needs_sandbox
def test_submissions_do_not_block_the_caller():
    with CodeInterpreter(FAST, max_workers=4) as interpreter:
        started = time.monotonic()
        future = interpreter.submit("import time\ntime.sleep(1.0)\nprint('done')")
        submitted = time.monotonic() - started
        spins = 0
        while not future.done():
            spins += 1  # the host loop keeps running (this is where decoding would happen)
            time.sleep(0.01)
        assert submitted < 0.2 and spins > 20
        assert future.result().stdout == "done\n"


def test_refuses_to_run_unsandboxed_unless_told(tmp_path):
    bare = Isolation("none", (), ())
    with pytest.raises(SandboxUnavailable, match="allow_unsandboxed"):
        run_sandboxed("print(1)", FAST, isolation=bare)
    result = run_sandboxed("import os\nprint(os.getcwd() != '/tmp/work', 6 * 7)", FAST, isolation=bare,
                           allow_unsandboxed=True)
    assert result.error is None and result.stdout == "True 42\n"
    assert "network_namespace" not in result.isolation


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="timeout_s"):
        Limits(timeout_s=0)
    with pytest.raises(TypeError, match="code must be a str"):
        run_sandboxed(b"print(1)", FAST, allow_unsandboxed=True)
