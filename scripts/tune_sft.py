"""SFT settings tuned on the validation split only (the held-out split is never read).

    python scripts/tune_sft.py WORKDIR [config.key=value ...]

Builds the default job's environment (configs/default.py with the overrides), runs its SFT stage and
evaluates the SFT policy greedily on the validation questions. Prints one line:

    RESULT [overrides] val_f1 <f1> em <em> fmt <format valid> answered <answer rate> setup <s> sft <s> eval <s>

Overrides are `dotted.key=value` pairs of the config (values parsed as Python literals unless the field is
a string), e.g. `sft.batch_size=8 sft.steps=240 sft.optimizer.total_steps=240`.
"""
import importlib.util
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_config(overrides):
    spec = importlib.util.spec_from_file_location("default_config", os.path.join(ROOT, "configs", "default.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for override in overrides:
        key, value = override.split("=", 1)
        node, parts = config, key.split(".")
        for part in parts[:-1]:
            node = node[part]
        old = node[parts[-1]]
        node[parts[-1]] = value if isinstance(old, str) else type(old)(eval(value))  # noqa: S307 -- a literal
    return config


def main(workdir, overrides):
    config = default_config(overrides)
    config.workdir = workdir
    os.makedirs(workdir, exist_ok=True)
    from atomsearch_jax import report, train
    t0 = time.time()
    env, mesh, model_config, params, writer, engine, runner = train.build_job(config, workdir)
    t1 = time.time()
    params = train.run_sft(config, env, model_config, params, mesh, writer)
    t2 = time.time()
    engine.set_params(params)
    result = train.run_eval(runner, env.eval_records, config, writer, config.sft.steps, "validation after SFT",
                            report.PhaseClock(), "val")
    t3 = time.time()
    print("RESULT", overrides, "val_f1 %.3f em %.3f fmt %.3f answered %.3f" % (
        result["f1"], result["em"], result["format_ok"], result["answered"]),
        "setup %.0f sft %.0f eval %.0f" % (t1 - t0, t2 - t1, t3 - t2), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
