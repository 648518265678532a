"""kernels.greedy_head: the exact argmax of the float32 logits through an int8 screen (checked against the
dense-product handler's loop and numpy), its screen against numpy, and the Engine's evaluation mode."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomsearch_jax.generate import Engine, Sampler, sampling_arrays, steps
from atomsearch_jax.kernels import blas_matmul, greedy_head
from atomsearch_jax.model import init_params, tiny_config

pytestmark = pytest.mark.skipif(not greedy_head.available(), reason=f"greedy head: {greedy_head.registration_error()}")


def head_operands(rng, v: int, k: int, transposed: bool, scale: float = 0.02) -> np.ndarray:
    return rng.normal(0, scale, (v, k) if transposed else (k, v)).astype(np.float32)


def greedy(hidden: np.ndarray, w: np.ndarray, transposed: bool) -> tuple[np.ndarray, np.ndarray]:
    fn = jax.jit(lambda x, w: greedy_head.greedy_tokens(x, w, greedy_head.head_screen(w, transposed=transposed),
                                                        transposed=transposed))
    tokens, logits = fn(jnp.asarray(hidden), jnp.asarray(w))
    return np.asarray(tokens), np.asarray(logits)


def loop_logits(hidden: np.ndarray, w: np.ndarray, transposed: bool) -> np.ndarray:
    """The float32 logits as the dense-product handler's few-row loop computes them."""
    return np.asarray(blas_matmul.matmul(jnp.asarray(hidden), jnp.asarray(w), transposed=transposed, policy="blas"))


@pytest.mark.parametrize("transposed", [True, False])
@pytest.mark.parametrize("v,k", [(3001, 100), (777, 64), (1000, 7)])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_token_and_logit_equal_the_float32_loops_argmax(transposed, v, k, rows):
    if not blas_matmul.available() or not blas_matmul.has_few_row_loop(transposed):
        pytest.skip("the handler's few-row loop is not built here")
    rng = np.random.default_rng(v + k + rows)
    w = head_operands(rng, v, k, transposed)
    hidden = rng.normal(0, 1, (rows, k)).astype(np.float32)
    tokens, logits = greedy(hidden, w, transposed)
    ref = loop_logits(hidden, w, transposed)
    np.testing.assert_array_equal(tokens, ref.argmax(-1))
    np.testing.assert_array_equal(logits, ref[np.arange(rows), ref.argmax(-1)])  # bit for bit: same order of adds


@pytest.mark.parametrize("transposed", [True, False])
def test_more_than_eight_rows_run_in_groups(transposed):
    rng = np.random.default_rng(5)
    w = head_operands(rng, 2000, 96, transposed)
    hidden = rng.normal(0, 1, (19, 96)).astype(np.float32)
    tokens, _ = greedy(hidden, w, transposed)
    logits64 = hidden.astype(np.float64) @ (w.T if transposed else w).astype(np.float64)
    np.testing.assert_array_equal(tokens, logits64.argmax(-1))


@pytest.mark.parametrize("transposed", [True, False])
def test_tokens_the_screen_cannot_tell_apart_are_decided_in_float32(transposed):
    """Rows 100 and 200 hold the largest logits and quantize to the same int8 row and scale. Row 200 is nudged
    along x (its float32 logit is larger); row 100 further, but orthogonally to x (its logit is the same as
    unnudged, its bound wider). Only the float32 check finds row 200: the screen's values tie, and its upper
    bounds favour row 100."""
    rng = np.random.default_rng(0)
    v, k = 4096, 128
    rows_vk = rng.normal(0, 0.02, (v, k)).astype(np.float32)
    step = np.float32(0.04 / 127)
    base = (rng.integers(-100, 101, k) * step).astype(np.float32)
    base[0] = 127 * step  # the largest magnitude, left alone: every nudged row keeps base's scale
    x = (np.sign(base) * 3 + rng.normal(0, 0.1, k)).astype(np.float32)  # the two rows' logits far above the rest
    along = np.float32(2e-6) * np.sign(x)
    across = rng.normal(0, 1, k)
    across[0] = along[0] = 0
    across -= across @ x / (x[1:] @ x[1:]) * x * (np.arange(k) > 0)
    across = (across / np.abs(across).max() * 5e-5).astype(np.float32)  # a third of a quantization step
    rows_vk[100], rows_vk[200] = base + across, base + along
    w = rows_vk if transposed else np.ascontiguousarray(rows_vk.T)
    screen = greedy_head.head_screen(jnp.asarray(w), transposed=transposed)
    np.testing.assert_array_equal(np.asarray(screen.rows)[100], np.asarray(screen.rows)[200])
    assert np.asarray(screen.norms)[2, 100] == np.asarray(screen.norms)[2, 200]  # the same scale
    assert np.asarray(screen.norms)[1, 100] > np.asarray(screen.norms)[1, 200]  # row 100's wider bound
    hidden = np.stack([x, rng.normal(0, 1, k).astype(np.float32)])
    tokens, _ = greedy(hidden, w, transposed)
    assert tokens[0] == 200
    ref = loop_logits(hidden, w, transposed) if blas_matmul.available() else hidden @ rows_vk.T
    np.testing.assert_array_equal(tokens, ref.argmax(-1))


@pytest.mark.parametrize("transposed", [True, False])
def test_ties_go_to_the_first_index_also_past_the_candidate_limit(transposed):
    rng = np.random.default_rng(1)
    k = 64
    rows_vk = np.tile(rng.normal(0, 0.02, (1, k)).astype(np.float32), (5000, 1))  # 5000 equal logits
    rows_vk[:1000] = rng.normal(0, 0.02, (1000, k)).astype(np.float32) * 1e-3  # far below them
    hidden = np.stack([rng.normal(0, 1, k), np.zeros(k)]).astype(np.float32)
    hidden[0] *= np.sign(hidden[0] @ rows_vk[-1])  # the tied logits are the largest
    w = rows_vk if transposed else np.ascontiguousarray(rows_vk.T)
    tokens, logits = greedy(hidden, w, transposed)
    assert tokens.tolist() == [1000, 0]  # the zero row ties everywhere: index 0
    assert logits[1] == 0.0


@pytest.mark.parametrize("transposed", [True, False])
def test_non_finite_values_give_numpys_argmax(transposed):
    rng = np.random.default_rng(2)
    v, k = 900, 48
    rows_vk = rng.normal(0, 0.02, (v, k)).astype(np.float32)
    rows_vk[333, 5] = np.nan
    hidden = rng.normal(0, 1, (3, k)).astype(np.float32)
    hidden[1, 3] = np.inf
    hidden[2, 0] = np.nan
    w = rows_vk if transposed else np.ascontiguousarray(rows_vk.T)
    tokens, _ = greedy(hidden, w, transposed)
    with np.errstate(invalid="ignore"):
        ref = hidden @ rows_vk.T
    np.testing.assert_array_equal(tokens, ref.argmax(-1))
    assert tokens[0] == 333  # the first NaN, as numpy's argmax


@pytest.mark.parametrize("transposed", [True, False])
def test_screen_holds_the_quantized_rows_and_their_norms(transposed):
    rng = np.random.default_rng(3)
    rows_vk = rng.normal(0, 0.5, (67, 40)).astype(np.float32)
    rows_vk[5] = 0  # a zero row: scale 1, all zeros
    w = rows_vk if transposed else np.ascontiguousarray(rows_vk.T)
    screen = jax.jit(lambda w: greedy_head.head_screen(w, transposed=transposed))(jnp.asarray(w))
    top = np.abs(rows_vk).max(axis=1)
    scale = np.where(top > 0, top / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(rows_vk * (np.float32(1) / scale)[:, None]), -127, 127).astype(np.int8)
    np.testing.assert_array_equal(np.asarray(screen.rows), q)
    norms = np.asarray(screen.norms)
    np.testing.assert_array_equal(norms[2], scale)
    np.testing.assert_array_equal(norms[3], q.astype(np.int64).sum(axis=1))
    rows64, back = rows_vk.astype(np.float64), q.astype(np.float64) * scale[:, None]
    np.testing.assert_allclose(norms[:2], np.stack([np.linalg.norm(rows64, axis=1),
                                                    np.linalg.norm(rows64 - back, axis=1)]), rtol=1e-5, atol=1e-7)


def test_bad_operands_are_named():
    w = jnp.zeros((10, 8), jnp.float32)
    with pytest.raises(ValueError, match="float32 head"):
        greedy_head.head_screen(w.astype(jnp.bfloat16), transposed=True)
    screen = greedy_head.head_screen(w, transposed=True)
    with pytest.raises(ValueError, match="float32 hidden"):
        greedy_head.greedy_tokens(jnp.zeros((2, 8), jnp.bfloat16), w, screen, transposed=True)


CFG = tiny_config(vocab_size=300)
PARAMS = init_params(CFG, jax.random.PRNGKey(4))
PROMPTS = [[5, 9, 17, 3, 44], [60, 2], [7, 7, 8, 30, 31, 32, 33, 1, 2], [11]]


@pytest.fixture(autouse=True)
def screen_tiny_heads(monkeypatch, request):
    """The tiny models' heads are below SCREEN_MIN_HEAD_ELEMENTS; the engine tests screen them anyway."""
    if "keeps" not in request.node.name:
        monkeypatch.setattr(steps, "SCREEN_MIN_HEAD_ELEMENTS", 0)


def test_engine_keeps_small_heads_on_the_logits_path():
    engine = Engine(CFG, PARAMS, max_len=32, greedy_logprobs=False)
    assert engine.head_screen is None  # 300 x 32 elements: XLA's dot computes this head


@pytest.mark.parametrize("tied", [False, True])
def test_engine_without_greedy_logprobs_gives_the_same_tokens_and_zero_logprobs(tied):
    cfg = CFG.replace(tie_word_embeddings=tied)
    params = init_params(cfg, jax.random.PRNGKey(4))
    plain = Sampler(cfg, params, max_len=48)
    screened = Sampler(cfg, params, max_len=48, greedy_logprobs=False)
    assert screened.engine.head_screen is not None and plain.engine.head_screen is None
    want = plain.generate(PROMPTS, max_new_tokens=20, temperature=0.0, ignore_eos=True)
    got = screened.generate(PROMPTS, max_new_tokens=20, temperature=0.0, ignore_eos=True)
    assert [c.tokens for c in got] == [c.tokens for c in want]
    assert all(c.logprobs == [0.0] * 20 for c in got)
    assert all(all(lp < 0 for lp in c.logprobs) for c in want)


def test_engine_without_greedy_logprobs_samples_other_rows_as_before():
    """Rows with a temperature keep their tokens and log-probabilities; only greedy rows record 0."""
    rows = 4
    sampling = sampling_arrays(rows, temperature=[0.0, 1.0, 0.0, 0.7])
    outs = []
    for greedy_logprobs in (True, False):
        engine = Engine(CFG, PARAMS, max_len=48, greedy_logprobs=greedy_logprobs)
        state = engine.start(PROMPTS, rows=rows, seed=7, max_new_tokens=16)
        state, _ = engine.decode(state, max_steps=16, sampling=sampling, stops=engine.stop_set(eos=False))
        outs.append(engine.export(state))
    np.testing.assert_array_equal(outs[0].tokens, outs[1].tokens)
    np.testing.assert_array_equal(outs[0].logprobs[[1, 3]], outs[1].logprobs[[1, 3]])
    assert not outs[1].logprobs[[0, 2]].any() and outs[0].logprobs[[0, 2]].any()


def test_engine_set_params_rebuilds_the_screen():
    engine = Engine(CFG, PARAMS, max_len=32, greedy_logprobs=False)
    other = init_params(CFG, jax.random.PRNGKey(9))
    engine.set_params(other)
    want = Sampler(CFG, other, max_len=32).generate(PROMPTS, max_new_tokens=8, temperature=0.0, ignore_eos=True)
    state = engine.start(PROMPTS, max_new_tokens=8)
    state, _ = engine.decode(state, max_steps=8, sampling=sampling_arrays(len(PROMPTS), temperature=0.0),
                             stops=engine.stop_set(eos=False))
    got = [r.tokens[r.prompt_length:].tolist() for r in engine.export(state).rows()]
    assert got == [c.tokens for c in want]
    want = greedy_head.head_screen(other["lm_head"]["kernel"], transposed=False)  # tiny_config's head: untied
    np.testing.assert_array_equal(np.asarray(engine.head_screen.rows), np.asarray(want.rows))
