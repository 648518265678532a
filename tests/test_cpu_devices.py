"""config.cpu_devices: XLA:CPU split into that many devices before JAX starts (each case in a fresh process,
since the test process's backend is already up with conftest's devices)."""
import os
import subprocess
import sys

import pytest

from atomsearch_jax.parallel.cpu_devices import use_cpu_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, xla_flags: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)


APPLY = ("from atomsearch_jax.parallel.cpu_devices import use_cpu_devices\n"
         "use_cpu_devices({n})\n"
         "import jax\n"
         "print('DEVICES', jax.device_count())\n")


def devices_seen(proc: subprocess.CompletedProcess) -> int:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(next(ln for ln in proc.stdout.splitlines() if ln.startswith("DEVICES")).split()[1])


@pytest.mark.parametrize("count,expected", [(0, 1), (2, 2), (3, 3)])
def test_the_process_gets_the_requested_cpu_devices(count, expected):
    assert devices_seen(run_python(APPLY.format(n=count))) == expected


def test_an_explicit_xla_flag_wins():
    flags = "--xla_force_host_platform_device_count=4"
    assert devices_seen(run_python(APPLY.format(n=2), xla_flags=flags)) == 4


def test_after_the_first_device_use_it_raises_naming_the_setting():
    code = ("import jax\njax.devices()\n"
            "from atomsearch_jax.parallel.cpu_devices import use_cpu_devices\nuse_cpu_devices(2)\n")
    proc = run_python(code)
    assert proc.returncode != 0
    assert "config.cpu_devices=2 must be applied before JAX's first device use" in proc.stderr


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_values_raise_naming_the_setting(bad):
    with pytest.raises(ValueError, match="config.cpu_devices must be an integer >= 0"):
        use_cpu_devices(bad)


def test_the_train_cli_applies_the_setting(tmp_path):
    """--config.cpu_devices reaches JAX before the job's first device use (the CLI, not `train()`)."""
    code = ("import sys\nfrom absl import app\nfrom atomsearch_jax import train\n"
            "train.train = lambda config, workdir: print('DEVICES', train.jax.device_count())\n"
            f"sys.argv = ['train', '--workdir={tmp_path}', '--config={ROOT}/configs/default.py',"
            " '--config.cpu_devices=3']\n"
            "app.run(train.main)\n")
    assert devices_seen(run_python(code)) == 3
