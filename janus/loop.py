"""The training loop: the jitted step, then its periodic actions, until the run ends or stops.

`train` compiles the step once (printing the setup+compile line) and runs it; after each step, in
this order:
- the log window (`janus.metric_window`) is written (metrics.jsonl, TensorBoard, console) every
  log.every_steps, at the last step and when stopping early; the first step of this process (also
  after a resume) prints its progress line on the console only, so a slow run shows signs of life
  at once while the files keep their rows;
- the NaN guard checks the window at every log step, every checkpoint step and the last step (not
  every step: that would sync the host each step), before anything is saved, so the last good
  checkpoint stays the latest one;
- the eval hooks that are due run on the state's variables (and at the last step);
- an orbax checkpoint is saved every checkpoint.every_steps, at the last step and when stopping,
  with the input iterator's state: the one after the last batch trained on, so batches the
  devices prefetched are read again after a resume;
- a signal (`StopFlag`: SIGTERM, a preemption; the first Ctrl-C) or stop_after_steps stops the
  run early, saved; a second Ctrl-C ends the process at once, saving nothing.

`closing` releases what a run holds on every exit path (`close_all`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import jax
import numpy as np
from absl import logging

from janus import display, exit_codes
from janus import metric_writer as mw
from janus import train_step as step_lib
from janus.metric_window import MetricWindow

STOP_SYNC_STEPS = 10  # multi-process runs agree on a stop signal every this many steps
CLEANUP_TIMEOUT_S = 300  # error path: a stuck clean-up (e.g. a checkpoint write) ends the process
# janus.main's exit status after a Ctrl-C (SIGINT), saved or not: 128 + SIGINT, as shells expect of
# a program interrupted by the user (a script's loop over runs stops); SIGTERM (a preemption that
# was saved) exits 0.
INTERRUPTED_EXIT = exit_codes.INTERRUPTED  # 128 + SIGINT


class StopFlag:
    """Set by `SIGNALS` (SIGTERM: preemption; SIGINT: the first Ctrl-C); the loop asks
    `is_set(step)` after every step and then saves and returns. A second SIGINT ends the process
    at once with INTERRUPTED_EXIT (like a kill: the last complete checkpoint stays the latest)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.event = threading.Event()
        self.reason = ""  # the signal's name, once set
        self._previous: dict = {}

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        # os.write, not print: a handler that prints while the main thread prints can fail.
        if signum == signal.SIGINT and self.reason == "SIGINT":
            os.write(2, b"second Ctrl-C: exiting at once, nothing more saved\n")
            os._exit(INTERRUPTED_EXIT)
        self.reason = signal.Signals(signum).name
        os.write(
            2,
            f"{self.reason}: saving a checkpoint at the end of this step, then exiting"
            f"{' (Ctrl-C again: at once)' if signum == signal.SIGINT else ''}\n".encode(),
        )
        self.event.set()

    def uninstall(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}

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


@dataclasses.dataclass
class TrainResult:
    step: int
    state: dict
    metrics: dict  # the last logged scalars
    stopped_early: bool  # a stop signal or stop_after_steps
    stop_reason: str = ""  # the signal that stopped it early ("SIGTERM", "SIGINT"), if one did


def _hook_period(name, hook, evals: Mapping) -> int:
    every = getattr(hook, "every_steps", None)
    if every is None and name is not None and name in evals:
        every = evals[name]["every_steps"]
    if not every:
        raise ValueError(f"eval hook {name or hook!r} has no every_steps")
    return int(every)


def normalise_hooks(hooks, evals: Mapping) -> list[tuple[str, int, Callable]]:
    """hooks: {name: fn}, [fn with .every_steps], or [(name, every_steps, fn)]; a hook without
    every_steps takes the one of config.evals[name] (`evals`)."""
    if not hooks:
        return []
    if isinstance(hooks, Mapping):
        return [(n, _hook_period(n, h, evals), h) for n, h in hooks.items()]
    out = []
    for h in hooks:
        if isinstance(h, tuple):
            out.append(h)
        else:
            name = getattr(h, "name", getattr(h, "__name__", "eval"))
            out.append((name, _hook_period(name, h, evals), h))
    return out


def _run_hooks(hooks, step: int, state, *, last: bool, writer) -> None:
    for name, every, hook in hooks:
        if step % every == 0 or last:
            variables = {"params": state["params"]}
            if "batch_stats" in state:
                variables["batch_stats"] = state["batch_stats"]
            out = hook(step, variables) or {}
            writer.write_scalars(step, {f"eval/{name}/{k}": v for k, v in out.items()})
            writer.flush()


def make_step(run, model, opt) -> Callable:
    """The run's train step (`janus.train_step.make_train_step`) of `model` and `opt`
    (`janus.train_state.Optimizer`)."""
    from janus.data.input.preprocess import build_pp
    from janus.mixing import Mixing

    c = run.config
    return step_lib.make_train_step(
        model,
        opt.tx,
        opt.schedule,
        loss=c["loss"],
        seed=c["seed"],
        class_mask=step_lib.class_mask_for(c),
        label_smoothing=c["label_smoothing"],
        grad_accum_steps=c["optimizer"]["grad_accum_steps"],
        contrastive_accum=c["optimizer"]["contrastive_accum"],
        freeze=opt.freeze,
        frozen_steps=opt.frozen_steps,
        # The normalisation of input.pp, which the step applies on the device.
        pixel_scaling=build_pp(c["input"]["pp"]).scaling,
        mixing=Mixing.from_config(c),
    )


def train(
    run,
    model,
    opt,
    state,
    *,
    start: int,
    mesh,
    shardings,
    data_iter,
    hooks,
    ckpt,
    writer: mw.MetricWriter,
    stop: StopFlag,
    t_setup: float,
) -> TrainResult:
    """Trains `state` (at step `start`) with the step of `model` and `opt` (`make_step`) on the
    batches of `data_iter` up to the run's total steps, or until it stops early. `run`: the
    ResolvedRun. The last checkpoint is complete when this returns."""
    total = run.durations.total_steps
    if start >= total:
        mw.say(f"already trained: step {start} >= total_steps {total}")
        return TrainResult(start, state, {}, False)
    pid = jax.process_index()
    batch = next(data_iter)
    step_fn = make_step(run, model, opt)
    compiled, flops = step_lib.compile_train_step(step_fn, state, batch, shardings, mesh)
    n_dev = jax.device_count()
    if pid == 0:
        mw.say(
            f"setup+compile {time.time() - t_setup:.1f}s; steps {start}->{total}; {n_dev} "
            f"devices, mesh {dict(mesh.shape)}; {display.flops(flops)}/step/device"
        )
    if pid == 0 and step_fn.accum_note:  # how a contrastive loss accumulates
        mw.say(step_fn.accum_note)
    if pid == 0 and step_fn.mix_note:  # mixup / CutMix on
        mw.say(step_fn.mix_note)
    console = mw.ConsoleWriter(total) if pid == 0 else mw.MetricWriter()
    record = run.record()  # the config each checkpoint stores
    save_every = run.config["checkpoint"]["every_steps"]
    stop_at = run.config["stop_after_steps"]
    window = MetricWindow(run, flops=flops, num_devices=n_dev)
    step, logged = start, {}
    while True:
        with jax.set_mesh(mesh):
            state, metrics = compiled(state, batch)
        step += 1
        window.add(metrics)
        last = step >= total
        preempted = stop.is_set(step)
        early = preempted or (stop_at is not None and step >= stop_at)
        is_log = window.due(step) or last or early
        is_ckpt = step % save_every == 0 or last or early
        if is_log or is_ckpt:
            window.check_finite(step)
        scalars = window.flush(step) if is_log else None
        # step_time_s measures training only (not logs, evals or a save's device-to-host copy).
        with window.paused():
            if scalars is not None:
                writer.write_scalars(step, scalars)
                writer.flush()
                logged = scalars
            elif step == start + 1:  # a first sign of life; the files keep their log steps
                console.write_scalars(step, window.peek(step))
            _run_hooks(hooks, step, state, last=last, writer=writer)
            if is_ckpt:
                ckpt.save(step, state, data_iter=data_iter, config=record)
        if last or early:
            break
        with window.waiting():
            batch = next(data_iter)  # on the devices already; the next one starts moving
    ckpt.wait()  # the final checkpoint is complete before anything says so
    if preempted and not last and pid == 0:
        mw.say(f"stopped by {stop.reason} at step {step} (checkpoint saved)")
    reason = stop.reason if preempted and not last else ""
    return TrainResult(step, state, logged, early and not last, reason)


@contextlib.contextmanager
def closing(stop: StopFlag, ckpt, writer, data_iter) -> Iterator[None]:
    """`close_all` when the block ends, also by an exception (then with its watchdog)."""
    ok = False
    try:
        yield
        ok = True
    finally:
        close_all(stop, ckpt, writer, data_iter, error=not ok)


def close_all(stop: StopFlag, ckpt, writer, data_iter, *, error: bool) -> None:
    """Releases what the run holds: the signal handlers, the checkpoint manager (waiting for an
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
