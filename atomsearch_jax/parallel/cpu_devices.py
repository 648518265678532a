"""How many JAX devices XLA:CPU makes of this process's cores: set once, before any device use.

A small model's decode step does not fill two cores with XLA:CPU's intra-op threads (process CPU / wall
about 1.1 at the default job's 64 rows). Split into two devices that each decode half the rows, the default
job's sampler steps ran 1.23x faster (median of 5 rounds; 7.4 ms against 10.6 in the best rounds) and its
updates 1.05x (`scripts/bench_cpu_devices.py`, BENCHMARKS.md "Two CPU devices").
"""
from __future__ import annotations

import logging
import os

import jax

FORCE_FLAG = "xla_force_host_platform_device_count"


def use_cpu_devices(count: int) -> None:
    """Makes XLA:CPU expose `count` devices (0: leave JAX's default).

    Must run before anything touches a device (JAX raises otherwise). An explicit
    `--xla_force_host_platform_device_count` in XLA_FLAGS wins: it is left alone and logged. It only
    shapes the CPU platform; a job on TPU or GPU computes on those devices whatever this says.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"config.cpu_devices must be an integer >= 0 (0 = JAX's default), got {count!r}")
    if count == 0:
        return
    if FORCE_FLAG in os.environ.get("XLA_FLAGS", ""):
        logging.info("config.cpu_devices=%d not applied: XLA_FLAGS sets --%s", count, FORCE_FLAG)
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as e:
        raise RuntimeError(f"config.cpu_devices={count} must be applied before JAX's first device use: {e}") from e
