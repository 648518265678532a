"""GRPO advantages and policy-loss terms vs plain numpy re-derivations of REFERENCE.md §3."""
import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomsearch_jax import rl

# ---- numpy references (written from the formulas, independent of the implementation) -----------


def np_advantages(rewards, g, normalize_std):
    out = np.empty(len(rewards))
    for start in range(0, len(rewards), g):
        r = np.asarray(rewards[start:start + g], float)
        mean, std = (0.0, 1.0) if g == 1 else (r.mean(), r.std(ddof=1))
        out[start:start + g] = (r - mean) / (std + 1e-6) if normalize_std else r - mean
    return out


def np_aggregate(values, mask, mode, norm_length=None):
    m = mask > 0
    if mode == "token-mean":
        return values[m].sum() / max(m.sum(), 1)
    seq_vals = []
    for row_v, row_m in zip(values, m):
        if not row_m.any():
            continue  # sequences without trainable tokens do not count
        s = row_v[row_m].sum()
        if mode == "seq-mean-token-mean":
            s /= row_m.sum()
        elif mode == "seq-mean-token-sum-norm":
            s /= norm_length or values.shape[1]
        seq_vals.append(s)
    return float(np.mean(seq_vals)) if seq_vals else 0.0


def np_kl(logp, ref, est):
    d = logp - ref
    if est == "k1":
        return d
    if est == "k2":
        return 0.5 * d ** 2
    x = ref - logp
    return np.clip(np.exp(x) - x - 1, -10, 10)


def np_policy_terms(logp, old, adv, eps_low, eps_high, dual_clip):
    ratio = np.exp(np.clip(logp - old, -20, 20))
    a = adv[:, None]
    per_tok = np.maximum(-a * ratio, -a * np.clip(ratio, 1 - eps_low, 1 + eps_high))
    if dual_clip is not None:
        per_tok = np.where(a < 0, np.minimum(per_tok, -a * dual_clip), per_tok)
    return per_tok


def random_inputs(seed, b=6, t=9):
    rng = np.random.default_rng(seed)
    logp = -rng.gamma(1.0, 1.0, (b, t))
    old = logp + rng.normal(0, 0.4, (b, t))         # ratios both inside and outside the clip range
    old[0, 1] = logp[0, 1] + 30.0                   # log-ratio beyond the ±20 clamp
    ref = logp + rng.normal(0, 1.0, (b, t))
    ref[1, 2] = logp[1, 2] + 25.0                   # k3 beyond the ±10 clamp
    adv = rng.normal(0, 1, b)
    mask = (rng.random((b, t)) < 0.6).astype(np.float32)
    mask[:, 0] = 0
    mask[2] = 0                                     # a row without trainable tokens
    entropy = rng.gamma(2.0, 0.5, (b, t))
    return logp, old, ref, adv, mask, entropy


# ---- advantages ------------------------------------------------------------------------------

@pytest.mark.parametrize("g,normalize_std", [(4, True), (4, False), (1, True), (1, False), (3, True)])
def test_group_advantages_match_numpy(g, normalize_std):
    rewards = np.random.default_rng(g).random(g * 5)
    rewards[:g] = 0.5  # a zero-variance group
    got = rl.group_advantages(rewards, g, normalize_std=normalize_std)
    np.testing.assert_allclose(got, np_advantages(rewards, g, normalize_std), rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == rewards.shape


def test_group_advantages_reject_bad_input():
    with pytest.raises(ValueError, match="multiple of group_size"):
        rl.group_advantages(np.zeros(7), 2)
    with pytest.raises(ValueError, match="non-finite"):
        rl.group_advantages(np.array([0.0, np.nan]), 2)


def test_informative_rows_drops_constant_groups():
    rewards = np.array([1, 1, 1, 0, 1, 0, 0.2, 0.2, 0.2])
    np.testing.assert_array_equal(rl.informative_rows(rewards, 3), [0, 0, 0, 1, 1, 1, 0, 0, 0])


# ---- loss terms ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", rl.AGG_MODES)
def test_aggregate_matches_numpy(mode):
    _, _, _, _, mask, values = random_inputs(0)
    if mode == "seq-mean-token-sum-norm":  # Dr. GRPO's normaliser is a constant, never the padded width
        with pytest.raises(ValueError, match="norm_length"):
            rl.aggregate(jnp.asarray(values), jnp.asarray(mask), mode)
    else:
        got = rl.aggregate(jnp.asarray(values), jnp.asarray(mask), mode)
        np.testing.assert_allclose(got, np_aggregate(values, mask, mode), rtol=1e-5)
    got = rl.aggregate(jnp.asarray(values), jnp.asarray(mask), mode, norm_length=4)
    np.testing.assert_allclose(got, np_aggregate(values, mask, mode, norm_length=4), rtol=1e-5)


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_estimators_match_numpy(est):
    logp, _, ref, _, _, _ = random_inputs(1)
    np.testing.assert_allclose(rl.kl_penalty(jnp.asarray(logp), jnp.asarray(ref), est), np_kl(logp, ref, est),
                               rtol=1e-5, atol=1e-6)
    alias = {"k1": "kl", "k2": "mse", "k3": "low_var_kl"}[est]
    np.testing.assert_array_equal(rl.kl_penalty(jnp.asarray(logp), jnp.asarray(ref), alias),
                                  rl.kl_penalty(jnp.asarray(logp), jnp.asarray(ref), est))


NORM = 16  # Dr. GRPO's constant normaliser (e.g. the maximum response length)
CASES = list(itertools.product(rl.AGG_MODES, [None, 3.0], [(0.2, 0.28), (0.2, 0.2)], ["k1", "k2", "k3"]))


@pytest.mark.parametrize("mode,dual_clip,eps,est", CASES)
def test_policy_loss_matches_numpy(mode, dual_clip, eps, est):
    logp, old, ref, adv, mask, entropy = random_inputs(zlib.crc32(repr((mode, dual_clip, eps, est)).encode()))
    kl_coef, ent_coef = 0.05, 0.01
    loss, metrics = rl.policy_loss(
        jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask), eps_low=eps[0], eps_high=eps[1],
        dual_clip=dual_clip, agg_mode=mode, ref_logp=jnp.asarray(ref), kl_coef=kl_coef, kl_estimator=est,
        entropy=jnp.asarray(entropy), entropy_coef=ent_coef, loss_norm_length=NORM)
    pg = np_aggregate(np_policy_terms(logp, old, adv, eps[0], eps[1], dual_clip), mask, mode, NORM)
    kl = np_aggregate(np_kl(logp, ref, est), mask, mode, NORM)
    want = pg + kl_coef * kl - ent_coef * np_aggregate(entropy, mask, mode, NORM)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["pg_loss"], pg, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["kl_loss"], kl, rtol=1e-5, atol=1e-6)
    # clip fraction: tokens where the clipped surrogate is the larger (active) one
    ratio = np.exp(np.clip(logp - old, -20, 20))
    a = adv[:, None]
    clipped = -a * np.clip(ratio, 1 - eps[0], 1 + eps[1]) > -a * ratio
    np.testing.assert_allclose(metrics["pg_clipfrac"], clipped[mask > 0].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["ppo_kl"], np.clip(old - logp, -20, 20)[mask > 0].mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["entropy"], entropy[mask > 0].mean(), rtol=1e-5, atol=1e-6)
    if dual_clip is not None:
        before = np.maximum(-a * ratio, -a * np.clip(ratio, 1 - eps[0], 1 + eps[1]))
        lower = (before > -a * dual_clip) & (a < 0)
        np.testing.assert_allclose(metrics["pg_clipfrac_lower"], lower[mask > 0].mean(), rtol=1e-6)


def test_dual_clip_caps_negative_advantage_loss():
    # ratio e^3 ≈ 20 with A = −1: plain clipping gives 20, dual clip caps it at c = 3.
    logp, old, adv, mask = jnp.array([[0.0, 3.0]]), jnp.zeros((1, 2)), jnp.array([-1.0]), jnp.array([[0.0, 1.0]])
    plain, _ = rl.policy_loss(logp, old, adv, mask)
    capped, m = rl.policy_loss(logp, old, adv, mask, dual_clip=3.0)
    np.testing.assert_allclose(plain, np.exp(3.0), rtol=1e-6)
    np.testing.assert_allclose(capped, 3.0, rtol=1e-6)
    assert float(m["pg_clipfrac_lower"]) == 1.0


def test_policy_loss_rejects_bad_settings():
    x = jnp.zeros((1, 2))
    with pytest.raises(ValueError, match="agg_mode"):
        rl.policy_loss(x, x, jnp.zeros(1), x, agg_mode="sum")
    with pytest.raises(ValueError, match="kl_estimator"):
        rl.policy_loss(x, x, jnp.zeros(1), x, ref_logp=x, kl_estimator="k4")
    with pytest.raises(ValueError, match="dual_clip"):
        rl.policy_loss(x, x, jnp.zeros(1), x, dual_clip=0.5)


# ---- masking ---------------------------------------------------------------------------------

def _logits_loss(logits, tokens, old, ref, adv, mask, mode):
    """Every term of the GRPO loss as a function of logits [B, T, V] (position t-1 scores token t)."""
    logsm = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logsm[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
    logp = jnp.pad(logp, ((0, 0), (1, 0)))
    entropy = jnp.pad(-jnp.sum(jnp.exp(logsm) * logsm, -1)[:, :-1], ((0, 0), (1, 0)))
    loss, _ = rl.policy_loss(logp, old, adv, mask, agg_mode=mode, dual_clip=3.0, ref_logp=ref, kl_coef=0.1,
                             entropy=entropy, entropy_coef=0.01, loss_norm_length=NORM)
    return loss


@pytest.mark.parametrize("mode", rl.AGG_MODES)
def test_masked_positions_get_exactly_zero_gradient(mode):
    rng = np.random.default_rng(3)
    b, t, v = 4, 10, 16
    logits = jnp.asarray(rng.normal(0, 2, (b, t, v)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, v, (b, t)))
    mask = np.zeros((b, t), np.float32)
    mask[:, 3:5] = 1   # model turn
    mask[:, 7:9] = 1   # model turn after an environment block at 5..6; prompt 0..2; padding 9
    # Garbage (even non-finite) old/ref log-probs at masked positions must not leak either.
    old = np.where(mask > 0, rng.normal(-2, 0.3, (b, t)), np.nan)
    ref = np.where(mask > 0, rng.normal(-2, 0.3, (b, t)), np.inf)
    grad_fn = jax.jit(jax.grad(_logits_loss), static_argnums=6)
    grad = grad_fn(logits, tokens, jnp.asarray(old, jnp.float32), jnp.asarray(ref, jnp.float32),
                   jnp.asarray(rng.normal(0, 1, b), jnp.float32), jnp.asarray(mask), mode)
    grad = np.asarray(grad)
    scored = np.zeros((b, t), bool)
    scored[:, :-1] = mask[:, 1:] > 0  # logits at t-1 score token t
    assert np.all(grad[~scored] == 0.0)
    assert np.all(np.isfinite(grad)) and np.abs(grad[scored]).sum() > 0


def test_dr_grpo_normaliser_is_the_configured_max_response_length():
    c = rl.get_config()
    c.loss.agg_mode = "seq-mean-token-sum-norm"
    c.rollout.max_response_tokens = 777
    assert rl.GRPOSettings.from_config(c).loss_norm_length == 777   # not the batch's padded width
    c.loss.loss_norm_length = 512
    assert rl.GRPOSettings.from_config(c).loss_norm_length == 512
