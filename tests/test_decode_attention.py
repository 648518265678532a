"""kernels.decode_attention against the reference kernel, its choice by attention "auto", and decoding
through it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomsearch_jax.generate import Sampler, sampling_arrays
from atomsearch_jax.kernels import decode_attention
from atomsearch_jax.model import init_params, tiny_config
from atomsearch_jax.model.attention import CPU_DECODE_MIN_HEAD_DIM, KeyMask, reference_attention, resolve

pytestmark = pytest.mark.skipif(not decode_attention.available(),
                                reason=f"decode attention: {decode_attention.registration_error()}")


@pytest.mark.parametrize("b,t,h,kv,s,d", [(8, 1, 14, 2, 192, 64), (3, 2, 12, 4, 37, 16), (2, 3, 8, 8, 20, 16),
                                          (2, 1, 8, 1, 50, 128), (1, 1, 5, 1, 9, 32)])
def test_equals_the_reference_kernel_on_every_slot_pattern(b, t, h, kv, s, d):
    rng = np.random.default_rng(b * 100 + s)
    q, k, v = (jnp.asarray(rng.normal(size=shape).astype(np.float32))
               for shape in ((b, t, h, d), (b, kv, s, d), (b, kv, s, d)))
    # Slots before the cache (sees nothing: the uniform average), at its start, inside, at its end, past it.
    slots = jnp.asarray(rng.choice([-1, 0, s // 2, s - 1, s + 3], size=(b, t)).astype(np.int32))
    got = jax.jit(decode_attention.decode_attention)(q, k, v, slots)
    want = jax.jit(lambda q, k, v, sl: reference_attention(q, k, v, KeyMask(q_slots=sl), kv_layout="bksd"))(
        q, k, v, slots)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=2e-6)


def test_operands_it_cannot_take_are_named():
    q = jnp.zeros((1, 1, 9, 16), jnp.float32)  # 9 query heads over 1 kv head: G = 9 > 8
    k = jnp.zeros((1, 1, 4, 16), jnp.float32)
    with pytest.raises(ValueError, match=r"q \(1, 1, 9, 16\)"):
        decode_attention.decode_attention(q, k, k, jnp.zeros((1, 1), jnp.int32))
    assert not decode_attention.supports(q[..., :8], k[..., :8])  # D = 8: not a multiple of 16


def test_auto_takes_it_for_a_few_queries_over_a_cache_on_cpu():
    common = dict(num_keys=4096, block=512, cpu_decode_operands=True)
    assert resolve("auto", num_queries=1, aligned=False, backend="cpu", **common) == "cpu_decode"
    assert resolve("auto", num_queries=8, aligned=False, backend="cpu", **common) == "cpu_decode"
    assert resolve("auto", num_queries=9, aligned=False, backend="cpu", **common) != "cpu_decode"
    assert resolve("auto", num_queries=1, aligned=False, backend="tpu", **common) == "reference"
    assert resolve("cpu_decode", num_queries=1, aligned=True, backend="cpu", **common) != "cpu_decode"
    assert resolve("auto", num_queries=1, aligned=False, backend="cpu", num_keys=4096, block=512,
                   cpu_decode_operands=False) == "reference"


@pytest.mark.parametrize("head_dim", [16, 64])
def test_decoding_through_it_matches_the_reference_kernel(head_dim):
    """attention="cpu_decode" (and "auto" from CPU_DECODE_MIN_HEAD_DIM) decodes as the reference kernel does."""
    base = tiny_config(hidden_size=4 * head_dim, num_heads=4, num_kv_heads=2, num_layers=2)
    params = init_params(base, jax.random.PRNGKey(2))
    prompts = [[5, 9, 17, 3, 44], [60, 2], [7, 7, 8, 30, 31, 32, 33, 1, 2]]
    outs = {}
    handler = "cpu_decode" if head_dim < CPU_DECODE_MIN_HEAD_DIM else "auto"
    for attention in (handler, "reference"):
        sampler = Sampler(base.replace(attention=attention), params, max_len=48)
        outs[attention] = sampler.generate(prompts, max_new_tokens=16, temperature=0.0, ignore_eos=True)
        engine = sampler.engine
        sampling, stops = jax.tree_util.tree_map(jnp.asarray, (sampling_arrays(3, temperature=0.0),
                                                               engine.stop_set().arrays()))
        hlo = engine._programs.decode.lower(engine.params, engine.start(prompts, max_new_tokens=4), sampling, stops,
                                            np.int32(2), 48).as_text()  # the handler is called under "auto" only
        assert ("atomsearch_decode_attention" in hlo) == (attention == handler)
    assert [c.tokens for c in outs[handler]] == [c.tokens for c in outs["reference"]]
    np.testing.assert_allclose([c.logprobs for c in outs[handler]], [c.logprobs for c in outs["reference"]],
                               atol=1e-5)


def test_auto_leaves_small_heads_to_the_reference_kernel():
    """The default job's head dim (32) is below CPU_DECODE_MIN_HEAD_DIM: its decoding keeps the reference kernel."""
    cfg = tiny_config(hidden_size=128, num_heads=4, num_kv_heads=2, num_layers=1)
    sampler = Sampler(cfg, init_params(cfg, jax.random.PRNGKey(0)), max_len=32)
    engine = sampler.engine
    sampling, stops = jax.tree_util.tree_map(jnp.asarray, (sampling_arrays(1), engine.stop_set().arrays()))
    hlo = engine._programs.decode.lower(engine.params, engine.start([[1, 2]], max_new_tokens=4), sampling, stops,
                                        np.int32(2), 32).as_text()
    assert "atomsearch_decode_attention" not in hlo
