"""A (data=2, fsdp=2, tensor=2) mesh of forced CPU devices gives the one-device results."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from atomsearch_jax.generate import Engine, sampling_arrays
from atomsearch_jax.model import init_params, tiny_config
from atomsearch_jax.parallel import make_mesh

CFG = tiny_config(vocab_size=96)
PARAMS = init_params(CFG, jax.random.PRNGKey(5))
PROMPTS = [[5, 9, 17, 3, 44], [60, 2], [7, 7, 8, 30, 31, 32, 33, 1, 2], [12, 13]]


def run(mesh, sampling):
    engine = Engine(CFG, PARAMS, max_len=48, mesh=mesh)
    state = engine.start(PROMPTS, n=2, seed=11)
    state, _ = engine.decode(state, max_steps=6, sampling=sampling, stops=engine.stop_set(eos=False))
    state = engine.append(state, {1: [3, 4, 5], 6: [9]})
    state, _ = engine.decode(state, max_steps=5, sampling=sampling, stops=engine.stop_set(eos=False))
    return engine, state, engine.export(state), np.asarray(engine.next_token_logits(state))


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(temperature=1.0, top_p=0.9)])
def test_mesh_matches_one_device(sampling):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (forced CPU) devices")
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    params = sampling_arrays(8, **sampling)
    _, _, single, single_logits = run(None, params)
    engine, state, sharded, sharded_logits = run(mesh, params)
    np.testing.assert_array_equal(sharded.lengths, single.lengths)
    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    np.testing.assert_array_equal(sharded.loss_mask, single.loss_mask)
    np.testing.assert_allclose(sharded.logprobs, single.logprobs, atol=1e-5)
    np.testing.assert_allclose(sharded_logits, single_logits, rtol=1e-5, atol=1e-5)
    # Rows over (data, fsdp), KV heads over tensor; weights tensor-parallel but not split over fsdp.
    assert state.cache[0]["k"].sharding.spec == PartitionSpec(("data", "fsdp"), "tensor", None, None)
    assert state.tokens.sharding.spec == PartitionSpec(("data", "fsdp"), None)
    q = engine.params["layers_0"]["attn"]["q"]["kernel"].sharding.spec
    assert "fsdp" not in jax.tree_util.tree_leaves(tuple(q)) and "tensor" in tuple(q)
