"""Prefill throughput of a Qwen2.5-0.5B-shaped model (random f32 weights): ours vs HF transformers.

    python scripts/bench_forward.py [--batch 8 --seq 512 --layers 24 --repeats 5]

Both run the same weights in the same process; HF is `Qwen2ForCausalLM` with attn_implementation="sdpa"
(pinned, printed) under `inference_mode` on all cores. Timing: bench_util.alternate (warm-up on both
sides, --repeats rounds alternating ours/HF, median and min-max). MFU = bench_util.mfu against the
machine probe of this run. Last line:
RESULT forward ours_tok_s=… hf_tok_s=… ratio=… mfu=…   (full logits; medians; ratio of medians)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import alternate, dense_products, forward_flops, load_average, mfu, peak_rss_gb, print_table, probe_machine, speedup, wall  # noqa: E402,E501

from atomsearch_jax.model import forward, get_preset, hidden_states, init_params, lm_logits, save_hf_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--matmul", default="auto", help="Our dense products: auto | xla | blas (ModelConfig.matmul).")
    args = ap.parse_args()

    import torch
    from transformers import Qwen2ForCausalLM
    torch.set_num_threads(os.cpu_count())

    probe = probe_machine()
    print(probe.line(), flush=True)
    cfg = get_preset("qwen2.5-0.5b", num_layers=args.layers, matmul=args.matmul)
    params = init_params(cfg, jax.random.PRNGKey(0))
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_checkpoint(cfg, params, tmp)
        hf = Qwen2ForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation="sdpa").eval()
    tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (args.batch, args.seq))
    tt = torch.as_tensor(tokens)
    n_tok = args.batch * args.seq
    print(f"Qwen2.5-0.5B-shaped ({args.layers} layers), float32, batch {args.batch} x {args.seq}; jax "
          f"{jax.__version__} {jax.devices()}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"HF attn_implementation={hf.config._attn_implementation}; ours: {dense_products(cfg)}; {args.repeats} alternated "
          "repeats", flush=True)

    full = jax.jit(lambda p, t: forward(cfg, p, t))
    last = jax.jit(lambda p, t: lm_logits(cfg, p, hidden_states(cfg, p, t)[:, -1]))

    def hf_run(keep: int) -> None:
        with torch.inference_mode():
            hf(input_ids=tt, logits_to_keep=keep)

    rows, results = [], {}
    for name, ours_fn, keep, full_logits in (("full logits", full, 0, True), ("last logits", last, 1, False)):
        timings = alternate({"ours": wall(lambda f=ours_fn: jax.block_until_ready(f(params, tokens))),
                             "hf": wall(lambda k=keep: hf_run(k))}, repeats=args.repeats)
        ours, peer = timings["ours"]["s"], timings["hf"]["s"]
        flops = forward_flops(cfg, args.batch, args.seq, full_logits)
        ratio = speedup(ours, peer)
        rows.append([name, ours.spread(n_tok, "tok/s"), peer.spread(n_tok, "tok/s"), ratio,
                     mfu(flops, ours.median, probe), mfu(flops, peer.median, probe)])
        results[name] = (n_tok / ours.median, n_tok / peer.median, ratio, mfu(flops, ours.median, probe))
    print_table(["mode", "ours median (min-max)", "HF median (min-max)", "ratio of medians", "ours MFU", "HF MFU"],
                rows)
    print(f"peak RSS {peak_rss_gb():.1f} GB; load average at the end {load_average()}")
    ours_tps, hf_tps, ratio, ours_mfu = results["full logits"]
    print(f"RESULT forward ours_tok_s={ours_tps:.1f} hf_tok_s={hf_tps:.1f} ratio={ratio:.3f} mfu={ours_mfu:.3f}")


if __name__ == "__main__":
    main()
