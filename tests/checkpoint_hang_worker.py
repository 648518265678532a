"""A process whose checkpoint save never completes (as when processes do not share the checkpoint
directory), run by test_checkpoint_timeout.py.

    python checkpoint_hang_worker.py save|sigterm|sigterm_native CKPT_DIR TIMEOUT_S

save: starts a save that hangs; the Checkpointer must end the process after TIMEOUT_S with an error.
sigterm: installs the SIGTERM handler, prints "ready" and hangs (a step that never ends); a SIGTERM must
still end the process within TIMEOUT_S.
sigterm_native: as sigterm, but the main thread hangs with SIGTERM blocked, as when it is stuck in
native code (XLA, a collective) and the kernel hands the signal to another thread.
"""
import signal
import sys
import time

import jax.numpy as jnp

from atomsearch_jax.training.checkpoint import Checkpointer
from atomsearch_jax.training.train_state import TrainState


def hang(*args, **kwargs):
    time.sleep(3600)


def main(mode: str, directory: str, timeout: float) -> None:
    ckpt = Checkpointer(directory, save_timeout_s=timeout)
    ckpt._manager.save = hang  # noqa: SLF001  the save blocks like a barrier waiting on absent peers
    if mode in ("sigterm", "sigterm_native"):
        ckpt.install_sigterm_handler()
        if mode == "sigterm_native":
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        print("ready", flush=True)
        hang()
    state = TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.ones((2,))}, opt_state={},
                       rng=jnp.zeros((2,), jnp.uint32), skipped_steps=jnp.zeros((), jnp.int32))
    print("saving", flush=True)
    ckpt.save(1, state, force=True)
    print("save returned", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
