"""The absl flags that join a multi-process JAX job, shared by every entry point (train, evaluate, serve).

    python -m atomsearch_jax.train --jax_distributed ...                      # TPU VM pod / SLURM: discovered
    python -m atomsearch_jax.train --coordinator_address=10.0.0.2:8476 \
        --num_processes=2 --process_id=0 ...                                  # CPU/GPU hosts: explicit

Defined once here so modules that import each other's helpers never define a flag twice.
"""
from __future__ import annotations

import logging

import jax
from absl import flags

from atomsearch_jax.parallel import initialize_distributed

JAX_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", False, "Join a multi-process job with addresses discovered from the environment "
    "(TPU VM pods, SLURM); one process per host.")
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", "", "host:port of process 0's coordinator (multi-process CPU/GPU jobs; needs "
    "--num_processes and --process_id).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job (with --coordinator_address).")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in 0..num_processes-1.")


def initialize_from_flags() -> None:
    """Joins the job the flags describe (nothing when none is set); call before anything touches devices.

    Afterwards only process 0 logs INFO (the others log warnings and errors), so a job prints its
    progress once.
    """
    explicit = {"--coordinator_address": COORDINATOR_ADDRESS.value or None, "--num_processes": NUM_PROCESSES.value,
                "--process_id": PROCESS_ID.value}
    given = [name for name, value in explicit.items() if value is not None]
    if given and len(given) < len(explicit):
        missing = sorted(set(explicit) - set(given))
        raise flags.ValidationError(f"{', '.join(given)} given without {', '.join(missing)}: a multi-process "
                                    "job needs all three")
    if given:
        if not 0 <= PROCESS_ID.value < NUM_PROCESSES.value:
            raise flags.ValidationError(f"--process_id={PROCESS_ID.value} is not in 0..--num_processes-1 "
                                        f"(--num_processes={NUM_PROCESSES.value})")
        initialize_distributed(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value)
    elif JAX_DISTRIBUTED.value:
        initialize_distributed()
    if jax.process_index() != 0:
        logging.getLogger().setLevel(logging.WARNING)
