"""Devices: the meshes a run is sharded over, and joining a multi-host job."""

from __future__ import annotations

import os

import jax

def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device (all hosts), axis "data"."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def variant_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device, axis "variant": stacked runs are split across devices."""
    return jax.make_mesh((jax.device_count(),), ("variant",), axis_types=(jax.sharding.AxisType.Auto,))


def maybe_initialize_distributed() -> None:
    """Join a multi-host job when the environment configures one (JAX_COORDINATOR_ADDRESS or a cluster
    that ``jax.distributed`` detects by itself, signalled by TRAJBENCH_DISTRIBUTED=1)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("TRAJBENCH_DISTRIBUTED") == "1":
        if not jax.distributed.is_initialized():
            jax.distributed.initialize()
