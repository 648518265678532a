"""The OpenBLAS sgemm FFI handler (kernels/blas_matmul.py) against float64 numpy products."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomsearch_jax.kernels import blas_matmul
from atomsearch_jax.model import forward, init_params
from atomsearch_jax.model.config import tiny_config
from atomsearch_jax.model.transformer import forward_cached, init_cache

pytestmark = pytest.mark.skipif(not blas_matmul.available(), reason="OpenBLAS handler not built here")

SHAPES = [((8, 96), 40), ((1, 7), 5), ((2, 3, 33), 17), ((130, 64), 257)]


def _operands(x_shape, n, transposed, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((n, x_shape[-1]) if transposed else (x_shape[-1], n)).astype(np.float32)
    return x, w


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("x_shape,n", SHAPES)
def test_product_matches_float64_numpy(x_shape, n, transposed):
    x, w = _operands(x_shape, n, transposed)
    want = x.astype(np.float64) @ (w.T if transposed else w).astype(np.float64)
    got = jax.jit(lambda x, w: blas_matmul.matmul(x, w, transposed=transposed, policy="blas"))(x, w)
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 9])
def test_few_rows_match_float64_numpy(rows, transposed):
    """Few-row products run the handler's own loops for <= 8 rows (9 rows go to sgemm): w read transposed (the
    decode-time LM head) on AVX2 CPUs, w as stored (the layers) on AVX-512 CPUs. Every row count, a K with a
    tail past the loops' 16-float and 8-row steps, a weight split over threads by columns (40,000 columns), one
    split by rows into per-thread sums (4864 x 1000: the MLP's down projection's long K), a few columns."""
    for k, n in ((53, 40_000), (37, 3), (896, 70), (4864, 1000)):
        x, w = _operands((rows, k), n, transposed, seed=rows)
        want = x.astype(np.float64) @ (w.T if transposed else w).astype(np.float64)
        product = jax.jit(lambda x, w: blas_matmul.matmul(x, w, transposed=transposed, policy="blas"))
        for call in range(3):  # how the work falls to the threads varies from call to call
            # the rounding of a float32 sum of k products of N(0, 1) numbers grows like eps * k
            np.testing.assert_allclose(np.asarray(product(x, w)), want, rtol=1e-5, atol=max(1e-4, 5e-7 * k),
                                       err_msg=f"rows={rows} k={k} n={n} call {call}")


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("x_shape,n", SHAPES[:3])
def test_gradients_match_the_numpy_derivation(x_shape, n, transposed):
    x, w = _operands(x_shape, n, transposed, seed=1)
    r = np.random.default_rng(2).standard_normal((*x_shape[:-1], n)).astype(np.float32)
    loss = lambda x, w: jnp.sum(blas_matmul.matmul(x, w, transposed=transposed, policy="blas") * r)  # noqa: E731
    dx, dw = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
    x2, r2 = x.reshape(-1, x.shape[-1]).astype(np.float64), r.reshape(-1, n).astype(np.float64)
    w64 = w.astype(np.float64)
    want_dx = (r2 @ (w64 if transposed else w64.T)).reshape(x.shape)
    want_dw = r2.T @ x2 if transposed else x2.T @ r2
    np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dw), want_dw, rtol=1e-5, atol=1e-4)


def test_vmap_runs_each_product():
    x, w = _operands((4, 5, 12), 9, False)
    got = jax.vmap(lambda x: blas_matmul.matmul(x, w, policy="blas"))(x)
    np.testing.assert_allclose(np.asarray(got), x.astype(np.float64) @ w, rtol=1e-5, atol=1e-4)


def test_policy_errors_name_the_input():
    with pytest.raises(ValueError, match="'fast'"):
        blas_matmul.matmul(jnp.ones((2, 3)), jnp.ones((3, 4)), policy="fast")
    with pytest.raises(ValueError, match="float32 operands.*bfloat16"):
        blas_matmul.matmul(jnp.ones((2, 3), jnp.bfloat16), jnp.ones((3, 4), jnp.bfloat16), policy="blas")
    with pytest.raises(ValueError, match=r"\(2, 3\) and w \(4, 4\)"):
        blas_matmul.matmul(jnp.ones((2, 3)), jnp.ones((4, 4)), policy="blas")
    with pytest.raises(ValueError, match="matmul"):
        tiny_config(matmul="openblas")


def test_auto_keeps_xla_dot_where_the_custom_call_cannot_go():
    assert jax.device_count() > 1  # conftest forces 8 CPU devices: XLA cannot partition the custom call
    assert not blas_matmul.uses_blas(jnp.float32, jnp.float32, "auto")
    assert not blas_matmul.uses_blas(jnp.bfloat16, jnp.float32, "auto")
    assert blas_matmul.uses_blas(jnp.float32, jnp.float32, "blas")
    assert not blas_matmul.uses_blas(jnp.float32, jnp.float32, "xla")


@pytest.mark.parametrize("tied", [False, True])
def test_model_through_openblas_equals_xla_dot(tied):
    """Logits, decode-step hidden states and parameter gradients of a tiny model agree across kernels."""
    xla = tiny_config(tie_word_embeddings=tied, matmul="xla")
    blas = xla.replace(matmul="blas")
    params = init_params(xla, jax.random.PRNGKey(3))
    tokens = np.random.RandomState(4).randint(0, xla.vocab_size, (3, 10))
    np.testing.assert_allclose(np.asarray(forward(blas, params, tokens)), np.asarray(forward(xla, params, tokens)),
                               rtol=1e-5, atol=1e-5)

    def step(cfg):
        hidden, _ = forward_cached(cfg, params, tokens[:, :1], init_cache(cfg, 3, 16), jnp.array([0, 4, 9]))
        return np.asarray(hidden)

    np.testing.assert_allclose(step(blas), step(xla), rtol=1e-5, atol=1e-5)

    def grads(cfg):
        loss = lambda p: jnp.mean(jax.nn.log_softmax(forward(cfg, p, tokens))[..., 0])  # noqa: E731
        return jax.grad(loss)(params)

    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads(blas)), jax.tree.leaves(grads(xla))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))


def test_auto_leaves_few_row_products_to_xla(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)  # an AVX2 core forced on AVX-512: the test below
    """One row is a matrix-vector product (XLA's dot runs it at bandwidth); from 2 rows a product takes the
    handler where its own few-row loop for that weight layout runs, else sgemm from 4 rows (stored) or 8
    (transposed): MIN_ROWS."""
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    f32 = jnp.float32
    for transposed in (False, True):
        loop = blas_matmul.has_few_row_loop(transposed)
        assert blas_matmul.has_few_row_loop(transposed) == (
            blas_matmul.build.x86_with("avx2", "fma") if transposed else blas_matmul.build.x86_with("avx512f"))
        low = blas_matmul.MIN_ROWS[transposed]
        assert low == (2 if loop else 8 if transposed else 4)
        assert not blas_matmul.uses_blas(f32, f32, "auto", rows=1, transposed=transposed)
        assert not blas_matmul.uses_blas(f32, f32, "auto", rows=low - 1, transposed=transposed)
        assert blas_matmul.uses_blas(f32, f32, "auto", rows=low, transposed=transposed)
        assert blas_matmul.uses_blas(f32, f32, "auto", rows=8, transposed=transposed)
    assert blas_matmul.uses_blas(f32, f32, "blas", rows=1, transposed=True)
    # Small weights (the default job's model) stay on XLA's dot: sgemm slowed its whole SFT step.
    assert not blas_matmul.uses_blas(f32, f32, "auto", rows=1408, weight_elements=128 * 768)
    assert blas_matmul.uses_blas(f32, f32, "auto", rows=1408, weight_elements=896 * 896)
    assert blas_matmul.uses_blas(f32, f32, "blas", rows=1408, weight_elements=128 * 768)


def test_without_the_handler_auto_falls_back_and_blas_says_why(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    monkeypatch.setattr(blas_matmul, "registration_error", lambda: "no C++ compiler found (set $CXX)")
    assert not blas_matmul.uses_blas(jnp.float32, jnp.float32, "auto", rows=64)
    with pytest.raises(RuntimeError, match=r"unavailable: no C\+\+ compiler"):
        blas_matmul.matmul(jnp.ones((64, 3)), jnp.ones((3, 4)), policy="blas")


def test_a_failed_build_names_the_command_and_the_compiler_error(tmp_path, monkeypatch):
    from atomsearch_jax.kernels import build

    monkeypatch.setenv("ATOMSEARCH_KERNEL_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "broken.cc"
    source.write_text("this is not C++;\n")
    with pytest.raises(build.BuildError, match=r"broken\.cc.*failed:[\s\S]*error"):
        build.shared_library(source)
    assert not list((tmp_path / "cache").glob("*.so"))  # no half-built library is left to be loaded


def test_an_avx2_core_forced_on_an_avx512_cpu_is_warned_about_and_left_to_xla(monkeypatch):
    """sgemm on OpenBLAS's AVX2 kernels ran behind XLA's AVX-512 dot: "auto" then keeps only the handler's
    own few-row loop (the decode-time head)."""
    from atomsearch_jax.kernels import build
    features = {"avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
    monkeypatch.setattr(build, "x86_with", lambda *names: set(names) <= features)
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    f32, big = jnp.float32, 896 * 9728
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert "OPENBLAS_CORETYPE=Haswell" in blas_matmul.core_type_warning()
    assert not blas_matmul.uses_blas(f32, f32, "auto", rows=4096, weight_elements=big)
    assert not blas_matmul.uses_blas(f32, f32, "auto", rows=256, weight_elements=big)
    assert not blas_matmul.uses_blas(f32, f32, "auto", rows=256, transposed=True, weight_elements=big)
    assert blas_matmul.uses_blas(f32, f32, "auto", rows=8, transposed=True, weight_elements=big)
    assert blas_matmul.uses_blas(f32, f32, "blas", rows=4096, weight_elements=big)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "SkylakeX")
    assert blas_matmul.uses_blas(f32, f32, "auto", rows=4096, weight_elements=big)
    for core in ("SkylakeX", "cooperlake", ""):
        monkeypatch.setenv("OPENBLAS_CORETYPE", core)
        assert blas_matmul.core_type_warning() is None, core
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    features.discard("avx512vl")  # no AVX-512 core fits this CPU: Haswell is the right choice
    assert blas_matmul.core_type_warning() is None


@pytest.mark.skipif(not blas_matmul.has_few_row_loop(False), reason="the stored-layout few-row loop needs AVX-512")
@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("k, columns", [(100, (40_000, 24, 17)), (1000, (700, 100, 17))], ids=["by_columns", "by_rows"])
def test_few_row_products_of_several_weights_match_float64_numpy_and_differentiate(rows, k, columns):
    """One call for the q, k, v projections: column counts that do not fill a 16-column group, chunks that
    straddle two weights (a 40,000-column weight split over threads by columns), outputs small enough for
    the threads to split the weight rows instead (817 columns, 1000 rows), and the gradient through the call."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 1, k)).astype(np.float32)
    ws = tuple(rng.standard_normal((k, n)).astype(np.float32) for n in columns)
    got = jax.jit(blas_matmul.few_row_products)(x, ws)
    for y, w in zip(got, ws):
        assert y.shape == (rows, 1, w.shape[1])
        np.testing.assert_allclose(np.asarray(y), x.astype(np.float64) @ w.astype(np.float64), rtol=1e-5, atol=1e-4)

    def loss(x, ws, product):
        return sum(jnp.sum(jnp.sin(y)) for y in product(x, ws))

    grads = jax.grad(loss, argnums=(0, 1))(x, ws, blas_matmul.few_row_products)
    want = jax.grad(loss, argnums=(0, 1))(x, ws, lambda x, ws: tuple(x @ w for w in ws))
    for g, h in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(h), rtol=1e-4, atol=1e-3)


@pytest.mark.skipif(not blas_matmul.has_few_row_loop(False), reason="the stored-layout few-row loop needs AVX-512")
def test_decoding_projects_q_k_v_in_one_call():
    """A decode step's q, k and v (8 rows, 1.2M weight elements together) run as one handler call, with the
    cached forward's hidden states equal to XLA's dot's."""
    cfg = tiny_config(hidden_size=512, num_heads=8, num_kv_heads=2, intermediate_size=256, num_layers=1,
                      attention_bias=True)
    params = init_params(cfg, jax.random.PRNGKey(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 1)), jnp.int32)
    index = jnp.full((8,), 3, jnp.int32)
    run = lambda c: forward_cached(c, params, tokens, init_cache(c, 8, 8), index)[0]  # noqa: E731
    hlo = jax.jit(run, static_argnums=0).lower(cfg.replace(matmul="blas")).as_text()
    assert hlo.count("atomsearch_few_rows_many") == 1
    np.testing.assert_allclose(np.asarray(run(cfg.replace(matmul="blas"))), np.asarray(run(cfg.replace(matmul="xla"))),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not blas_matmul.has_few_row_loop(False), reason="the stored-layout few-row loop needs AVX-512")
def test_concurrent_products_share_the_lingering_pool_task_correctly():
    """Products from several threads at once, back to back: each posts its chunks for the pool task that
    lingers after the previous product (few_rows.h), which must run only the newest queue's chunks into that
    queue's outputs. Every result matches float64 numpy."""
    import concurrent.futures

    rng = np.random.default_rng(0)
    cases = []
    for i in range(4):
        x = rng.standard_normal((8, 600)).astype(np.float32)
        w = rng.standard_normal((600, 2000 + 16 * i)).astype(np.float32)  # by columns
        v = rng.standard_normal((600, 500)).astype(np.float32)             # by rows (16 KB of output)
        cases.append((x, w, v, x.astype(np.float64) @ w, x.astype(np.float64) @ v))
    product = jax.jit(lambda x, w, v: (blas_matmul.matmul(x, w, policy="blas"),) + blas_matmul.few_row_products(x, (v,)))

    def run(case):
        x, w, v, want_w, want_v = case
        for _ in range(30):
            got_w, got_v = product(x, w, v)
            np.testing.assert_allclose(np.asarray(got_w), want_w, rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(np.asarray(got_v), want_v, rtol=1e-4, atol=1e-3)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(run, case) for case in cases]:
            done.result()

@pytest.mark.skipif(not blas_matmul.has_few_row_loop(False), reason="the stored-layout few-row loop needs AVX-512")
@pytest.mark.parametrize("several", [False, True], ids=["matmul", "few_row_products"])
def test_products_split_over_weight_rows_give_the_same_bits_on_every_call(several):
    """A product split over the weight's rows adds its chunks' partial sums in chunk order (few_rows.h), so its
    float32 output does not depend on which thread ran which chunk. Calls from several threads at once, where
    the pool's tasks join at varying moments, all give the bits of the first call."""
    import concurrent.futures

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4864)).astype(np.float32)
    w = rng.standard_normal((4864, 896)).astype(np.float32)  # down's shape: 8 chunks of rows on 2 threads
    if several:
        product = jax.jit(lambda x, w: jnp.concatenate(blas_matmul.few_row_products(x, (w[:, :512], w[:, 512:])), 1))
    else:
        product = jax.jit(lambda x, w: blas_matmul.matmul(x, w, policy="blas"))
    first = np.asarray(product(x, w))
    np.testing.assert_allclose(first, x.astype(np.float64) @ w, rtol=1e-4, atol=1e-3)

    def run(_):
        return [np.asarray(product(x, w)) for _ in range(40)]

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = [y for done in [pool.submit(run, i) for i in range(3)] for y in done.result()]
    for y in results:
        np.testing.assert_array_equal(y, first)


@pytest.mark.skipif(not blas_matmul.has_few_row_loop(False), reason="the stored-layout few-row loop needs AVX-512")
def test_decoding_through_the_few_row_loops_records_the_same_log_probs_on_every_run():
    """Greedy decoding whose q/k/v, o and down products split over weight rows (8 rows): the recorded float32
    log-probabilities are the same bits on every run, as a rerun of an evaluation or rollout must be."""
    from atomsearch_jax.generate import Engine, sampling_arrays

    cfg = tiny_config(hidden_size=256, num_heads=4, num_kv_heads=2, intermediate_size=1024, num_layers=2,
                      vocab_size=512, matmul="blas")
    engine = Engine(cfg, init_params(cfg, jax.random.PRNGKey(0)), max_len=32)
    prompts = [list(map(int, p)) for p in np.random.default_rng(0).integers(0, 512, (8, 6))]
    greedy = sampling_arrays(8, temperature=0.0)

    def run():
        state = engine.start(prompts, rows=8, max_new_tokens=16)
        state, _ = engine.decode(state, max_steps=16, sampling=greedy, stops=engine.stop_set(eos=False))
        out = engine.export(state)
        return out.tokens, out.logprobs

    tokens, logprobs = run()
    for _ in range(8):
        again_tokens, again_logprobs = run()
        np.testing.assert_array_equal(again_tokens, tokens)
        np.testing.assert_array_equal(again_logprobs, logprobs)
