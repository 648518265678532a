"""Attention kernels: parity with the reference (float32, padding, per-row positions, GQA), gradients,
the model forward under each kernel, and the compiled memory of a 16k-token training forward."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomsearch_jax.model import forward, forward_cached, init_cache, init_params, tiny_config
from atomsearch_jax.kernels import flash_attention
from atomsearch_jax.model.attention import (KeyMask, attend, blockwise_attention, dot_product_attention,
                                            reference_attention, resolve)

needs_cpu_flash = pytest.mark.skipif(not flash_attention.cpu_supported(), reason="cpu_flash needs x86 AVX2/FMA")

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
    cpu_long = "cpu_flash" if flash_attention.available() else "blockwise"
    assert resolve("auto", num_keys=4096, block=512, aligned=True, backend="cpu") == cpu_long
    assert resolve("auto", num_keys=4096, block=512, aligned=False, backend="cpu") == "blockwise"
    assert resolve("auto", num_keys=383, block=512, aligned=True, backend="cpu") == "reference"
    assert resolve("auto", num_keys=384, block=512, aligned=True, backend="cpu") == (
        "cpu_flash" if flash_attention.available() else "reference")
    assert resolve("auto", num_keys=4096, block=512, aligned=True, backend="tpu") in ("pallas", "blockwise")
    # cpu_flash is a training kernel: a cache (queries != keys) or another backend goes where "auto" would.
    assert resolve("cpu_flash", num_keys=4096, num_queries=1, block=512, aligned=False, backend="cpu") == "reference"
    assert resolve("cpu_flash", num_keys=4096, block=512, aligned=True, backend="gpu") == "dot_product"
    # ... and so do operands it cannot run (a bfloat16 paper-scale model planned on CPU keeps blockwise).
    assert resolve("auto", num_keys=4096, block=512, aligned=True, backend="cpu", cpu_flash_operands=False) == "blockwise"
    assert resolve("cpu_flash", num_keys=4096, block=512, aligned=True, backend="cpu",
                   cpu_flash_operands=False) == "blockwise"
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
    kernels = ("reference", "blockwise", "dot_product") + (("cpu_flash",) if flash_attention.available() else ())
    for kernel in kernels:
        cfg = base.replace(attention=kernel, attention_block=8)
        logits = forward(cfg, params, tokens, attention_mask=attention_mask, positions=positions)
        cache = init_cache(cfg, 3, 64)
        hidden, _ = forward_cached(cfg, params, tokens[:, :24], cache, jnp.array([0, 3, 17], jnp.int32))
        runs[kernel] = (logits, hidden)
    for kernel in kernels[1:]:
        for got, want in zip(runs[kernel], runs["reference"]):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=kernel)


@pytest.mark.parametrize("kernel_name", ["blockwise", "cpu_flash"])
def test_per_device_wrapper_matches_unsharded(kernel_name):
    """The shard_map wrapper used for the custom-call kernels (Pallas, cpu_flash) on 8 CPU devices: forward
    and gradients."""
    from atomsearch_jax.model.layers import Constrainer
    from atomsearch_jax.parallel import TRAIN_RULES, make_mesh

    if kernel_name == "cpu_flash" and not flash_attention.available():
        pytest.skip(f"cpu_flash unavailable: {flash_attention.registration_error()}")
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    q, k, v = _qkv(6, 4, 32, 32, 4, 2)
    mask = _masks(4, 32, 32, np.random.default_rng(7))[1][1]
    kernel = {"blockwise": functools.partial(blockwise_attention, block=8),
              "cpu_flash": lambda q, k, v, m: flash_attention.flash_attention(q, k, v, m.kv_valid)}[kernel_name]
    cot = jnp.asarray(np.random.default_rng(8).normal(size=q.shape), jnp.float32)
    sharded = lambda q, k, v: jnp.sum(Constrainer(mesh, TRAIN_RULES).per_device(kernel, q, k, v, mask) * cot)  # noqa: E731
    whole = lambda q, k, v: jnp.sum(reference_attention(q, k, v, mask) * cot)  # noqa: E731
    got = jax.jit(lambda q, k, v: Constrainer(mesh, TRAIN_RULES).per_device(kernel, q, k, v, mask))(q, k, v)
    np.testing.assert_allclose(got, reference_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)
    for g, w, arg in zip(jax.jit(jax.grad(sharded, argnums=(0, 1, 2)))(q, k, v),
                         jax.grad(whole, argnums=(0, 1, 2))(q, k, v), "qkv"):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4, err_msg=f"d{arg}")


@needs_cpu_flash
@pytest.mark.parametrize("heads,kv_heads,t,d", [(4, 4, 21, 16), (6, 1, 70, 8), (4, 2, 130, 32), (2, 2, 64, 24)])
def test_cpu_flash_matches_reference_forward_and_gradients(heads, kv_heads, t, d):
    """The C++ kernel against the reference (itself checked against float64 numpy above), forward and all three
    gradients, on aligned masks with and without right / left padding, block boundaries (64 keys, 32 queries)
    crossed or not. Queries that may attend nothing (left padding) are padding: zeros here, excluded."""
    assert flash_attention.available(), flash_attention.registration_error()
    rng = np.random.default_rng(t)
    q, k, v = _qkv(t, 3, t, t, heads, kv_heads, d=d)
    for name, mask in _masks(3, t, t, rng):
        kv_valid = None if mask.kv_valid is None else np.asarray(mask.kv_valid)
        sees = np.ones((3, t), bool) if kv_valid is None else np.cumsum(kv_valid, axis=1) > 0
        cot = jnp.asarray(rng.normal(size=q.shape) * sees[:, :, None, None], jnp.float32)
        want = reference_attention(q, k, v, mask)
        got = flash_attention.flash_attention(q, k, v, mask.kv_valid)
        np.testing.assert_allclose(np.where(sees[:, :, None, None], got, 0), np.where(sees[:, :, None, None], want, 0),
                                   atol=2e-6, rtol=1e-5, err_msg=name)
        assert np.all(np.asarray(got)[~sees] == 0), name
        ref_grads = jax.grad(lambda q, k, v: jnp.sum(reference_attention(q, k, v, mask) * cot), argnums=(0, 1, 2))(q, k, v)
        grads = jax.grad(lambda q, k, v: jnp.sum(flash_attention.flash_attention(q, k, v, mask.kv_valid) * cot),
                         argnums=(0, 1, 2))(q, k, v)
        for g, w, arg in zip(grads, ref_grads, "qkv"):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4, err_msg=f"{name} d{arg}")


@needs_cpu_flash
def test_cpu_flash_rejects_what_it_cannot_run():
    q, k, v = _qkv(0, 1, 16, 16, 4, 2, d=12)
    with pytest.raises(ValueError, match="multiple of 8"):
        flash_attention.flash_attention(q, k, v)
    q, k, v = _qkv(0, 1, 16, 16, 4, 2, d=16)
    with pytest.raises(ValueError, match="float32"):
        flash_attention.flash_attention(q.astype(jnp.bfloat16), k, v)
    # attend() with the kernel named explicitly runs such operands where "auto" would (here the reference).
    mask = KeyMask(jnp.broadcast_to(jnp.arange(16, dtype=jnp.int32), (1, 16)), None, aligned=True)
    q12, k12, v12 = _qkv(0, 1, 16, 16, 4, 2, d=12)
    np.testing.assert_allclose(attend(q12, k12, v12, mask, implementation="cpu_flash"),
                               reference_attention(q12, k12, v12, mask), atol=1e-6)
    # A bfloat16 training forward past one block keeps the blockwise kernel: no [T, T] scores.
    t = 1024
    qb, kb, vb = (x.astype(jnp.bfloat16) for x in _qkv(0, 1, t, t, 4, 2, d=16))
    long_mask = KeyMask(jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (1, t)), None, aligned=True)
    hlo = jax.jit(lambda q, k, v: attend(q, k, v, long_mask, block=128)).lower(qb, kb, vb).as_text()
    assert "atomsearch_flash" not in hlo and f"{t},{t}" not in hlo.replace(" ", "")


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
    if flash_attention.available():
        assert _training_temp_bytes("cpu_flash", t) < one_head_scores // 2
    assert _training_temp_bytes("reference", t) > one_head_scores  # measured: 16 GiB
