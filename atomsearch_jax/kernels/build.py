"""Compiles this package's C++ FFI handlers on first use and caches the shared libraries.

The compiler is `$CXX`, else g++, c++ or clang++; libraries live under `$ATOMSEARCH_KERNEL_CACHE`
(default ~/.cache/atomsearch_jax/kernels), keyed by the source and the headers beside it, the extra flags, jaxlib's version, the
compiler and the CPU's feature flags, so a changed source, upgraded jaxlib or another machine type builds
anew and concurrent processes (pytest -n, hosts sharing a home directory) never see half a file.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax

_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC")


class BuildError(RuntimeError):
    """The handler could not be built (no compiler, a failed compile); the message says why."""


def compiler() -> str:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise BuildError("no C++ compiler found (set $CXX)")


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def x86_with(*features: str) -> bool:
    """Whether this is an x86-64 CPU whose /proc/cpuinfo flags include every one of `features` (e.g. "avx2",
    "fma": what the handlers' hand-written loops need; they check again at run time)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        flags = next((line.split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return False
    return all(f in flags for f in features)


def cache_dir() -> Path:
    root = os.environ.get("ATOMSEARCH_KERNEL_CACHE") or os.path.join(Path.home(), ".cache", "atomsearch_jax", "kernels")
    return Path(root)


def shared_library(source: Path, extra_flags: tuple[str, ...] = ()) -> Path:
    """Path of `source` compiled to a shared library against jaxlib's FFI headers (built when missing).

    extra_flags: include/link flags of the libraries the handler calls (part of the cache key). The `*.h`
    files in the source's directory (which it may include) are part of the key too.
    """
    import jaxlib

    cxx = compiler()
    key = hashlib.sha256()
    headers = [h.read_bytes() for h in sorted(source.parent.glob("*.h"))]
    for part in (source.read_bytes(), *headers, jaxlib.__version__, cxx, " ".join(_FLAGS + extra_flags), _cpu_flags(),
                 platform.machine()):
        key.update(part if isinstance(part, bytes) else part.encode())
    target = cache_dir() / f"{source.stem}_{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [cxx, *_FLAGS, "-I", jax.ffi.include_dir(), str(source), "-o", tmp, *extra_flags]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise BuildError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, target)  # atomic: the last of concurrent builders wins with a whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
