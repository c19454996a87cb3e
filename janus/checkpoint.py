"""Orbax checkpoints: `<workdir>/checkpoints/<step>/` with items "state", "data_iter", "config".

- "state": pytree {"step", "params", "batch_stats"?, "opt_state"?} (sharded arrays; every process
  writes its part). With optimizer.ema_decay > 0, opt_state["ema"] is the EMA of the parameters.
- "data_iter": the grain iterator state (per process), so a resumed run reads exactly the next
  batch.
- "config": the resolved config as JSON.

Saves are asynchronous (orbax writes into a temporary directory and renames it when complete), so a
crash while writing leaves the previous checkpoints intact and the half-written one is ignored:
`list_complete_steps` and the manager only see finalised steps.

A save that fails raises `SaveFailed` in one line naming the step, the directory and the error: a
checkpoints directory where no file can be made, or where orbax cannot make the step's temporary
directory, at the save itself; a failure in orbax's thread at the next save or wait. orbax makes
its directories in the calling thread (`create_directories_asynchronously=False`): made in its
thread, a refused mkdir leaves the item writers waiting minutes for a "directory created" signal
that never comes, and the run's next save waiting on them.

A replicated array (parameters and optimizer state under data parallelism) is written by its
replicas in parallel, each a slice, only where a slice holds at least `MIN_REPLICA_SLICE_BYTES`:
every slice is one device op dispatched from Python (about 1 ms each on the CPU), so for the many
small arrays of a model (biases, norms) slicing cost more than the transfer it spreads. orbax
slices every replicated array by default (it leaves GPUs out of replica-parallel saving altogether).

Public API (used by the trainer, the evaluator and janus.convert): `Checkpointer`, `SaveFailed`,
`one_line`, `load_for_inference` (its `ema=True`: the EMA of the parameters), `NoEma`,
`save_for_inference`, `list_complete_steps`, `read_config`,
`load_params_for_init`, `merge_params`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

CHECKPOINTS = "checkpoints"
# <workdir>/averaged/: janus.average's uniform averages of the last checkpoints, in the training
# layout (averaged/checkpoints/<last step averaged>/).
AVERAGED = "averaged"
# <workdir>/zeroshot/: a fine-tuning run's starting model (janus.finetune), in the training layout
# (checkpoints/0): the zero-shot end of the WiSE-FT interpolation (janus.evaluate --wise).
ZEROSHOT_ENDPOINT = "zeroshot"
# Measured: 8 host CPU devices, the mini model saved twice in a 4-step run: 9.4 s -> 6.3 s a run
# (3,570 slice ops fewer); docs/development.md, "CI time".
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _use_replica_parallel_for_large_slices_only() -> None:
    """Puts orbax's jax.Array handler, with the replica-parallel minimum above and otherwise as
    orbax registers it, in orbax's global registry (where `StandardSave` finds it; no public
    setter takes the minimum or registers without a warning per run)."""
    from orbax.checkpoint._src.metadata import array_metadata_store
    from orbax.checkpoint._src.serialization import type_handler_registry

    handler = ocp.type_handlers.ArrayHandler(
        array_metadata_store=array_metadata_store.Store(),
        min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
    )
    registry = type_handler_registry.GLOBAL_TYPE_HANDLER_REGISTRY
    registry.add(jax.Array, handler, override=True, ignore_warnings=True)


def _absolute(path: str | os.PathLike) -> epath.Path:
    """orbax needs absolute paths; cloud paths (gs://...) are left alone."""
    path = os.fspath(path)
    return epath.Path(path if "://" in path else os.path.abspath(path))


def checkpoints_dir(workdir: str | os.PathLike) -> epath.Path:
    return _absolute(workdir) / CHECKPOINTS


def _is_complete(path: epath.Path) -> bool:
    return (
        path.is_dir()
        and path.name.isdigit()
        and not ocp.step.is_tmp_checkpoint(path)
        and ocp.step.is_checkpoint_finalized(path)
        and (path / "state").is_dir()
    )


def list_complete_steps(workdir: str | os.PathLike) -> list[int]:
    """Steps of finished checkpoints under <workdir>/checkpoints (ignores ones being written)."""
    d = checkpoints_dir(workdir)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if _is_complete(p))


def _grain_args():
    import grain

    return grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore


def _is_grain_iter(it) -> bool:
    return it is not None and hasattr(it, "get_state") and hasattr(it, "set_state")


def one_line(e: BaseException, limit: int = 400) -> str:
    """An exception as one line: its type and the first line of its message, shortened. orbax's
    "error while reading array index ... See full TensorStore details" gives way to its cause,
    which names the file and what is wrong with it."""
    while "TensorStore details" in str(e) and (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    line = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class SaveFailed(OSError):
    """A checkpoint could not be written; the message is one line naming the directory and the OS
    error (janus.main prints it without a traceback; exit status 1)."""


class Checkpointer:
    """The training run's checkpoint manager: save every N steps and at the end, keep the last K
    plus every M-th step, restore the latest complete one."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        keep: int = 3,
        keep_every: int | None = None,
        async_save: bool = True,
    ):
        self.directory = checkpoints_dir(workdir)
        _use_replica_parallel_for_large_slices_only()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            keep_period=keep_every,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,  # leftovers of a crash mid-write
            save_interval_steps=1,  # the loop decides when to save
            # Directories made in the save call: a failure raises there (see the docstring).
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._in_flight: int | None = None  # the step of the save not yet known to be complete
        self._failed = False  # a SaveFailed was raised (close then only waits)

    def latest_step(self) -> int | None:
        self.manager.reload()
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, *, data_iter=None, config: Mapping | None = None) -> bool:
        """Starts saving checkpoint `step` (asynchronously unless async_save is off). A
        checkpoints directory where no file can be made raises `SaveFailed` here, naming it, and
        so does one that stops taking files between that probe and orbax's own mkdir."""
        from janus import workdir as workdir_lib

        self._settle()  # the previous save's failure, named (orbax would raise it in save)
        if error := workdir_lib.not_writable(self.directory):
            self._failed = True
            raise SaveFailed(f"checkpoint {step} not saved: {error}")
        items = {"state": ocp.args.StandardSave(state)}
        if _is_grain_iter(data_iter):
            save_cls, _ = _grain_args()
            items["data_iter"] = save_cls(data_iter)
        if config is not None:
            items["config"] = ocp.args.JsonSave(dict(config))
        try:
            started = self.manager.save(int(step), args=ocp.args.Composite(**items), force=True)
        except OSError as e:  # e.g. the step's temporary directory refused (made read-only now)
            self._failed = True
            raise SaveFailed(
                f"checkpoint {step} not saved in {self.directory}: {one_line(e)}"
            ) from e
        self._in_flight = int(step)
        return started

    def restore(self, step: int, abstract_state, *, data_iter=None):
        """Restores "state" into `abstract_state` (ShapeDtypeStructs with shardings) and, when the
        checkpoint has one, the grain iterator in place. -> state."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if _is_grain_iter(data_iter) and (self.directory / str(step) / "data_iter").exists():
            _, restore_cls = _grain_args()
            items["data_iter"] = restore_cls(data_iter)
        out = self.manager.restore(int(step), args=ocp.args.Composite(**items))
        return out["state"]

    def move_aside(self, step: int) -> str:
        """Renames checkpoint `step` to `<step>.damaged` (`.damaged.1`, ... if taken), out of the
        manager's sight, and re-reads the step list (orbax caches it). Process 0 renames; every
        process calls it. -> the new path."""
        src = self.directory / str(step)
        dst, n = self.directory / f"{step}.damaged", 0
        while dst.exists():
            n += 1
            dst = self.directory / f"{step}.damaged.{n}"
        if jax.process_index() == 0:
            src.rename(dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
        self.manager.reload()
        return str(dst)

    def _settle(self) -> None:
        """Waits for the save in flight; its failure (in orbax's thread: a rename refused, a full
        disk) raises `SaveFailed` naming the step, the directory and the error."""
        step, self._in_flight = self._in_flight, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            self._failed = True
            raise SaveFailed(
                f"checkpoint {step} not saved in {self.directory}: {one_line(e)}"
            ) from e

    def wait(self) -> None:
        self._settle()

    def close(self) -> None:
        """Waits for the save in flight, then closes the manager. A failure of that save raises
        `SaveFailed`, unless one was raised already (the run is ending over it)."""
        failed = self._failed
        try:
            self._settle()
        except SaveFailed:
            if not failed:
                raise
        finally:
            self.manager.close()


# --------------------------------------------------------------------------------------------------
# Inference / conversion


def weights_workdir(workdir: str | os.PathLike, weights: str) -> str:
    """Where the checkpoints of `weights` (janus.evaluate --params: params | ema | avg) live:
    the workdir, or its averaged/ for avg."""
    return os.path.join(workdir, AVERAGED) if weights == "avg" else os.fspath(workdir)


def _resolve_step_dir(path: str | os.PathLike) -> epath.Path:
    """Accepts <workdir>, <workdir>/checkpoints or <workdir>/checkpoints/<step>; -> the step dir."""
    p = _absolute(path)
    if (p / "state").is_dir():
        return p
    for base in (p / CHECKPOINTS, p):
        if base.is_dir():
            steps = sorted(int(c.name) for c in base.iterdir() if _is_complete(c))
            if steps:
                return base / str(steps[-1])
    raise FileNotFoundError(f"no complete checkpoint at {p}")


def _restore_numpy(item_dir: epath.Path, keys: tuple[str, ...] | None = None) -> dict:
    """Restores a saved pytree as host numpy arrays (works on any device topology)."""
    ckptr = ocp.PyTreeCheckpointer()
    meta = ckptr.metadata(item_dir)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    if keys is not None:
        tree = _select(tree, keys)
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
        tree,
        is_leaf=lambda x: not isinstance(x, Mapping | list | tuple),
    )
    return ckptr.restore(
        item_dir,
        args=ocp.args.PyTreeRestore(
            item=tree, restore_args=restore_args, partial_restore=keys is not None
        ),
    )


def _select(tree: Mapping, paths) -> dict:
    """The parts of a nested mapping named by 'a' or 'a/b' paths (one path per first key); a path
    the tree lacks is left out."""
    out = {}
    for path in paths:
        head, _, rest = path.partition("/")
        if isinstance(tree, Mapping) and head in tree:
            sub = _select(tree[head], (rest,)) if rest else tree[head]
            if sub or not rest:
                out[head] = sub
    return out


def _read_json_item(step_dir: epath.Path) -> dict:
    item = step_dir / "config"
    if not item.exists():
        return {}
    ckptr = ocp.Checkpointer(ocp.JsonCheckpointHandler())
    return dict(ckptr.restore(item, args=ocp.args.JsonRestore()))


def read_config(step_dir: str | os.PathLike) -> dict:
    """The resolved config saved with checkpoint `step_dir` ({} when it has none)."""
    return _read_json_item(_absolute(step_dir))


def load_for_inference(
    checkpoint_dir: str | os.PathLike, *, ema: bool = False
) -> tuple[dict, dict, int]:
    """-> (config dict, variables {"params", "batch_stats"?} as numpy, step).

    `checkpoint_dir` is a step dir, a checkpoints dir or a workdir (then the latest complete step).
    `ema`: the EMA of the parameters (optimizer.ema_decay, `janus.optim.with_ema`) in their place,
    with the checkpoint's BatchNorm statistics; a checkpoint without one raises `NoEma`.
    """
    from janus.optim import ema_params

    step_dir = _resolve_step_dir(checkpoint_dir)
    weights = "opt_state/ema" if ema else "params"
    state = _restore_numpy(step_dir / "state", keys=("step", weights, "batch_stats"))
    params = ema_params(state.get("opt_state")) if ema else state["params"]
    if params is None:
        raise NoEma(
            f"checkpoint {step_dir} holds no EMA of the parameters: train with "
            "--config.optimizer.ema_decay=0.9999 (say) to keep one"
        )
    variables = {"params": params}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    step = int(step_dir.name)  # the checkpoint's name (== state["step"] for training runs)
    return _read_json_item(step_dir), variables, step


class NoEma(ValueError):
    """`load_for_inference(ema=True)` of a checkpoint of a run without optimizer.ema_decay."""


def save_for_inference(
    workdir: str | os.PathLike, step: int, config: Mapping, variables: Mapping
) -> str:
    """Writes <workdir>/checkpoints/<step>/ in the training layout, without optimizer state.
    -> the step dir."""
    state = {"step": np.asarray(step, np.int32), "params": variables["params"]}
    if variables.get("batch_stats"):
        state["batch_stats"] = variables["batch_stats"]
    ck = Checkpointer(workdir, keep=1_000_000, async_save=False)
    ck.save(step, state, config=config)
    ck.close()
    return str(ck.directory / str(step))


# --------------------------------------------------------------------------------------------------
# Initialising from another checkpoint (fine-tuning, linear probes)


def load_params_for_init(path: str | os.PathLike) -> dict:
    """Variables {"params", "batch_stats"?} of the latest complete checkpoint at `path`."""
    _, variables, _ = load_for_inference(path)
    return variables


def _flat(tree, prefix=()):
    if isinstance(tree, Mapping):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, prefix + (str(k),)))
        return out
    return {"/".join(prefix): tree}


def flat_paths(tree) -> list[str]:
    """The 'a/b/c' paths of a nested mapping's leaves (as `merge_params` names them)."""
    return list(_flat(tree))


def merge_params(fresh: Mapping, loaded: Mapping, include: str = ".*", exclude: str = ""):
    """Takes from `loaded` every leaf whose path ('a/b/c') matches `include` and not `exclude`,
    the rest from `fresh`. Shapes must match. -> (merged tree, sorted list of paths taken)."""
    inc, exc = re.compile(include), re.compile(exclude) if exclude else None
    flat_loaded = _flat(loaded)
    taken = []

    def pick(path, leaf):
        from janus.optim import param_path

        p = param_path(path)
        if not inc.search(p) or (exc and exc.search(p)) or p not in flat_loaded:
            return leaf
        new = flat_loaded[p]
        if tuple(np.shape(new)) != tuple(np.shape(leaf)):
            raise ValueError(
                f"init_from: parameter {p!r} has shape {np.shape(new)} in the checkpoint but "
                f"{np.shape(leaf)} in the model; exclude it with checkpoint.init_exclude"
            )
        taken.append(p)
        # leaf.dtype, not np.asarray(leaf): a sharded jax leaf may not be addressable here.
        return np.asarray(new, dtype=getattr(leaf, "dtype", None))

    merged = jax.tree_util.tree_map_with_path(pick, dict(fresh))
    if not taken:
        raise ValueError(
            f"init_from: no parameter matched include={include!r} exclude={exclude!r}; "
            f"checkpoint paths start with {sorted(flat_loaded)[:5]}"
        )
    return merged, sorted(taken)
