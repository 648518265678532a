"""Device meshes over the (data, fsdp, tensor) axes, on one host or many."""
from __future__ import annotations

import logging
import math
from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_axis_sizes(sizes: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replaces the single -1 in `sizes` by what is left of `num_devices`; checks the product.

    Example: (1, -1, 2) on 8 devices -> (1, 4, 2).
    """
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != len(MESH_AXES):
        raise ValueError(f"mesh sizes {sizes}: expected one size per axis {MESH_AXES}")
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh sizes {sizes}: at most one axis may be -1 ('the rest')")
    for name, s in zip(MESH_AXES, sizes):
        if s == 0 or s < -1:
            raise ValueError(f"mesh axis {name!r} has size {s}; sizes must be positive or -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh sizes {sizes}: {num_devices} devices are not divisible by {known}")
        sizes = tuple(num_devices // known if s == -1 else s for s in sizes)
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh sizes {dict(zip(MESH_AXES, sizes))} use {math.prod(sizes)} devices but {num_devices} are available"
        )
    return sizes


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, *, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A GSPMD (Auto-axis) mesh with axes ("data", "fsdp", "tensor"); -1 means "the rest of the devices".

    Uses all global devices by default, so after `initialize_distributed()` it spans every host.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_axis_sizes((data, fsdp, tensor), len(devices))
    try:
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        # Topology-aware placement is only known for some TPU slices; a plain reshape is always valid.
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Joins a multi-host job (one process per host). On TPU VM pods all arguments are discovered.

    Call before anything touches devices. Safe to call once per process.
    """
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    logging.info("jax.distributed: process %d of %d, %d global devices", jax.process_index(),
                 jax.process_count(), jax.device_count())



def local_mesh(mesh: Mesh) -> Mesh:
    """The part of `mesh` on this process's devices, with the same axis names (`mesh` itself on one host).

    Each process's devices must form one block of the device grid, and the "tensor" axis must lie
    inside a process, so a tensor-parallel layout on the sub-mesh puts the same shard on each device as
    on the global mesh (what lets a process decode its own rows on its own devices).
    """
    if all(d.process_index == jax.process_index() for d in mesh.devices.flat):
        return mesh
    grid = mesh.devices
    mine = np.vectorize(lambda d: d.process_index == jax.process_index())(grid)
    where = np.argwhere(mine)
    if not where.size:
        raise ValueError(f"the mesh {dict(mesh.shape)} has no device of process {jax.process_index()}")
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    block = tuple(slice(a, b) for a, b in zip(lo, hi))
    if not mine[block].all() or mine.sum() != mine[block].size:
        raise ValueError(f"the devices of process {jax.process_index()} do not form one block of the mesh "
                         f"{dict(mesh.shape)}; order the mesh so each host's devices are contiguous")
    names = list(mesh.axis_names)
    if "tensor" in names and hi[names.index("tensor")] - lo[names.index("tensor")] != mesh.shape["tensor"]:
        raise ValueError(f"mesh axis 'tensor' (size {mesh.shape['tensor']}) spans several processes; keep "
                         "tensor parallelism inside a host")
    return Mesh(grid[block], mesh.axis_names, axis_types=mesh.axis_types)
