"""One GRPO update of the Qwen2.5-0.5B shape (float32, 8 x 512, remat, logits chunk 32) with the dense
products on XLA's dot vs on the OpenBLAS handler: what `ModelConfig.matmul="auto"` chooses between.

    python scripts/bench_update_matmul.py [--layers 4 --repeats 3]

Both trainers stay resident in this process (same initial weights, same rollout batch as
`bench_train_step.py`); timing: bench_util.alternate (one warm-up update each, then --repeats alternated
rounds), medians. The header names the OpenBLAS core (`OPENBLAS_CORETYPE` picks it). Last line:
RESULT update_matmul xla_tok_s=… blas_tok_s=… ratio=…   (ratio = XLA's speed / the handler's)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(__file__))
from bench_train_step import rollout_batch  # noqa: E402
from bench_util import alternate, load_average, probe_machine, speedup  # noqa: E402

from atomsearch_jax import rl  # noqa: E402
from atomsearch_jax.kernels import blas_matmul  # noqa: E402
from atomsearch_jax.model import get_preset, init_params  # noqa: E402
from atomsearch_jax.parallel import make_mesh  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(probe_machine().line(), flush=True)
    print(f"OpenBLAS core {blas_matmul.openblas_core()}; {args.layers} layers, 8 x 512 tokens, float32, remat, "
          f"{args.repeats} alternated rounds, tok/s median (min-max)", flush=True)
    trainers = {}
    for policy in ("xla", "blas"):
        cfg = get_preset("qwen2.5-0.5b", num_layers=args.layers, scan_layers=True, matmul=policy)
        c = rl.get_config()
        c.group_size = 4
        c.optimizer.learning_rate = 1e-6
        c.train_step.update(mini_batch_size=0, micro_batch_size=0, logprob_chunk=32, remat=True)
        params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.PRNGKey(0))
        trainers[policy] = rl.GRPOTrainer(cfg, params, c, mesh=make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    batch = rollout_batch(cfg.vocab_size, 8, 512, 128)

    def side(trainer):
        def update() -> float:
            start = time.perf_counter()
            trainer.update(batch)
            return time.perf_counter() - start
        return update

    times = alternate({policy: side(t) for policy, t in trainers.items()}, repeats=args.repeats)
    tokens = 8 * 512
    for policy, t in times.items():
        print(f"{policy:>5}: {t['s'].spread(tokens, 'tok/s')}")
    xla, blas = times["xla"]["s"], times["blas"]["s"]
    print(f"load average at the end {load_average()}")
    print(f"RESULT update_matmul xla_tok_s={tokens / xla.median:.1f} blas_tok_s={tokens / blas.median:.1f} "
          f"ratio={speedup(xla, blas):.2f}")


if __name__ == "__main__":
    main()
