"""A training run's records in its workdir (README "Run safety"): what the run leaves on disk
besides its checkpoints and metrics.

- The workdir is held for the run (`held`: the lock of `janus.workdir`; a second run raises
  `RunRefused`, and so does a workdir, checkpoints/ or eval/ where no file can be written).
- A resume whose config changes the experiment is refused (`check_resume`), unless the fields are
  allowed; `FREE_ON_RESUME` may always change.
- `record_damaged`: a checkpoint a resume found damaged and moved aside is a row of history.jsonl;
- `begin`: every start/resume is a row of history.jsonl (once the state is restored);
  metrics.jsonl and the eval results drop the steps past the restored checkpoint (the resume
  recomputes them); config.json is written only at the start; data_manifest.json says what the
  run trains on; a run continued with more steps loses its DONE.
- `finish`: the input pipeline's skips go into data_manifest.json; a finished run writes DONE
  (`janus.evaluate --watch` and `janus.sweep` wait for it).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping

import jax
import numpy as np

from janus import checkpoint as ckpt_lib
from janus import config as config_lib
from janus import metric_writer as mw
from janus.fileio import atomic_write

DONE_MARKER = "DONE"  # <workdir>/DONE: written when training finished (janus.evaluate --watch)
HISTORY_FILE = "history.jsonl"  # <workdir>/history.jsonl: one row per start/resume

# Config fields (fnmatch patterns on dotted paths) that may differ on resume without
# --allow_config_change: they change when things are logged, saved or evaluated, or how the same
# computation is laid out on the hardware, never the trained model. checkpoint.init_* are only
# read on a fresh start (a resume restores its own checkpoint).
# Fields janus gained after runs had started, at the value that trains as before: a resume of
# an older run, whose config lacks them, is not refused for them.
ADDED_OFF: dict[str, object] = {
    "input.mixup": 0.0,
    "input.cutmix": 0.0,
    "input.mix_prob": 1.0,
    "input.mix_switch_prob": 0.5,
    "optimizer.ema_decay": 0.0,
    "optimizer.layer_decay": 1.0,
    "optimizer.step_boundaries": [1 / 3, 2 / 3],  # read only by schedule = "step"
    "optimizer.step_factor": 0.1,
    # configs/arch.py declares it (off) for the towers with stochastic depth
    "model.drop_path_rate": 0.0,
    "data.loader": "grain",
}
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


class RunRefused(config_lib.ConfigError):
    """The run must not start: its workdir is in use by a live run, or a resume would change the
    experiment. janus.main prints the message without a traceback and exits with status 2."""


@contextlib.contextmanager
def held(workdir: str) -> Iterator[None]:
    """The workdir locked for the run (`janus.workdir`); a live holder raises `RunRefused`, and
    so does a workdir, checkpoints/ or eval/ (those that exist) where no file can be made."""
    from janus import workdir as workdir_lib

    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise RunRefused(f"refusing to train: workdir {workdir} is not a directory (a file)")
    dirs = [workdir] + [os.path.join(workdir, d) for d in (ckpt_lib.CHECKPOINTS, "eval")]
    for d in dirs[:1] + [d for d in dirs[1:] if os.path.isdir(d)]:
        if error := workdir_lib.not_writable(d):
            raise RunRefused(f"refusing to train: {error}")
    try:
        lock = workdir_lib.acquire_for_job(workdir, what="janus.main training", log=mw.say)
    except workdir_lib.WorkdirBusy as e:
        raise RunRefused(f"refusing to train: {e}") from None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


# --------------------------------------------------------------------------------------------------
# Resume: config drift


def flat_config(d: Mapping, prefix: str = "") -> dict:
    """{dotted field: value} of a nested config."""
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: Mapping, new: Mapping) -> dict[str, tuple]:
    """{dotted field: (old, new)} for every leaf that differs ("<unset>" where one lacks it)."""
    a, b = flat_config(old), flat_config(new)
    missing = "<unset>"
    return {
        k: (a.get(k, missing), b.get(k, missing))
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    }


def _matches(field: str, patterns) -> bool:
    return any(
        p == "all" or field == p or field.startswith(p + ".") or fnmatch.fnmatchcase(field, p)
        for p in patterns
    )


def _patterns(allow) -> list[str]:
    if isinstance(allow, str):
        allow = allow.split(",")
    return [p.strip() for p in allow or () if p and p.strip()]


def check_resume(workdir, ckpt, step: int | None, record: Mapping, allow_changes) -> dict:
    """Compares the config of a resume at checkpoint `step` (None: a fresh start, nothing to
    compare) with the one that checkpoint was trained with (its "config" item; else config.json).
    Run it before restoring: another model would only fail deep inside orbax.
    -> {field: (old, new)} of the accepted changes. Raises RunRefused listing the fields that
    change the experiment and were not allowed (`allow_changes`: dotted fields, prefixes,
    fnmatch patterns, or "all")."""
    if step is None:
        return {}
    stored = ckpt_lib.read_config(ckpt.directory / str(step))
    source = f"checkpoint {step}"
    if not stored:
        try:
            with open(os.path.join(workdir, "config.json")) as f:
                stored, source = json.load(f), "config.json"
        except (OSError, ValueError):
            return {}
    changes = config_changes(stored, record)
    allowed = _patterns(allow_changes)
    refused = {
        k: v
        for k, v in changes.items()
        if not _matches(k, FREE_ON_RESUME)
        and not _matches(k, allowed)
        and not (v[0] == "<unset>" and k in ADDED_OFF and v[1] == ADDED_OFF[k])
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
            f"refusing to resume {workdir} at step {step}: the config changes the experiment "
            f"in {len(refused)} field(s):\n" + "\n".join(lines) + "\n"
            "Use a new --workdir, or pass --allow_config_change="
            f"{','.join(refused)} to continue with the change (recorded in "
            f"{os.path.join(workdir, HISTORY_FILE)} with step {step})."
        )
    return changes


# --------------------------------------------------------------------------------------------------
# The start of a run, and its end


def begin(
    workdir: str,
    *,
    step: int,
    resumed: bool,
    changes: Mapping,
    record: Mapping,
    manifest: Mapping,
    total_steps: int,
) -> None:
    """Process 0 records the start (or a resume at checkpoint `step`) of the run; see the module
    docstring. `record`: the ResolvedRun's record (config.json)."""
    if jax.process_index() != 0:
        return
    drop_rows_after(workdir, step)  # metrics and eval rows the resume recomputes
    record_history(workdir, "resume" if resumed else "start", step, changes)
    done = os.path.join(workdir, DONE_MARKER)
    if step < total_steps and os.path.exists(done):
        os.remove(done)  # continued with more steps: not done
    if not resumed:  # config.json keeps describing how the run started
        write_json(os.path.join(workdir, "config.json"), record)
    write_json(os.path.join(workdir, "data_manifest.json"), manifest)


def finish(workdir: str, manifest: Mapping, data_iter, *, step: int, total_steps: int) -> None:
    """After the loop (its last checkpoint complete): the input pipeline's skips into
    data_manifest.json (a collective: every process calls it), and DONE once training is over."""
    finish_manifest(workdir, manifest, data_iter)
    if step >= total_steps and jax.process_index() == 0:
        # For `janus.evaluate --watch`: the run is over and its last checkpoint is complete.
        write_json(os.path.join(workdir, DONE_MARKER), {"step": step, "time": time.time()})


def hparams(record: Mapping) -> dict:
    """The run's flat config for TensorBoard's hparams (the evals left out)."""
    return {k: v for k, v in flat_config(record).items() if not k.startswith("evals")}


def write_json(path: str, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


def record_history(workdir: str, event: str, step: int, changes: Mapping, **extra) -> None:
    """Appends {"event": "start"|"resume"|"damaged", "step", "time", "host", "pid", "changes",
    **extra} to <workdir>/history.jsonl (rewritten atomically: a crash never leaves half a
    line)."""
    path = os.path.join(workdir, HISTORY_FILE)
    row = {
        "event": event,
        "step": int(step),
        "time": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()},
        **extra,
    }
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = "".join(line for line in f if line.endswith("\n"))
    atomic_write(path, old + json.dumps(row, default=str) + "\n")
    if changes and jax.process_index() == 0:
        mw.say(f"config changes from step {step} on (recorded in {path}): {sorted(changes)}")


def record_damaged(workdir: str, damaged: Mapping[int, tuple[str, str]]) -> None:
    """A "damaged" row of history.jsonl per checkpoint a resume moved aside ({step: (the path it
    was moved to, its one-line error)}; `janus.train_state.restore`), written once the resume's
    state is restored, before its "resume" row."""
    if jax.process_index() != 0:
        return
    for step, (moved_to, error) in sorted(damaged.items()):
        record_history(workdir, "damaged", step, {}, moved_to=moved_to, error=error)


def drop_rows_after(workdir: str, step: int) -> None:
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


def finish_manifest(workdir: str, manifest: Mapping, data_iter) -> None:
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
        write_json(os.path.join(workdir, "data_manifest.json"), manifest)
        if counts:
            mw.say(f"input pipeline skipped {counts} (first keys: {first})")


def _skip_report(data_iter) -> dict:
    from janus.data.input import pipeline

    return pipeline.skip_report(data_iter) if hasattr(data_iter, "skip_report") else {}


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
