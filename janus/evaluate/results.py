"""Writing eval results: `<workdir>/eval/<step>.json` and one row per (step, classifier) of
`<workdir>/eval/results.csv` (DESIGN.md's schema), atomically, on process 0 only.

The JSON is `<step>.json` for the model's default classifier (head for CE, zeroshot for VL),
`<step>_<classifier>.json` for another one, so a linear probe never overwrites the zero-shot result,
and `<step>_wise<alpha>.json` for a WiSE-FT interpolation (janus.evaluate.wise). Weights other
than the checkpoint's parameters (`janus.evaluate --params ema|avg`, the result's `params` field)
add `_<params>` after the step: `<step>_ema.json`, `<step>_avg_linear_probe.json`. The CSV header is
always `CSV_COLUMNS`, whichever sets a run evaluates: rows of different steps and runs line up, and
a set that was not evaluated has empty cells. A row is one (step, classifier, alpha, label set,
params);
alpha is empty except for WiSE-FT rows (and absent from results.csv files written before it
existed). An evaluation on a label set given explicitly (`janus.evaluate --label_set`) adds
`_ls-<label set>` to the file name (`75_ls-random-5-0-mini25.json`), so it never overwrites the
result on the run's own label set.

A result file is never replaced silently: a new result for the same file (the evaluator rerun on
a step, or run on the step the in-loop evaluation wrote at the end of training) moves the earlier
one to `eval/previous/<name>.<n>.json` (n = 1, 2, ...) and names it in its `replaces` field. The
newest result keeps the plain name, which `janus.report`, `--watch` and results.csv read;
`eval/previous/` is read by none of them.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
from collections.abc import Mapping

from janus.config import is_vl
from janus.evaluate.sets import SET_NAMES
from janus.fileio import atomic_write, safe_name

# "params" (which weights: params | ema | avg) was added last: older files lack it (= params).
_ROW_KEYS = ("step", "classifier", "alpha", "label_set", "suite", "model", "loss", "params")
_ROW_METRICS = ("avg_robustness", "robustness_ratio", "effective_robustness", "taori_er_mean5")
PREVIOUS_DIR = "previous"  # eval/previous/: earlier results of a file written again
CSV_COLUMNS = (
    list(_ROW_KEYS)
    + [f"{s}_{k}" for s in SET_NAMES for k in ("top1", "top5", "n")]
    + list(_ROW_METRICS)
)


def default_classifier(loss: str | None) -> str:
    """zeroshot for VL models, head for the others (CE family)."""
    return "zeroshot" if is_vl(loss) else "head"


def label_set_suffix(label_set: str | None) -> str:
    """The file-name suffix of results on an explicitly given label set ('' for the run's own)."""
    return f"_ls-{safe_name(label_set)}" if label_set else ""


def result_filename(
    step: int,
    classifier: str,
    loss: str | None,
    alpha: float | None = None,
    given_label_set: str | None = None,
    params: str | None = None,
) -> str:
    stem = f"{step}" if params in (None, "params") else f"{step}_{params}"
    if alpha is not None:
        stem += f"_wise{alpha:g}"
    elif classifier != default_classifier(loss):
        stem += f"_{classifier}"
    return stem + label_set_suffix(given_label_set) + ".json"


def csv_row(result: Mapping) -> dict[str, str]:
    """The results.csv row of one eval result (every column of CSV_COLUMNS; None -> '')."""
    row = {k: result.get(k) for k in _ROW_KEYS}
    for s in SET_NAMES:
        for k in ("top1", "top5", "n"):
            row[f"{s}_{k}"] = (result["sets"].get(s) or {}).get(k)
    for k in _ROW_METRICS:
        row[k] = result["metrics"].get(k)
    return {k: _cell(v) for k, v in row.items()}


def _cell(v) -> str:
    """CSV text: accuracies and metrics to 4 decimals (the JSON keeps full precision)."""
    if v is None:
        return ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _write_csv(csv_path: str, rows) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write(csv_path, buf.getvalue())


def write_result(workdir: str, result: Mapping, given_label_set: str | None = None) -> str:
    """eval/<step>[_<classifier>][_ls-<label set>].json and its results.csv row (process 0 only).
    `given_label_set`: the label set asked for explicitly, if any. -> json path."""
    import jax

    out_dir = os.path.join(workdir, "eval")
    name = result_filename(
        result["step"],
        result["classifier"],
        result.get("loss"),
        result.get("alpha"),
        given_label_set,
        result.get("params"),
    )
    path = os.path.join(out_dir, name)
    if jax.process_index() != 0:
        return path
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(path):  # keep the earlier result (module docstring)
        kept = _keep_previous(out_dir, name)
        result = {**result, "replaces": os.path.relpath(kept, workdir)}
    atomic_write(path, json.dumps(result, indent=1) + "\n")
    csv_path = os.path.join(out_dir, "results.csv")
    with _csv_locked(out_dir):  # evaluators beside each other (in-loop, --watch, one-off)
        rows = []
        if os.path.exists(csv_path):
            with open(csv_path, newline="") as f:
                rows = list(csv.DictReader(f))
        row = csv_row(result)
        rows = [r for r in rows if _row_key(r) != _row_key(row)]
        rows.append(row)
        rows.sort(key=lambda r: (int(r["step"]), *_row_key(r)[1:]))
        _write_csv(csv_path, rows)
    return path


def _keep_previous(out_dir: str, name: str) -> str:
    """Moves eval/<name> to eval/previous/<name without .json>.<n>.json, n one more than the
    highest there.
    -> the new path."""
    prev_dir = os.path.join(out_dir, PREVIOUS_DIR)
    os.makedirs(prev_dir, exist_ok=True)
    prefix = name[: -len(".json")] + "."
    ns = [f[len(prefix) : -len(".json")] for f in os.listdir(prev_dir) if f.startswith(prefix)]
    n = 1 + max((int(x) for x in ns if x.isdigit()), default=0)
    kept = os.path.join(prev_dir, f"{prefix}{n}.json")
    os.replace(os.path.join(out_dir, name), kept)
    return kept


def _row_key(row: Mapping) -> tuple[str, ...]:
    """(step, classifier, alpha, label set, params) of a results.csv row; older files have no
    alpha or params."""
    key = tuple(row.get(k) or "" for k in ("step", "classifier", "alpha", "label_set"))
    return key + (row.get("params") or "params",)


@contextlib.contextmanager
def _csv_locked(out_dir: str):
    """An flock around results.csv's read-modify-write: two writers never lose each other's row."""
    with open(os.path.join(out_dir, ".results.csv.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def drop_results_after(workdir: str, step: int) -> list[int]:
    """Removes the results of steps after `step` (a resumed run recomputes them): their rows of
    results.csv (rewritten atomically first) and then their eval/<step>*.json files. A crash in
    between leaves only JSON files that the next call removes. -> the steps dropped."""
    out_dir = os.path.join(workdir, "eval")
    if not os.path.isdir(out_dir):
        return []
    csv_path = os.path.join(out_dir, "results.csv")
    dropped = set()
    with _csv_locked(out_dir):
        dropped |= _drop_csv_rows_after(csv_path, step)
    for f in os.listdir(out_dir):
        stem, ext = os.path.splitext(f)
        s = stem.partition("_")[0]
        if ext == ".json" and s.isdigit() and int(s) > step:
            os.remove(os.path.join(out_dir, f))
            dropped.add(int(s))
    return sorted(dropped)


def _drop_csv_rows_after(csv_path: str, step: int) -> set[int]:
    dropped = set()
    if os.path.exists(csv_path):
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if not (r.get("step") or "").isdigit() or int(r["step"]) <= step]
        if len(keep) != len(rows):
            dropped |= {int(r["step"]) for r in rows if r not in keep}
            _write_csv(csv_path, keep)
    return dropped


def evaluated_steps(
    workdir: str, classifier: str | None = None, given_label_set: str | None = None
) -> set[int]:
    """Steps that already have a result for `classifier` (None: the model's default one), on the
    run's label set or on `given_label_set`."""
    d = os.path.join(workdir, "eval")
    if not os.path.isdir(d):
        return set()
    steps = set()
    tag = label_set_suffix(given_label_set)
    for f in os.listdir(d):
        stem, ext = os.path.splitext(f)
        if tag:
            if not stem.endswith(tag):
                continue
            stem = stem[: -len(tag)]
        elif "_ls-" in stem:
            continue
        step, _, suffix = stem.partition("_")
        if ext != ".json" or not step.isdigit():
            continue
        if suffix == (classifier or "") or (suffix == "" and _classifier_of(d, f) == classifier):
            steps.add(int(step))
    return steps


def _classifier_of(eval_dir: str, filename: str) -> str | None:
    try:
        with open(os.path.join(eval_dir, filename)) as f:
            return json.load(f).get("classifier")
    except (OSError, ValueError):
        return None
