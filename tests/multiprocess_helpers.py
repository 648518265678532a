"""Runs an entry point as a multi-process JAX job on localhost (P processes x D forced CPU devices)."""
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The default config shrunk to seconds per phase (CLI overrides, so the entry point's flag parsing is
# exercised too). The toy policy never answers after a few SFT steps, so rewards are all zero; the entropy
# bonus makes every GRPO update depend on the exact sampled tokens, which is what the layout must not change.
TINY_TRAIN_FLAGS = (
    "--config.format=research", "--config.data.eval_size=4", "--config.data.heldout_size=4",
    "--config.model.hidden_size=64", "--config.model.intermediate_size=128", "--config.model.num_layers=2",
    "--config.model.num_heads=2", "--config.model.num_kv_heads=1", "--config.model.max_len=640",
    "--config.sft.steps=3", "--config.sft.batch_size=8", "--config.sft.length_buckets=1",
    "--config.rl.prompts_per_step=2", "--config.rl.group_size=4", "--config.rl.loss.entropy_coef=0.01",
    "--config.rl.rollout.max_response_tokens=48", "--config.rl.rollout.segment_steps=24", "--config.eval.every=0",
    "--config.sft.optimizer.warmup_steps=0",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_job(module: str, args: list[str], *, processes: int, devices: int, log_prefix: str) -> list:
    """Starts `python -m module args` as `processes` processes with `devices` CPU devices each; returns
    [(Popen, log path)]. Logs go to files (a full pipe would block a process)."""
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = []
    for i in range(processes):
        dist = ([f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}", f"--process_id={i}"]
                if processes > 1 else [])
        log = f"{log_prefix}.{i}.log"
        with open(log, "w") as out:
            procs.append((subprocess.Popen([sys.executable, "-m", module, *dist, *args], env=env, cwd=REPO,
                                           stdout=out, stderr=subprocess.STDOUT), log))
    return procs


def wait_job(procs: list, timeout: float = 1500) -> None:
    """Waits for every process; raises with the log tail of the first that failed (and kills the rest)."""
    deadline = time.monotonic() + timeout
    try:
        for proc, log in procs:
            rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
            if rc != 0:
                raise AssertionError(f"{log}: exit status {rc}\n{open(log).read()[-4000:]}")
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
