"""The engine's device programs as pure functions of (static model setup, params, state, arguments).

`Engine` jits each one (the state donated); they are separate from the host logic so their inputs and
outputs are exactly what is traced. Shapes: B rows, S slots, P distinct prompts, T prompt bucket,
W append bucket, V vocabulary.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from atomsearch_jax.generate.sampling import SamplingParams, sample
from atomsearch_jax.generate.state import DecodeState, StopReason, gather_rows, set_rows
from atomsearch_jax.generate.stops import StopArrays, is_eos, match_stops
from atomsearch_jax.kernels import blas_matmul, greedy_head
from atomsearch_jax.kernels.greedy_head import HeadScreen
from atomsearch_jax.model import ModelConfig, forward_cached, init_cache, lm_logits
from atomsearch_jax.model.transformer import lm_head_operand
from atomsearch_jax.parallel import SAMPLE_RULES

Array = jax.Array


# Smallest LM head (elements) whose all-greedy steps read the int8 screen: the heads whose logits the
# dense-product handler computes (blas_matmul.MIN_WEIGHT_ELEMENTS), whose loop the screen's float32 check adds
# in the order of; a smaller head keeps XLA's dot and its exact tokens (the default job's model among them).
SCREEN_MIN_HEAD_ELEMENTS = blas_matmul.MIN_WEIGHT_ELEMENTS


@dataclasses.dataclass(frozen=True)
class ModelSetup:
    """What the device programs need besides arrays (hashable: a static jit argument).

    greedy_logprobs: greedy rows record the model's log-probability of their token (see sampling.py); when
    False they record 0, the log-probability of the point mass greedy decoding samples from, and steps in
    which every row is greedy may then take the token from `greedy_head` without computing logits.
    """

    config: ModelConfig
    mesh: Mesh | None = None
    greedy_logprobs: bool = True

    @property
    def screens_head(self) -> bool:
        """Whether all-greedy decode steps take their tokens from `kernels.greedy_head` (through a HeadScreen
        of the head): greedy log-probabilities off, one XLA:CPU device, a float32 model with a head of at least
        SCREEN_MIN_HEAD_ELEMENTS, the dense-product policy not pinned to XLA's dot, and a CPU the handler runs
        on."""
        cfg = self.config
        return (not self.greedy_logprobs and self.mesh is None and cfg.matmul != "xla"
                and cfg.vocab_size * cfg.hidden_size >= SCREEN_MIN_HEAD_ELEMENTS
                and cfg.storage_dtype == jnp.float32 and cfg.compute_dtype == jnp.float32
                and jax.default_backend() == "cpu" and greedy_head.available())

    def forward(self, params: Any, tokens: Array, cache: list, index: Array) -> tuple[Array, list]:
        """Hidden states [B, T, E] of tokens [B, T] written at slots index[b].., and the updated cache."""
        return forward_cached(self.config, params, tokens, cache, index, mesh=self.mesh, rules=SAMPLE_RULES)


def prefill(setup: ModelSetup, params: Any, prompts: Array, prompt_lengths: Array, row_source: Array,
            row_active: Array, limits: Array, seed: Array, first_row: Array, *, max_len: int) -> DecodeState:
    """A fresh state whose rows copy the prefilled prompts they come from.

    prompts [P, T] int32 (right-padded), prompt_lengths [P]; row_source [B]: the prompt of each row;
    row_active [B] bool (False = padding row); limits [B]; seed: scalar int; first_row: scalar int, the
    global index of row 0 (row b's PRNG stream is fold_in(seed, first_row + b), so a row samples the
    same tokens whichever process or batch position decodes it). Each distinct prompt is run
    through the model once, into a [P, T] cache; its keys/values are then copied into the [B, S] cache
    of every row sampled from it (group prefix sharing).
    """
    cfg = setup.config
    p, t = prompts.shape
    b = row_source.shape[0]
    _, prompt_cache = setup.forward(params, prompts, init_cache(cfg, p, t), jnp.zeros((p,), jnp.int32))

    def widen(small: Array) -> Array:  # [P, K, T, D] -> [B, K, S, D]
        big = jnp.zeros((b, small.shape[1], max_len, small.shape[3]), small.dtype)
        return jax.lax.dynamic_update_slice(big, small[row_source], (0, 0, 0, 0))

    cache = jax.tree_util.tree_map(widen, prompt_cache)
    tokens = jax.lax.dynamic_update_slice(jnp.zeros((b, max_len), jnp.int32), prompts[row_source], (0, 0))
    lengths = jnp.where(row_active, prompt_lengths[row_source], 1).astype(jnp.int32)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(first_row + jnp.arange(b, dtype=jnp.int32))
    at_limit = row_active & (lengths >= limits)
    return DecodeState(
        tokens=tokens, lengths=lengths, loss_mask=jnp.zeros((b, max_len), bool),
        logprobs=jnp.zeros((b, max_len), jnp.float32), prompt_lengths=jnp.where(row_active, lengths, 0),
        segment_start=lengths, limits=limits.astype(jnp.int32), active=row_active,
        done=~row_active | at_limit,
        stop_reason=jnp.where(at_limit, int(StopReason.LENGTH), int(StopReason.RUNNING)).astype(jnp.int32),
        stop_index=jnp.full((b,), -1, jnp.int32), keys=keys, cache=cache)


def pending_hidden(setup: ModelSetup, params: Any, state: DecodeState) -> tuple[Array, list]:
    """Final hidden states [B, E] at each row's last token, and the cache with the pending token's
    keys/values written (valid values: the invariant allows it)."""
    pos = state.lengths - 1
    pending = gather_rows(state.tokens, pos)
    hidden, cache = setup.forward(params, pending[:, None], state.cache, pos)
    return hidden[:, 0], cache


def pending_logits(setup: ModelSetup, params: Any, state: DecodeState) -> tuple[Array, list]:
    """Logits [B, V] (float32) for the token after each row's last one, and the cache (see pending_hidden)."""
    hidden, cache = pending_hidden(setup, params, state)
    return lm_logits(setup.config, params, hidden), cache


def head_screen(setup: ModelSetup, params: Any) -> HeadScreen:
    """The int8 screen of the model's LM head that all-greedy steps read (setup.screens_head)."""
    w, transposed = lm_head_operand(setup.config, params)
    return greedy_head.head_screen(w, transposed=transposed)


def next_tokens(setup: ModelSetup, params: Any, hidden: Array, sampling: SamplingParams, keys: Array,
                screen: HeadScreen | None) -> tuple[Array, Array]:
    """(tokens [B] int32, recorded log-probabilities [B]) after final hidden states [B, E]: sampled from the
    logits, or, with a screen and every row greedy, the exact argmax from `greedy_head` (no logits)."""
    greedy = sampling.temperature <= 0

    def from_logits() -> tuple[Array, Array]:
        return sample(lm_logits(setup.config, params, hidden), sampling, keys)

    if screen is None:
        token, logprob = from_logits()
    else:
        w, transposed = lm_head_operand(setup.config, params)
        token, logprob = jax.lax.cond(
            jnp.all(greedy),
            lambda: (greedy_head.greedy_tokens(hidden, w, screen, transposed=transposed)[0],
                     jnp.zeros(greedy.shape, jnp.float32)),
            from_logits)
    if not setup.greedy_logprobs:
        logprob = jnp.where(greedy, 0.0, logprob)
    return token, logprob


def decode_step(setup: ModelSetup, params: Any, state: DecodeState, sampling: SamplingParams,
                stops: StopArrays, screen: HeadScreen | None = None) -> DecodeState:
    """One token for every live row; finished rows are carried through unchanged."""
    hidden, cache = pending_hidden(setup, params, state)
    live = ~state.done
    keys = jax.vmap(jax.random.fold_in)(state.keys, state.lengths)
    token, logprob = next_tokens(setup, params, hidden, sampling, keys, screen)
    tokens = set_rows(state.tokens, state.lengths, token, live)
    lengths = state.lengths + live.astype(jnp.int32)
    eos = live & is_eos(token, stops)
    seq_hit, seq_index = match_stops(tokens, lengths, state.segment_start, stops)
    seq_hit &= live & ~eos
    full = live & (lengths >= state.limits)
    reason = jnp.select([eos, seq_hit, full], [int(StopReason.EOS), int(StopReason.STOP), int(StopReason.LENGTH)],
                        state.stop_reason)
    return state.replace(
        tokens=tokens, lengths=lengths,
        loss_mask=set_rows(state.loss_mask, state.lengths, jnp.ones_like(live), live),
        logprobs=set_rows(state.logprobs, state.lengths, logprob, live),
        done=state.done | eos | seq_hit | full, stop_reason=reason.astype(jnp.int32),
        stop_index=jnp.where(seq_hit, seq_index, state.stop_index), cache=cache)


def decode_segment(setup: ModelSetup, params: Any, state: DecodeState, sampling: SamplingParams,
                   stops: StopArrays, max_steps: Array, window: int, screen: HeadScreen | None = None) -> DecodeState:
    """Decode steps (a `lax.while_loop`) until every row is done or `max_steps` steps ran.

    screen: `head_screen(setup, params)` when setup.screens_head (see `next_tokens`), else None.

    window (static): attend over cache slots [0, window) only. The caller guarantees every live row
    ends the segment inside it (length + max_steps <= window). The loop then runs on a copy of that
    part of the cache, so each step reads `window` slots instead of all S; the copy is written back at
    the end for the rows it holds completely (done rows longer than the window keep their cache).
    """

    def cond(carry: tuple[DecodeState, Array]) -> Array:
        st, step = carry
        return (step < max_steps) & jnp.any(~st.done)

    def body(carry: tuple[DecodeState, Array]) -> tuple[DecodeState, Array]:
        st, step = carry
        return decode_step(setup, params, st, sampling, stops, screen), step + 1

    def loop(st: DecodeState) -> DecodeState:
        return jax.lax.while_loop(cond, body, (st, jnp.zeros((), jnp.int32)))[0]

    if window >= state.max_len:
        return loop(state)
    inside = state.lengths <= window
    out = loop(state.replace(cache=jax.tree_util.tree_map(lambda c: c[:, :, :window], state.cache)))

    def write_back(full: Array, part: Array) -> Array:
        keep = jnp.where(inside[:, None, None, None], part, full[:, :, :window])
        return jax.lax.dynamic_update_slice(full, keep, (0, 0, 0, 0))

    return out.replace(cache=jax.tree_util.tree_map(write_back, state.cache, out.cache))


def append(setup: ModelSetup, params: Any, state: DecodeState, spans: Array, span_lengths: Array) -> DecodeState:
    """Appends spans [B, W] (row b's first span_lengths[b] tokens; 0 = row untouched) after each row's
    tokens as environment tokens (loss mask 0), computes their keys/values in one forward pass, and
    makes the extended rows live again with a new segment starting after the span.

    The forward pass covers slots start .. start + W - 1 of every row with start = clip(length - 1, 0,
    S - W): the pending token and the span (the last span token becomes the new pending token). Where the
    window is clipped or the row is untouched it recomputes or overwrites slots with the row's own
    tokens or with stale slots beyond its length, which the state invariant allows.
    """
    b, w = spans.shape
    s = state.max_len
    offsets = jnp.arange(w, dtype=jnp.int32)[None, :]
    in_span = offsets < span_lengths[:, None]
    slots = jnp.where(in_span, state.lengths[:, None] + offsets, s)  # s = out of range, dropped
    rows = jnp.broadcast_to(jnp.arange(b)[:, None], (b, w))
    tokens = state.tokens.at[rows, slots].set(spans, mode="drop")
    loss_mask = state.loss_mask.at[rows, slots].set(False, mode="drop")
    logprobs = state.logprobs.at[rows, slots].set(0.0, mode="drop")
    start = jnp.clip(state.lengths - 1, 0, s - w)
    window = jax.vmap(lambda row, i: jax.lax.dynamic_slice(row, (i,), (w,)))(tokens, start)
    _, cache = setup.forward(params, window, state.cache, start)
    extended = span_lengths > 0
    lengths = state.lengths + span_lengths
    full = extended & (lengths >= state.limits)
    return state.replace(
        tokens=tokens, loss_mask=loss_mask, logprobs=logprobs, lengths=lengths,
        segment_start=jnp.where(extended, lengths, state.segment_start),
        done=jnp.where(extended, full, state.done),
        stop_reason=jnp.where(extended, jnp.where(full, int(StopReason.LENGTH), int(StopReason.RUNNING)),
                              state.stop_reason).astype(jnp.int32),
        stop_index=jnp.where(extended, -1, state.stop_index), cache=cache)
