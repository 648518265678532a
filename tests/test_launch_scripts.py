"""The launch scripts' --dry-run output: the commands they would run, parsed back the way a shell would."""
import pathlib
import shlex
import subprocess

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
# A flag whose value has spaces, quotes and shell metacharacters must reach the entry point unchanged.
TRICKY = "--config.rl.reward.judge_model=Qwen 7B's \"judge\" $HOME;`id`"


def dry_run(script, *args):
    out = subprocess.run(["bash", str(SCRIPTS / script), "--dry-run", *args], capture_output=True, text=True,
                         check=True).stdout
    lines = [line.removeprefix("+ ") for line in out.splitlines() if line.startswith("+ ")]
    return [shlex.split(line) for line in lines]


def remote_command(argv):
    """The remote shell command of a gcloud ssh line, split into words."""
    [command] = [a.removeprefix("--command=") for a in argv if a.startswith("--command=")]
    return command, shlex.split(command)


def test_tpu_vm_up_on_an_8_worker_slice():
    cmds = dry_run("launch_tpu_vm.sh", "--accelerator_type=v4-64", "--project=proj", "up", "pod", "us-central2-b",
                   "--", "--workdir=gs://bucket/run", TRICKY)
    kinds = [c[4] if c[0] == "gcloud" else c[0] for c in cmds]
    assert kinds == ["create", "tar", "scp", "ssh", "ssh", "ssh", "ssh"]
    create = cmds[0]
    assert create[5] == "pod" and "--accelerator-type=v4-64" in create and "--project=proj" in create
    assert "--zone=us-central2-b" in create
    # sync, install and start address all 8 workers at once; the log is streamed from worker 0 only.
    assert all("--worker=all" in c for c in cmds[2:6]) and "--worker=0" in cmds[6]
    _, install = remote_command(cmds[4])
    assert "install" in install and "-e" in install
    start, words = remote_command(cmds[5])
    i = words.index("atomsearch_jax.train")
    assert words[i + 1] == "--jax_distributed" and words[i + 2] == "--workdir=gs://bucket/run"
    assert words[i + 3] == TRICKY, "the flag must survive the remote shell unchanged"
    assert "nohup" in start and "atomsearch_run.pid" in start
    _, tail = remote_command(cmds[6])
    assert tail[:2] == ["tail", "-n"] and tail[-1].endswith("atomsearch_run.log")


def test_tpu_vm_stop_signals_the_run_on_every_worker():
    [stop] = dry_run("launch_tpu_vm.sh", "stop", "pod", "europe-west4-a")
    command, _ = remote_command(stop)
    assert "--worker=all" in stop and "kill -TERM" in command and "atomsearch_run.pid" in command


def test_tpu_vm_rejects_flags_without_separator():
    bad = subprocess.run(["bash", str(SCRIPTS / "launch_tpu_vm.sh"), "--dry-run", "start", "pod", "zone",
                          "--workdir=x"], capture_output=True, text=True)
    assert bad.returncode != 0 and "after '--'" in bad.stderr


def test_gpu_hosts_get_coordinator_count_and_ids():
    hosts = [f"gpu{i}" for i in range(8)]
    cmds = dry_run("launch_gpu.sh", f"--hosts={','.join(hosts)}", "--port=9000", "--", "--workdir=/shared/run", TRICKY)
    assert len(cmds) == 8
    for i, cmd in enumerate(cmds):
        assert cmd[:2] == ["ssh", hosts[i]]
        words = shlex.split(cmd[2])
        j = words.index("atomsearch_jax.train")
        assert words[j + 1:j + 6] == ["--coordinator_address=gpu0:9000", "--num_processes=8", f"--process_id={i}",
                                      "--workdir=/shared/run", TRICKY]


def test_gpu_slurm_uses_one_task_per_node():
    [cmd] = dry_run("launch_gpu.sh", "--slurm", "--", "--workdir=/shared/run")
    assert cmd[:2] == ["srun", "--ntasks-per-node=1"] and cmd[-2:] == ["--jax_distributed", "--workdir=/shared/run"]


@pytest.mark.parametrize("host", ["", "search-host"])
def test_retriever_binds_all_interfaces(host):
    args = (["--host=" + host] if host else []) + ["--index_dir=indexes/wiki", "--port=8123"]
    [cmd] = dry_run("launch_retriever.sh", *args)
    words = shlex.split(cmd[2]) if host else cmd
    j = words.index("atomsearch_jax.serve_retriever")
    assert words[j + 1:j + 4] == ["--index_dir=indexes/wiki", "--host=0.0.0.0", "--port=8123"]
