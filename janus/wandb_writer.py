"""Weights & Biases beside TensorBoard: an optional extra (`pip install 'janus[wandb]'`).

`log.wandb_project` ("" = off) turns it on, `log.wandb_mode` picks W&B's "online" or "offline".
- `WandbWriter` (a `janus.metric_writer.MetricWriter`, process 0 only) logs the scalars at their
  step, the run's config (config.json) and its data manifest (data_manifest.json: the file, and
  its counts in the summary).
- `log_eval` adds an eval result (`eval/<step>.json`) to the run: a table of the sets' top-1/top-5
  and the metrics in the summary (janus.evaluate calls it; it never imports the trainer).
The W&B run id is kept in `<workdir>/wandb_run_id`, so a resume continues the same W&B run, and
W&B's files live under `<workdir>/wandb/`: an offline run is uploaded later with
`wandb sync <workdir>/wandb/offline-run-*` (a resumed run's sessions in order).
wandb is imported only when a project is set; without it, `check_available` is one line.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Mapping

import numpy as np

from janus import config as config_lib
from janus import metric_writer as mw
from janus.fileio import atomic_write

INSTALL = "pip install 'janus[wandb]' (or pip install -r requirements/lock-wandb.txt)"
RUN_ID_FILE = "wandb_run_id"
# The manifest's small fields, in the summary (the per-class counts stay in the file).
MANIFEST_SUMMARY = ("n_examples", "budget", "class_balanced", "seed", "per_source")


def check_available(config) -> None:
    """A set `log.wandb_project` needs wandb installed: ConfigError (one line) otherwise."""
    if config.log.wandb_project:
        _import_wandb(config.log.wandb_project)


def _import_wandb(project: str):
    try:
        import wandb
    except ImportError:
        raise config_lib.ConfigError(
            f"config field 'log.wandb_project' = {project!r} needs wandb, which is not "
            f"installed: {INSTALL}"
        ) from None
    return wandb


def run_id(workdir: str) -> str:
    """The workdir's W&B run id: made at the first start, read back on every later one."""
    path = os.path.join(workdir, RUN_ID_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    rid = uuid.uuid4().hex[:12]
    atomic_write(path, rid + "\n")
    return rid


def _init(workdir: str, project: str, mode: str, **kwargs):
    """The workdir's W&B run, started or continued (resume="allow"). A run W&B cannot start
    (online without a login, say) is a ConfigError naming the way out."""
    wandb = _import_wandb(project)

    try:
        return wandb.init(
            project=project,
            id=run_id(workdir),
            resume="allow",
            dir=workdir,
            mode=mode,
            name=os.path.basename(os.path.abspath(workdir)),
            # janus prints its own progress; W&B's stream capture would wrap every print.
            settings=wandb.Settings(console="off"),
            **kwargs,
        )
    except wandb.errors.Error as e:
        raise config_lib.ConfigError(
            f"W&B could not start a run for log.wandb_project={project!r} "
            f"(log.wandb_mode={mode!r}): {str(e).splitlines()[0]}; run `wandb login`, or set "
            "--config.log.wandb_mode=offline"
        ) from None


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


class WandbWriter(mw.MetricWriter):
    """One W&B run per workdir. Expects config.json and data_manifest.json written
    (`janus.run_records.begin`)."""

    def __init__(self, workdir: str, *, project: str, mode: str):
        config = _read_json(os.path.join(workdir, "config.json"))
        self._run = _init(workdir, project, mode, config=config, job_type="train")
        # A resumed online run continues at W&B's last step + 1: the steps below it were logged
        # before the restart (the resume recomputes them), and W&B refuses them.
        self._first_step = self._run.step
        manifest_path = os.path.join(workdir, "data_manifest.json")
        manifest = _read_json(manifest_path)
        self._run.summary["data"] = {k: manifest[k] for k in MANIFEST_SUMMARY if k in manifest}
        # policy "end": the file as the run leaves it (the input pipeline's skips are added last).
        self._run.save(manifest_path, base_path=workdir, policy="end")

    def write_scalars(self, step, scalars):
        if step < self._first_step:
            return
        row = {}
        for k, v in scalars.items():
            v = np.asarray(v)
            if v.size == 1 and np.issubdtype(v.dtype, np.number):
                row[k] = v.item()
        self._run.log(row, step=int(step))

    def write_images(self, step, images):
        import wandb

        if step < self._first_step:
            return
        row = {}
        for k, v in images.items():
            v = np.asarray(v)
            # clu convention: [N, H, W, C] or [H, W, C].
            row[k] = [wandb.Image(x) for x in v] if v.ndim == 4 else wandb.Image(v)
        self._run.log(row, step=int(step))

    # write_hparams: a no-op; the run's config is config.json, given to wandb.init.
    # flush: a no-op; W&B's own process streams the rows.

    def close(self):
        # Closed while an exception propagates (janus.loop.closing): W&B marks the run failed.
        _finish(self._run, exit_code=1 if sys.exc_info()[0] is not None else 0)


def _finish(run, exit_code: int = 0) -> None:
    """Ends the run and waits for W&B's service: `run.finish` alone may return before the
    service has written the run's records (seen offline with a second run in one process)."""
    import wandb

    run.finish(exit_code=exit_code)
    wandb.teardown()


def log_eval(workdir: str, result: Mapping) -> bool:
    """Adds an eval result to the workdir's W&B run when its config.json has log.wandb_project
    set: a table (set, top1, top5, n) under eval/<classifier>/table and, in the summary,
    eval/<classifier>/<set>/top1 and eval/<classifier>/<metric>. -> whether it logged."""
    path = os.path.join(workdir, "config.json")
    log = _read_json(path).get("log", {}) if os.path.exists(path) else {}
    if not log.get("wandb_project"):
        return False
    wandb = _import_wandb(log["wandb_project"])
    run = _init(workdir, log["wandb_project"], log.get("wandb_mode", "online"))
    prefix = f"eval/{result['classifier']}"
    if result.get("alpha") is not None:  # WiSE-FT: one result per mixing coefficient
        prefix += f"/alpha{result['alpha']:g}"
    table = wandb.Table(columns=["step", "set", "top1", "top5", "n"])
    for name, r in result["sets"].items():
        table.add_data(result["step"], name, r.get("top1"), r.get("top5"), r.get("n"))
        run.summary[f"{prefix}/{name}/top1"] = r.get("top1")
    for k, v in result["metrics"].items():
        run.summary[f"{prefix}/{k}"] = v
    run.summary[f"{prefix}/step"] = result["step"]
    run.log({f"{prefix}/table": table})
    _finish(run)
    return True
