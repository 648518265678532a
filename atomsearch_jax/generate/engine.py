"""The generation engine: jitted prefill / decode segment / append over one donated state, plus the host
logic around them (bucketing, stop-string checks with rollback, exporting rows).

A rollout loop uses it like this (B rows, S = max_len):

    engine = Engine(config, params, max_len=4096, mesh=mesh, tokenizer=tok)
    stops = engine.stop_set(("</search>", "</answer>"))
    sampling = sampling_arrays(rows, temperature=1.0)
    state = engine.start(prompt_ids, n=G)              # P prompts -> P*G rows, each prompt prefilled once
    while True:
        state, view = engine.decode(state, max_steps=256, sampling=sampling, stops=stops)
        calls = {r: tool_result_ids(view.new_text(r)) for r in view.stopped_rows(reason=StopReason.STOP)}
        if not calls and view.all_done: break
        state = engine.append(state, calls)           # environment tokens, loss mask 0; rows live again
    rows = engine.export(state)                        # tokens, loss_mask, logprobs, lengths, reasons

Nothing here recompiles after warm-up: prompt lengths, prompt counts, appended spans and stop sets
are padded to buckets; sampling parameters, stop tokens, seeds and step budgets are traced arguments.
Compiled programs are shared by every Engine with the same config, mesh and max_len (so a new Engine,
or new weights via `set_params`, compiles nothing); they are specialised on the row count B.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from atomsearch_jax.generate import steps
from atomsearch_jax.generate.buckets import next_power_of_two, pick_bucket, power_of_two_buckets, round_up
from atomsearch_jax.generate.codec import TextCodec
from atomsearch_jax.generate.sampling import SamplingParams, sampling_arrays
from atomsearch_jax.generate.state import (
    DecodeState,
    StopReason,
    batch_spec,
    row_divisor,
    state_shardings,
)
from atomsearch_jax.generate.stops import StopArrays, StopSet, find_text_stop
from atomsearch_jax.model import ModelConfig, param_shapes
from atomsearch_jax.model.dtypes import cast_floating
from atomsearch_jax.parallel import SAMPLE_RULES, check_heads_divisible, local_mesh, param_shardings


def reason_name(code: int) -> str:
    return StopReason(int(code)).name.lower()


@dataclasses.dataclass
class RowOutput:
    """One exported row, trimmed to its length L.

    tokens [L] int32 (prompt included), loss_mask [L] bool (True = model-generated), logprobs [L] float32
    (0 for prompt/environment tokens), prompt_length, stop_reason ("eos", "stop", "length", or "running"
    if it was never stopped), stop_string (the stop string that ended it, else None).
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    logprobs: np.ndarray
    prompt_length: int
    stop_reason: str
    stop_string: str | None

    @property
    def length(self) -> int:
        return int(self.tokens.shape[0])


@dataclasses.dataclass
class Exported:
    """All rows of a state on the host: arrays [B, S] / [B] (numpy), padding rows included (active False)."""

    tokens: np.ndarray
    loss_mask: np.ndarray
    logprobs: np.ndarray
    lengths: np.ndarray
    prompt_lengths: np.ndarray
    stop_reason: np.ndarray
    stop_index: np.ndarray
    active: np.ndarray
    stop_strings: tuple[str, ...] = ()

    def row(self, b: int) -> RowOutput:
        n = int(self.lengths[b])
        index = int(self.stop_index[b])
        return RowOutput(tokens=self.tokens[b, :n].copy(), loss_mask=self.loss_mask[b, :n].copy(),
                         logprobs=self.logprobs[b, :n].copy(), prompt_length=int(self.prompt_lengths[b]),
                         stop_reason=reason_name(self.stop_reason[b]),
                         stop_string=self.stop_strings[index] if 0 <= index < len(self.stop_strings) else None)

    def rows(self) -> list[RowOutput]:
        """The active rows, in row order."""
        return [self.row(b) for b in np.flatnonzero(self.active)]


@dataclasses.dataclass
class SegmentView:
    """The host's view of a state after a decode segment (numpy arrays [B] and tokens [B, S])."""

    tokens: np.ndarray
    lengths: np.ndarray
    segment_start: np.ndarray
    done: np.ndarray
    active: np.ndarray
    stop_reason: np.ndarray
    stop_index: np.ndarray
    codec: TextCodec | None
    stop_strings: tuple[str, ...]

    @property
    def all_done(self) -> bool:
        return bool(np.all(self.done))

    def stopped_rows(self, reason: StopReason | None = None) -> list[int]:
        """Active rows that are done (with `reason`, when given)."""
        hit = self.active & self.done
        if reason is not None:
            hit &= self.stop_reason == int(reason)
        return [int(b) for b in np.flatnonzero(hit)]

    def live_rows(self) -> list[int]:
        return [int(b) for b in np.flatnonzero(self.active & ~self.done)]

    def new_tokens(self, row: int) -> list[int]:
        """Tokens generated since the row's last start/append (up to and including any stop token)."""
        return self.tokens[row, self.segment_start[row]: self.lengths[row]].tolist()

    def new_text(self, row: int) -> str:
        if self.codec is None:
            raise ValueError("new_text needs a tokenizer; pass tokenizer= to the Engine")
        return self.codec.decode(self.new_tokens(row))

    def reason(self, row: int) -> str:
        return reason_name(self.stop_reason[row])

    def stop_string(self, row: int) -> str | None:
        index = int(self.stop_index[row])
        return self.stop_strings[index] if 0 <= index < len(self.stop_strings) else None


class Engine:
    """Jitted generation over a [B, max_len] state, on one device or a (data, fsdp, tensor) mesh.

    config/params: the model (params are placed with SAMPLE_RULES shardings on the mesh: tensor-parallel,
    replicated over fsdp, so no weight all-gather per token). mesh: on a multi-process job, the global
    mesh may be passed: the engine decodes on this process's part of it (`local_mesh`), so each host
    runs its own rows, host loop and tool calls without waiting on the others. tokenizer: needed for stop strings and
    text views. eos_ids: default the config's. prompt_buckets / span_buckets: allowed padded lengths of
    prompts and appended spans (default powers of two from 16 up to max_len). window_buckets: cache
    prefixes a decode segment may attend over (default powers of two from 256 up to max_len); each
    segment uses the smallest one that holds every live row until the segment's step budget ends, so
    short rows in a long cache do not pay for attending over all max_len slots. greedy_logprobs: when False,
    greedy rows record log-probability 0 (that of the point mass they are drawn from) instead of the model's,
    and on one XLA:CPU device with a float32 model all-greedy steps read an int8 screen of the LM head
    instead of all of it, with the same tokens (kernels/greedy_head.py; the screen is rebuilt by
    `set_params`). For evaluation, where no log-probability is used.
    """

    def __init__(self, config: ModelConfig, params: Any, *, max_len: int, mesh: Mesh | None = None,
                 tokenizer: Any = None, eos_ids: Sequence[int] | None = None,
                 prompt_buckets: Sequence[int] | None = None, span_buckets: Sequence[int] | None = None,
                 window_buckets: Sequence[int] | None = None, greedy_logprobs: bool = True):
        if config.scan_layers:
            raise ValueError("Engine needs an unrolled model (scan_layers=False); load params with scan_layers=False")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {max_len}")
        mesh = local_mesh(mesh) if mesh is not None else None
        check_heads_divisible(config.num_heads, config.num_kv_heads, mesh)
        self.config, self.max_len, self.mesh = config, int(max_len), mesh
        self.codec = TextCodec(tokenizer) if tokenizer is not None else None
        self.eos_ids = tuple(config.eos_ids if eos_ids is None else eos_ids)
        self.prompt_buckets = self._buckets("prompt_buckets", prompt_buckets)
        self.span_buckets = self._buckets("span_buckets", span_buckets)
        self.window_buckets = (self._buckets("window_buckets", window_buckets) if window_buckets
                               else power_of_two_buckets(min(256, self.max_len), self.max_len))
        self._setup = steps.ModelSetup(config, mesh, greedy_logprobs=bool(greedy_logprobs))
        self._programs = _programs(self._setup, self.max_len)
        self.set_params(params)
        self._stop_arrays: dict[StopSet, StopArrays] = {}

    # ---- setup -----------------------------------------------------------------------------------
    def _buckets(self, name: str, given: Sequence[int] | None) -> tuple[int, ...]:
        buckets = tuple(sorted(int(b) for b in given)) if given else power_of_two_buckets(16, self.max_len)
        if buckets[0] <= 0 or buckets[-1] > self.max_len:
            raise ValueError(f"{name} {buckets} must lie in 1..max_len={self.max_len}")
        return buckets

    def _put_rows(self, x: np.ndarray) -> jax.Array:
        """A host [B] array as a device array sharded like the state's [B] fields."""
        if self.mesh is None:
            return jax.device_put(x)
        return jax.device_put(x, NamedSharding(self.mesh, batch_spec(1)))

    # ---- public API --------------------------------------------------------------------------------
    @property
    def trace_counts(self) -> collections.Counter:
        """How often each device program was traced (each trace precedes one compilation). Shared by all
        engines with the same config, mesh and max_len, which share compiled programs."""
        return self._programs.trace_counts

    def set_params(self, params: Any) -> None:
        """Use new weights (e.g. after a training step); placed with SAMPLE_RULES on the mesh. No recompile.

        params may be the trainer's global arrays on a multi-process mesh: they are re-laid out on
        device (an all-gather over the data/fsdp axes, no host round trip) and this process keeps the
        shards on its own devices as its sampling copy. The engine keeps its own copy in the config's
        param dtype (float32 masters of a bfloat16 model are cast): it never aliases the caller's
        buffers, which a trainer donates to its next update.
        """
        params = cast_floating(params, self.config.storage_dtype)
        if self.mesh is not None:
            self.params = place_local(params, self.mesh, SAMPLE_RULES)
        else:
            self.params = jax.device_put(params, may_alias=False)
        self.head_screen = self._programs.head_screen(self.params) if self._setup.screens_head else None

    def stop_set(self, strings: Sequence[str] = (), *, eos: bool = True) -> StopSet:
        """Stop strings (tokenized with the engine's tokenizer) plus, when `eos`, the engine's EOS ids."""
        return StopSet.build(strings, self.eos_ids if eos else (), self.codec)

    def row_count(self, rows: int) -> int:
        """The number of state rows used for `rows` samples (a multiple of the mesh's row devices)."""
        return round_up(max(int(rows), 1), row_divisor(self.mesh))

    def start(self, prompts: Sequence[Sequence[int]], n: int = 1, *, rows: int | None = None, seed: int = 0,
              max_new_tokens: int | None = None, first_row: int = 0) -> DecodeState:
        """A new state: row r = sample r % n of prompt r // n; each distinct prompt is prefilled once.

        prompts: P non-empty lists of token ids. rows: total rows B (default P*n, rounded up to the mesh's
        row devices); rows beyond P*n are inactive padding. seed: the rows' PRNG streams derive from it.
        max_new_tokens: per-row cap on tokens after the prompt (generated and appended together);
        default: up to max_len. first_row: the global index of row 0 when this state holds a slice of a
        larger batch (another process's rows, an earlier chunk); row r samples with the PRNG stream of
        global row first_row + r.
        """
        if n < 1:
            raise ValueError(f"n (samples per prompt) must be >= 1, got {n}")
        prompts = [self._check_ids(p, f"prompt {i}") for i, p in enumerate(prompts)]
        if not prompts:
            raise ValueError("start needs at least one prompt")
        for i, p in enumerate(prompts):
            if len(p) >= self.max_len:
                raise ValueError(f"prompt {i} has {len(p)} tokens; max_len={self.max_len} leaves no room to generate")
        need = len(prompts) * n
        b = self.row_count(rows if rows is not None else need)
        if b < need:
            raise ValueError(f"rows={rows} is fewer than the {need} samples requested ({len(prompts)} prompts x {n})")
        t = pick_bucket(max(len(p) for p in prompts), self.prompt_buckets, "prompt length")
        num_prompts = round_up(next_power_of_two(len(prompts)), row_divisor(self.mesh))
        prompt_arr = np.zeros((num_prompts, t), np.int32)
        prompt_len = np.ones((num_prompts,), np.int32)
        for i, p in enumerate(prompts):
            prompt_arr[i, : len(p)] = p
            prompt_len[i] = len(p)
        row_source = np.zeros((b,), np.int32)
        row_source[:need] = np.arange(need) // n
        active = np.arange(b) < need
        budget = self.max_len if max_new_tokens is None else int(max_new_tokens)
        if budget < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        limits = np.minimum(prompt_len[row_source].astype(np.int64) + budget, self.max_len).astype(np.int32)
        return self._programs.prefill(self.params, prompt_arr, prompt_len, row_source, active, limits, np.int32(seed),
                                      np.int32(first_row))

    def decode(self, state: DecodeState, *, max_steps: int, sampling: SamplingParams | None = None,
               stops: StopSet | None = None) -> tuple[DecodeState, SegmentView]:
        """Generates for every live row until each stops or `max_steps` steps ran (state is donated).

        sampling: per-row SamplingParams ([B] arrays, e.g. `sampling_arrays(B, temperature=...)`);
        default temperature 1. stops: default EOS only. After the device loop, each row's new text is
        checked for stop strings on the host and rows that ran past one are rolled back to the token
        completing it. Returns the new state and a host view of it.
        """
        b = state.num_rows
        sampling = sampling if sampling is not None else sampling_arrays(b)
        if np.shape(sampling.temperature) != (b,):
            raise ValueError(f"sampling params have shape {np.shape(sampling.temperature)}; the state has {b} rows")
        stops = stops if stops is not None else self.stop_set()
        if stops not in self._stop_arrays:
            self._stop_arrays[stops] = jax.tree_util.tree_map(jax.numpy.asarray, stops.arrays())
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        host = jax.device_get({"lengths": state.lengths, "done": state.done})
        live = ~host["done"]
        if live.any():
            need = int(host["lengths"][live].max()) + int(max_steps)
            window = next((w for w in self.window_buckets if w >= need), self.max_len)
            screen = () if self.head_screen is None else (self.head_screen,)  # a mesh program takes none
            state = self._programs.decode(self.params, state, sampling, self._stop_arrays[stops], np.int32(max_steps),
                                          window, *screen)
        return self._check_stop_text(state, stops.strings)

    def append(self, state: DecodeState, spans: Mapping[int, Sequence[int]]) -> DecodeState:
        """Writes environment tokens after the chosen rows' tokens (loss mask 0) and makes those rows live.

        spans: row -> token ids (non-empty); rows not named are untouched. A row whose length reaches its
        limit stops with LENGTH. The state is donated.
        """
        b = state.num_rows
        host = jax.device_get({"lengths": state.lengths, "active": state.active})
        width = 0
        for row, ids in spans.items():
            if not 0 <= row < b or not host["active"][row]:
                raise ValueError(f"append: row {row} is not an active row of this state ({b} rows)")
            ids = self._check_ids(ids, f"span for row {row}")
            room = self.max_len - int(host["lengths"][row])
            if len(ids) > room:
                raise ValueError(f"append: span for row {row} has {len(ids)} tokens but only {room} slots are "
                                 f"left (max_len={self.max_len})")
            width = max(width, len(ids))
        if width == 0:
            return state
        w = pick_bucket(width, self.span_buckets, "appended span length")
        arr = np.zeros((b, w), np.int32)
        lengths = np.zeros((b,), np.int32)
        for row, ids in spans.items():
            arr[row, : len(ids)] = ids
            lengths[row] = len(ids)
        return self._programs.append(self.params, state, arr, lengths)

    def next_token_logits(self, state: DecodeState) -> jax.Array:
        """Logits [B, V] (float32) for the token after each row's current last token (state unchanged;
        costs a forward step and a cache copy: for scoring and tests, not the decode loop)."""
        return self._programs.logits(self.params, state)

    def view(self, state: DecodeState, stop_strings: Sequence[str] = ()) -> SegmentView:
        fields = ("tokens", "lengths", "segment_start", "done", "active", "stop_reason", "stop_index")
        host = jax.device_get({k: getattr(state, k) for k in fields})
        return SegmentView(**{k: np.array(v) for k, v in host.items()}, codec=self.codec,
                           stop_strings=tuple(stop_strings))

    def export(self, state: DecodeState, stop_strings: Sequence[str] = ()) -> Exported:
        """Every row on the host (see `Exported`; `.rows()` gives the active rows trimmed to length)."""
        host = jax.device_get({k: getattr(state, k) for k in
                               ("tokens", "loss_mask", "logprobs", "lengths", "prompt_lengths", "stop_reason",
                                "stop_index", "active")})
        return Exported(**host, stop_strings=tuple(stop_strings))

    # ---- host helpers ------------------------------------------------------------------------------
    def _check_ids(self, ids: Sequence[int], what: str) -> list[int]:
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError(f"{what} is empty")
        bad = [i for i in ids if not 0 <= i < self.config.vocab_size]
        if bad:
            raise ValueError(f"{what} has token ids outside [0, {self.config.vocab_size}): {bad[:5]}")
        return ids

    def _check_stop_text(self, state: DecodeState, strings: tuple[str, ...]) -> tuple[DecodeState, SegmentView]:
        """Rolls rows back to the first stop string in their new text (whatever its tokenization)."""
        view = self.view(state, strings)
        if not strings:
            return state, view
        changed = False
        for row in np.flatnonzero(view.active & (view.lengths > view.segment_start)):
            found = find_text_stop(self.codec, view.new_tokens(row), strings)
            if found is None:
                continue
            k, index = found
            new_len = int(view.segment_start[row]) + k
            reason = int(view.stop_reason[row])
            if new_len < view.lengths[row] or not view.done[row] or reason == StopReason.LENGTH:
                view.lengths[row], view.done[row] = new_len, True
                view.stop_reason[row], view.stop_index[row] = int(StopReason.STOP), index
                changed = True
        if changed:
            state = state.replace(lengths=self._put_rows(view.lengths), done=self._put_rows(view.done),
                                  stop_reason=self._put_rows(view.stop_reason),
                                  stop_index=self._put_rows(view.stop_index))
        return state, view


def place_local(params: Any, mesh: Mesh, rules: Any) -> Any:
    """A copy of params laid out by `rules` on `mesh` (this process's devices). Global arrays of a multi-process
    mesh are first laid out by the same rules on their own mesh, whose shards on this process's devices
    then are exactly the local layout's (`local_mesh` keeps the tensor axis whole)."""
    target = param_shardings(params, mesh, rules)
    leaves = jax.tree_util.tree_leaves(params)
    if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in leaves):
        return jax.device_put(params, target, may_alias=False)  # own buffers: the caller's may be donated
    on_global = jax.device_put(params, jax.tree_util.tree_map(
        lambda x, t: NamedSharding(x.sharding.mesh, t.spec), params, target), may_alias=False)
    return jax.tree_util.tree_map(
        lambda x, t: jax.make_array_from_single_device_arrays(x.shape, t, [s.data for s in x.addressable_shards]),
        on_global, target)


class _Programs:
    """The jitted device programs for one (model setup, max_len); built once and shared by engines."""

    def __init__(self, setup: steps.ModelSetup, max_len: int):
        self.trace_counts: collections.Counter = collections.Counter()
        fns = {
            "prefill": functools.partial(steps.prefill, setup, max_len=max_len),
            "decode": functools.partial(steps.decode_segment, setup),
            "append": functools.partial(steps.append, setup),
            "logits": lambda params, state: steps.pending_logits(setup, params, state)[0],
            "head_screen": functools.partial(steps.head_screen, setup),
        }
        fns = {name: self._counted(name, fn) for name, fn in fns.items()}
        mesh = setup.mesh
        if mesh is None:
            self.prefill = jax.jit(fns["prefill"])
            self.decode = jax.jit(fns["decode"], donate_argnums=(1,), static_argnums=(5,))
            self.append = jax.jit(fns["append"], donate_argnums=(1,))
            self.logits = jax.jit(fns["logits"])
            self.head_screen = jax.jit(fns["head_screen"])
            return
        # Explicit shardings keep every output laid out like the next call's input (no resharding, and
        # no new compilation because an output came back with a different layout).
        params_s = param_shardings(param_shapes(setup.config), mesh, SAMPLE_RULES)
        state_s = state_shardings(setup.config, mesh)
        rows1, rows2 = NamedSharding(mesh, batch_spec(1)), NamedSharding(mesh, batch_spec(2))
        repl = NamedSharding(mesh, PartitionSpec())
        sampling_s = SamplingParams(temperature=rows1, top_k=rows1, top_p=rows1)
        self.prefill = _placing(jax.jit, fns["prefill"], in_shardings=(params_s, rows2, rows1, rows1, rows1, rows1, repl,
                                                                        repl), out_shardings=state_s)
        self.decode = _placing(jax.jit, fns["decode"], in_shardings=(params_s, state_s, sampling_s, repl, repl),
                               out_shardings=state_s, donate_argnums=(1,), static_argnums=(5,))
        self.append = _placing(jax.jit, fns["append"], in_shardings=(params_s, state_s, rows2, rows1),
                               out_shardings=state_s, donate_argnums=(1,))
        self.logits = _placing(jax.jit, fns["logits"], in_shardings=(params_s, state_s), out_shardings=rows2)
        self.head_screen = None  # a mesh never screens the head (ModelSetup.screens_head)

    def _counted(self, name: str, fn: Callable) -> Callable:
        """fn, counting how often jax traces it."""

        @functools.wraps(fn)
        def traced(*args, **kwargs):
            self.trace_counts[name] += 1
            return fn(*args, **kwargs)

        return traced


def _placing(jit: Callable, fn: Callable, *, in_shardings: tuple, **jit_kwargs: Any) -> Callable:
    """jit(fn) whose host (numpy) arguments are first placed with their in_shardings: on a multi-process
    job jit refuses host inputs with non-trivial shardings, even on a mesh of this process's devices."""
    compiled = jit(fn, in_shardings=in_shardings, **jit_kwargs)

    def place(sharding: Any, tree: Any) -> Any:
        return jax.tree_util.tree_map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(x, sharding), tree)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        n = len(in_shardings)
        return compiled(*jax.tree_util.tree_map(place, in_shardings, tuple(args[:n])), *args[n:])

    call.lower = compiled.lower  # AOT lowering at abstract shapes (the memory planner)
    return call


@functools.lru_cache(maxsize=None)
def _programs(setup: steps.ModelSetup, max_len: int) -> _Programs:
    return _Programs(setup, max_len)


def device_programs(config: ModelConfig, mesh: Mesh | None, max_len: int) -> _Programs:
    """The jitted (and, with a mesh, explicitly sharded) prefill / decode / append / logits programs an
    Engine with this config, mesh and max_len runs (for AOT lowering, e.g. the memory planner)."""
    return _programs(steps.ModelSetup(config, mesh), int(max_len))
