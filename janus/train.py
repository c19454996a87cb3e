"""The training loop: data, state, the jitted step, logs, evaluation hooks and checkpoints.

- Metrics averaged over each log window with clu's `Average` (the step outputs stay on device
  until a log step fetches the window in one transfer), written by process 0 (metrics.jsonl,
  TensorBoard, console): loss, accuracy or i2t/t2i accuracy, learning rate, grad/param norms,
  step time, images/s per device, epoch, ETA, MFU (XLA's FLOPs over the device's dense bf16 peak
  where known, else null), data_wait_fraction (the share of the window's time the loop was blocked
  waiting for the input pipeline's next batch; near 0 when the input keeps up).
- Input: uint8 batches, normalised inside the jitted step; `PREFETCH_BATCHES` batches are put on the
  devices ahead of the step (`janus.data.input.prefetch`), and the checkpointed iterator state is
  the one after the last batch trained on, so prefetched batches are re-read after a resume.
- In-loop eval hooks every N steps and at the end; orbax checkpoints every N steps and at the end
  with the grain iterator state; resume from the latest complete checkpoint; SIGTERM saves and
  returns (exit 0); a finished run writes <workdir>/DONE and the pipeline's skip report into
  data_manifest.json.
- Run safety (README "Run safety"): the workdir is locked for the run (`janus.workdir`); a resume
  whose config changes the experiment is refused (`RunRefused`, exit 2) unless
  `allow_changes` names the fields; every start/resume is a row of history.jsonl; config.json is
  written only at the start; metrics.jsonl, TensorBoard (purge_step) and eval results drop the
  steps past the restored checkpoint.
- NaN guard: the loss, grad and parameter norms are checked on the host at every log step, every
  checkpoint step and the last step (not every step: that would sync the host each step). A
  non-finite value raises `NonFiniteLossError` naming the step, before anything is saved, so the
  last good checkpoint stays the latest one. Every exit path closes the checkpoint manager (waiting
  for an in-flight save), the writers and the input iterator (`_close_all`).
"""

from __future__ import annotations

import dataclasses
import faulthandler
import functools
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping

import jax
import numpy as np
from absl import logging
from clu import metrics as clu_metrics

from janus import checkpoint as ckpt_lib
from janus import config as config_lib
from janus import finetune as finetune_lib
from janus import metric_writer as mw
from janus import optim
from janus import train_step as step_lib
from janus.fileio import atomic_write

# Peak dense bf16 FLOP/s per device by jax device_kind substring (vendor spec sheets); unknown
# kinds (CPU) give MFU null. Checked in order: the first substring contained in device_kind wins.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),  # v5p reports "TPU v5"
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
    ("TPU v4", 275e12),
    ("H200", 989e12),
    ("H100", 989e12),  # SXM dense bf16
    ("A100", 312e12),
)


PREFETCH_BATCHES = 2  # batches put on the devices ahead of the step (one runs, one waits)
DONE_MARKER = "DONE"  # <workdir>/DONE: written when training finished (janus.evaluate --watch)
STOP_SYNC_STEPS = 10  # multi-process runs agree on a SIGTERM every this many steps
CLEANUP_TIMEOUT_S = 300  # error path: a stuck clean-up (e.g. a checkpoint write) ends the process


class NonFiniteLossError(FloatingPointError):
    """The loss (or a norm) became NaN/inf; the message names the step."""


class RunRefused(config_lib.ConfigError):
    """The run must not start: its workdir is in use by a live run, or a resume would change the
    experiment. janus.main prints the message without a traceback and exits with status 2."""


HISTORY_FILE = "history.jsonl"  # <workdir>/history.jsonl: one row per start/resume (see below)

# Config fields (fnmatch patterns on dotted paths) that may differ on resume without
# --allow_config_change: they change when things are logged, saved or evaluated, or how the same
# computation is laid out on the hardware, never the trained model. checkpoint.init_* are only
# read on a fresh start (a resume restores its own checkpoint).
FREE_ON_RESUME: tuple[str, ...] = (
    "log.*",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "checkpoint.keep_every",
    "checkpoint.async_save",
    "checkpoint.init_*",
    "evals.*.every_steps",
    "stop_after_steps",
    "data.prepare",
    "mesh",
    "sharding",
    "resolved.num_devices",
    "resolved.num_processes",
    "resolved.mesh.*",
    "resolved.device_kind",
)


def peak_flops_per_device(device_kind: str) -> float | None:
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return flops
    return None


# --------------------------------------------------------------------------------------------------
# Loop helpers


class StopFlag:
    """Set by SIGTERM (preemption); the loop asks `is_set(step)` after every step."""

    def __init__(self):
        self.event = threading.Event()
        self._previous = None

    def install(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and exiting")
        self.event.set()

    def uninstall(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def is_set(self, step: int) -> bool:
        """Single process: at every step. Several: all processes agree (or some would enter a
        collective save that the others skip), which syncs the hosts, so only every
        STOP_SYNC_STEPS steps; a preemption notice leaves far more time than that."""
        local = self.event.is_set()
        if jax.process_count() == 1:
            return local
        if step % STOP_SYNC_STEPS:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
        return bool(np.any(flags))


def _window_means(host_window: list[Mapping]) -> dict[str, float]:
    """Per-metric mean over a log window's step metrics (clu Average over the stacked steps)."""
    return {
        k: float(
            clu_metrics.Average.from_model_output(np.stack([m[k] for m in host_window])).compute()
        )
        for k in host_window[0]
    }


def _check_finite(step: int, values: Mapping[str, float]) -> None:
    bad = {
        k: v
        for k, v in values.items()
        if k in ("loss", "grad_norm", "param_norm") and not math.isfinite(v)
    }
    if bad:
        raise NonFiniteLossError(
            f"non-finite training values at step {step}: {bad}. Stopping without saving; the "
            "latest complete checkpoint is still the last good state (lower optimizer.lr, set "
            "optimizer.clip_norm, or check the data)."
        )


def _hook_period(name, hook, config) -> int:
    every = getattr(hook, "every_steps", None)
    if every is None and name is not None and name in config.evals:
        every = config.evals[name].every_steps
    if not every:
        raise ValueError(f"eval hook {name or hook!r} has no every_steps")
    return int(every)


def _normalise_hooks(hooks, config) -> list[tuple[str, int, Callable]]:
    """hooks: {name: fn}, [fn with .every_steps], or [(name, every_steps, fn)]."""
    if not hooks:
        return []
    if isinstance(hooks, Mapping):
        return [(n, _hook_period(n, h, config), h) for n, h in hooks.items()]
    out = []
    for h in hooks:
        if isinstance(h, tuple):
            out.append(h)
        else:
            name = getattr(h, "name", getattr(h, "__name__", "eval"))
            out.append((name, _hook_period(name, h, config), h))
    return out


def _write_json(path: str, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


@dataclasses.dataclass
class TrainResult:
    step: int
    state: dict
    metrics: dict  # the last logged scalars
    stopped_early: bool  # SIGTERM or stop_after_steps


# --------------------------------------------------------------------------------------------------
# The loop


def _open_data(config, selection, mesh):
    """-> (batches already on their way to the devices, the data manifest)."""
    from janus import sharding as sharding_lib
    from janus.data.input import pipeline
    from janus.data.input.prefetch import DevicePrefetch

    dirs_arg = _loader_dirs(config)
    tokenizer = None
    if config_lib.is_vl(config.loss):
        from janus.data.input.tokenizer import Tokenizer

        tokenizer = Tokenizer(context_length=config.input.context_length)
    batches, manifest = pipeline.train_loader(
        dirs_arg,
        global_batch_size=config.input.batch_size,
        pp=config.input.pp,
        seed=config.seed,
        label_set=config.label_set,
        budget=selection.manifest["budget"],
        class_balanced=config.data.class_balanced,
        captions=config_lib.is_vl(config.loss),
        tokenizer=tokenizer,
        multi_hot=config.data.multi_hot or config.loss in ("multilabel_ce", "sigmoid"),
        num_epochs=None,
        worker_count=config.data.worker_count,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        selection=selection,
    )
    put = functools.partial(sharding_lib.shard_batch, mesh=mesh)
    return DevicePrefetch(batches, put, depth=PREFETCH_BATCHES), manifest


def _loader_dirs(config):
    """data.train as the pipeline takes it: one dir, or [(dir, weight)] for a mixture."""
    dirs = config_lib.train_dirs(config)
    return dirs[0][0] if len(dirs) == 1 else dirs


def _pixel_scaling(config):
    """The normalisation of config.input.pp, which the train step applies on the device."""
    from janus.data.input.preprocess import build_pp

    return build_pp(config.input.pp).scaling


def _select_data(config):
    """The run's examples, selected once per start: the epoch length comes from it and the loader
    reads it (every process selects the same, from the manifests alone)."""
    from janus.data.input import pipeline

    captions = config_lib.is_vl(config.loss)

    def count(d, budget):
        return pipeline.num_train_examples(
            d, budget=budget, label_set=config.label_set, captions=captions
        )

    budget = config_lib.resolve_budget(config, count)
    return pipeline.select_examples(
        _loader_dirs(config),
        seed=int(config.seed) % 2**32,
        label_set=config.label_set,
        budget=budget,
        class_balanced=config.data.class_balanced,
        captions=captions,
    )


def _init_from(state, config, shardings, loaded=None):
    """Replaces the parameters (and BatchNorm statistics) selected by
    checkpoint.init_include/exclude by those of checkpoint.init_from (or of `loaded`, its variables
    read already), in their shardings. The caller re-initialises the optimizer state.
    -> (state, paths taken)."""
    if loaded is None:
        loaded = ckpt_lib.load_params_for_init(config.checkpoint.init_from)
    fresh = {k: state[k] for k in ("params", "batch_stats") if k in state}
    merged, taken = ckpt_lib.merge_params(
        fresh, loaded, config.checkpoint.init_include, config.checkpoint.init_exclude
    )

    for k in merged:
        state[k] = jax.tree.map(_place, merged[k], fresh[k], shardings[k])
    if jax.process_index() == 0:
        mw.say(f"init_from {config.checkpoint.init_from}: took {len(taken)} arrays")
    return state, taken


def _place(new, old, sharding):
    """A host array as a global jax array in `sharding` (`old` itself when unchanged)."""
    if new is old:
        return old
    new = np.asarray(new)
    return jax.make_array_from_callback(new.shape, sharding, lambda idx: new[idx])


def _start_finetune(state, config, shardings, workdir, resolved):
    """Fine-tuning a CLIP (janus.finetune): the image side from checkpoint.init_from (all of it),
    the zero-shot head, and this starting model saved as the WiSE-FT zero-shot endpoint
    <workdir>/zeroshot/. -> state."""
    clip = finetune_lib.load_clip(config)
    state, taken = _init_from(state, config, shardings, loaded=clip[1])
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
    ckpt_lib.save_for_inference(endpoint, 0, resolved, variables)
    if jax.process_index() == 0:
        mw.say(f"zero-shot head of {config.checkpoint.init_from}; start saved to {endpoint}")
    return state


def train_and_evaluate(
    config,
    workdir: str,
    *,
    make_hooks: Callable | None = None,
    writer: mw.MetricWriter | None = None,
    allow_changes: str | list[str] | tuple[str, ...] = (),
) -> TrainResult:
    """Trains `config` in `workdir`, resuming from its latest complete checkpoint.

    The workdir is locked for the run (`janus.workdir`; a second run raises `RunRefused`). A
    resume whose config differs from the restored checkpoint's in a field that changes the
    experiment raises `RunRefused` listing the fields, unless `allow_changes` names them
    (dotted fields, prefixes such as "optimizer", fnmatch patterns, or "all"); every start and
    resume is recorded in <workdir>/history.jsonl with its step and changes.

    make_hooks(config, model, mesh) -> eval hooks (see `_normalise_hooks`); main passes the
    evaluator's `make_inloop_evaluators` so this module never imports the evaluator.
    """
    os.makedirs(workdir, exist_ok=True)
    from janus import workdir as workdir_lib

    try:
        lock = workdir_lib.acquire_for_job(workdir, what="janus.main training", log=mw.say)
    except workdir_lib.WorkdirBusy as e:
        raise RunRefused(f"refusing to train: {e}") from None
    try:
        return _train_and_evaluate(
            config, workdir, make_hooks=make_hooks, writer=writer, allow_changes=allow_changes
        )
    finally:
        if lock is not None:
            lock.release()


def _train_and_evaluate(config, workdir, *, make_hooks, writer, allow_changes) -> TrainResult:
    from janus import sharding as sharding_lib

    t_setup = time.time()
    pid, nproc = jax.process_index(), jax.process_count()
    config_lib.validate(config, num_devices=jax.device_count(), num_processes=nproc)
    mesh = sharding_lib.make_mesh(config_lib.mesh_axes(config))
    selection = _select_data(config)
    run = config_lib.resolve_run(
        config,
        num_train_examples=selection.manifest["n_examples"],
        budget=selection.manifest["budget"],
        mesh=mesh.shape,
        num_processes=nproc,
        device_kind=jax.devices()[0].device_kind,
    )
    dur = run.durations
    total = dur.total_steps
    if (
        config.checkpoint.keep_every
        and config.checkpoint.keep_every % config.checkpoint.every_steps
    ):
        logging.warning("checkpoint.keep_every is not a multiple of checkpoint.every_steps")

    model = step_lib.build_model(config)
    # finetune.mode lp / lpft: the image side frozen for the run / its first frozen_steps.
    opt, frozen_steps = finetune_lib.optimizer_plan(config, total)
    tx, schedule = optim.make_optimizer(
        opt,
        total,
        dur.warmup_steps,
        frozen_steps=frozen_steps,
        frozen_lr=config.finetune.lp_lr if frozen_steps else 0.0,
    )
    init_fn = step_lib.make_init_fn(model, tx, config)
    abstract = jax.eval_shape(init_fn)
    shardings = sharding_lib.param_shardings(abstract, mesh, config.sharding)

    resolved = run.record()

    ckpt = ckpt_lib.Checkpointer(
        workdir,
        keep=config.checkpoint.keep,
        keep_every=config.checkpoint.keep_every,
        async_save=config.checkpoint.async_save,
    )
    start = ckpt.latest_step()
    resuming = start is not None
    changes = {}
    if resuming:
        # Before restoring: another model would only fail deep inside orbax.
        changes = _check_resume_config(workdir, ckpt, start, resolved, allow_changes)
    if pid == 0:
        _drop_rows_after(workdir, start or 0)  # metrics and eval rows the resume recomputes
        _record_history(workdir, "resume" if resuming else "start", start or 0, changes)
    data_iter, manifest = _open_data(config, selection, mesh)
    del selection  # the loader holds what it needs
    if resuming:
        if pid == 0:
            mw.say(f"resuming from {ckpt.directory}/{start}")
        state = ckpt.restore(
            start, step_lib.restore_abstract(abstract, shardings), data_iter=data_iter
        )
    else:
        start = 0
        with jax.set_mesh(mesh):
            state = jax.jit(init_fn, out_shardings=shardings)()
        if finetune_lib.is_finetune(config):
            state = _start_finetune(state, config, shardings, workdir, resolved)
        elif config.checkpoint.init_from:
            state, _ = _init_from(state, config, shardings)
        if config.checkpoint.init_from:
            state["opt_state"] = jax.jit(tx.init, out_shardings=shardings["opt_state"])(
                state["params"]
            )
    if pid == 0:
        if start < total and os.path.exists(os.path.join(workdir, DONE_MARKER)):
            os.remove(os.path.join(workdir, DONE_MARKER))  # continued with more steps: not done
        if not resuming:  # config.json keeps describing how the run started
            _write_json(os.path.join(workdir, "config.json"), resolved)
        _write_json(os.path.join(workdir, "data_manifest.json"), manifest)

    writer = writer or mw.create_default_writer(
        workdir,
        process_index=pid,
        total_steps=total,
        # TensorBoard: events past the restored step are hidden (one curve after a resume).
        purge_step=start + 1 if mw.has_event_files(workdir) else None,
    )
    if start == 0:
        writer.write_hparams(
            {k: v for k, v in _flat_config(resolved).items() if not k.startswith("evals")}
        )
    hooks = _normalise_hooks(make_hooks(config, model, mesh) if make_hooks else None, config)

    step_fn = step_lib.make_train_step(
        model,
        tx,
        schedule,
        loss=config.loss,
        seed=config.seed,
        class_mask=step_lib.class_mask_for(config),
        label_smoothing=config.label_smoothing,
        grad_accum_steps=config.optimizer.grad_accum_steps,
        freeze=opt["freeze"],
        frozen_steps=frozen_steps,
        pixel_scaling=_pixel_scaling(config),
    )
    stop = StopFlag().install()
    step = start
    last_scalars: dict = {}
    stopped = preempted = False
    ok = False
    try:
        if step >= total:
            mw.say(f"already trained: step {step} >= total_steps {total}")
        else:
            batch = next(data_iter)
            compiled, flops = step_lib.compile_train_step(step_fn, state, batch, shardings, mesh)
            n_dev = jax.device_count()
            peak = peak_flops_per_device(jax.devices()[0].device_kind)
            if pid == 0:
                mw.say(
                    f"setup+compile {time.time() - t_setup:.1f}s; steps {start}->{total}; {n_dev} "
                    f"devices, mesh {dict(mesh.shape)}; {flops} FLOPs/step/device"
                )
            window: list[dict] = []  # step metrics (on device) since the last log step
            window_start, window_steps, window_wait = time.time(), 0, 0.0
            run_start, run_steps = time.time(), 0
            stop_at = config.stop_after_steps
            while True:
                with jax.set_mesh(mesh):
                    state, metrics = compiled(state, batch)
                step += 1
                window_steps += 1
                window.append(metrics)
                last = step >= total
                preempted = stop.is_set(step)
                early = preempted or (stop_at is not None and step >= stop_at)
                is_log = step % config.log.every_steps == 0 or last or early
                is_ckpt = step % config.checkpoint.every_steps == 0 or last or early
                if is_log or is_ckpt:
                    host = jax.device_get(window)  # one host sync for the whole window
                    values = _window_means(host)
                    _check_finite(step, values)
                if is_log:
                    now = time.time()
                    dt = (now - window_start) / window_steps
                    run_steps += window_steps
                    avg = (now - run_start) / run_steps
                    scalars = dict(values)
                    scalars["learning_rate"] = float(host[-1]["learning_rate"])  # this step's
                    scalars["step_time_s"] = dt
                    scalars["images_per_s_per_device"] = config.input.batch_size / dt / n_dev
                    scalars["epoch"] = step / dur.steps_per_epoch
                    scalars["eta_s"] = (total - step) * avg
                    scalars["mfu"] = flops / dt / peak if (flops and peak) else None
                    # Time the loop spent blocked on the input pipeline, over the window's time.
                    scalars["data_wait_fraction"] = window_wait / max(now - window_start, 1e-9)
                    writer.write_scalars(step, scalars)  # mfu None (unknown peak) -> null
                    writer.flush()
                    last_scalars = scalars
                    window = []
                    window_start, window_steps, window_wait = time.time(), 0, 0.0
                t_pause = time.time()
                for name, every, hook in hooks:
                    if step % every == 0 or last:
                        variables = {"params": state["params"]}
                        if "batch_stats" in state:
                            variables["batch_stats"] = state["batch_stats"]
                        out = hook(step, variables) or {}
                        writer.write_scalars(step, {f"eval/{name}/{k}": v for k, v in out.items()})
                        writer.flush()
                if is_ckpt:
                    ckpt.save(step, state, data_iter=data_iter, config=resolved)
                # step_time_s measures training only (not evals or a save's device-to-host copy).
                window_start += time.time() - t_pause
                if last or early:
                    stopped = early and not last
                    break
                t_wait = time.time()
                batch = next(data_iter)  # on the devices already; the next one starts moving
                window_wait += time.time() - t_wait
        ckpt.wait()  # the final checkpoint is complete before anything says so
        if stopped and preempted and pid == 0:
            mw.say(f"stopped by SIGTERM at step {step} (checkpoint saved)")
        _finish_manifest(workdir, manifest, data_iter)
        if step >= total and pid == 0:
            # For `janus.evaluate --watch`: the run is over and its last checkpoint is complete.
            _write_json(os.path.join(workdir, DONE_MARKER), {"step": step, "time": time.time()})
        ok = True
        return TrainResult(step, state, last_scalars, stopped)
    finally:
        _close_all(stop, ckpt, writer, data_iter, error=not ok)


# --------------------------------------------------------------------------------------------------
# Resume: config drift, history, rows past the restored step


def config_changes(old: Mapping, new: Mapping) -> dict[str, tuple]:
    """{dotted field: (old, new)} for every leaf that differs ("<unset>" where one lacks it)."""
    a, b = _flat_config(old), _flat_config(new)
    missing = "<unset>"
    return {
        k: (a.get(k, missing), b.get(k, missing))
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    }


def _matches(field: str, patterns) -> bool:
    import fnmatch

    return any(
        p == "all" or field == p or field.startswith(p + ".") or fnmatch.fnmatchcase(field, p)
        for p in patterns
    )


def _patterns(allow) -> list[str]:
    if isinstance(allow, str):
        allow = allow.split(",")
    return [p.strip() for p in allow or () if p and p.strip()]


def _check_resume_config(workdir, ckpt, start, resolved, allow_changes) -> dict:
    """Compares the config of this resume with the one the restored checkpoint was trained
    with (its "config" item; else config.json). -> {field: (old, new)} of the accepted changes.
    Raises RunRefused listing the fields that change the experiment and were not allowed."""
    stored = ckpt_lib.read_config(ckpt.directory / str(start))
    source = f"checkpoint {start}"
    if not stored:
        try:
            with open(os.path.join(workdir, "config.json")) as f:
                stored, source = json.load(f), "config.json"
        except (OSError, ValueError):
            return {}
    changes = config_changes(stored, resolved)
    allowed = _patterns(allow_changes)
    refused = {
        k: v
        for k, v in changes.items()
        if not _matches(k, FREE_ON_RESUME) and not _matches(k, allowed)
    }
    if refused:
        width = max(len(k) for k in refused)
        was = f"was ({source})"
        old_w = max(len(was), *(len(json.dumps(o)) for o, _ in refused.values()))
        lines = [f"  {'field':<{width}}  {was:<{old_w}}  now"]
        lines += [
            f"  {k:<{width}}  {json.dumps(o):<{old_w}}  {json.dumps(n)}"
            for k, (o, n) in refused.items()
        ]
        raise RunRefused(
            f"refusing to resume {workdir} at step {start}: the config changes the experiment "
            f"in {len(refused)} field(s):\n" + "\n".join(lines) + "\n"
            "Use a new --workdir, or pass --allow_config_change="
            f"{','.join(refused)} to continue with the change (recorded in "
            f"{os.path.join(workdir, HISTORY_FILE)} with step {start})."
        )
    return changes


def _record_history(workdir: str, event: str, step: int, changes: Mapping) -> None:
    """Appends {"event": "start"|"resume", "step", "time", "host", "pid", "changes"} to
    <workdir>/history.jsonl (rewritten atomically: a crash never leaves half a line)."""
    import socket

    path = os.path.join(workdir, HISTORY_FILE)
    row = {
        "event": event,
        "step": int(step),
        "time": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()},
    }
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = "".join(line for line in f if line.endswith("\n"))
    atomic_write(path, old + json.dumps(row, default=str) + "\n")
    if changes and jax.process_index() == 0:
        mw.say(f"config changes from step {step} on (recorded in {path}): {sorted(changes)}")


def _drop_rows_after(workdir: str, step: int) -> None:
    """metrics.jsonl keeps its rows up to `step` (the restored checkpoint; rows of later steps
    are recomputed), rewritten atomically; likewise eval/<step>.json and results.csv rows."""
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            lines = f.readlines()
        keep = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # half a line from a killed run
            if isinstance(row, dict) and int(row.get("step", 0)) <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
        if len(keep) != len(lines) or any(not line.endswith("\n") for line in lines):
            atomic_write(path, "".join(keep))
            mw.say(f"metrics.jsonl: dropped {len(lines) - len(keep)} row(s) after step {step}")
    from janus.evaluate import results

    dropped = results.drop_results_after(workdir, step)
    if dropped:
        mw.say(f"eval: dropped the results of steps {dropped} (after step {step})")


def _close_all(stop, ckpt, writer, data_iter, *, error: bool) -> None:
    """Releases what the run holds: the SIGTERM handler, the checkpoint manager (waiting for an
    in-flight save, so the last good checkpoint is complete), the writers, the input iterator's
    threads/processes. Each step runs even if an earlier one fails. On the error path a watchdog
    dumps every thread's stack and ends the process if cleaning up takes more than
    CLEANUP_TIMEOUT_S (a stuck background thread must fail a job, never hang it)."""
    if error:
        faulthandler.dump_traceback_later(CLEANUP_TIMEOUT_S, exit=True)
    closers = (stop.uninstall, ckpt.close, writer.close, getattr(data_iter, "close", None))
    for close in closers:
        if close is None:
            continue
        try:
            close()
        except Exception:  # keep closing the rest; the original error is what matters
            logging.exception("while closing %s", close)
    if error:
        faulthandler.cancel_dump_traceback_later()


def _finish_manifest(workdir: str, manifest: dict, data_iter) -> None:
    """Adds the input pipeline's runtime skips (all processes, summed) to data_manifest.json."""
    reports = _gather_from_processes(_skip_report(data_iter))
    counts: dict[str, int] = {}
    first: dict[str, list] = {}
    for r in reports:
        for reason, n in r.get("counts", {}).items():
            counts[reason] = counts.get(reason, 0) + int(n)
        for reason, keys in r.get("first_keys", {}).items():
            first[reason] = (first.get(reason, []) + list(keys))[:5]
    if jax.process_index() == 0:
        manifest = dict(manifest, skipped_in_training={"counts": counts, "first_keys": first})
        _write_json(os.path.join(workdir, "data_manifest.json"), manifest)
        if counts:
            mw.say(f"input pipeline skipped {counts} (first keys: {first})")


def _skip_report(data_iter) -> dict:
    from janus.data.input import pipeline

    return pipeline.skip_report(data_iter) if hasattr(data_iter, "skip_report") else {}


def _sync_processes(name: str) -> None:
    """Every process waits here for the others (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _gather_from_processes(obj) -> list:
    """The JSON-able `obj` of every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    blob = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    size = int(np.max(multihost_utils.process_allgather(np.asarray(blob.size, np.int32))))
    padded = np.zeros(size, np.uint8)
    padded[: blob.size] = blob
    rows = multihost_utils.process_allgather(padded)  # JSON has no NUL bytes: strip the padding
    return [json.loads(bytes(row).rstrip(b"\0")) for row in np.asarray(rows)]


def _flat_config(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
