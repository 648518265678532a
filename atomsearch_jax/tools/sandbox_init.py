"""The sandbox's first process: runs as pid 1 of fresh namespaces, sets the jail up, runs the user code.

Started by `sandbox.launch` as `python -I -S sandbox_init.py CONFIG_JSON` (under `unshare` when namespaces
are available), with the user's code on stdin and a status pipe on fd `status_fd`. Standard library only:
`-I` hides PYTHONPATH, so nothing of atomsearch_jax is importable here.

As pid 1 it (1) joins the execution's cgroups, (2) mounts a fresh /proc, makes every other mount read-only
and mounts a size-limited tmpfs on /tmp holding the work directory, (3) forks the user process, which sets
its rlimits, drops to the execution's own uid (when started as real root) or locks the mounts in a nested
user namespace (when started in one), sets no_new_privs and execs the interpreter on the code, (4) reaps
every process until the user process exits, writes one JSON status line and exits -- which makes the kernel
kill whatever the code left running in the pid namespace. A watchdog alarm does the same if the host
disappears.
"""
import ctypes
import json
import os
import resource
import signal
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_NOATIME, MS_NODIRATIME, MS_REMOUNT, MS_BIND, MS_REC, MS_RELATIME = 1024, 2048, 32, 4096, 16384, 1 << 21
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
PR_SET_NO_NEW_PRIVS = 38
# statvfs f_flag bits that must be repeated on a bind remount (the kernel refuses to drop locked ones).
_STATVFS_TO_MS = ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
                  (2048, MS_NODIRATIME), (4096, MS_RELATIME))
WORK_DIR = "/tmp/work"

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'remount'} on {target}: {os.strerror(err)}")


def _mount_points():
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return sorted(set(points), key=len)


def _readonly_everything(skip):
    """Bind-remount every mount read-only (keeping its other flags); returns the points that refused."""
    failed = []
    for point in _mount_points():
        if point in skip or any(point.startswith(s + "/") for s in skip):
            continue
        try:
            have = os.statvfs(point).f_flag
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY
            flags |= sum(ms for st, ms in _STATVFS_TO_MS if have & st)
            _mount(None, point, None, flags)
        except OSError:
            failed.append(point)
    return failed


def _setup_filesystem(cfg):
    """Fresh /proc, everything read-only, a private size-limited tmpfs on /tmp. Returns the isolation
    properties obtained."""
    obtained = []
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for hidden, needed in cfg["reroutes"]:
        fds = [os.open(path, os.O_PATH) for path in needed]
        _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
        for path, fd in zip(needed, fds):
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)
        obtained.append(f"hidden:{hidden}")
    failed = _readonly_everything(skip={"/proc", "/dev"})
    if "/" not in failed:
        obtained.append("readonly_root")
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['disk_bytes']},mode=1777")
    for shared_dir in ("/dev/shm", "/var/tmp"):
        if os.path.isdir(shared_dir):
            _mount("tmpfs", shared_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k")
    os.mkdir(WORK_DIR, 0o700)
    obtained.append("private_tmpfs")
    return obtained


def _limit(which, soft, hard=None):
    resource.setrlimit(which, (soft, soft if hard is None else hard))


def _become_user_process(cfg, code_path):
    """In the forked child: limits, identity, exec. Never returns."""
    try:
        for fd in (cfg["status_fd"],):
            os.close(fd)
        os.setsid()
        _limit(resource.RLIMIT_CORE, 0)
        _limit(resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1)
        _limit(resource.RLIMIT_AS, cfg["memory_bytes"])
        _limit(resource.RLIMIT_FSIZE, cfg["disk_bytes"])
        _limit(resource.RLIMIT_NOFILE, cfg["max_open_files"])
        if cfg["uid"] is not None:
            os.chown(cfg["work_dir"], cfg["uid"], cfg["uid"])
            os.chown(code_path, cfg["uid"], cfg["uid"])
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        elif cfg["lock_mounts"] and _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(user|mount) to lock the mounts")
        # After the uid change: RLIMIT_NPROC counts the processes of the (fresh) uid.
        _limit(resource.RLIMIT_NPROC, cfg["max_processes"])
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        os.chdir(cfg["work_dir"])
        os.execve(cfg["python"], [cfg["python"], "-I", "-u", code_path], cfg["env"])
    except BaseException as err:  # noqa: BLE001 -- report and die, the parent writes the status
        os.write(2, f"sandbox setup failed: {err}\n".encode())
    os._exit(125)


def main():
    cfg = json.loads(sys.argv[1])
    os.umask(0o022)
    status = os.fdopen(cfg["status_fd"], "w")

    def report(**fields):
        status.write(json.dumps(fields) + "\n")
        status.flush()

    def on_alarm(signum, frame):
        report(watchdog=True)
        os._exit(0)  # as pid 1 this kills everything else in the namespace

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(cfg["watchdog_s"]) + 1)
    code = sys.stdin.buffer.read()
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    try:
        for procs_file in cfg["cgroup_procs"]:
            with open(procs_file, "w") as f:
                f.write("0")  # "0" = the writing task, whatever pid namespace it is in
        obtained = _setup_filesystem(cfg) if cfg["mount"] else []
        os.makedirs(cfg["work_dir"], exist_ok=True)
        code_path = os.path.join(cfg["work_dir"], "main.py")
        with open(code_path, "wb") as f:
            f.write(code)
    except OSError as err:
        report(setup_error=str(err))
        return
    child = os.fork()
    if child == 0:
        _become_user_process(cfg, code_path)
    while True:  # reap everything; stop when the user process is gone
        try:
            pid, wait_status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            return
        if pid == child:
            cpu_s = usage.ru_utime + usage.ru_stime
            if os.WIFSIGNALED(wait_status):
                report(signal=os.WTERMSIG(wait_status), cpu_s=cpu_s, obtained=obtained)
            else:
                report(exit=os.WEXITSTATUS(wait_status), cpu_s=cpu_s, obtained=obtained)
            return


if __name__ == "__main__":
    main()
    os._exit(0)
