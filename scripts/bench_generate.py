"""Generation throughput: the JAX engine vs HF transformers `generate` (dynamic and static cache) and Tunix's
sampler, with this machine's decode roofline.

Qwen2.5-0.5B-shaped model with random weights in float32 (one torch model, saved as safetensors and loaded
by every side, so all run the same weights), 128-token random prompts, greedy, exactly --new_tokens new
tokens (EOS ignored), batch 1 / 8 / 32. Sides:
- ours: `Sampler.generate` (whole call) and `Engine.decode` of the steps after the first (decode loop), in
  the engine's evaluation mode (greedy_logprobs=False: no log-probabilities recorded, as no peer records
  any, so all-greedy steps take the exact argmax from an int8 screen of the head where the CPU runs
  kernels/greedy_head.py: same tokens, a quarter of the head's bytes);
- ours (log-probs): the same with greedy_logprobs=True (the model's log-probability of every greedy token
  recorded, so the float32 logits are computed);
- HF: `Qwen2ForCausalLM.generate`, attn_implementation="sdpa" (pinned, printed), its default dynamic
  cache, and a second row with cache_implementation="static"; all cores or one thread, whichever is
  faster in a short trial (under contention PyTorch's OpenMP threads can run slower than one thread);
- Tunix (google-tunix, when importable: scripts/install_peers.sh, then run with that venv's python):
  its `Sampler`'s prefill and decode programs on its Qwen2 loaded from the same checkpoint.
Every side's greedy tokens must equal ours for every row, else the benchmark fails (exit status 1).
Per batch size: whole call = tokens generated / wall time of one call (prefill included); decode = tokens
after the first / time after the first token (HF: from its first stopping-criteria call). Timing:
bench_util.alternate (one warm-up per side, --repeats rounds rotating the sides; medians, min-max).
Roofline (decode steps/s): per step max(bytes of weights + attended KV cache / probed memory bandwidth,
FLOPs / probed matmul rate), the probe of bench_util measured at the start of this run; the weights' bytes
are those "ours" reads (the head at 1 byte a parameter when it is screened).
Last line: RESULT generate b8_decode_tok_s=... hf_b8_decode_tok_s=... ratio=... b1_roofline_frac=...
min_call_ratio=... tunix_b8_decode_tok_s=... ratio_vs_tunix=...   (ratios of medians; Tunix 0 when not run;
without batch 8 in --batch the b8 fields are the largest batch's, without batch 1 b1 is the smallest's)

    python scripts/bench_generate.py                 # 64 new tokens, batch 1, 8, 32
    python scripts/bench_generate.py --quick         # 16 new tokens, batch 1 and 8, 2 repeats
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(__file__))
import tunix_peer  # noqa: E402
from bench_util import MachineProbe, alternate, best_time, dense_products, load_average, probe_machine, speedup  # noqa: E402

flags.DEFINE_integer("new_tokens", 64, "Tokens generated per row.")
flags.DEFINE_integer("prompt_len", 128, "Prompt tokens per row.")
flags.DEFINE_list("batch", ["1", "8", "32"], "Batch sizes.")
flags.DEFINE_integer("repeats", 5, "Timed alternated rounds per batch size (after one warm-up per side).")
flags.DEFINE_bool("quick", False, "16 new tokens, batch 1 and 8, 2 rounds.")
flags.DEFINE_bool("hf_static", True, "Also time HF with cache_implementation='static'.")
flags.DEFINE_bool("tunix", True, "Time Tunix's sampler when google-tunix is importable.")
flags.DEFINE_string("preset", "qwen2.5-0.5b", "Model shape.")
flags.DEFINE_integer("layers", 0, "Decoder layers (0 = the preset's).")
flags.DEFINE_string("matmul", "auto", "Our dense products: auto | xla | blas (ModelConfig.matmul).")
flags.DEFINE_integer("max_len", 0, "Engine cache slots per row (0 = prompt_len + new_tokens); larger values "
                     "show the cost of a long cache (decode segments attend over a window of it).")
FLAGS = flags.FLAGS


def roofline_steps_per_s(cfg, batch: int, context: float, probe: MachineProbe, *, screened_head: bool) -> float:
    """Decode steps/s bound at `batch` rows attending to `context` cached tokens on average, reading the
    LM head in int8 when `screened_head` (kernels/greedy_head.py), else every weight in float32."""
    weights = cfg.num_params()  # embedding counted once: it is the (tied) LM head read every step
    head = cfg.vocab_size * cfg.hidden_size if screened_head else 0
    kv = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.dims_per_head * context * batch
    step_bytes = 4 * (weights + kv) - 3 * head
    step_flops = 2 * weights * batch + 4 * batch * cfg.num_layers * cfg.num_heads * cfg.dims_per_head * context
    return 1.0 / max(step_bytes / probe.bandwidth, step_flops / probe.matmul_flops)


def build_models(preset: str, layers: int, path: str, matmul: str):
    """A random torch Qwen2 (float32, sdpa attention) saved to `path`, and the same weights as JAX params."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from atomsearch_jax.model import get_preset, load_hf_checkpoint

    overrides = {"num_layers": layers} if layers else {}
    hf_config = Qwen2Config(**get_preset(preset, **overrides).to_hf())
    torch.manual_seed(0)
    Qwen2ForCausalLM(hf_config).to(torch.float32).save_pretrained(path, safe_serialization=True)
    model = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    cfg, params = load_hf_checkpoint(path)
    return model, cfg.replace(matmul=matmul), params


class HFGreedy:
    """HF `generate` greedy with exactly new_tokens tokens; times the call and the part after the first token."""

    def __init__(self, model, prompts, new_tokens: int, cache_implementation: str | None):
        import torch
        self.torch, self.model, self.new_tokens = torch, model, new_tokens
        self.ids = torch.as_tensor(prompts, dtype=torch.long)
        self.extra = {"cache_implementation": cache_implementation} if cache_implementation else {}
        self.tokens = None

    def __call__(self) -> dict[str, float]:
        from transformers import StoppingCriteria, StoppingCriteriaList
        torch = self.torch

        class Clock(StoppingCriteria):
            first = None

            def __call__(self, input_ids, scores, **kwargs):
                if self.first is None:
                    self.first = time.perf_counter()
                return torch.zeros(input_ids.shape[0], dtype=torch.bool)

        clock = Clock()
        start = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(self.ids, attention_mask=torch.ones_like(self.ids), do_sample=False,
                                      max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens,
                                      eos_token_id=None, pad_token_id=0,
                                      stopping_criteria=StoppingCriteriaList([clock]), **self.extra)
        end = time.perf_counter()
        assert out.shape[1] == self.ids.shape[1] + self.new_tokens, out.shape
        self.tokens = out[:, self.ids.shape[1]:].numpy()
        return {"call": end - start, "decode": end - clock.first}


def hf_threads(model, prompts) -> int:
    """All cores or one thread, whichever runs a short greedy generate faster now (and set it)."""
    import torch
    ids = torch.as_tensor(prompts, dtype=torch.long)
    trial = {}
    for threads in sorted({os.cpu_count() or 1, 1}, reverse=True):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, do_sample=False, max_new_tokens=4, min_new_tokens=4, eos_token_id=None, pad_token_id=0)
        trial[threads] = time.perf_counter() - t
    best = min(trial, key=trial.get)
    torch.set_num_threads(best)
    return best


class OursGreedy:
    """`Sampler.generate` (whole call) and the engine's decode after a one-step decode (decode loop)."""

    def __init__(self, sampler, prompts, new_tokens: int):
        from atomsearch_jax.generate import sampling_arrays
        self.sampler, self.new_tokens = sampler, new_tokens
        self.prompts = [list(map(int, p)) for p in prompts]
        self.rows = sampler.engine.row_count(len(self.prompts))
        self.greedy = sampling_arrays(self.rows, temperature=0.0)
        self.no_eos = sampler.engine.stop_set(eos=False)
        self.tokens = None

    def _decode_after_first(self) -> float:
        import jax
        engine, n = self.sampler.engine, self.new_tokens
        state = engine.start(self.prompts, rows=self.rows, max_new_tokens=n)
        state, _ = engine.decode(state, max_steps=1, sampling=self.greedy, stops=self.no_eos)
        jax.block_until_ready(state.tokens)
        t = time.perf_counter()
        state, view = engine.decode(state, max_steps=n - 1, sampling=self.greedy, stops=self.no_eos)
        elapsed = time.perf_counter() - t  # decode() returns after copying the tokens to the host
        assert (view.lengths[: len(self.prompts)] == len(self.prompts[0]) + n).all(), view.lengths
        return elapsed

    def __call__(self) -> dict[str, float]:
        import numpy as np
        start = time.perf_counter()
        completions = self.sampler.generate(self.prompts, max_new_tokens=self.new_tokens, temperature=0.0,
                                            ignore_eos=True)
        call = time.perf_counter() - start
        self.tokens = np.asarray([c.tokens for c in completions])
        return {"call": call, "decode": self._decode_after_first()}


class TunixSide:
    def __init__(self, peer, prompts, new_tokens: int):
        self.peer, self.prompts, self.new_tokens = peer, prompts, new_tokens
        self.tokens = None

    def __call__(self) -> dict[str, float]:
        times, self.tokens = self.peer.run(self.prompts, self.new_tokens)
        return times


def sampling_costs(vocab: int, batches: list[int], reps: int = 5) -> None:
    """Prints the time of one `sample` call per sampling mode (the per-step overhead of sampling)."""
    import jax
    import jax.numpy as jnp

    from atomsearch_jax.generate import sample, sampling_arrays

    draw = jax.jit(sample)
    modes = [("greedy", dict(temperature=0.0), 6.0), ("temperature 1", dict(temperature=1.0), 6.0),
             ("top-k 50", dict(temperature=1.0, top_k=50), 6.0),
             ("top-p 0.95 (peaked)", dict(temperature=1.0, top_p=0.95), 6.0),
             ("top-p 0.95 (flat)", dict(temperature=1.0, top_p=0.95), 4.0)]
    print("sampling cost per decode step (ms, best of 5; logits N(0, 6^2): the 0.95 nucleus holds ~20 tokens, "
          "within the top-k candidates; N(0, 4^2): ~1250 tokens, found by threshold bisection):")
    print(" | ".join(f"{h:>20}" for h in ["mode"] + [f"batch {b}" for b in batches]))
    for name, params, scale in modes:
        cells = []
        for b in batches:
            logits = scale * jax.random.normal(jax.random.PRNGKey(0), (b, vocab), jnp.float32)
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(1), i))(jnp.arange(b))
            sp = sampling_arrays(b, **params)
            draw(logits, sp, keys)[0].block_until_ready()
            cells.append(f"{1e3 * best_time(lambda: draw(logits, sp, keys)[0].block_until_ready(), reps):.1f}")
        print(" | ".join(f"{c:>20}" for c in [name] + cells), flush=True)


def main(argv):
    del argv
    import jax
    import numpy as np
    import torch

    from atomsearch_jax.generate import Sampler
    from atomsearch_jax.kernels import greedy_head

    new_tokens = 16 if FLAGS.quick else FLAGS.new_tokens
    batches = [1, 8] if FLAGS.quick else [int(b) for b in FLAGS.batch]
    repeats = 2 if FLAGS.quick else FLAGS.repeats
    probe = probe_machine()
    print(probe.line(), flush=True)
    use_tunix = FLAGS.tunix and tunix_peer.available()
    path = tempfile.mkdtemp(prefix="bench_generate_")
    max_len = FLAGS.max_len or FLAGS.prompt_len + new_tokens
    try:
        model, cfg, params = build_models(FLAGS.preset, FLAGS.layers, path, FLAGS.matmul)
        tunix = tunix_peer.TunixGreedy(path, cfg, FLAGS.prompt_len + new_tokens) if use_tunix else None
    finally:
        shutil.rmtree(path, ignore_errors=True)
    tunix_note = (f"google-tunix {tunix_peer.version()}" if use_tunix else
                  "Tunix not run (google-tunix not importable: scripts/install_peers.sh)" if FLAGS.tunix else
                  "Tunix not run (--notunix)")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__}, HF attn_implementation="
          f"{model.config._attn_implementation}; {tunix_note}; ours: {dense_products(cfg)}")
    print(f"model {FLAGS.preset} ({cfg.num_layers} layers): {cfg.num_params() / 1e6:.0f}M params, float32, prompt {FLAGS.prompt_len}, "
          f"{new_tokens} new tokens, greedy, engine max_len {max_len}; {repeats} alternated rounds, medians "
          f"(min-max)", flush=True)
    sampler = Sampler(cfg, params, max_len=max_len, segment_steps=new_tokens, greedy_logprobs=False)
    with_logprobs = Sampler(cfg, params, max_len=max_len, segment_steps=new_tokens)
    screened = sampler.engine.head_screen is not None
    print("ours: greedy log-probabilities off, LM head " + (
        "read through its int8 screen (kernels/greedy_head.py)" if screened else
        f"in float32 (greedy_head not used here: {greedy_head.registration_error() or 'see ModelSetup.screens_head'})")
        + "; ours (log-probs): float32 logits and log-probabilities", flush=True)
    rng = np.random.default_rng(0)
    results, rows, mismatches = {}, [], []
    for b in batches:
        prompts = rng.integers(0, cfg.vocab_size - 1, size=(b, FLAGS.prompt_len))  # last id: Tunix's pad
        threads = hf_threads(model, prompts)
        sides = {"ours": OursGreedy(sampler, prompts, new_tokens),
                 "ours (log-probs)": OursGreedy(with_logprobs, prompts, new_tokens),
                 "HF": HFGreedy(model, prompts, new_tokens, None)}
        if FLAGS.hf_static:
            sides["HF static"] = HFGreedy(model, prompts, new_tokens, "static")
        if tunix is not None:
            sides["Tunix"] = TunixSide(tunix, prompts, new_tokens)
        timings = alternate(sides, repeats=repeats)
        ours = timings["ours"]
        r = {"ours": ours, "peers": {}}
        for name, side in sides.items():
            if name != "ours" and not np.array_equal(side.tokens, sides["ours"].tokens):
                rows_off = int((side.tokens != sides["ours"].tokens).any(1).sum())
                mismatches.append(f"batch {b}: {name} differs from ours in {rows_off} of {b} rows")
            if name != "ours":
                r["peers"][name] = timings[name]
        steps_s = (new_tokens - 1) / ours["decode"].median
        r["roof"] = roofline_steps_per_s(cfg, b, FLAGS.prompt_len + new_tokens / 2, probe, screened_head=screened)
        r["steps"] = steps_s
        results[b] = r
        n_call, n_dec = b * new_tokens, b * (new_tokens - 1)
        rows.append(f"batch {b} (HF threads {threads}): ours call {ours['call'].spread(n_call, 'tok/s')}, decode "
                    f"{ours['decode'].spread(n_dec, 'tok/s')}; {steps_s:.2f} steps/s = {steps_s / r['roof']:.2f} of "
                    f"the roofline {r['roof']:.2f}")
        for name, t in r["peers"].items():
            rows.append(f"    {name:>16}: call {t['call'].spread(n_call, 'tok/s')} (ours x"
                        f"{speedup(ours['call'], t['call']):.2f}), decode {t['decode'].spread(n_dec, 'tok/s')} "
                        f"(ours x{speedup(ours['decode'], t['decode']):.2f})")
        print("\n".join(rows[-1 - len(r["peers"]):]), flush=True)
    print("greedy tokens: " + ("every side equals ours in every row" if not mismatches else "; ".join(mismatches)))
    sampling_costs(cfg.vocab_size, batches)
    ref = results[8] if 8 in results else results[batches[-1]]
    b1 = results[1] if 1 in results else results[batches[0]]
    n8 = (8 if 8 in results else batches[-1]) * (new_tokens - 1)
    min_call = min(speedup(r["ours"]["call"], r["peers"]["HF"]["call"]) for r in results.values())
    tunix8 = ref["peers"].get("Tunix")
    print(f"load average at the end {load_average()}")
    print(f"RESULT generate b8_decode_tok_s={n8 / ref['ours']['decode'].median:.1f} "
          f"hf_b8_decode_tok_s={n8 / ref['peers']['HF']['decode'].median:.1f} "
          f"ratio={speedup(ref['ours']['decode'], ref['peers']['HF']['decode']):.2f} "
          f"b1_roofline_frac={b1['steps'] / b1['roof']:.2f} min_call_ratio={min_call:.2f} "
          f"tunix_b8_decode_tok_s={n8 / tunix8['decode'].median if tunix8 else 0:.1f} "
          f"ratio_vs_tunix={speedup(ref['ours']['decode'], tunix8['decode']) if tunix8 else 0:.2f}")
    if mismatches:
        sys.exit("greedy tokens differ between sides: " + "; ".join(mismatches))


if __name__ == "__main__":
    app.run(main)
