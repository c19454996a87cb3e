"""The log window: the step metrics since the last log step, and the progress line made of them.

`MetricWindow.add(metrics)` after every step keeps the step's metrics on the device; `due(step)`
says whether log.every_steps logs this step; `flush(step)` fetches the window in one transfer
and returns the logged scalars (metrics.jsonl, TensorBoard and the console line; their keys are a
contract), starting the next window; `peek(step)` returns the same scalars and keeps the window.

The scalars: the per-metric means over the window (clu's `Average`; `learning_rate` is the last
step's), step_time_s, images_per_s_per_device, epoch, eta_s, mfu (XLA's FLOPs over the device's
dense bf16 peak where known, else None) and data_wait_fraction (the share of the window's time the
loop was blocked waiting for the input pipeline's next batch; near 0 when the input keeps up).
Time spent `paused()` (logs, evaluations, a save's device-to-host copy) is not step time.

NaN guard: `check_finite(step)` raises `NonFiniteLossError` naming the step when the window's mean
loss, grad or parameter norm is not finite.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping

import jax
import numpy as np
from clu import metrics as clu_metrics

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


def peak_flops_per_device(device_kind: str) -> float | None:
    for key, flops in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return flops
    return None


class NonFiniteLossError(FloatingPointError):
    """The loss (or a norm) became NaN/inf; the message names the step."""


def window_means(host_window: list[Mapping]) -> dict[str, float]:
    """Per-metric mean over a log window's step metrics (clu Average over the stacked steps)."""
    return {
        k: float(
            clu_metrics.Average.from_model_output(np.stack([m[k] for m in host_window])).compute()
        )
        for k in host_window[0]
    }


class MetricWindow:
    """See the module docstring. `run`: the ResolvedRun; `flops`: per step and device, or None."""

    def __init__(self, run, *, flops: float | None, num_devices: int):
        self.every_steps = int(run.config["log"]["every_steps"])
        self.batch_size = int(run.config["input"]["batch_size"])
        self.total_steps = run.durations.total_steps
        self.steps_per_epoch = run.durations.steps_per_epoch
        self.flops, self.num_devices = flops, num_devices
        self.peak = peak_flops_per_device(run.device_kind)
        self._run_start, self._run_steps = time.time(), 0  # for the ETA: pauses included
        self.last_finite: tuple[int, float] | None = None  # (step, loss) of the last good check
        self._restart()

    def _restart(self) -> None:
        self._metrics: list = []  # step metrics on the device (on the host once fetched)
        self._means: dict[str, float] | None = None
        self._start, self._wait = time.time(), 0.0

    def add(self, metrics: Mapping) -> None:
        self._metrics.append(metrics)
        self._means = None

    def due(self, step: int) -> bool:
        return step % self.every_steps == 0

    def means(self) -> dict[str, float]:
        """The window's metric means (one host sync for the whole window, kept)."""
        if self._means is None:
            self._metrics = jax.device_get(self._metrics)
            self._means = window_means(self._metrics)
        return self._means

    def check_finite(self, step: int) -> None:
        bad = {
            k: v
            for k, v in self.means().items()
            if k in ("loss", "grad_norm", "param_norm") and not math.isfinite(v)
        }
        if bad:
            last = (
                f"last finite loss {self.last_finite[1]:.6g} at step {self.last_finite[0]}"
                if self.last_finite is not None
                else "no finite loss checked before it"
            )
            raise NonFiniteLossError(
                f"non-finite training values at step {step}: {bad}; {last}. Stopping without "
                "saving; the latest complete checkpoint is still the last good state (lower "
                "optimizer.lr, set optimizer.clip_norm, or check the data)."
            )
        if "loss" in self.means():
            self.last_finite = (step, self.means()["loss"])

    def peek(self, step: int) -> dict[str, object]:
        """The scalars of the window so far, which goes on."""
        scalars = dict(self.means())
        now = time.time()
        steps = len(self._metrics)
        dt = (now - self._start) / steps
        avg = (now - self._run_start) / (self._run_steps + steps)
        scalars["learning_rate"] = float(self._metrics[-1]["learning_rate"])  # this step's
        scalars["step_time_s"] = dt
        scalars["images_per_s_per_device"] = self.batch_size / dt / self.num_devices
        scalars["epoch"] = step / self.steps_per_epoch
        scalars["eta_s"] = (self.total_steps - step) * avg
        # None (unknown peak) is written as null.
        scalars["mfu"] = self.flops / dt / self.peak if (self.flops and self.peak) else None
        # Time the loop spent blocked on the input pipeline, over the window's time.
        scalars["data_wait_fraction"] = self._wait / max(now - self._start, 1e-9)
        return scalars

    def flush(self, step: int) -> dict[str, object]:
        """The window's scalars; the next window starts now."""
        scalars = self.peek(step)
        self._run_steps += len(self._metrics)
        self._restart()
        return scalars

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time that is not training (logs, evaluations, saves): left out of step_time_s."""
        t = time.time()
        try:
            yield
        finally:
            self._start += time.time() - t

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Time blocked on the input pipeline (data_wait_fraction)."""
        t = time.time()
        try:
            yield
        finally:
            self._wait += time.time() - t
