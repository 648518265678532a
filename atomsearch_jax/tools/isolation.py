"""What isolation this machine gives a sandboxed process, probed once per host process.

Modes, strongest first:
- "namespaces": real root; `unshare` gives fresh pid, network, mount, IPC and UTS namespaces; the code runs
  under its own unprivileged uid (so RLIMIT_NPROC counts only its processes).
- "userns": not root, but unprivileged user namespaces work: the same namespaces inside a user namespace
  mapped to the caller, the mounts locked in a nested one.
- "none": no namespaces; rlimits only (no network isolation, no private filesystem). Refused unless the
  caller passes allow_unsandboxed=True.
cgroups (v1 or v2, when their hierarchy is writable) add a pids.max and a memory limit over the whole
process tree of one execution, on top of any mode.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import stat
import subprocess
import sys

NAMESPACE_FLAGS = ("--pid", "--net", "--mount", "--ipc", "--uts", "--fork", "--kill-child", "--propagation", "private")
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_GROUP = "atomsearch_sandbox"


@dataclasses.dataclass(frozen=True)
class Isolation:
    """mode: "namespaces" | "userns" | "none"; unshare: the unshare argv prefix ([] for "none");
    cgroup_dirs: per-controller parent directories executions get a child of ({"pids": path, ...})."""

    mode: str
    unshare: tuple[str, ...]
    cgroup_dirs: tuple[tuple[str, str], ...]

    @property
    def sandboxed(self) -> bool:
        return self.mode != "none"

    def features(self) -> tuple[str, ...]:
        """Human-readable list of the protections one execution gets (before per-run mount results)."""
        feats = ["rlimits", "scrubbed_env", "process_group_kill"]
        if self.sandboxed:
            feats += ["pid_namespace", "network_namespace", "mount_namespace", "ipc_namespace"]
        if self.mode == "namespaces":
            feats += ["private_uid", "process_limit"]
        elif self.mode == "userns":
            feats += ["user_namespace", "process_limit"]
        feats += [f"cgroup_{name}" for name, _ in self.cgroup_dirs]
        return tuple(feats)

    def describe(self) -> str:
        return f"{self.mode}: " + ", ".join(self.features())


def _runs(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=10, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path for a v1 controller ("pids", "memory") or v2 ("" key), from /proc."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controller in controllers.split(","):
                    return path
    except OSError:
        return None
    return None


def _writable_group(parent: str) -> str | None:
    """`parent/atomsearch_sandbox`, created if needed, when a child group can be made and removed in it."""
    group = os.path.join(parent, CGROUP_GROUP)
    try:
        os.makedirs(group, exist_ok=True)
        probe = os.path.join(group, f"probe_{os.getpid()}")
        os.mkdir(probe)
        os.rmdir(probe)
        return group
    except OSError:
        return None


def _cgroup_dirs() -> tuple[tuple[str, str], ...]:
    found = []
    v2_controllers = os.path.join(CGROUP_ROOT, "cgroup.controllers")
    if os.path.isfile(v2_controllers):  # unified hierarchy mounted at the root
        own = _own_cgroup("") or "/"
        with open(v2_controllers) as f:
            available = f.read().split()
        group = _writable_group(os.path.join(CGROUP_ROOT, own.lstrip("/")))
        if group:
            try:
                with open(os.path.join(group, "cgroup.subtree_control"), "w") as f:
                    f.write(" ".join(f"+{c}" for c in ("pids", "memory") if c in available))
            except OSError:
                pass
            with open(os.path.join(group, "cgroup.subtree_control")) as f:
                enabled = f.read().split()
            found += [(c, group) for c in ("pids", "memory") if c in enabled]
        return tuple(found)
    for controller in ("pids", "memory"):
        own = _own_cgroup(controller)
        base = os.path.join(CGROUP_ROOT, controller)
        if own is None or not os.path.isdir(base):
            continue
        group = _writable_group(os.path.join(base, own.lstrip("/")))
        if group:
            found.append((controller, group))
    return tuple(found)


def interpreter_reroutes() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Directories the sandbox uid cannot traverse that hold the interpreter: ((hidden, (needed, ...)), ...).

    E.g. a pyenv Python under /root (mode 700): the sandbox covers /root with an empty tmpfs (hiding the
    home directory) and binds only the interpreter's prefix back at its own path.
    """
    plan: dict[str, set[str]] = {}
    for needed in {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable))}:
        ancestor = "/"
        for part in needed.strip("/").split("/"):
            ancestor = os.path.join(ancestor, part)
            if ancestor != needed and not os.stat(ancestor).st_mode & stat.S_IXOTH:
                plan.setdefault(ancestor, set()).add(needed)
                break
    return tuple((hidden, tuple(sorted(paths))) for hidden, paths in sorted(plan.items()))


@functools.lru_cache(maxsize=None)
def probe() -> Isolation:
    """The strongest isolation available here (cached; see the module docstring)."""
    unshare = shutil.which("unshare")
    cgroups = _cgroup_dirs() if os.geteuid() == 0 else ()
    if unshare:
        root = (unshare, *NAMESPACE_FLAGS)
        if os.geteuid() == 0 and _runs([*root, "--mount-proc", "true"]):
            return Isolation("namespaces", root, cgroups)
        userns = (unshare, "--map-root-user", *NAMESPACE_FLAGS)
        if _runs([*userns, "--mount-proc", "true"]):
            return Isolation("userns", userns, cgroups)
    return Isolation("none", (), cgroups)
