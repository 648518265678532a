"""The trainer scores tokens under the distribution they were sampled from: log-probs at the rollout
temperature equal the sampler's recorded ones, the GRPO update uses the rollout temperature, and
sampler log-probs from a top-k/top-p sampler are refused as old log-probs."""
import jax
import numpy as np
import pytest

from atomsearch_jax import rl
from atomsearch_jax.generate import Engine, sampling_arrays
from atomsearch_jax.model import forward, tiny_config
from atomsearch_jax.parallel import make_mesh
from atomsearch_jax.training import token_logprobs
from training_helpers import random_params

CFG = tiny_config(vocab_size=64)
PROMPTS = [[5, 9, 17, 3], [60, 2, 11]]
TEMPERATURE = 0.7


def one_device():
    return make_mesh(1, 1, 1, devices=jax.devices()[:1])


def sampled_batch(params, temperature, n=4, steps=6):
    """Rows sampled at `temperature` with an inserted environment span (multi-turn), right-padded:
    tokens, loss_mask, lengths, the sampler's log-probs [B, T]."""
    engine = Engine(CFG, params, max_len=32)
    sampling = sampling_arrays(len(PROMPTS) * n, temperature=temperature)
    stops = engine.stop_set(eos=False)
    state = engine.start(PROMPTS, n=n, seed=1)
    state, _ = engine.decode(state, max_steps=steps, sampling=sampling, stops=stops)
    state = engine.append(state, {r: [7, 8, 9] for r in range(len(PROMPTS) * n)})
    state, _ = engine.decode(state, max_steps=steps, sampling=sampling, stops=stops)
    out = engine.export(state)
    t = int(out.lengths.max())
    return {"tokens": out.tokens[:, :t], "loss_mask": out.loss_mask[:, :t].astype(np.int32),
            "lengths": out.lengths, "sampler_logprobs": out.logprobs[:, :t]}


def test_trainer_logprobs_equal_sampler_logprobs_at_the_rollout_temperature():
    params = random_params(CFG, 0, scale=0.5)  # peaked enough that temperature changes log-probs a lot
    batch = sampled_batch(params, TEMPERATURE)
    mask = batch["loss_mask"] > 0
    assert mask.sum() > 40 and (~mask).sum() > 20  # generated and environment/prompt tokens both present
    score = jax.jit(token_logprobs, static_argnums=0, static_argnames=("temperature", "chunk"))
    logp, _ = score(CFG, params, batch["tokens"], temperature=TEMPERATURE, chunk=8)
    np.testing.assert_allclose(np.asarray(logp)[mask], batch["sampler_logprobs"][mask], atol=1e-4, rtol=0)
    at_one, _ = score(CFG, params, batch["tokens"], temperature=1.0, chunk=8)
    assert np.abs(np.asarray(at_one)[mask] - batch["sampler_logprobs"][mask]).mean() > 0.05


def test_entropy_is_that_of_the_tempered_distribution():
    params = random_params(CFG, 1, scale=0.5)
    tokens = np.random.default_rng(0).integers(0, CFG.vocab_size, (2, 9))
    logits = np.asarray(jax.jit(forward, static_argnums=0)(CFG, params, tokens), np.float64) / TEMPERATURE
    logsm = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
        -1, keepdims=True)
    want = -(np.exp(logsm) * logsm).sum(-1)[:, :-1]
    _, ent = jax.jit(token_logprobs, static_argnums=0, static_argnames=("temperature", "chunk"))(
        CFG, params, tokens, temperature=TEMPERATURE, chunk=4)
    # Two float32 programs (the forward's logits, the chunked log-probs) round apart by ~1e-5; the entropy at
    # temperature 1 differs from the tempered one here by 0.36 or more at every position.
    np.testing.assert_allclose(np.asarray(ent)[:, 1:], want, rtol=1e-5, atol=5e-5)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(CFG, params, tokens, temperature=0.0)


def grpo_config(temperature, **rollout):
    c = rl.get_config()
    c.group_size = 4
    c.old_logp = "sampler"
    c.train_step.logprob_chunk = 8
    c.rollout.update(temperature=temperature, **rollout)
    return c


def test_grpo_update_scores_at_the_rollout_temperature():
    """old = the sampler's log-probs: at the rollout temperature the first step's ratio is 1 on every
    token (ppo_kl 0, nothing clipped); scored at temperature 1 it would not be."""
    params = random_params(CFG, 0, scale=0.5)
    batch = sampled_batch(params, TEMPERATURE)
    batch["rewards"] = np.arange(len(batch["tokens"])) % 3 / 2.0
    metrics = rl.GRPOTrainer(CFG, params, grpo_config(TEMPERATURE), mesh=one_device()).update(batch)
    assert abs(metrics["ppo_kl"]) < 1e-4 and metrics["pg_clipfrac"] == 0.0
    wrong = rl.GRPOTrainer(CFG, params, grpo_config(1.0), mesh=one_device()).update(batch)
    assert abs(wrong["ppo_kl"]) > 0.01


@pytest.mark.parametrize("filt", [dict(top_p=0.9), dict(top_k=20)])
def test_sampler_logprobs_of_a_filtered_sampler_are_refused(filt):
    with pytest.raises(ValueError, match="old_logp='sampler'"):
        rl.GRPOTrainer(CFG, random_params(CFG, 0), grpo_config(1.0, **filt), mesh=one_device())
    c = grpo_config(1.0, **filt)
    c.old_logp = "recompute"  # recomputed old log-probs are fine with any sampler filter
    rl.GRPOSettings.from_config(c)
