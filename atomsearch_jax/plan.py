"""AOT memory plan of a recipe: does every program fit the devices' HBM at the config's real shapes?

    python -m atomsearch_jax.plan --config=configs/atom_searcher_qwen7b.py --devices=64 --hbm_gb=95

Forces `--devices` CPU devices, builds the recipe's mesh over them and lowers and compiles, with
abstract parameters (`jax.eval_shape`; nothing is allocated), the three programs a GRPO step runs:
the jitted GRPO update (whole rollout batch, mini/micro-batching, remat, scan as configured), the
prefill of one rollout chunk and a decode segment over its full cache. Each program's per-device bytes
come from the compiled memory analysis (arguments + outputs - donated aliases + temporaries); what
other programs keep in HBM meanwhile (the train state during rollouts, the sampler's copy of the
weights during the update) is added. Exits 1 when a program exceeds --hbm_gb (10^9 bytes).
--hlo_dir=DIR also writes each program's optimized HLO (DIR/<program>.hlo.txt), to see what makes up its
temporaries.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Sequence

GB = 1e9


@dataclasses.dataclass(frozen=True)
class ProgramPlan:
    """Per-device bytes of one compiled program and of what stays resident beside it."""

    name: str
    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    resident: int  # held in HBM by other parts of the step while this program runs

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.resident


@dataclasses.dataclass(frozen=True)
class Plan:
    """A recipe's memory plan on `devices` devices of `hbm_bytes` each."""

    devices: int
    hbm_bytes: float
    mesh_shape: dict
    components: dict  # name -> per-device bytes (params, optimizer state, grads, activations, KV cache, ...)
    programs: tuple[ProgramPlan, ...]
    notes: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return all(p.total <= self.hbm_bytes for p in self.programs)

    def format(self) -> str:
        lines = [f"devices: {self.devices}  mesh: {self.mesh_shape}  HBM per device: {self.hbm_bytes / GB:.1f} GB"]
        lines += [f"  {note}" for note in self.notes]
        lines.append("per-device bytes:")
        lines += [f"  {name:<22s} {value / GB:10.3f} GB" for name, value in self.components.items()]
        lines.append(f"{'program':<14s} {'args':>9s} {'outputs':>9s} {'aliased':>9s} {'temp':>9s} {'resident':>9s} "
                     f"{'total':>9s}  (GB per device)")
        for p in self.programs:
            verdict = "fits" if p.total <= self.hbm_bytes else "DOES NOT FIT"
            lines.append(f"{p.name:<14s} " + " ".join(f"{v / GB:9.3f}" for v in (
                p.arguments, p.outputs, p.aliased, p.temporaries, p.resident, p.total)) + f"  {verdict}")
        lines.append(f"RESULT plan fits={int(self.fits)} peak_gb={max(p.total for p in self.programs) / GB:.2f} "
                     f"hbm_gb={self.hbm_bytes / GB:.1f} devices={self.devices}")
        return "\n".join(lines)


def _bytes_per_device(tree: Any) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


def _with_shardings(shapes: Any, shardings: Any) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def _program_plan(name: str, compiled: Any, resident: int) -> ProgramPlan:
    m = compiled.memory_analysis()
    return ProgramPlan(name, int(m.argument_size_in_bytes), int(m.output_size_in_bytes), int(m.alias_size_in_bytes),
                       int(m.temp_size_in_bytes), int(resident))


def model_config_for_plan(config: Any):
    """The recipe's architecture without loading weights: config.json of model.hf_path when present,
    else model.preset, else the tiny-model fields (vocabulary: model.vocab_size or the world tokenizer's)."""
    from etils import epath

    from atomsearch_jax.data.world.tokenizer import DEFAULT_VOCAB_SIZE
    from atomsearch_jax.model import ModelConfig, get_preset

    m = config.model
    run = dict(dtype=m.dtype, param_dtype=m.dtype, attention=m.get("attention", "auto"),
               attention_block=m.get("attention_block", 512))
    if m.hf_path and (epath.Path(m.hf_path) / "config.json").exists():
        return ModelConfig.from_hf(m.hf_path, **run)
    if m.get("preset", ""):
        return get_preset(m.preset, **run)
    vocab = m.get("vocab_size", 0) or -(-DEFAULT_VOCAB_SIZE // 128) * 128
    return ModelConfig(vocab_size=vocab, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
                       num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
                       rope_theta=m.rope_theta, max_position_embeddings=max(m.max_len, 2048), **run)


def _update_program(config: Any, model_config: Any, mesh: Any, rows: int) -> tuple[Any, Any, Any]:
    """(compiled GRPO update, abstract train state, abstract reference params or None)."""
    import jax
    import jax.numpy as jnp

    from atomsearch_jax.model import param_shapes
    from atomsearch_jax.rl.update import CONTROLS, GRPOSettings, make_grpo_update
    from atomsearch_jax.training.batching import batch_layout, layout_sharding
    from atomsearch_jax.training.optimizer import make_optimizer
    from atomsearch_jax.training.train_state import abstract_state, state_shardings

    rl = config.rl
    train_config = model_config.replace(remat=bool(rl.train_step.remat), scan_layers=bool(config.model.scan_layers))
    params = param_shapes(train_config)
    optimizer, schedule = make_optimizer(rl.optimizer, params)
    shardings = state_shardings(params, optimizer, mesh)
    state = abstract_state(params, optimizer, mesh)
    settings = GRPOSettings.from_config(rl)
    layout = batch_layout(rows, rl.train_step.mini_batch_size, rl.train_step.micro_batch_size, mesh)
    lead = (layout.n_mini, layout.n_micro, layout.micro)
    t = int(config.model.max_len)
    fields = {"tokens": jnp.int32, "loss_mask": jnp.float32, "attention_mask": jnp.int32, "positions": jnp.int32}
    if settings.old_logp == "sampler":
        fields["sampler_logprobs"] = jnp.float32
    batch = {k: jax.ShapeDtypeStruct(lead + (t,), dt, sharding=layout_sharding(mesh, 4)) for k, dt in fields.items()}
    batch["advantages"] = jax.ShapeDtypeStruct(lead, jnp.float32, sharding=layout_sharding(mesh, 3))
    ref = _with_shardings(params, shardings.params) if settings.use_kl else None
    controls = {k: jax.ShapeDtypeStruct((), jnp.float32) for k in CONTROLS}
    update = make_grpo_update(train_config, settings, optimizer, shardings, mesh, schedule)
    return update.lower(state, batch, ref, controls).compile(), state, ref


def _rollout_programs(config: Any, model_config: Any, mesh: Any, rows: int, prompt_len: int, prompts: int):
    """(compiled prefill, compiled decode segment, abstract sampler params, abstract decode state)."""
    import jax
    import jax.numpy as jnp

    from atomsearch_jax.generate.engine import device_programs
    from atomsearch_jax.generate.state import batch_spec, state_shardings
    from atomsearch_jax.generate.stops import StopSet
    from atomsearch_jax.generate.sampling import SamplingParams
    from atomsearch_jax.model import param_shapes
    from atomsearch_jax.parallel import SAMPLE_RULES, param_shardings
    from jax.sharding import NamedSharding, PartitionSpec

    max_len = int(config.model.max_len)
    sample_config = model_config.replace(scan_layers=False, remat=False)
    programs = device_programs(sample_config, mesh, max_len)
    shapes = param_shapes(sample_config)
    params = _with_shardings(shapes, param_shardings(shapes, mesh, SAMPLE_RULES))
    rows1, rows2 = NamedSharding(mesh, batch_spec(1)), NamedSharding(mesh, batch_spec(2))
    i32 = lambda shape, sh: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sh)  # noqa: E731
    prefill_args = (params, i32((prompts, prompt_len), rows2), i32((prompts,), rows1), i32((rows,), rows1),
                    jax.ShapeDtypeStruct((rows,), jnp.bool_, sharding=rows1), i32((rows,), rows1),
                    i32((), NamedSharding(mesh, PartitionSpec())), i32((), NamedSharding(mesh, PartitionSpec())))
    prefill = programs.prefill.lower(*prefill_args).compile()
    state_shapes = jax.eval_shape(programs.prefill, *prefill_args)
    state = _with_shardings(state_shapes, state_shardings(sample_config, mesh))
    sampling = SamplingParams(temperature=jax.ShapeDtypeStruct((rows,), jnp.float32, sharding=rows1),
                              top_k=i32((rows,), rows1), top_p=jax.ShapeDtypeStruct((rows,), jnp.float32, sharding=rows1))
    stops = jax.tree_util.tree_map(jnp.asarray, StopSet.build((), sample_config.eos_ids or (0,)).arrays())
    decode = programs.decode.lower(params, state, sampling, stops, jnp.int32(1), max_len).compile()
    return prefill, decode, params, state


def plan_recipe(config: Any, *, hbm_gb: float, prompt_len: int = 1024, hlo_dir: str = "") -> Plan:
    """The memory plan of `config` on the current (forced CPU) devices, laid out by config.mesh.

    hlo_dir: when set, each program's optimized HLO is written there as <program>.hlo.txt (what the
    compiler allocates, e.g. which buffers make up a program's temporaries).
    """
    import jax

    from atomsearch_jax.agent.chunking import groups_per_chunk, state_rows
    from atomsearch_jax.parallel import make_mesh

    mesh = make_mesh(**config.mesh.to_dict())
    model_config = model_config_for_plan(config)
    rl = config.rl
    groups, group_size = int(rl.prompts_per_step), int(rl.group_size)
    max_len = int(config.model.max_len)
    prompt_len = min(int(prompt_len), max_len // 2)
    budget = float(rl.rollout.get("kv_cache_gb", 0.0))
    chunk_groups = groups_per_chunk(model_config, groups=groups, group_size=group_size, max_len=max_len,
                                    budget_gb=budget, mesh=mesh)
    chunk_rows = state_rows(chunk_groups * group_size, mesh)
    chunk_prompts = state_rows(chunk_groups, mesh)

    prefill, decode, sample_params, decode_state = _rollout_programs(config, model_config, mesh, chunk_rows,
                                                                     prompt_len, chunk_prompts)
    update, train_state, ref = _update_program(config, model_config, mesh, groups * group_size)
    params_b = _bytes_per_device(train_state.params)
    opt_b = _bytes_per_device(train_state.opt_state)
    ref_b = _bytes_per_device(ref) if ref is not None else 0
    sample_b = _bytes_per_device(sample_params)
    kv_b = _bytes_per_device(decode_state.cache)
    grads_b = params_b  # the accumulated gradient tree has the params' shapes, dtypes and shardings
    update_mem = update.memory_analysis()
    components = {
        "params (train)": params_b, "optimizer state": opt_b, "gradients": grads_b,
        "activations (update)": max(int(update_mem.temp_size_in_bytes) - grads_b, 0),
        "reference params": ref_b, "params (sampler)": sample_b, "KV cache (chunk)": kv_b,
        "decode temporaries": int(decode.memory_analysis().temp_size_in_bytes),
    }
    train_resident = params_b + opt_b + ref_b
    programs = (_program_plan("grpo_update", update, sample_b),
                _program_plan("prefill", prefill, train_resident),
                _program_plan("decode", decode, train_resident))
    if hlo_dir:
        _write_hlo(hlo_dir, {"grpo_update": update, "prefill": prefill, "decode": decode})
    notes = (f"model: {model_config.num_params() / 1e6:.1f}M params, dtype {model_config.dtype}, attention "
             f"{model_config.attention} (block {model_config.attention_block}), remat {bool(rl.train_step.remat)}, "
             f"scan_layers {bool(config.model.scan_layers)}",
             f"update: {groups * group_size} rows x {max_len} tokens, mini-batch {rl.train_step.mini_batch_size or 'all'}, "
             f"micro-batch {rl.train_step.micro_batch_size or 'all'}",
             f"rollout: {groups} groups of {group_size} in chunks of {chunk_groups} groups ({chunk_rows} state rows, "
             f"kv_cache_gb={budget or 'unlimited'}), {max_len} slots, prompt bucket {prompt_len}",
             f"jax {jax.__version__}, compiled for {jax.devices()[0].platform} x{jax.device_count()}")
    return Plan(jax.device_count(), hbm_gb * GB, dict(mesh.shape), components, programs, notes)


def _write_hlo(directory: str, compiled: dict) -> None:
    from etils import epath

    out = epath.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, program in compiled.items():
        (out / f"{name}.hlo.txt").write_text(program.as_text())


def _force_cpu_devices(n: int) -> None:
    """Must run before jax initialises its backend."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
    os.environ["JAX_PLATFORMS"] = "cpu"


def main(argv: Sequence[str]) -> None:
    from absl import flags

    del argv
    _force_cpu_devices(flags.FLAGS.devices)
    import jax

    if jax.device_count() != flags.FLAGS.devices:
        raise SystemExit(f"--devices={flags.FLAGS.devices} but jax sees {jax.device_count()} devices "
                         "(was the backend initialised before the flag was applied?)")
    plan = plan_recipe(flags.FLAGS.config, hbm_gb=flags.FLAGS.hbm_gb, prompt_len=flags.FLAGS.prompt_len,
                       hlo_dir=flags.FLAGS.hlo_dir)
    print(plan.format())
    sys.exit(0 if plan.fits else 1)


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "recipe config file (get_config())", lock_config=False)
    flags.DEFINE_integer("devices", 8, "forced CPU devices (the slice's chip count)")
    flags.DEFINE_float("hbm_gb", 16.0, "HBM per device in GB (10^9 bytes)")
    flags.DEFINE_integer("prompt_len", 1024, "prompt bucket (tokens) the prefill is planned at")
    flags.DEFINE_string("hlo_dir", "", "write each program's optimized HLO text here (local path or URL)")
    flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
