"""Rows sample by their global index: a batch split into slices (one per process of a multi-process
job, or chunks on one process) samples exactly the tokens of the whole batch, whatever the mesh."""
import jax
import numpy as np

from atomsearch_jax.generate import Engine, sampling_arrays
from atomsearch_jax.model import init_params, tiny_config
from atomsearch_jax.parallel import make_mesh

CFG = tiny_config(vocab_size=96)
PARAMS = init_params(CFG, jax.random.PRNGKey(5))
PROMPTS = [[5, 9, 17, 3, 44], [60, 2], [7, 7, 8, 30], [11, 12, 13]]
N = 2  # samples per prompt


def sampled(engine, prompts, first_row):
    state = engine.start(prompts, n=N, seed=7, first_row=first_row)
    state, _ = engine.decode(state, max_steps=12, sampling=sampling_arrays(state.num_rows, temperature=1.0))
    return [row.tokens for row in engine.export(state).rows()]


def test_slices_sample_the_rows_of_the_whole_batch():
    devices = 4  # each slice on half the devices, as one of two processes would decode it
    whole_engine = Engine(CFG, PARAMS, max_len=40, mesh=make_mesh(1, -1, 1, devices=jax.devices()[:8]))
    whole = sampled(whole_engine, PROMPTS, 0)
    part = Engine(CFG, PARAMS, max_len=40, mesh=make_mesh(1, -1, 1, devices=jax.devices()[:devices]))
    halves = sampled(part, PROMPTS[:2], 0) + sampled(part, PROMPTS[2:], 2 * N)
    assert len(whole) == len(halves) == len(PROMPTS) * N
    for a, b in zip(whole, halves):
        np.testing.assert_array_equal(a, b)
    # Without the offset the second slice would replay the first slice's streams: it must differ.
    shifted = sampled(part, PROMPTS[2:], 0)
    assert any(not np.array_equal(a, b) for a, b in zip(whole[2 * N:], shifted))
