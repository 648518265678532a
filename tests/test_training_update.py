"""The objective-agnostic update machinery: mini-batch steps in order, micro-batch accumulation,
non-finite steps skipped and counted, learning-rate schedule and weight-decay mask."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from atomsearch_jax.training import config as training_config
from atomsearch_jax.training import learning_rate_schedule, make_optimizer, optimizer_steps
from atomsearch_jax.training.train_state import create_train_state
from atomsearch_jax.training.optimizer import decay_mask

LR = 0.1


def weighted_sq_loss(params, micro, totals):
    """Σ w·(x·θ − y)² / Σw over the mini-batch, this micro-batch's share."""
    err = micro["x"] @ params["theta"] - micro["y"]
    loss = jnp.sum(micro["w"] * err ** 2) / totals["w"]
    return loss, {"err_abs": jnp.sum(micro["w"] * jnp.abs(err)) / totals["w"]}


def totals(mini):
    return {"w": jnp.sum(mini["w"])}


def numpy_sgd(x, y, w, theta, n_mini):
    """Sequential SGD over the mini-batches; mini-batches with a non-finite loss are skipped."""
    theta = theta.astype(np.float64).copy()
    skipped = 0
    for xs, ys, ws in zip(np.split(x, n_mini), np.split(y, n_mini), np.split(w, n_mini)):
        err = xs @ theta - ys
        if not np.isfinite(np.sum(ws * err ** 2)):
            skipped += 1
            continue
        theta -= LR * 2 * (ws * err) @ xs / ws.sum()
    return theta, skipped


def layout(arr, n_mini, n_micro):
    return jnp.asarray(arr.reshape(n_mini, n_micro, -1, *arr.shape[1:]), jnp.float32)


@pytest.mark.parametrize("n_mini,n_micro", [(1, 1), (1, 4), (3, 1), (3, 2)])
def test_mini_and_micro_batches_match_sequential_sgd(n_mini, n_micro):
    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(24, 3)), rng.normal(size=24), rng.random(24)
    theta0 = rng.normal(size=3)
    state = create_train_state({"theta": jnp.asarray(theta0, jnp.float32)}, optax.sgd(LR), 0)
    batch = {"x": layout(x, n_mini, n_micro), "y": layout(y, n_mini, n_micro), "w": layout(w, n_mini, n_micro)}
    step = jax.jit(functools.partial(optimizer_steps, loss_fn=weighted_sq_loss, totals_fn=totals,
                                     optimizer=optax.sgd(LR)))
    state, metrics = step(state, batch)
    want, _ = numpy_sgd(x, y, w, theta0, n_mini)
    np.testing.assert_allclose(state.params["theta"], want, rtol=1e-5, atol=1e-6)
    assert int(state.step) == n_mini and int(state.skipped_steps) == 0
    assert set(metrics) == {"loss", "err_abs", "grad_norm", "skipped_steps"}


def test_non_finite_step_is_skipped_and_counted():
    rng = np.random.default_rng(1)
    x, y, w = rng.normal(size=(12, 3)), rng.normal(size=12), rng.random(12)
    y[5] = np.nan  # poisons the second of three mini-batches
    theta0 = rng.normal(size=3)
    opt, schedule = make_optimizer(ml_collections.ConfigDict(dict(
        training_config.optimizer_config(), learning_rate=LR, weight_decay=0.0, max_grad_norm=0.0)))
    state = create_train_state({"theta": jnp.asarray(theta0, jnp.float32)}, opt, 0)
    opt_before = jax.tree_util.tree_map(np.asarray, state.opt_state)
    batch = {"x": layout(x, 3, 2), "y": layout(y, 3, 2), "w": layout(w, 3, 2)}
    step = jax.jit(functools.partial(optimizer_steps, loss_fn=weighted_sq_loss, totals_fn=totals, optimizer=opt,
                                     schedule=schedule))
    state, metrics = step(state, batch)
    assert int(state.step) == 3 and int(state.skipped_steps) == 1 and int(metrics["skipped_steps"]) == 1
    assert np.all(np.isfinite(state.params["theta"]))
    # Adam's step count (and so the schedule) advanced only for the two applied steps.
    counts = [int(x) for x in jax.tree_util.tree_leaves(state.opt_state) if np.asarray(x).dtype == np.int32]
    assert counts and all(c == 2 for c in counts)

    # A batch whose only mini-batch is poisoned leaves params and optimizer state bitwise unchanged.
    state0 = create_train_state({"theta": jnp.asarray(theta0, jnp.float32)}, opt, 0)
    poisoned = {k: v[1:2] for k, v in batch.items()}
    after, _ = step(state0, poisoned)
    np.testing.assert_array_equal(after.params["theta"], np.asarray(theta0, np.float32))
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.tree_util.tree_map(np.asarray, after.opt_state),
                           opt_before)
    assert int(after.skipped_steps) == 1


def test_learning_rate_schedules():
    cfg = training_config.optimizer_config()
    cfg.learning_rate, cfg.warmup_steps = 1e-3, 4
    sched = learning_rate_schedule(cfg)
    np.testing.assert_allclose([sched(s) for s in (0, 2, 4, 100)], [0.0, 5e-4, 1e-3, 1e-3], rtol=1e-6)
    cfg.schedule, cfg.total_steps, cfg.final_lr_ratio = "cosine", 14, 0.1
    sched = learning_rate_schedule(cfg)
    np.testing.assert_allclose([sched(4), sched(9), sched(14)], [1e-3, 0.55e-3, 1e-4], rtol=1e-5)
    cfg.total_steps = 3
    with pytest.raises(ValueError, match="total_steps"):
        learning_rate_schedule(cfg)
    cfg.schedule = "linear"
    with pytest.raises(ValueError, match="optimizer.schedule"):
        learning_rate_schedule(cfg)


def test_weight_decay_skips_norms_and_biases():
    params = {"kernel": jnp.ones((2, 2)), "norm": {"scale": jnp.ones(2)}, "bias": jnp.ones(2)}
    assert decay_mask(params) == {"kernel": True, "norm": {"scale": False}, "bias": False}
    cfg = ml_collections.ConfigDict(dict(training_config.optimizer_config(), learning_rate=0.1, weight_decay=0.5))
    opt, _ = make_optimizer(cfg)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.05 * np.ones((2, 2)), rtol=1e-6)  # −lr·wd·θ
    np.testing.assert_array_equal(updates["bias"], np.zeros(2))


def test_micro_batches_round_up_to_one_row_per_device():
    """A micro-batch size below the data x fsdp device count (the default's 2 rows on an 8-device mesh) is
    rounded up to whole rows per device; one that then does not divide the mini-batch is refused by name."""
    from atomsearch_jax.parallel import make_mesh
    from atomsearch_jax.training.batching import BatchLayout, batch_layout
    mesh = make_mesh(data=1, fsdp=-1, tensor=1)  # conftest: 8 CPU devices
    assert batch_layout(64, 0, 2, mesh) == BatchLayout(1, 8, 8)
    assert batch_layout(64, 32, 12, mesh) == BatchLayout(2, 2, 16)
    assert batch_layout(64, 0, 0, mesh) == BatchLayout(1, 1, 64)
    assert batch_layout(64, 0, 2, make_mesh(data=1, fsdp=2, tensor=4)) == BatchLayout(1, 32, 2)
    with pytest.raises(ValueError, match="micro_batch_size=2 .*does not divide the mini-batch size 12"):
        batch_layout(12, 0, 2, mesh)


def test_frozen_parameters_stay_and_the_rest_trains_as_adamw_alone():
    """optimizer.frozen: matched parameters stay bitwise (no decay either); the others move exactly as optax's
    AdamW + global-norm clip over the trained parameters alone (the frozen gradients do not enter the norm)."""
    rng = np.random.default_rng(0)
    params = {"embed": {"embedding": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)},
              "layers_0": {"kernel": jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
                           "bias": jnp.asarray(rng.normal(size=3), jnp.float32)}}
    grads = [jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 3, jnp.float32), params)
             for _ in range(3)]
    cfg = ml_collections.ConfigDict(dict(training_config.optimizer_config(), learning_rate=0.1, weight_decay=0.5,
                                         max_grad_norm=1.0, frozen="^embed/"))
    opt, _ = make_optimizer(cfg, params)
    trained = {"layers_0": params["layers_0"]}
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.5, mask=decay_mask))
    state, ref_state, p, q = opt.init(params), ref.init(trained), params, trained
    for g in grads:
        updates, state = opt.update(g, state, p)
        p = optax.apply_updates(p, updates)
        ref_updates, ref_state = ref.update({"layers_0": g["layers_0"]}, ref_state, q)
        q = optax.apply_updates(q, ref_updates)
    np.testing.assert_array_equal(p["embed"]["embedding"], params["embed"]["embedding"])
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-6), p["layers_0"], q["layers_0"])
    assert not np.allclose(p["layers_0"]["kernel"], params["layers_0"]["kernel"])


@pytest.mark.parametrize("spec,message", [("^lm_head/", "matches no parameter"), ("(", "not a regular expression"),
                                          (".", "freezes every parameter")])
def test_frozen_patterns_that_cannot_be_meant_are_refused(spec, message):
    params = {"embed": {"embedding": jnp.ones((5, 3))}, "layers_0": {"kernel": jnp.ones((3, 3))}}
    cfg = ml_collections.ConfigDict(dict(training_config.optimizer_config(), frozen=spec))
    with pytest.raises(ValueError, match=message):
        make_optimizer(cfg, params)


def test_frozen_parameters_need_the_params():
    cfg = ml_collections.ConfigDict(dict(training_config.optimizer_config(), frozen="^embed/"))
    with pytest.raises(ValueError, match="needs the params"):
        make_optimizer(cfg)
