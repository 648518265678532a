"""Multi-turn rollout throughput: one KV cache across turns vs re-prefilling the conversation every turn.

A Qwen2.5-0.5B-shaped model (random weights, float32), batch 8 questions of the synthetic world, an
in-process BM25 retriever over its corpus. Tool calls are forced: every row decodes --turn_tokens
tokens, then gets a search call for its question and the rendered top-k results appended, three times,
then decodes a last turn (4 turns, 3 searches per row). Both sides run the same engine programs:

- rollout: the Engine's way (prefill once; `append` writes the call and results into the same cache);
- reprefill: what an agent loop on a stateless generate call does (Tunix's agent loop): every turn
  starts a fresh state from the whole conversation so far, prefilling it again.

Timing: bench_util.alternate (one warm-up run per side, which compiles every bucket both use, then
--repeats rounds rotating the sides; medians, min-max). Both sides generate the same number of tokens
(checked). host_share: the median over the rollout's timed runs of the fraction of wall time spent
outside the jitted device programs (each program call is timed to completion). Last line:
RESULT rollout tok_s=<x> reprefill_tok_s=<y> ratio=<x/y> host_share=<h>

    python scripts/bench_rollout.py                      # 24 layers (the real 0.5B depth)
    python scripts/bench_rollout.py --num_layers=2 --turn_tokens=8 --max_len=1024   # a quick check
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import alternate, load_average, print_table, probe_machine, speedup  # noqa: E402

flags.DEFINE_string("preset", "qwen2.5-0.5b", "Model shape.")
flags.DEFINE_integer("num_layers", 0, "Override the preset's layer count (0 = keep).")
flags.DEFINE_integer("batch", 8, "Rows (distinct questions).")
flags.DEFINE_integer("turn_tokens", 32, "Tokens the model generates per turn.")
flags.DEFINE_integer("searches", 3, "Forced searches per row.")
flags.DEFINE_integer("topk", 3, "Documents per search.")
flags.DEFINE_integer("repeats", 5, "Timed runs per side (alternated).")
flags.DEFINE_integer("max_len", 2048, "Cache slots per row.")
FLAGS = flags.FLAGS


class ProgramTimer:
    """Wraps an Engine's device programs so every call blocks until done and adds its time (by program)."""

    PROGRAMS = ("prefill", "decode", "append")

    def __init__(self, engine):
        import jax

        self.by_program = dict.fromkeys(self.PROGRAMS, 0.0)
        programs = engine._programs  # the jitted programs the engine calls (a benchmark may look inside)
        for name in self.PROGRAMS:
            fn = getattr(programs, name)

            def timed(*args, _fn=fn, _name=name, **kwargs):
                t0 = time.perf_counter()
                out = jax.block_until_ready(_fn(*args, **kwargs))
                self.by_program[_name] += time.perf_counter() - t0
                return out

            setattr(programs, name, timed)

    @property
    def seconds(self) -> float:
        return sum(self.by_program.values())

    def reset(self) -> None:
        self.by_program = dict.fromkeys(self.PROGRAMS, 0.0)


def _span_ids(tokenizer, fmt, question: str, docs) -> list[int]:
    call = f"<search> {question} </search>"
    return tokenizer.encode(call + fmt.render_results([docs], max_chars_per_doc=300), add_special_tokens=False)


def run_cached(engine, tokenizer, fmt, retriever, prompts, questions, sampling, stops) -> int:
    """Our rollout: one state, results appended into the cache. Returns generated tokens."""
    k = FLAGS.turn_tokens
    state = engine.start(prompts, seed=0)
    for _ in range(FLAGS.searches):
        state, _ = engine.decode(state, max_steps=k, sampling=sampling, stops=stops)
        results = retriever.search(questions, FLAGS.topk)
        state = engine.append(state, {row: _span_ids(tokenizer, fmt, q, r.docs)
                                      for row, (q, r) in enumerate(zip(questions, results))})
    state, _ = engine.decode(state, max_steps=k, sampling=sampling, stops=stops)
    return int(engine.export(state).loss_mask.sum())


def run_reprefill(engine, tokenizer, fmt, retriever, prompts, questions, sampling, stops) -> int:
    """The baseline: each turn prefills the whole conversation into a fresh state."""
    k = FLAGS.turn_tokens
    conversations = [list(p) for p in prompts]
    generated = 0
    for turn in range(FLAGS.searches + 1):
        state = engine.start(conversations, seed=turn)
        state, view = engine.decode(state, max_steps=k, sampling=sampling, stops=stops)
        for row in range(len(conversations)):
            new = view.tokens[row, len(conversations[row]):view.lengths[row]].tolist()
            generated += len(new)
            conversations[row] += new
        if turn < FLAGS.searches:
            results = retriever.search(questions, FLAGS.topk)
            for row, (q, r) in enumerate(zip(questions, results)):
                conversations[row] += _span_ids(tokenizer, fmt, q, r.docs)
    return generated


def main(argv) -> None:
    del argv
    import jax
    from transformers import AutoTokenizer

    from atomsearch_jax.data.world import WorldConfig, build_world, train_tokenizer
    from atomsearch_jax.formats import get_format
    from atomsearch_jax.generate import Engine, sampling_arrays
    from atomsearch_jax.model import get_preset, init_params
    from atomsearch_jax.search import BM25Retriever

    print(probe_machine().line(), flush=True)
    world = build_world(WorldConfig(seed=0))
    tokenizer = AutoTokenizer.from_pretrained(train_tokenizer(world, tempfile.mkdtemp()))
    fmt = get_format("atom_searcher")
    retriever = BM25Retriever.from_documents(world.corpus)
    questions = [r.question for r in world.records()[:FLAGS.batch]]
    prompts = [tokenizer.encode(fmt.prompt_text(q, tokenizer), add_special_tokens=False) for q in questions]

    overrides = {"num_layers": FLAGS.num_layers} if FLAGS.num_layers else {}
    config = get_preset(FLAGS.preset, eos_token_id=None, **overrides)
    params = init_params(config, jax.random.PRNGKey(0))
    engine = Engine(config, params, max_len=FLAGS.max_len)
    timer = ProgramTimer(engine)
    stops = engine.stop_set((), eos=False)  # random weights: every turn runs its full budget
    sampling = sampling_arrays(FLAGS.batch, temperature=1.0)
    expected = FLAGS.batch * (FLAGS.searches + 1) * FLAGS.turn_tokens

    def side(fn):
        def timed() -> dict[str, float]:
            timer.reset()
            t0 = time.perf_counter()
            tokens = fn(engine, tokenizer, fmt, retriever, prompts, questions, sampling, stops)
            seconds = time.perf_counter() - t0
            if tokens != expected:  # both sides must do the same work for tok/s to compare
                raise RuntimeError(f"{fn.__name__} generated {tokens} tokens, expected {expected}")
            print(f"{fn.__name__}: {tokens} tokens in {seconds:.2f} s ({timer.seconds:.2f} s in device programs)",
                  flush=True)
            return {"s": seconds, "device_s": timer.seconds, **{f"{k}_s": v for k, v in timer.by_program.items()}}
        return timed

    # alternate: a warm-up run of each side (compiles every bucket both use), then alternated repeats.
    timings = alternate({"rollout": side(run_cached), "reprefill": side(run_reprefill)}, repeats=FLAGS.repeats)
    ours, peer = timings["rollout"], timings["reprefill"]
    host_share = statistics.median(1.0 - d / s for d, s in zip(ours["device_s"].times, ours["s"].times))
    print(f"model: {FLAGS.preset} ({config.num_layers} layers, {config.num_params() / 1e6:.0f}M params, float32), "
          f"batch {FLAGS.batch}, {FLAGS.searches} searches/row, {FLAGS.turn_tokens} tokens/turn, "
          f"{expected} generated tokens per run, {FLAGS.repeats} alternated repeats; load average {load_average()}")
    print_table(["side", "tok/s median (min-max)", "wall s median", "device s median",
                 *[f"{k} s median" for k in ProgramTimer.PROGRAMS]],
                [[name, t["s"].spread(expected, "tok/s"), t["s"].median, t["device_s"].median,
                  *[t[f"{k}_s"].median for k in ProgramTimer.PROGRAMS]] for name, t in timings.items()])
    tok_s, reprefill_tok_s = expected / ours["s"].median, expected / peer["s"].median
    print(f"RESULT rollout tok_s={tok_s:.2f} reprefill_tok_s={reprefill_tok_s:.2f} "
          f"ratio={speedup(ours['s'], peer['s']):.2f} host_share={host_share:.3f}")


if __name__ == "__main__":
    app.run(main)
