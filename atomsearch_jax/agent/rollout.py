"""The host-side rollout loop between jitted decode segments.

    runner = RolloutRunner(engine, tokenizer, fmt, retriever, RolloutConfig(...), code_interpreter=...)
    trajectories = runner.run(records, n=G, seed=step)

One `Engine` state holds every row's KV cache for the whole trajectory: prompts are prefilled once per
group, each decode segment runs until every row stopped (tool-call close, answer close, EOS, budget),
all stopped rows' search calls go to the retriever in ONE batched call, the rendered results are appended
into the same cache (loss mask 0), and decoding resumes. Nothing already in the cache is re-prefilled.
Code-interpreter calls are submitted to the interpreter's pool and run while the other rows keep
decoding; a row resumes once its execution finished (the loop waits only when no row can decode).
A failed search or sandbox is rendered as a failure message, counted on the trajectory, and never raises.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np

from atomsearch_jax.agent.search_calls import answer_calls
from atomsearch_jax.agent.chunking import groups_per_chunk
from atomsearch_jax.agent.trajectory import Trajectory
from atomsearch_jax.formats import CODE_TOOL, AgentFormat
from atomsearch_jax.generate import Engine, StopReason, sampling_arrays
from atomsearch_jax.parallel.multihost import global_maxes, global_sums
from atomsearch_jax.search import Retriever
from atomsearch_jax.tools import CodeInterpreter


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """max_response_tokens: per row, tokens after the prompt (generated + inserted).
    segment_steps: decode steps per jitted segment (the host checks stops between segments).
    max_tool_calls: tool calls allowed per trajectory (DeepResearcher: 10); one more ends the row.
    topk / max_chars_per_doc: retrieval depth and per-document budget of the rendered results.
    max_observation_tokens: cap on each inserted result's tokens (Search-R1's max_obs_length); 0 = none.
    kv_cache_gb: per-device KV-cache budget of one engine state (GB); a batch whose cache exceeds it
      is rolled out in chunks of whole groups (0 = the whole batch in one state).
    """

    max_response_tokens: int = 512
    segment_steps: int = 128
    max_tool_calls: int = 4
    topk: int = 3
    max_chars_per_doc: int | None = 400
    max_observation_tokens: int = 0  # inserted tool-result tokens kept per call (Search-R1: 500); 0 = all
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    kv_cache_gb: float = 0.0


@dataclasses.dataclass
class _RowBook:
    """Host bookkeeping of one row across segments."""

    finished: bool = False
    reason: str = ""
    tool_calls: int = 0
    search_failures: int = 0
    invalid_tool_calls: int = 0
    code_calls: int = 0
    code_errors: int = 0
    result_tokens: int = 0
    errors: list = dataclasses.field(default_factory=list)


class RolloutRunner:
    """Runs agent rollouts on an `Engine` with a retriever and/or a code interpreter, in one agent format.

    retriever: serves search calls (None when the format offers no search: a search call then fails).
    code_interpreter: serves code calls (None: a code call is rendered as a failure).
    """

    def __init__(self, engine: Engine, tokenizer: Any, fmt: AgentFormat, retriever: Retriever | None,
                 config: RolloutConfig = RolloutConfig(), *, code_interpreter: CodeInterpreter | None = None):
        if engine.codec is None:
            raise ValueError("RolloutRunner needs an Engine built with tokenizer= (stop strings are text)")
        self.engine, self.tokenizer, self.fmt, self.retriever, self.config = engine, tokenizer, fmt, retriever, config
        self.code_interpreter = code_interpreter
        self.stops = engine.stop_set(fmt.stop_strings)
        self.last_stats: dict[str, float] = {}

    def prompt_ids(self, question: str) -> list[int]:
        return self.tokenizer.encode(self.fmt.prompt_text(question, self.tokenizer), add_special_tokens=False)

    def run(self, records: Sequence[Any], n: int = 1, *, seed: int = 0, temperature: float | None = None,
            first_record: int = 0) -> list[Trajectory]:
        """Trajectories for each record × n samples, ordered group by group (record-major).

        records: objects with `.question` and `.golden_answers` (e.g. QARecord). first_record: the global
        index of records[0] when they are one process's share of a larger batch (`process_share`): sample
        r of record i draws from the PRNG stream of global row (first_record + i) * n + r, so trajectories
        do not depend on how the batch was split; it is also their `record_index` offset.
        The groups are rolled out in chunks sized from config.kv_cache_gb (one engine state each);
        the row streams depend only on the global row, so the trajectories do not depend on the chunking
        either.
        """
        if not records:
            raise ValueError("RolloutRunner.run needs at least one record")
        engine = self.engine
        started = time.perf_counter()
        per_chunk = groups_per_chunk(engine.config, groups=len(records), group_size=n, max_len=engine.max_len,
                                     budget_gb=self.config.kv_cache_gb, mesh=engine.mesh)
        counts: collections.Counter = collections.Counter()
        trajectories: list[Trajectory] = []
        for first in range(0, len(records), per_chunk):
            trajectories += self._run_chunk(records[first:first + per_chunk], n, first_record + first, seed,
                                             temperature, counts)
            counts["chunks"] += 1
        elapsed = time.perf_counter() - started
        generated = sum(t.generated_tokens for t in trajectories)
        self.last_stats = {"rollout/time_s": elapsed, "rollout/segments": float(counts["segments"]),
                           "rollout/chunks": float(counts["chunks"]),
                           "rollout/search_calls": float(counts["searches"]),
                           "rollout/search_time_s": float(counts["search_time"]),
                           "rollout/generated_tokens_per_s": generated / max(elapsed, 1e-9)}
        return trajectories

    def _run_chunk(self, records: Sequence[Any], n: int, first_record: int, seed: int, temperature: float | None,
                   counts: collections.Counter) -> list[Trajectory]:
        """One engine state's rollouts: records[i] is the batch's record first_record + i."""
        cfg, engine = self.config, self.engine
        prompts = [self.prompt_ids(r.question) for r in records]
        rows = len(records) * n
        # Row counts are bucketed to powers of two so batches of other sizes (e.g. the last evaluation
        # batch) reuse the compiled programs.
        state = engine.start(prompts, n=n, seed=seed, max_new_tokens=cfg.max_response_tokens,
                             rows=engine.row_count(1 << (rows - 1).bit_length()), first_row=first_record * n)
        sampling = sampling_arrays(state.num_rows, temperature=cfg.temperature if temperature is None else temperature,
                                   top_k=cfg.top_k, top_p=cfg.top_p)
        books = [_RowBook() for _ in range(rows)]
        pending: dict[int, concurrent.futures.Future] = {}  # row -> its running code execution
        while True:
            state, view = engine.decode(state, max_steps=cfg.segment_steps, sampling=sampling, stops=self.stops)
            counts["segments"] += 1
            calls: dict[int, list[str]] = {}
            failures: dict[int, str] = {}
            invalid: dict[int, str] = {}  # row -> why its tool call could not be parsed
            for row in view.stopped_rows():
                if row >= rows or books[row].finished or row in pending:
                    continue
                reason = view.stop_reason[row]
                if reason != StopReason.STOP:
                    books[row].finished, books[row].reason = True, "length" if reason == StopReason.LENGTH else "answer"
                    continue
                call, why = self.fmt.parse_tool_call_with_reason(view.new_text(row))
                if call is None and why is None:  # an answer (or another non-tool stop string)
                    books[row].finished, books[row].reason = True, "answer"
                elif books[row].tool_calls >= cfg.max_tool_calls:
                    books[row].finished, books[row].reason = True, "tool_limit"
                else:
                    books[row].tool_calls += 1
                    if call is None:
                        books[row].invalid_tool_calls += 1
                        invalid[row] = why
                    elif call.tool == CODE_TOOL:
                        self._submit_code(row, call.arguments["code"], pending, failures, books[row])
                    elif self.retriever is None:
                        failures[row] = "search is not available in this run"
                    else:
                        calls[row] = call.queries
            rendered: dict[int, str] = {}
            if calls:
                t0 = time.perf_counter()
                rendered.update(self._search_and_render(calls, books))
                counts["search_time"] += time.perf_counter() - t0
                counts["searches"] += len(calls)
            rendered.update({row: self.fmt.render_failure(msg) for row, msg in failures.items()})
            rendered.update({row: self.fmt.render_invalid_call(why) for row, why in invalid.items()})
            if pending and not rendered and not view.live_rows():  # nothing can decode: wait for a result
                concurrent.futures.wait(list(pending.values()), return_when=concurrent.futures.FIRST_COMPLETED)
            for row in [r for r, future in pending.items() if future.done()]:
                rendered[row] = self._render_code(pending.pop(row), books[row])
            if not rendered:
                if not view.live_rows() and not pending:
                    break
                continue
            spans = {}
            lengths = view.lengths
            for row, text in rendered.items():
                ids = self.tokenizer.encode(text, add_special_tokens=False)
                if cfg.max_observation_tokens:  # Search-R1 cuts the tokenized observation, closing tag included
                    ids = ids[: cfg.max_observation_tokens]
                room = engine.max_len - int(lengths[row])
                room = min(room, cfg.max_response_tokens - (int(lengths[row]) - len(prompts[row // n])))
                if len(ids) >= room:  # no room to insert the results and still answer
                    books[row].finished, books[row].reason = True, "no_room"
                    continue
                books[row].result_tokens += len(ids)
                spans[row] = ids
            if not spans and not view.live_rows() and not pending:
                break
            state = engine.append(state, spans)
        return self._export(state, records, n, books, first_record)

    def _submit_code(self, row: int, code: str, pending: dict, failures: dict, book: _RowBook) -> None:
        book.code_calls += 1
        if self.code_interpreter is None:
            failures[row] = "the code interpreter is not available in this run"
        else:
            pending[row] = self.code_interpreter.submit(code)

    def _render_code(self, future: concurrent.futures.Future, book: _RowBook) -> str:
        """The tool turn for a finished execution; a sandbox failure is an environment failure."""
        try:
            result = future.result()
        except Exception as err:  # the sandbox itself broke: record it per sample, never kill the run
            logging.exception("code interpreter raised; recording the failure")
            book.search_failures += 1
            book.errors.append(f"code interpreter error: {err}")
            return self.fmt.render_failure(f"code interpreter error: {err}")
        if result.error is not None:
            book.code_errors += 1
            if result.error.startswith("sandbox"):
                book.search_failures += 1
                book.errors.append(result.error)
        return self.fmt.render_code_result(result.stdout, result.stderr, result.error)

    def _search_and_render(self, calls: dict[int, list[str]], books: list[_RowBook]) -> dict[int, str]:
        """One batched retrieval for every query of every pending call -> rendered text per row."""
        outcomes = answer_calls(self.retriever, self.fmt, calls, topk=self.config.topk,
                                max_chars_per_doc=self.config.max_chars_per_doc)
        for row, outcome in outcomes.items():
            if outcome.error is not None:
                books[row].search_failures += 1
                books[row].errors.append(outcome.error)
        return {row: outcome.rendered for row, outcome in outcomes.items()}

    def _export(self, state: Any, records: Sequence[Any], n: int, books: list[_RowBook],
                first_record: int) -> list[Trajectory]:
        exported = self.engine.export(state, self.fmt.stop_strings)
        out = []
        for row, book in enumerate(books):
            r = exported.row(row)
            record = records[row // n]
            response_ids = r.tokens[r.prompt_length:].tolist()
            reason = book.reason or ("length" if r.stop_reason == "length" else "answer")
            out.append(Trajectory(
                record_index=first_record + row // n, sample_index=row % n, question=record.question,
                golden_answers=list(record.golden_answers), tokens=r.tokens.astype(np.int32),
                loss_mask=r.loss_mask.astype(np.float32), logprobs=r.logprobs.astype(np.float32),
                prompt_length=r.prompt_length,
                response=self.tokenizer.decode(response_ids, skip_special_tokens=False),
                stop_reason=reason, tool_calls=book.tool_calls, search_failures=book.search_failures,
                invalid_tool_calls=book.invalid_tool_calls, code_calls=book.code_calls, code_errors=book.code_errors,
                result_tokens=book.result_tokens,
                search_errors=book.errors))
        return out


def rollout_metrics(trajectories: Sequence[Trajectory], stats: Mapping[str, float] | None = None) -> dict[str, float]:
    """Batch statistics for logging: lengths, tool calls, failures, stop reasons, and with `stats` (a
    runner's `last_stats`) time, segments, search calls and generation speed. On a multi-process job each
    process passes its own and every process gets the statistics of all (every process must call it)."""
    reasons = ("answer", "length", "tool_limit", "no_room")
    per_row = {
        "response_tokens": [t.response_length for t in trajectories],
        "generated_tokens": [t.generated_tokens for t in trajectories],
        "result_tokens": [t.result_tokens for t in trajectories],
        "tool_calls": [t.tool_calls for t in trajectories],
        "search_failures": [t.search_failures for t in trajectories],
        "invalid_tool_calls": [t.invalid_tool_calls for t in trajectories],
        "code_calls": [t.code_calls for t in trajectories],
        "code_errors": [t.code_errors for t in trajectories],
        **{f"stop_{r}": [t.stop_reason == r for t in trajectories] for r in reasons},
    }
    sums = global_sums({**{k: float(np.sum(v)) for k, v in per_row.items()}, "rows": float(len(trajectories))})
    rows = max(sums["rows"], 1.0)
    metrics = {f"rollout/{k}_mean": sums[k] / rows for k in
               ("response_tokens", "generated_tokens", "result_tokens", "tool_calls", "code_calls")}
    metrics.update({f"rollout/{k}": sums[k] for k in ("search_failures", "invalid_tool_calls", "code_errors")})
    metrics.update({f"rollout/stop_{r}_frac": sums[f"stop_{r}"] / rows for r in reasons})
    if stats is not None:
        # Processes decode side by side: the batch took as long (and as many segments) as the slowest.
        slowest = global_maxes({k: stats.get(k, 0.0) for k in ("rollout/time_s", "rollout/segments",
                                                                "rollout/search_time_s")})
        calls = global_sums({"search_calls": stats.get("rollout/search_calls", 0.0)})["search_calls"]
        metrics.update(slowest)
        metrics["rollout/search_calls"] = calls
        metrics["rollout/generated_tokens_per_s"] = sums["generated_tokens"] / max(slowest["rollout/time_s"], 1e-9)
    return metrics
