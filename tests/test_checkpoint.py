"""Checkpoints: resume continues the identical run (bitwise on CPU), restore onto another mesh,
half-written/unreadable steps are skipped, keep-last-N, JSON items, HF export."""
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from atomsearch_jax import rl
from atomsearch_jax.model import load_hf_checkpoint, tiny_config
from atomsearch_jax.parallel import make_mesh
from atomsearch_jax.training import Checkpointer
from atomsearch_jax.training.train_state import create_train_state
from training_helpers import random_params, rollout_batch

CFG = tiny_config()


def grpo_config(directory):
    c = rl.get_config()
    c.group_size = 4
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 2
    c.train_step.logprob_chunk = 6
    c.checkpoint.directory = str(directory)
    c.checkpoint.max_to_keep = 5
    # Regulation whose knob moves every step once the window is full: its JSON state must be restored
    # for the resumed run to stay identical.
    c.entropy_regulation.update(enabled=True, mode="absolute", low=10.0, high=20.0, window=2, step=0.01,
                                max_value=1.0)
    return c


def host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def assert_trees_equal(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # two compilations of the update plus restores onto two meshes, ~25-33 s on 2 loaded cores
def test_resume_is_identical_and_restores_onto_another_mesh(tmp_path):
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    steps = 4
    run = rl.GRPOTrainer(CFG, random_params(CFG, 0), grpo_config(tmp_path / "ckpt"), mesh=mesh)
    for i in range(steps):
        run.update(rollout_batch(i, CFG.vocab_size))
        if i < steps // 2:  # checkpoints only in the first half; the save is async and the next update
            run.save({"data_iterator": {"next": i + 1}, "reward_schedule": {"t": i + 1}})  # donates the state
        if i == steps // 2 - 1:
            midway = host(run.state)
    straight = host(run.state)
    run.close()

    # A new process would start from other params; the restore must replace all of it.
    resumed = rl.GRPOTrainer(CFG, random_params(CFG, 7), grpo_config(tmp_path / "ckpt"), mesh=mesh)
    items = resumed.restore()
    assert items == {"data_iterator": {"next": 2}, "reward_schedule": {"t": 2}}
    assert resumed.regulator.value > 0
    for i in range(items["data_iterator"]["next"], steps):
        resumed.update(rollout_batch(i, CFG.vocab_size))
    assert_trees_equal(host(resumed.state), straight)
    resumed.close()

    # Onto other mesh shapes: same values, the new mesh's shardings.
    for other in (make_mesh(2, 2, 2), make_mesh(1, 4, 2)):
        moved = rl.GRPOTrainer(CFG, random_params(CFG, 7), grpo_config(tmp_path / "ckpt"), mesh=other)
        moved.restore()
        assert_trees_equal(host(moved.state), midway)
        kernel = moved.state.params["layers_0"]["mlp"]["gate_up"]["kernel"]
        assert kernel.sharding.mesh.shape == other.shape

    # The policy exports to HF safetensors and loads back unchanged.
    moved.export_hf(tmp_path / "hf")
    cfg_back, params_back = load_hf_checkpoint(tmp_path / "hf")
    assert cfg_back.num_layers == CFG.num_layers
    assert_trees_equal(host(params_back), midway.params)


def small_state(value):
    params = {"w": jnp.full((4, 3), float(value)), "b": jnp.zeros(3)}
    return create_train_state(params, optax.adam(0.1), 0).replace(step=jnp.asarray(value, jnp.int32))


def target_of(state):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def test_incomplete_and_unreadable_steps_are_skipped(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=10, async_save=False) as ckpt:
        check_skipping(ckpt, tmp_path)


def check_skipping(ckpt, tmp_path):
    for step in (1, 2):
        ckpt.save(step, small_state(step), {"data_iterator": {"next": step}})
    # Step 4: a copy of step 2 whose commit marker is missing (a save cut short on an object store).
    shutil.copytree(tmp_path / "2", tmp_path / "4")
    os.remove(tmp_path / "4" / "commit_success.txt")
    # Step 5: committed, but its array data was lost afterwards.
    shutil.copytree(tmp_path / "2", tmp_path / "5")
    for d in (tmp_path / "5" / "state").rglob("d"):
        shutil.rmtree(d)
    with Checkpointer(tmp_path) as other:
        assert other.all_steps() == [1, 2, 4, 5]
    step, state, items = ckpt.restore(target_of(small_state(0)))
    assert step == 2 and items == {"data_iterator": {"next": 2}}
    assert_trees_equal(host(state), host(small_state(2)))
    # The skipped steps were moved aside, so the run can save those step numbers again.
    assert ckpt.all_steps() == [1, 2]
    assert sorted(p.name.split(".")[0] for p in tmp_path.glob("*.unreadable-*")) == ["4", "5"]
    assert ckpt.save(4, small_state(4)) and ckpt.latest_step() == 4
    # A wrong target fails on every step: an error, and nothing is moved.
    with pytest.raises(RuntimeError, match="could be restored"):
        ckpt.restore(target_of(small_state(0).replace(params={"w": jnp.zeros((2, 2))})))
    assert ckpt.all_steps() == [1, 2, 4]


def test_keep_last_n(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in range(1, 5):
            ckpt.save(step, small_state(step))
        assert ckpt.all_steps() == [3, 4]
        assert not ckpt.save(4, small_state(4))                  # already saved
        assert not ckpt.save(4, small_state(4), force=True)      # a preemption save right after an interval save
        with pytest.raises(ValueError, match="reserved"):
            ckpt.save(5, small_state(5), {"state": {}})


KILL_DURING_SAVE = """
import os, signal, sys
import jax.numpy as jnp, numpy as np, optax
from atomsearch_jax.training import Checkpointer
from atomsearch_jax.training.train_state import create_train_state
state = create_train_state({"w": jnp.asarray(np.ones((16, 1024, 1024), np.float32))}, optax.sgd(0.1), 0)
ckpt = Checkpointer(sys.argv[1])
ckpt.save(1, state)
ckpt.wait()
ckpt.save(2, state.replace(step=state.step + 1))   # async: returns while the write is in flight
# Kill once the write has begun (on a loaded machine the background thread may not have created its
# temporary directory yet when save() returns).
import glob, time
deadline = time.time() + 30
while not glob.glob(os.path.join(sys.argv[1], "2.orbax-checkpoint-tmp*")) and time.time() < deadline:
    time.sleep(0.0005)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_save_killed_midway_is_skipped(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path)], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert list(tmp_path.glob("2.orbax-checkpoint-tmp*")), os.listdir(tmp_path)  # the save really was cut
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                    jax.eval_shape(lambda: create_train_state(
                                        {"w": jnp.zeros((16, 1024, 1024))}, optax.sgd(0.1), 0)))
    with Checkpointer(tmp_path) as ckpt:
        step, state, _ = ckpt.restore(target)
    assert step == 1 and int(state.step) == 0 and float(state.params["w"][0, 0, 0]) == 1.0
