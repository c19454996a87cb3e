"""The train state of a run: its optimizer, its layout on the mesh, and the state itself, made
fresh or restored.

- `make_optimizer(run)`: optax's transformation and schedule; finetune.mode lp / lpft freeze the
  image side for the run / its first frozen_steps (`janus.finetune.optimizer_plan`).
- `layout(model, opt, run, mesh)`: the deterministic init function, the state's shapes and the
  shardings of every array (`janus.sharding.param_shardings`).
- `create(...)`: a fresh state, initialised straight into its shardings; then the parameters of
  checkpoint.init_from (`init_from`, path filters), or a CLIP fine-tuning start (`start_finetune`),
  with the optimizer state initialised again for them.
- `restore(...)`: the state and the input iterator's position of the newest checkpoint that
  restores (a damaged newer one is moved aside).

The state is a plain dict pytree (`janus.train_step`). `run` is the `ResolvedRun`; the config
functions read `run.config`, the config's fields as plain JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shutil
import sys
from collections.abc import Callable, Mapping

import jax
import numpy as np
from absl import logging

from janus import checkpoint as ckpt_lib
from janus import finetune as finetune_lib
from janus import layer_decay as layer_decay_lib
from janus import metric_writer as mw
from janus import optim
from janus import train_step as step_lib
from janus.run_records import RunRefused


@dataclasses.dataclass(frozen=True)
class Optimizer:
    tx: object  # optax.GradientTransformation
    schedule: Callable  # step -> learning rate
    freeze: str  # optimizer.freeze (with the linear probe's image side)
    frozen_steps: int  # LP-FT: the first steps train the head only


def make_optimizer(run) -> Optimizer:
    total = run.durations.total_steps
    opt, frozen_steps = finetune_lib.optimizer_plan(run.config, total)
    tx, schedule = optim.make_optimizer(
        opt,
        total,
        run.durations.warmup_steps,
        frozen_steps=frozen_steps,
        frozen_lr=run.config["finetune"]["lp_lr"] if frozen_steps else 0.0,
        model=run.config["model"]["name"],
    )
    return Optimizer(tx, schedule, opt["freeze"], frozen_steps)


@dataclasses.dataclass(frozen=True)
class Layout:
    init_fn: Callable[[], dict]  # () -> a fresh state (jit it with out_shardings=shardings)
    abstract: dict  # the state's shapes and dtypes
    shardings: dict  # the state's NamedShardings


def layout(model, opt: Optimizer, run, mesh) -> Layout:
    from janus import sharding as sharding_lib

    init_fn = step_lib.make_init_fn(model, opt.tx, run.config)
    abstract = jax.eval_shape(init_fn)
    layer_decay = run.config["optimizer"]["layer_decay"]
    if layer_decay != 1 and jax.process_index() == 0:
        mw.say(layer_decay_lib.describe(abstract["params"], layer_decay))
    return Layout(
        init_fn, abstract, sharding_lib.param_shardings(abstract, mesh, run.config["sharding"])
    )


def create(run, lay: Layout, opt: Optimizer, mesh, workdir: str) -> dict:
    """A fresh state at step 0 (see the module docstring)."""
    config = run.config
    with jax.set_mesh(mesh):
        state = jax.jit(lay.init_fn, out_shardings=lay.shardings)()
    if finetune_lib.is_finetune(config):
        state = start_finetune(state, config, lay.shardings, workdir, run.record())
    elif config["checkpoint"]["init_from"]:
        state, _ = init_from(state, config, lay.shardings)
    if config["checkpoint"]["init_from"]:
        state["opt_state"] = jax.jit(opt.tx.init, out_shardings=lay.shardings["opt_state"])(
            state["params"]
        )
    return state


def restore(
    ckpt: ckpt_lib.Checkpointer,
    lay: Layout,
    data_iter,
    *,
    check: Callable[[int], object] = lambda step: None,
) -> Restored:
    """The state of the newest checkpoint that restores, in its shardings, and `data_iter` moved
    to where that step left the input.

    Steps are tried newest first: `check(step)` (the resume check of `janus.run_records`; its
    refusal, a `ConfigError`, ends the run as it is), then the restore. A step that fails (a
    truncated or missing file, a torn metadata file, a missing item) is named in one line; once
    an older step has restored, the newer failed ones are moved aside (`<step>.damaged`,
    `Checkpointer.move_aside`) so that the run saves those steps again. When none restores,
    nothing is moved and `NoGoodCheckpoint` names each step with its error."""
    from janus import config as config_lib

    abstract = step_lib.restore_abstract(lay.abstract, lay.shardings)
    failed: dict[int, str] = {}
    say = mw.say if jax.process_index() == 0 else (lambda *_: None)
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            checked = check(step)
            with _quiet_unraisable():
                state = ckpt.restore(step, abstract, data_iter=data_iter)
        except config_lib.ConfigError:
            raise
        except Exception as e:  # whatever a damaged checkpoint raises: orbax, TensorStore, OS
            failed[step] = ckpt_lib.one_line(e)
            say(f"checkpoint {ckpt.directory}/{step} does not restore: {failed[step]}")
            continue
        moved = {s: ckpt.move_aside(s) for s in failed}
        for s, path in moved.items():
            say(f"moved the damaged checkpoint {ckpt.directory}/{s} aside to {path}")
        say(f"resuming from {ckpt.directory}/{step}")
        return Restored(state, step, checked, {s: (moved[s], failed[s]) for s in failed})
    raise NoGoodCheckpoint(
        f"no checkpoint in {ckpt.directory} restores (steps {', '.join(map(str, failed))}, each "
        "named above with its error); nothing was moved: move the damaged steps away to resume "
        "from an earlier one, or use a new --workdir"
    )


class NoGoodCheckpoint(RunRefused):
    """Every checkpoint of a resume fails to restore (janus.main: one line, exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Restored:
    state: dict
    step: int  # the checkpoint restored
    checked: object  # what `check(step)` returned for it
    damaged: dict  # {newer step that failed: (the path it was moved to, its one-line error)}


@contextlib.contextmanager
def _quiet_unraisable():
    """orbax's reads of a damaged checkpoint leave hundreds of coroutines whose errors Python
    reports as unraisable (each with its TensorStore spec) once collected; the restore's own
    exception says it once. Collected here, before the default report is back."""
    previous, dropped = sys.unraisablehook, []
    sys.unraisablehook = dropped.append
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = previous
        if dropped:
            logging.info("restore: %d unraisable errors of its reads dropped", len(dropped))


def init_from(state, config, shardings, loaded=None):
    """Replaces the parameters (and BatchNorm statistics) selected by
    checkpoint.init_include/exclude by those of checkpoint.init_from (or of `loaded`, its variables
    read already), in their shardings. The caller re-initialises the optimizer state.
    `config`: the ConfigDict or a ResolvedRun's config. -> (state, paths taken)."""
    c = config["checkpoint"]
    if loaded is None:
        loaded = ckpt_lib.load_params_for_init(c["init_from"])
    fresh = {k: state[k] for k in ("params", "batch_stats") if k in state}
    merged, taken = ckpt_lib.merge_params(fresh, loaded, c["init_include"], c["init_exclude"])

    for k in merged:
        state[k] = jax.tree.map(_place, merged[k], fresh[k], shardings[k])
    if jax.process_index() == 0:
        mw.say(f"init_from {c['init_from']}: took {len(taken)} arrays")
    return state, taken


def _place(new, old, sharding):
    """A host array as a global jax array in `sharding` (`old` itself when unchanged)."""
    if new is old:
        return old
    new = np.asarray(new)
    return jax.make_array_from_callback(new.shape, sharding, lambda idx: new[idx])


def start_finetune(state, config, shardings, workdir: str, record: Mapping):
    """Fine-tuning a CLIP (janus.finetune): the image side from checkpoint.init_from (all of it),
    the zero-shot head, and this starting model saved as the WiSE-FT zero-shot endpoint
    <workdir>/zeroshot/ (with `record`, the run's config). -> state."""
    clip = finetune_lib.load_clip(config)
    state, taken = init_from(state, config, shardings, loaded=clip[1])
    variables = {k: state[k] for k in ("params", "batch_stats") if k in state}
    finetune_lib.check_image_side_taken(config, variables, taken)
    head = finetune_lib.zeroshot_head(config, clip, state["params"]["head"]["kernel"].shape[-1])
    variables["params"] = state["params"] = {
        **state["params"],
        "head": jax.tree.map(_place, head, state["params"]["head"], shardings["params"]["head"]),
    }
    endpoint = finetune_lib.zeroshot_endpoint(workdir)
    if jax.process_index() == 0 and os.path.isdir(endpoint):
        shutil.rmtree(endpoint)  # a start that died before its first checkpoint: redo it
    _sync_processes("zeroshot endpoint removed")
    ckpt_lib.save_for_inference(endpoint, 0, record, variables)
    if jax.process_index() == 0:
        mw.say(f"zero-shot head of {config['checkpoint']['init_from']}; start saved to {endpoint}")
    return state


def _sync_processes(name: str) -> None:
    """Every process waits here for the others (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
