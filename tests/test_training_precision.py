"""Mixed precision: float32 master weights and optimizer state whatever the model's dtype, a bfloat16
sampler copy, an engine that owns its weights, dtype arguments as strings, numpy or jnp dtypes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomsearch_jax import rl
from atomsearch_jax.generate import Engine, sampling_arrays
from atomsearch_jax.model import load_hf_checkpoint, tiny_config
from atomsearch_jax.parallel import make_mesh
from hf_utils import make_hf_model
from training_helpers import random_params, rollout_batch


def one_device():
    return make_mesh(1, 1, 1, devices=jax.devices()[:1])


def grpo_config(lr):
    c = rl.get_config()
    c.group_size = 4
    c.optimizer.update(learning_rate=lr, weight_decay=0.0)
    c.train_step.logprob_chunk = 6
    return c


def test_bf16_model_updates_float32_masters_at_lr_1e6():
    cfg = tiny_config(dtype="bfloat16", param_dtype="bfloat16")
    params = random_params(cfg, 0)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(params))
    trainer = rl.GRPOTrainer(cfg, params, grpo_config(1e-6), mesh=one_device())
    before = jax.tree_util.tree_map(np.asarray, trainer.params)
    assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(before))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(trainer.state.opt_state)
               if jnp.issubdtype(x.dtype, jnp.floating))
    # Every vocabulary id occurs before some row's last token, so every embedding row has a gradient
    # (Adam's first step moves each weight with a nonzero gradient by ~lr).
    batch = rollout_batch(0, cfg.vocab_size, batch=16, length=12)
    batch["lengths"][:] = 12
    batch["loss_mask"][:, 4:] = 1
    batch["loss_mask"][:, 7:9] = 0
    batch["tokens"] = (np.arange(16 * 12).reshape(16, 12) * 7) % cfg.vocab_size
    metrics = trainer.update(batch)
    assert metrics["skipped_steps"] == 0
    after = jax.tree_util.tree_map(np.asarray, trainer.params)
    changed = sum(int((a != b).sum()) for a, b in zip(jax.tree_util.tree_leaves(after), jax.tree_util.tree_leaves(before)))
    total = sum(a.size for a in jax.tree_util.tree_leaves(after))
    assert changed / total >= 0.99, changed / total
    copy = trainer.sampling_params()
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(copy))
    # The masters' step is below bfloat16 resolution: the bf16 copy barely changes, the masters do.
    moved_bf16 = np.mean([np.mean(np.asarray(c) != np.asarray(p)) for c, p in zip(
        jax.tree_util.tree_leaves(copy), jax.tree_util.tree_leaves(params))])
    assert moved_bf16 < 0.2


def test_engine_and_trainer_own_their_buffers():
    """The engine's weights do not alias the trainer's state, which the update donates."""
    cfg = tiny_config()
    params = random_params(cfg, 0)
    trainer = rl.GRPOTrainer(cfg, params, grpo_config(1e-3), mesh=one_device())
    engine = Engine(cfg, params, max_len=32, mesh=one_device())
    engine.set_params(trainer.params)
    before = jax.tree_util.tree_map(np.asarray, engine.params)
    trainer.update(rollout_batch(0, cfg.vocab_size))     # donates the state's buffers
    assert not any(x.is_deleted() for x in jax.tree_util.tree_leaves(engine.params))
    state = engine.start([[1, 2, 3]], n=2)
    engine.decode(state, max_steps=3, sampling=sampling_arrays(2, temperature=0.0))
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.tree_util.tree_map(np.asarray, engine.params), before)
    engine.set_params(trainer.sampling_params())
    changed = [not np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree_util.tree_leaves(engine.params),
                                                                    jax.tree_util.tree_leaves(before))]
    assert any(changed)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    make_hf_model(vocab_size=64, num_hidden_layers=1).save_pretrained(path)
    return path


@pytest.mark.parametrize("dtype", ["bfloat16", jnp.bfloat16, np.dtype("float32"), np.float32, jnp.float32])
def test_dtype_arguments_accept_strings_numpy_and_jnp(hf_dir, dtype):
    tmp_path = hf_dir
    cfg, params = load_hf_checkpoint(tmp_path, dtype=dtype)
    want = np.dtype(jnp.dtype(dtype)).name
    assert cfg.param_dtype == want and cfg.dtype == want
    assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree_util.tree_leaves(params))
    with pytest.raises(ValueError, match="bf16"):
        load_hf_checkpoint(tmp_path, dtype="bf16")
