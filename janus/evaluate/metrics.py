"""Robustness metrics and baseline fits (protocol: janus/vendored/reference/README.md).

Accuracies passed between functions here are fractions in [0, 1] unless a name says `pct`.

- `avg_robustness`: the paper's average robustness, mean top-1 over V2, Sketch, R and A
  (ObjectNet is not part of it).
- `robustness_ratio`: what the paper's code calls "effective robustness":
  avg_robustness / val top-1.
- `taori_er`: effective robustness after Taori et al. 2020, acc_ood - sigmoid(a * logit(acc_id) + b)
  with (a, b) a linear fit in logit space over standard ImageNet models (`BASELINES`).
- `fit_baseline`: fits (a, b) from a CSV of in-distribution / shift accuracies.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: The shift sets averaged by the paper's average robustness.
AVG_ROBUSTNESS_SETS = ("v2", "sketch", "r", "a")


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A linear fit in logit space: logit(ood) = slope * logit(id) + intercept, with the logit
    of the accuracy as a fraction (fitted on percentages / 100); `predict` takes a fraction."""

    slope: float
    intercept: float
    id_set: str = "val"
    ood_sets: tuple[str, ...] = ()
    n: int | None = None

    def predict(self, acc_id: float) -> float:
        """Expected OOD accuracy (fraction) of a standard model with ID accuracy acc_id."""
        return sigmoid(self.slope * logit(acc_id) + self.intercept)


# Default coefficients: the reference README's fits over the imagenet-testbed standard models
# (val >= 55 %, names with 'subsample', 'aws' or 'batch64' left out).
# `fit_baseline` reproduces them.
BASELINES: dict[str, Baseline] = {
    "mean5": Baseline(1.0439, -1.8918, "val", ("v2", "sketch", "r", "a", "objectnet")),
    "v2": Baseline(0.911373, -0.481307, "val", ("v2",)),
    "sketch": Baseline(1.070915, -2.370073, "val", ("sketch",)),
    "r": Baseline(0.911591, -1.599915, "val", ("r",)),
    "objectnet": Baseline(0.980910, -1.928289, "val_on_objectnet_classes", ("objectnet",)),
}

# Column names of the imagenet-testbed CSV for our set names, and the filters of the reference fits.
TESTBED_COLUMNS = {
    "val": "val",
    "v2": "imagenetv2-matched-frequency",
    "sketch": "imagenet-sketch",
    "r": "imagenet-r",
    "a": "imagenet-a",
    "objectnet": "objectnet-1.0-beta",
    "val_on_objectnet_classes": "val-on-objectnet-classes",
}
TESTBED_EXCLUDE = ("subsample", "aws", "batch64")


def logit(p):
    """log(p / (1 - p)) of a fraction, clipped to (1e-6, 1 - 1e-6) so 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    out = np.log(p) - np.log1p(-p)
    return float(out) if out.ndim == 0 else out


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    out = 1.0 / (1.0 + np.exp(-x))
    return float(out) if out.ndim == 0 else out


def _top1(sets: Mapping[str, Mapping | float | None], name: str) -> float | None:
    v = sets.get(name)
    if isinstance(v, Mapping):
        v = v.get("top1")
    return None if v is None else float(v)


def avg_robustness(sets: Mapping) -> float | None:
    """Mean top-1 over V2, Sketch, R, A; None if any is missing.

    `sets`: name -> top1 or {"top1": ...}."""
    vals = [_top1(sets, s) for s in AVG_ROBUSTNESS_SETS]
    if any(v is None for v in vals):
        return None
    return float(np.mean(vals))


def robustness_ratio(avg_rob: float | None, val_top1: float | None) -> float | None:
    """The paper's "effective robustness": average robustness / val top-1."""
    if avg_rob is None or val_top1 is None or val_top1 <= 0:
        return None
    return float(avg_rob) / float(val_top1)


def taori_er(acc_id: float, acc_ood: float, baseline: Baseline | str = "mean5") -> float:
    """Taori et al. effective robustness (fractions): acc_ood - baseline prediction at acc_id."""
    if isinstance(baseline, str):
        baseline = BASELINES[baseline]
    return float(acc_ood) - baseline.predict(float(acc_id))


#: The sets that enter each Taori metric (val_on_objectnet_classes carries val's suite).
TAORI_INPUTS = {
    "taori_er_mean5": ("val", "v2", "sketch", "r", "a", "objectnet"),
    "taori_er_v2": ("val", "v2"),
    "taori_er_sketch": ("val", "sketch"),
    "taori_er_r": ("val", "r"),
    "taori_er_objectnet": ("val_on_objectnet_classes", "objectnet"),
}


def _suite_list(names: Sequence[str], suites: Mapping[str, str]) -> str:
    return ", ".join(f"{s}: {suites.get(s, 'imagenet')}" for s in names)


def compute_metrics(
    sets: Mapping[str, Mapping],
    v2_variant: str = "matched-frequency",
    suites: Mapping[str, str] | None = None,
) -> tuple[dict, list[str]]:
    """The eval JSON's "metrics" block from per-set results, plus notes for metrics that are null.

    `suites` maps each set to its suite (`imagenet` when not given). Suites are never mixed: a
    metric whose sets come from different suites is null, and a note names each set and its
    suite. The Taori numbers are ImageNet baselines: they are null unless every set entering them
    is suite `imagenet`.

    The V2 baselines were fitted on V2 matched-frequency: with another `v2_variant`, the Taori
    numbers that involve V2 are null.

    `effective_robustness` is the paper's ratio (= `robustness_ratio`), so that it matches the
    paper's tables and `vlhub_meta_analysis.csv`; the Taori-style numbers are the `taori_er_*` keys.
    They use the reference baselines fitted on ImageNet-1k, so they are only meaningful for the
    in1000 label set and are reported for every label set as is.
    """
    suites = dict(suites or {})

    def suite(name):
        return suites.get(name, "imagenet")

    notes: list[str] = []
    val = _top1(sets, "val")
    missing = [s for s in AVG_ROBUSTNESS_SETS if _top1(sets, s) is None]
    avg = avg_robustness(sets)
    avg_suites = {suite(s) for s in AVG_ROBUSTNESS_SETS}
    if avg is None:
        notes.append(f"avg_robustness is null: set(s) {missing} not evaluated")
    elif len(avg_suites) > 1:
        avg = None
        notes.append(
            f"avg_robustness is null: its sets come from different suites "
            f"({_suite_list(AVG_ROBUSTNESS_SETS, suites)}); averages are never taken across suites"
        )
    ratio = robustness_ratio(avg, val)
    if ratio is not None and suite("val") not in avg_suites:
        ratio = None
        notes.append(
            f"robustness_ratio is null: val is suite {suite('val')!r}, the robustness sets "
            f"suite {next(iter(avg_suites))!r}; ratios are never taken across suites"
        )
    elif ratio is None and avg is not None:
        why = "val not evaluated"
        if val is not None:
            why = f"val top-1 is {val:g}, so the ratio is undefined"
        notes.append(f"robustness_ratio is null: {why}")
    metrics = {"avg_robustness": avg, "robustness_ratio": ratio, "effective_robustness": ratio}
    five = ("v2", "sketch", "r", "a", "objectnet")
    if val is not None and all(_top1(sets, s) is not None for s in five):
        metrics["taori_er_mean5"] = taori_er(val, np.mean([_top1(sets, s) for s in five]), "mean5")
    else:
        metrics["taori_er_mean5"] = None
    for s in ("v2", "sketch", "r"):
        ood = _top1(sets, s)
        metrics[f"taori_er_{s}"] = None if val is None or ood is None else taori_er(val, ood, s)
    # ObjectNet's baseline uses val accuracy on ObjectNet's classes, if the runner measured it.
    on_cls, obj = _top1(sets, "val_on_objectnet_classes"), _top1(sets, "objectnet")
    metrics["taori_er_objectnet"] = (
        None if on_cls is None or obj is None else taori_er(on_cls, obj, "objectnet")
    )
    if val is None or any(_top1(sets, s) is None for s in five):
        notes.append("taori_er_mean5 is null: needs val, v2, sketch, r, a and objectnet")
    if v2_variant != "matched-frequency" and _top1(sets, "v2") is not None:
        metrics["taori_er_mean5"] = metrics["taori_er_v2"] = None
        notes.append(
            f"taori_er_mean5 and taori_er_v2 are null: their baselines use V2 matched-frequency, "
            f"this run evaluated V2 {v2_variant}"
        )
    not_imagenet = sorted(
        {
            s
            for k, ins in TAORI_INPUTS.items()
            if metrics[k] is not None
            for s in ins
            if suite(s) != "imagenet"
        }
    )
    if not_imagenet:
        for k, ins in TAORI_INPUTS.items():
            if any(suite(s) != "imagenet" for s in ins):
                metrics[k] = None
        notes.append(
            f"taori_er_* are null where they use a set that is not ImageNet data "
            f"({_suite_list(not_imagenet, suites)}): their baselines are ImageNet fits"
        )
    return metrics, notes


# ---------------------------------------------------------------------------------------------
# Baseline fits


def fit_logit_line(
    acc_id_pct: Sequence[float], acc_ood_pct: Sequence[float]
) -> tuple[float, float]:
    """Least-squares line logit(ood) = a * logit(id) + b over accuracies in percent."""
    x = logit(np.asarray(acc_id_pct, dtype=np.float64) / 100.0)
    y = logit(np.asarray(acc_ood_pct, dtype=np.float64) / 100.0)
    if len(np.atleast_1d(x)) < 2:
        raise ValueError("fit_logit_line needs at least two points")
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)


def read_models_list(path: str) -> list[str]:
    """Model names from a JSON file (a list, or {"standard_models": [...]}) or one name per line."""
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(data, Mapping):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: expected one list of model names, found keys {list(data)}")
        data = lists[0]
    return [str(m) for m in data]


def fit_baseline(
    csv_path: str,
    id_col: str,
    ood_cols: Sequence[str] | str,
    *,
    models: Iterable[str] | None = None,
    model_col: str = "model",
    min_id: float | None = None,
    filter_col: str | None = None,
    exclude_substrings: Sequence[str] = (),
    percent: bool = True,
) -> Baseline:
    """Fit a logit-space baseline from a CSV of accuracies (one row per model).

    ood_cols: one column or several; several are averaged on the raw accuracy before the logit.
    models: keep only these model names (e.g. the testbed's standard models). min_id: keep rows with
    `filter_col` (default id_col) >= min_id. exclude_substrings: drop models whose name
    contains any. percent: the CSV holds percentages (False: fractions). Rows with an empty
    needed cell are skipped.
    The reference coefficients come from `fit_baseline(testbed_robustness_top1s.csv, "val",
    [...], models=standard, min_id=55, filter_col="val", exclude_substrings=TESTBED_EXCLUDE)`.
    """
    ood_cols = [ood_cols] if isinstance(ood_cols, str) else list(ood_cols)
    keep = None if models is None else set(models)
    filter_col = filter_col or id_col
    scale = 1.0 if percent else 100.0
    xs, ys = [], []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        need = [id_col, filter_col, *ood_cols] + ([model_col] if keep or exclude_substrings else [])
        absent = [c for c in need if c not in (reader.fieldnames or [])]
        if absent:
            raise KeyError(f"{csv_path}: column(s) {absent} not in header")
        for row in reader:
            name = row.get(model_col, "")
            if keep is not None and name not in keep:
                continue
            if any(s in name for s in exclude_substrings):
                continue
            cells = [row[id_col], row[filter_col], *(row[c] for c in ood_cols)]
            if any(c is None or c.strip() == "" for c in cells):
                continue
            if min_id is not None and float(row[filter_col]) * scale < min_id:
                continue
            xs.append(float(row[id_col]) * scale)
            ys.append(float(np.mean([float(row[c]) for c in ood_cols])) * scale)
    if len(xs) < 2:
        raise ValueError(f"{csv_path}: fewer than two rows left after filtering ({len(xs)})")
    a, b = fit_logit_line(xs, ys)
    return Baseline(a, b, id_col, tuple(ood_cols), n=len(xs))


def reference_baselines(csv_path: str, standard_models: Sequence[str]) -> dict[str, Baseline]:
    """Refit the reference table's baselines. The mean-of-5 fit reads V2 from the testbed's
    `imagenetv2-matched-frequency-format-val` column (that is what reproduces the published slope);
    the per-shift V2 fit reads `imagenetv2-matched-frequency`."""
    kw = dict(
        models=standard_models, min_id=55.0, filter_col="val", exclude_substrings=TESTBED_EXCLUDE
    )
    c = TESTBED_COLUMNS
    mean5 = ["imagenetv2-matched-frequency-format-val", c["sketch"], c["r"], c["a"], c["objectnet"]]
    return {
        "mean5": fit_baseline(csv_path, "val", mean5, **kw),
        "v2": fit_baseline(csv_path, "val", c["v2"], **kw),
        "sketch": fit_baseline(csv_path, "val", c["sketch"], **kw),
        "r": fit_baseline(csv_path, "val", c["r"], **kw),
        "objectnet": fit_baseline(csv_path, c["val_on_objectnet_classes"], c["objectnet"], **kw),
    }


def float_or_none(x) -> float | None:
    """A finite float from a number or a CSV cell; None for None, '', text, NaN or inf."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
