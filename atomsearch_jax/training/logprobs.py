"""Per-token log-probs and entropies of a trajectory without materialising [B, T, V] logits.

The final hidden states [B, T, E] are projected to the vocabulary one chunk of `chunk` positions at
a time inside a `lax.scan`; each chunk's body is rematerialised in the backward pass, so at most one
[B, chunk, V] float32 logits block (plus its cotangent) is alive at once. For V = 151936, B·T = 4096
and chunk = 64 that is 311 MB per block instead of 2.5 GB for the whole sequence.

Outputs are aligned with the tokens: entry t is log p(tokens[t] | tokens[<t]) (and the entropy of
that next-token distribution); entry 0 has no prediction and is 0.

`temperature` scores the tokens under softmax(logits / temperature), the distribution a sampler at
that temperature drew them from (veRL divides the logits by the rollout temperature the same way):
an RL update must score policy, old and reference log-probs at the rollout temperature, or the ratio
and the KL belong to a different distribution than the samples.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import Mesh

from atomsearch_jax.model import ModelConfig, hidden_states, lm_head_operand
from atomsearch_jax.model.transformer import head_logits
from atomsearch_jax.parallel import TRAIN_RULES
from atomsearch_jax.model.dtypes import cast_floating

Array = jax.Array


def _chunk_stats(hidden: Array, w: Array, targets: Array, with_entropy: bool, mesh: Mesh | None,
                 temperature: float, transposed: bool, matmul: str) -> tuple[Array, Array]:
    """hidden [B, C, E], w [E, V] (or [V, E]), targets [B, C] -> (log p(target) [B, C], entropy [B, C] or 0)."""
    logits = head_logits(hidden, w, transposed, matmul)
    if temperature != 1.0:
        logits = logits / jnp.float32(temperature)
    if mesh is not None:
        logits = nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"), rules=TRAIN_RULES, mesh=mesh)
    lse = jax.nn.logsumexp(logits, axis=-1)
    logp = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0] - lse
    if not with_entropy:
        return logp, jnp.zeros_like(logp)
    probs = jnp.exp(logits - lse[..., None])
    return logp, lse - jnp.sum(probs * logits, axis=-1)


def check_temperature(temperature: float) -> float:
    """The temperature as a float, or a ValueError naming it (it must be a finite number > 0)."""
    t = float(temperature)
    if not (t > 0 and t < float("inf")):
        raise ValueError(f"temperature={temperature!r} must be a finite number > 0 (log-probs of a greedy "
                         "sampler are not defined)")
    return t


def next_token_stats(hidden: Array, w: Array, targets: Array, *, chunk: int, with_entropy: bool = True,
                     mesh: Mesh | None = None, temperature: float = 1.0, transposed: bool = False,
                     matmul: str = "xla") -> tuple[Array, Array]:
    """Log-prob of targets[b, t] under softmax(hidden[b, t] @ w / temperature), and the entropy, chunked over t.

    hidden [B, T, E], w [E, V] (or [V, E] read as its transpose with transposed=True), targets [B, T] int
    -> two float32 [B, T] arrays. matmul: the head product's policy (kernels/blas_matmul.py).
    """
    temperature = check_temperature(temperature)
    b, t, e = hidden.shape
    chunk = max(1, min(int(chunk), t))
    n = -(-t // chunk)
    pad = n * chunk - t
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    h_chunks = hidden.reshape(b, n, chunk, e).swapaxes(0, 1)
    t_chunks = targets.reshape(b, n, chunk).swapaxes(0, 1)
    stats = jax.checkpoint(lambda h, tg: _chunk_stats(h, w, tg, with_entropy, mesh, temperature, transposed, matmul))

    def body(_, xs):
        return None, stats(*xs)

    _, (logp, ent) = jax.lax.scan(body, None, (h_chunks, t_chunks))
    unchunk = lambda x: x.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]  # noqa: E731
    return unchunk(logp), unchunk(ent)


def token_logprobs(config: ModelConfig, params: Any, tokens: Array, *, temperature: float = 1.0,
                   attention_mask: Array | None = None, positions: Array | None = None, chunk: int = 256,
                   with_entropy: bool = True, mesh: Mesh | None = None) -> tuple[Array, Array]:
    """(log-probs [B, T], entropies [B, T]) of the trajectory tokens [B, T] under softmax(logits /
    temperature), aligned with the tokens.

    One forward over the whole trajectory (prompt, generated and environment tokens); attention_mask
    [B, T] (1 = real token) and positions [B, T] as in `atomsearch_jax.model.forward`. params may be
    float32 master weights: the forward runs them cast to the model's param dtype (gradients flow back
    to the masters in float32), so a bfloat16 model computes in bfloat16 whatever its masters are.
    temperature: a Python float > 0 (static); the sampler's temperature when scoring its samples.
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    params = cast_floating(params, config.storage_dtype)
    hidden = hidden_states(config, params, tokens, positions=positions, attention_mask=attention_mask, mesh=mesh,
                           rules=TRAIN_RULES)
    targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    w, transposed = lm_head_operand(config, params)
    logp, ent = next_token_stats(hidden, w, targets, chunk=chunk, with_entropy=with_entropy, mesh=mesh,
                                 temperature=temperature, transposed=transposed, matmul=config.matmul)
    shift = lambda x: jnp.pad(x[:, :-1], ((0, 0), (1, 0)))  # noqa: E731  position t-1 predicts token t
    return shift(logp), shift(ent)
