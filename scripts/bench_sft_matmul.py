"""The default job's SFT step under each dense-product policy (ModelConfig.matmul: xla, blas, auto).

    python scripts/bench_sft_matmul.py [--repeats 5]

One SFT step of 8 rows at each of the default's two bucket widths (464, 640; micro-batches of 2 rows, as
configs/default.py), on the default model (hidden 128, world vocabulary 2048, tied head), one trainer per
policy, alternated (bench_util.alternate), medians. This is the measurement behind
`blas_matmul.MIN_WEIGHT_ELEMENTS`: sgemm for every product ("blas") against XLA's dot ("xla") and what
"auto" picks for this model. Last line: RESULT sft_matmul xla_s=… blas_s=… auto_s=…
"""
from __future__ import annotations

import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_util  # noqa: E402
from absl import app, flags  # noqa: E402
from bench_util import sft_batch  # noqa: E402
from configs import default as default_config  # noqa: E402

_REPEATS = flags.DEFINE_integer("repeats", 5, "Alternated timed rounds.")
POLICIES = ("xla", "blas", "auto")


def main(argv) -> None:
    del argv
    import jax

    from atomsearch_jax.model import init_params
    from atomsearch_jax.parallel import make_mesh
    from atomsearch_jax.sft import SFTTrainer

    print(bench_util.probe_machine().line(), flush=True)
    config = default_config.get_config()
    mesh = make_mesh(data=1, fsdp=-1, tensor=1)
    sides = {}
    for policy in POLICIES:
        model_config = bench_util.default_job_model(tie_word_embeddings=config.model.tie_word_embeddings,
                                                    matmul=policy)
        params = init_params(model_config, jax.random.key(0))
        batches = [sft_batch(8, width, model_config.vocab_size, seed=i) for i, width in enumerate((464, 640))]
        stage = copy.deepcopy(config.sft)
        stage.checkpoint.directory = ""
        trainer = SFTTrainer(model_config, params, stage, mesh=mesh)
        sides[policy] = bench_util.wall(lambda t=trainer, b=batches: [t.update(x) for x in b])
        print(f"{policy}: {bench_util.dense_products(model_config)}", flush=True)
    timings = bench_util.alternate(sides, repeats=_REPEATS.value)
    print(f"SFT: one step at width 464 + one at 640, 8 rows, micro-batch {config.sft.train_step.micro_batch_size}; "
          f"{_REPEATS.value} alternated rounds")
    bench_util.print_table(["policy", "seconds, median (min-max)"], [[p, timings[p]["s"].spread()] for p in POLICIES])
    print(f"load average at the end {bench_util.load_average()}")
    print("RESULT sft_matmul " + " ".join(f"{p}_s={timings[p]['s'].median:.3f}" for p in POLICIES))


if __name__ == "__main__":
    app.run(main)
