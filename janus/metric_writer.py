"""Metric writers with clu's MetricWriter method names, without TensorFlow.

clu.metric_writers imports TensorFlow, so janus has its own: `JsonlWriter` (metrics.jsonl, one JSON
object per write: {"step", "time", **scalars}), `TensorBoardWriter` (events.out.tfevents.* via
tensorboardX), `ConsoleWriter` (a readable progress line on stdout) and `MultiWriter`.
`create_default_writer(workdir)` gives all three on process 0 (and W&B's, `janus.wandb_writer`,
when a project is given) and a no-op writer elsewhere, so only process 0 writes logs.

Methods (as clu): write_scalars(step, scalars), write_images(step, images),
write_texts(step, texts), write_histograms(step, arrays, num_buckets=None),
write_hparams(hparams), flush(), close().
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np

from janus import display


def _scalar(v):
    v = np.asarray(v)
    if v.size != 1:
        raise ValueError(f"not a scalar: shape {v.shape}")
    v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


class MetricWriter:
    """Base class: every method is a no-op (what processes other than 0 get)."""

    def write_scalars(self, step: int, scalars: Mapping[str, object]) -> None:
        pass

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        pass

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        pass

    def write_histograms(self, step: int, arrays: Mapping[str, np.ndarray], num_buckets=None):
        pass

    def write_hparams(self, hparams: Mapping[str, object]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.flush()


class JsonlWriter(MetricWriter):
    """Appends one JSON line per write_scalars call (non-finite floats: null / "inf")."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._f = open(self.path, "a")

    def write_scalars(self, step, scalars):
        row = {"step": int(step), "time": time.time()}
        row.update({k: _scalar(v) for k, v in scalars.items()})
        self._f.write(json.dumps(row) + "\n")

    def write_texts(self, step, texts):
        self._f.write(json.dumps({"step": int(step), "time": time.time(), **dict(texts)}) + "\n")

    # write_hparams: a no-op; every row of metrics.jsonl is a step (config.json has the config).

    def flush(self):
        self._f.flush()

    def close(self):
        if not self._f.closed:
            self._f.close()


def _import_summary_writer():
    """tensorboardX's SummaryWriter, imported without torch: tensorboardX imports torch whenever it
    is installed (README step 2 installs it), only to accept torch tensors, which janus never
    passes; that import cost every run 2.1 s of CPU on the 2-core VM. A torch imported before
    stays; one imported later (weight conversion) loads normally."""
    import sys

    if "tensorboardX.writer" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError while this holds
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class TensorBoardWriter(MetricWriter):
    """TensorBoard event files through tensorboardX (no TensorFlow)."""

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None):
        """purge_step (a resumed run: the restored step + 1): TensorBoard hides the events of
        earlier files at steps >= purge_step, so a resume shows one curve, not two overlapping."""
        SummaryWriter = _import_summary_writer()
        self._w = SummaryWriter(logdir=os.fspath(logdir), flush_secs=30, purge_step=purge_step)

    def write_scalars(self, step, scalars):
        for k, v in scalars.items():
            v = np.asarray(v)
            if v.size == 1 and np.issubdtype(v.dtype, np.number):
                self._w.add_scalar(k, float(v), global_step=int(step))

    def write_images(self, step, images):
        for k, v in images.items():
            v = np.asarray(v)
            # clu convention: [N, H, W, C] or [H, W, C].
            if v.ndim == 4:
                self._w.add_images(k, v, global_step=int(step), dataformats="NHWC")
            else:
                self._w.add_image(k, v, global_step=int(step), dataformats="HWC")

    def write_texts(self, step, texts):
        for k, v in texts.items():
            self._w.add_text(k, str(v), global_step=int(step))

    def write_histograms(self, step, arrays, num_buckets=None):
        for k, v in arrays.items():
            self._w.add_histogram(k, np.asarray(v), global_step=int(step), max_bins=num_buckets)

    def write_hparams(self, hparams):
        flat = {
            k: (v if isinstance(v, int | float | str | bool) else str(v))
            for k, v in hparams.items()
        }
        self._w.add_text("hparams", json.dumps(flat, indent=1, default=str))

    def flush(self):
        self._w.flush()

    def close(self):
        self._w.close()


class ConsoleWriter(MetricWriter):
    """One readable line per write: `[step 120/1000] loss=2.3011 lr=1.2e-04 ... eta=3m12s`."""

    def __init__(self, total_steps: int | None = None, keys: Sequence[str] | None = None):
        self.total_steps = total_steps
        self.keys = keys

    def write_scalars(self, step, scalars):
        items = scalars.items() if self.keys is None else ((k, scalars[k]) for k in self.keys)
        parts = []
        for k, v in items:
            name = "eta" if k.endswith("eta_s") else k
            parts.append(f"{name}={display.scalar(k, _scalar(v))}")
        total = f"/{self.total_steps}" if self.total_steps else ""
        say(f"[step {step}{total}] {' '.join(parts)}")

    def write_texts(self, step, texts):
        for k, v in texts.items():
            say(f"[step {step}] {k}: {v}")


def say(message: str) -> None:
    """A console line with the time (stdout, flushed; absl logging stays for libraries' details)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class MultiWriter(MetricWriter):
    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = list(writers)

    def write_scalars(self, step, scalars):
        for w in self.writers:
            w.write_scalars(step, scalars)

    def write_images(self, step, images):
        for w in self.writers:
            w.write_images(step, images)

    def write_texts(self, step, texts):
        for w in self.writers:
            w.write_texts(step, texts)

    def write_histograms(self, step, arrays, num_buckets=None):
        for w in self.writers:
            w.write_histograms(step, arrays, num_buckets)

    def write_hparams(self, hparams):
        for w in self.writers:
            w.write_hparams(hparams)

    def flush(self):
        for w in self.writers:
            w.flush()

    def close(self):
        for w in self.writers:
            w.close()


def has_event_files(workdir: str | os.PathLike) -> bool:
    d = os.fspath(workdir)
    return os.path.isdir(d) and any(f.startswith("events.out.tfevents.") for f in os.listdir(d))


def create_default_writer(
    workdir: str | os.PathLike,
    *,
    process_index: int = 0,
    total_steps: int | None = None,
    console: bool = True,
    purge_step: int | None = None,
    wandb_project: str = "",
    wandb_mode: str = "online",
) -> MetricWriter:
    """metrics.jsonl + TensorBoard events + console (+ W&B with a wandb_project) on process 0; a
    no-op writer elsewhere. purge_step: see TensorBoardWriter (the trainer trims metrics.jsonl
    itself on resume)."""
    if process_index != 0:
        return MetricWriter()
    writers: list[MetricWriter] = [
        JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
        TensorBoardWriter(workdir, purge_step=purge_step),
    ]
    if console:
        writers.append(ConsoleWriter(total_steps))
    if wandb_project:
        from janus.wandb_writer import WandbWriter  # wandb is an extra: imported only when asked

        writers.append(WandbWriter(os.fspath(workdir), project=wandb_project, mode=wandb_mode))
    return MultiWriter(writers)
