"""Device mesh, parameter sharding rules and batch sharding.

The train step is one `jax.jit` over GLOBAL arrays: the batch is sharded along its leading axis
over every data-parallel mesh axis ('data' and, when present, 'fsdp'), parameters are either
replicated or (FSDP) split along one dimension over 'fsdp'. XLA inserts the collectives (gradient
all-reduce, parameter all-gather, the InfoNCE embedding all-gather, BatchNorm's global batch
statistics), so the same code trains identically on 1 device or many for the same global batch.

Meshes use Auto axis types: jax 0.10's `jax.make_mesh` defaults to Explicit axes, under which our
un-annotated model code would fail (see shared/STACK.md). Models call `constrain_batch` on tower
inputs and outputs; it is a no-op unless a mesh is set with `jax.set_mesh(mesh)` around the jitted
call, so the models also run outside any mesh.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# Mesh axes that split the batch. 'fsdp' is also data-parallel: each fsdp shard sees its own
# examples and gathers the parameters it needs.
DATA_AXES = ("data", "fsdp")
FSDP_AXIS = "fsdp"
STRATEGIES = ("replicate", "fsdp")

# FSDP rules, matched in order with re.search on the '/'-joined parameter path (e.g.
# "params/image_tower/layer1_0/conv1/kernel", "opt_state/0/mu/text_tower/..."). The value is a
# PartitionSpec, or FSDP_AUTO: split the largest dimension divisible by the fsdp axis size.
# Anything smaller than `min_size` elements stays replicated whatever the rule says.
FSDP_AUTO = "auto"
FSDP_RULES: list[tuple[str, P | str]] = [
    # Scalars and vectors (biases, norms, BatchNorm statistics, logit scale) are tiny: replicate.
    (r"(^|/)(bias|scale|mean|var|logit_scale|logit_bias|count)$", P()),
    (r"(^|/)positional_embedding$", P()),
    (r".*", FSDP_AUTO),
]
DEFAULT_FSDP_MIN_SIZE = 2**14


def make_mesh(
    axes: Sequence[tuple[str, int]] = (("data", -1),), devices: Sequence | None = None
) -> Mesh:
    """Mesh over all (or the given) devices; one size may be -1 (= the remaining devices).

    E.g. [("data", -1)] or [("data", -1), ("fsdp", 8)]. Axis types are Auto.
    """
    devices = list(jax.devices() if devices is None else devices)
    axes = [(str(n), int(s)) for n, s in axes]
    names = [n for n, _ in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"mesh axis names repeat: {names}")
    sizes = [s for _, s in axes]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {axes}")
    known = math.prod(s for s in sizes if s != -1)
    if any(s == 0 or s < -1 for s in sizes) or len(devices) % known:
        raise ValueError(f"mesh {axes} does not fit {len(devices)} devices")
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh {axes} has {math.prod(sizes)} slots for {len(devices)} devices")
    grid = np.array(devices, dtype=object).reshape(sizes)
    return Mesh(grid, tuple(names), axis_types=(AxisType.Auto,) * len(names))


def data_axes(mesh: Mesh | jax.sharding.AbstractMesh) -> tuple[str, ...]:
    """The mesh axes the batch is split over, in mesh order."""
    return tuple(a for a in mesh.axis_names if a in DATA_AXES)


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in data_axes(mesh))


def batch_spec(mesh) -> P:
    axes = data_axes(mesh)
    return P(axes) if axes else P()


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over all data-parallel axes, the rest replicated."""
    return NamedSharding(mesh, batch_spec(mesh))


def shard_batch(per_process_batch, mesh: Mesh):
    """Per-process numpy batch (pytree) -> global jax arrays sharded by `batch_sharding`.

    Each process passes its own slice (global_batch // process_count rows).
    """
    sharding = batch_sharding(mesh)
    n_shards = data_parallel_size(mesh)

    def one(path, x):
        x = np.asarray(x)
        global_rows = x.shape[0] * jax.process_count() if x.ndim else 0
        if x.ndim == 0 or global_rows % n_shards:
            raise ValueError(
                f"batch entry {jax.tree_util.keystr(path)} with shape {x.shape} cannot be split "
                f"over {n_shards} data-parallel devices (global batch {global_rows})"
            )
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map_with_path(one, per_process_batch)


def path_str(path) -> str:
    """jax key path -> 'a/b/0/c' (dict keys, attribute names and sequence indices)."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _auto_spec(shape: Sequence[int], fsdp_size: int) -> P:
    """Split the largest dimension divisible by the fsdp size (ties: the last one)."""
    best = None
    for i, d in enumerate(shape):
        if d % fsdp_size == 0 and (best is None or d >= shape[best]):
            best = i
    if best is None:
        return P()
    spec = [None] * len(shape)
    spec[best] = FSDP_AXIS
    return P(*spec)


def fsdp_spec(
    path: str,
    shape: Sequence[int],
    fsdp_size: int,
    rules: Sequence[tuple[str, P | str]] = FSDP_RULES,
    min_size: int = DEFAULT_FSDP_MIN_SIZE,
) -> P:
    """PartitionSpec for one parameter under FSDP (see FSDP_RULES)."""
    if math.prod(shape) < min_size:
        return P()
    for pattern, spec in rules:
        if re.search(pattern, path):
            return _auto_spec(shape, fsdp_size) if spec == FSDP_AUTO else spec
    return P()


def param_shardings(
    abstract_params,
    mesh: Mesh,
    strategy: str = "replicate",
    *,
    rules: Sequence[tuple[str, P | str]] = FSDP_RULES,
    min_size: int = DEFAULT_FSDP_MIN_SIZE,
):
    """Pytree of NamedShardings matching `abstract_params` (arrays or ShapeDtypeStructs).

    Works for any state pytree (params, batch_stats, optimizer state): paths are matched as
    strings, so rules apply to an Adam moment like to the parameter it tracks.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sharding strategy {strategy!r}; known: {STRATEGIES}")
    if strategy == "fsdp" and FSDP_AXIS not in mesh.axis_names:
        raise ValueError(
            f"strategy 'fsdp' needs a mesh axis named 'fsdp'; mesh has {mesh.axis_names}"
        )
    fsdp_size = mesh.shape[FSDP_AXIS] if strategy == "fsdp" else 1

    def one(path, x):
        shape = tuple(np.shape(x))
        if strategy == "replicate" or fsdp_size == 1:
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, fsdp_spec(path_str(path), shape, fsdp_size, rules, min_size))

    return jax.tree_util.tree_map_with_path(one, abstract_params)


def constrain_batch(x: jax.Array) -> jax.Array:
    """Annotate an activation as batch-sharded when a mesh is set (`jax.set_mesh`); else no-op.

    Pins the layout at tower boundaries so that data-parallel and FSDP layouts compile to the
    same data-parallel activations whatever the parameter layout suggests to the partitioner.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not data_axes(mesh):
        return x
    n = math.prod(mesh.shape[a] for a in data_axes(mesh))
    if x.shape[0] % n:
        return x  # e.g. a batch-1 init; leave the partitioner free rather than fail
    return jax.lax.with_sharding_constraint(x, batch_spec(mesh))
