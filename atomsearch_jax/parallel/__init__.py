"""Meshes, logical-axis rules and the parameter partition table."""
from atomsearch_jax.parallel.mesh import MESH_AXES, initialize_distributed, local_mesh, make_mesh, resolve_axis_sizes
from atomsearch_jax.parallel.rules import (
    PARAM_RULES,
    SAMPLE_RULES,
    TRAIN_RULES,
    batch_sharding,
    check_heads_divisible,
    logical_axes_for,
    param_logical_axes,
    param_shardings,
    param_spec,
    param_specs,
    path_str,
    replicated,
)

__all__ = [
    "MESH_AXES", "initialize_distributed", "local_mesh", "make_mesh", "resolve_axis_sizes", "PARAM_RULES", "SAMPLE_RULES",
    "TRAIN_RULES", "batch_sharding", "check_heads_divisible", "logical_axes_for", "param_logical_axes",
    "param_shardings", "param_spec", "param_specs", "path_str", "replicated",
]
