"""Attention kernels: parity with the reference (float32, padding, per-row positions, GQA), gradients,
the model forward under each kernel, and the compiled memory of a 16k-token training forward."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomsearch_jax.model import forward, forward_cached, init_cache, init_params, tiny_config
from atomsearch_jax.model.attention import (KeyMask, attend, blockwise_attention, dot_product_attention,
                                            reference_attention, resolve)

jax.config.update("jax_default_matmul_precision", "highest")


def _qkv(seed, b, t, s, h, kv, d=16):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((b, t, h, d), (b, s, kv, d), (b, s, kv, d)))
    return q, k, v


def _masks(b, t, s, rng):
    """(name, KeyMask) cases: aligned causal, right and left padding, per-row cache offsets."""
    lengths = rng.integers(1, t + 1, size=b)
    right = np.arange(t)[None, :] < lengths[:, None]
    left = np.arange(t)[None, :] >= (t - lengths)[:, None]
    arange = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    cases = [("aligned", KeyMask(arange, None, aligned=True)),
             ("right_padding", KeyMask(arange, jnp.asarray(right), aligned=True)),
             ("left_padding", KeyMask(arange, jnp.asarray(left), aligned=True))]
    if s > t:
        offsets = rng.integers(0, s - t + 1, size=b)
        cases.append(("cache_offsets", KeyMask(jnp.asarray(offsets[:, None] + np.arange(t), jnp.int32))))
    return cases


@pytest.mark.parametrize("heads,kv_heads,t,s", [(4, 4, 21, 21), (6, 1, 21, 21), (4, 2, 9, 40)])
def test_kernels_match_reference(heads, kv_heads, t, s):
    q, k, v = _qkv(0, 3, t, s, heads, kv_heads)
    for name, mask in _masks(3, t, s, np.random.default_rng(1)):
        if mask.aligned and s != t:
            continue
        want = reference_attention(q, k, v, mask)
        for block in (8, 512):
            got = blockwise_attention(q, k, v, mask, block=block)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=f"blockwise {name} block={block}")
        got = dot_product_attention(q, k, v, mask, block=8)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=f"dot_product {name}")


def test_blockwise_gradients_match_reference():
    t, heads, kv_heads = 21, 4, 2
    q, k, v = _qkv(2, 2, t, t, heads, kv_heads)
    cot = jnp.asarray(np.random.default_rng(3).normal(size=q.shape), jnp.float32)
    for name, mask in _masks(2, t, t, np.random.default_rng(4)):
        def loss(kernel, q, k, v):
            return jnp.sum(kernel(q, k, v, mask) * cot)

        want = jax.grad(functools.partial(loss, reference_attention), argnums=(0, 1, 2))(q, k, v)
        for kernel in (functools.partial(blockwise_attention, block=8), functools.partial(dot_product_attention, block=8)):
            got = jax.grad(functools.partial(loss, kernel), argnums=(0, 1, 2))(q, k, v)
            for g, w, arg in zip(got, want, "qkv"):
                np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4, err_msg=f"d{arg} {name}")


def _numpy_attention(q, k, v, lengths):
    """Causal softmax attention in float64 numpy, right padding at `lengths`: [B, T, H, D]."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, t, h, d = q.shape
    k, v = (np.repeat(a, h // a.shape[2], axis=2) for a in (k, v))
    scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d)
    visible = (np.arange(t)[None, :] <= np.arange(t)[:, None])[None] & (np.arange(t)[None, :] < lengths[:, None])[:, None]
    scores = np.where(visible[:, None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", probs, v)


@pytest.mark.parametrize("kv_layout", ["bskd", "bksd"])
def test_reference_in_causal_query_chunks_matches_numpy_and_the_whole_square(kv_layout):
    from atomsearch_jax.model.attention import MIN_CHUNKED_QUERIES
    t, heads, kv_heads = MIN_CHUNKED_QUERIES + 3, 4, 2   # chunks of unequal length
    q, k, v = _qkv(5, 2, t, t, heads, kv_heads)
    lengths = np.array([t, t - 30])
    valid = jnp.asarray(np.arange(t)[None, :] < lengths[:, None])
    slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (2, t))
    chunked, square = KeyMask(slots, valid, aligned=True), KeyMask(slots, valid)   # aligned=False: one square
    layout = (lambda a: a) if kv_layout == "bskd" else (lambda a: a.swapaxes(1, 2))
    want = _numpy_attention(q, k, v, lengths)
    real = np.arange(t)[None, :] < lengths[:, None]
    got = reference_attention(q, layout(k), layout(v), chunked, kv_layout=kv_layout)
    np.testing.assert_allclose(np.asarray(got)[real], want[real], atol=1e-5, rtol=1e-5)
    cot = jnp.asarray(np.random.default_rng(6).normal(size=q.shape) * real[:, :, None, None], jnp.float32)

    def loss(mask, q, k, v):
        return jnp.sum(reference_attention(q, layout(k), layout(v), mask, kv_layout=kv_layout) * cot)

    grads = [jax.grad(functools.partial(loss, mask), argnums=(0, 1, 2))(q, k, v) for mask in (chunked, square)]
    for g, w, arg in zip(*grads, "qkv"):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4, err_msg=f"d{arg}")


def test_auto_picks_per_backend_and_shape():
    assert resolve("auto", num_keys=256, block=512, aligned=True, backend="tpu") == "reference"
    assert resolve("auto", num_keys=4096, block=512, aligned=True, backend="cpu") == "blockwise"
    assert resolve("auto", num_keys=4096, block=512, aligned=True, backend="gpu") == "dot_product"
    assert resolve("auto", num_keys=4096, block=512, aligned=False, backend="gpu") == "blockwise"
    assert resolve("pallas", num_keys=4096, block=512, aligned=False) == "blockwise"
    # Few queries against many keys (decoding, appending a tool result): the scores are small.
    for backend in ("cpu", "gpu", "tpu"):
        assert resolve("auto", num_keys=65536, num_queries=1, block=512, aligned=True, backend=backend) == "reference"
    assert resolve("auto", num_keys=1024, num_queries=256, block=512, aligned=False, backend="cpu") == "reference"
    assert resolve("auto", num_keys=1024, num_queries=257, block=512, aligned=False, backend="cpu") == "blockwise"
    with pytest.raises(ValueError, match="attention='flash'"):
        tiny_config(attention="flash")


def test_decoding_past_one_key_block_uses_the_reference_kernel():
    """The engine's decode loop attends a window wider than attention_block with the reference kernel (the
    same program as attention="reference"): the blockwise kernel's key-block scan re-laid the whole cache
    out in every layer of every step."""
    from atomsearch_jax.generate.engine import Engine, device_programs
    from atomsearch_jax.generate.sampling import sampling_arrays

    def decode_hlo(attention: str) -> str:
        cfg = tiny_config(num_layers=2, attention_block=16, attention=attention)
        engine = Engine(cfg, init_params(cfg, jax.random.PRNGKey(0)), max_len=64)
        state = engine.start([[3, 4, 5]] * 2, max_new_tokens=8)
        stops = jax.tree_util.tree_map(jnp.asarray, engine.stop_set().arrays())
        sampling = jax.tree_util.tree_map(jnp.asarray, sampling_arrays(2))
        lowered = device_programs(cfg, None, 64).decode.lower(engine.params, state, sampling, stops, np.int32(4), 64)
        return lowered.as_text()

    auto, reference = decode_hlo("auto"), decode_hlo("reference")
    assert auto.count("stablehlo.while") == reference.count("stablehlo.while")
    assert decode_hlo("blockwise").count("stablehlo.while") > reference.count("stablehlo.while")


def test_model_forward_and_cached_forward_match_across_kernels():
    base = tiny_config(num_layers=2, num_heads=4, num_kv_heads=2)
    params = init_params(base, jax.random.PRNGKey(0))
    rng = np.random.default_rng(5)
    tokens = jnp.asarray(rng.integers(0, base.vocab_size, size=(3, 40)), jnp.int32)
    attention_mask = jnp.asarray(np.arange(40)[None, :] < np.array([40, 23, 7])[:, None], jnp.int32)
    positions = jnp.asarray(np.arange(40)[None, :] + np.array([0, 5, 100])[:, None], jnp.int32)
    runs = {}
    for kernel in ("reference", "blockwise", "dot_product"):
        cfg = base.replace(attention=kernel, attention_block=8)
        logits = forward(cfg, params, tokens, attention_mask=attention_mask, positions=positions)
        cache = init_cache(cfg, 3, 64)
        hidden, _ = forward_cached(cfg, params, tokens[:, :24], cache, jnp.array([0, 3, 17], jnp.int32))
        runs[kernel] = (logits, hidden)
    for kernel in ("blockwise", "dot_product"):
        for got, want in zip(runs[kernel], runs["reference"]):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=kernel)


def test_per_device_wrapper_matches_unsharded():
    """The shard_map wrapper used for the Pallas kernel, exercised with the blockwise kernel on 8 CPU devices."""
    from atomsearch_jax.model.layers import Constrainer
    from atomsearch_jax.parallel import TRAIN_RULES, make_mesh

    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    q, k, v = _qkv(6, 4, 32, 32, 4, 2)
    mask = _masks(4, 32, 32, np.random.default_rng(7))[1][1]
    kernel = functools.partial(blockwise_attention, block=8)
    got = jax.jit(lambda q, k, v, m: Constrainer(mesh, TRAIN_RULES).per_device(kernel, q, k, v, m))(q, k, v, mask)
    np.testing.assert_allclose(got, reference_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)


def _training_temp_bytes(attention: str, t: int) -> int:
    """Compiled temporary bytes of the gradient of a tiny-width model's token log-prob loss at T = t."""
    from atomsearch_jax.training.logprobs import token_logprobs

    cfg = tiny_config(num_layers=1, hidden_size=32, num_heads=4, num_kv_heads=2, attention=attention,
                      attention_block=256, max_position_embeddings=t)
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    tokens = jax.ShapeDtypeStruct((1, t), jnp.int32)

    def loss(p, tokens):
        logp, _ = token_logprobs(cfg, p, tokens, attention_mask=jnp.ones_like(tokens), chunk=1024)
        return jnp.sum(logp)

    compiled = jax.jit(jax.grad(loss)).lower(params, tokens).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_16k_training_forward_never_builds_t_by_t_scores():
    t = 16384
    one_head_scores = 4 * t * t  # a single [T, T] float32 score matrix: 1 GiB
    assert _training_temp_bytes("blockwise", t) < one_head_scores // 2  # measured: 344 MiB
    assert _training_temp_bytes("reference", t) > one_head_scores  # measured: 16 GiB
