"""Figures for `janus.report` (matplotlib, Agg backend; each figure saved as PNG and SVG).

One job: the report's figures; long because each kind (robustness against val on logit axes with
the meta-analysis and baseline, scaling, WiSE-FT) has its own layout over one shared run encoding.

Every figure encodes a run the same way (the paper's figures):
- marker shape = objective (loss): CE o, InfoNCE s(quare), SigLIP D(iamond), multi-label CE ^,
  sigmoid v;
- colour = data mixture (`janus.report.run_mixture`: the sources trained on, e.g. `curated` or
  `curated+flickr+oi+web`);
- fill = architecture (model.name): the most common architecture of the report is filled, each
  other one half-filled (lower, left, upper, right half), and in the scaling figure also has its
  own line style (solid, dashed, dotted, dash-dot);
- a classifier other than the model's default (a VL model's linear probe) gets a grey ring around
  its marker (in the scaling figure: a thinner, paler line).

- Error bars (95%): a cell of >= 2 seeds is drawn once, at its mean over seeds, with the
  t-interval over seeds; a run alone, with the Clopper-Pearson interval of val over its images
  and a normal-approximation interval of average robustness over its four sets' images.

- `robustness_vs_val_<label_set>` ('random:5:0' -> 'random-5-0', janus.fileio.safe_name): average
  robustness vs val top-1 on logit axes, one figure per label set, ticks labelled in percent (0%
  and 100% are drawn at 0.5% / 99.5%, with a note). The
  paper's meta-analysis models on the same label set are grey background points (Conventional =
  trained on labels; VL / LiT / WiSE-FT = image-text); the line is a logit-linear fit over the
  meta-analysis' conventional models (the "standard models" trend); without meta data, for in1000
  only, the reference Taori baseline (val -> mean of 5 shifts), else none. A label set the
  meta-analysis does not cover (e.g. mini10) says so on the figure.
- `scaling`: val top-1 and average robustness vs data budget (log x), one line per
  (objective, data mixture, architecture) - the paper's scaling figure.
- `wise_<label_set>`: the WiSE-FT curve (Wortsman et al. 2022) of each fine-tuning run evaluated
  with `janus.evaluate --wise`: average robustness vs val top-1 on linear axes fitted to the
  curves, one point per alpha (labelled), joined in alpha order from the zero-shot model (alpha 0)
  to the fine-tuned one (alpha 1). WiSE-FT rows appear only here, not in the other figures.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from janus.evaluate import metrics  # noqa: E402
from janus.evaluate.results import default_classifier  # noqa: E402
from janus.fileio import safe_name  # noqa: E402

# Meta-analysis column prefixes per janus label-set name (see vlhub_meta_analysis.csv's header).
META_COLUMNS = {
    "in1000": ("imagenet-zeroshot-val-top1", "imagenet-average-robustness"),
    "in100": ("in100-zeroshot-val-top1", "in100-average-robustness"),
    "in100_dogs": ("in100-dogs-zeroshot-val-top1", "in100-dogs-average-robustness"),
}
LOSS_LABELS = {
    "ce": "CE on labels",
    "multilabel_ce": "multi-label CE",
    "sigmoid": "sigmoid (labels)",
    "infonce": "VL: InfoNCE on captions",
    "siglip": "VL: SigLIP on captions",
}
CLASSIFIER_LABELS = {
    "linear_probe": "linear probe on frozen features",
    "zeroshot": "zero-shot",
    "head": "classification head",
}
# Fixed per objective, so that figures of different studies agree; other losses take MARKERS.
LOSS_MARKERS = {"ce": "o", "infonce": "s", "siglip": "D", "multilabel_ce": "^", "sigmoid": "v"}
MARKERS = "<>Pp*hX"
ARCH_FILLS = ("full", "bottom", "left", "top", "right")
ARCH_LINES = ("-", "--", ":", "-.")


def read_meta(meta_csv: str, label_set: str) -> list[tuple[float, float, str]]:
    """(val, avg_robustness, technique) of the meta-analysis rows for a label set (fractions)."""
    if label_set not in META_COLUMNS:
        return []
    val_col, rob_col = META_COLUMNS[label_set]
    out = []
    with open(meta_csv, newline="") as f:
        for row in csv.DictReader(f):
            v, r = metrics.float_or_none(row.get(val_col)), metrics.float_or_none(row.get(rob_col))
            if v is not None and r is not None and 0 < v < 1 and 0 < r < 1:
                out.append((v, r, row.get("technique", "")))
    return out


def _save(fig, out_dir: str, stem: str) -> list[str]:
    paths = []
    for ext in ("png", "svg"):
        path = os.path.join(out_dir, f"{stem}.{ext}")
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _loss(row) -> str:
    return str(row.get("loss"))


def _mixture(row) -> str:
    return str(row.get("mixture") or "unknown")


def _model(row) -> str:
    return str(row.get("model"))


@dataclasses.dataclass
class _Style:
    """Marker per objective, colour per data mixture, fill (and line style) per architecture."""

    markers: dict
    colors: dict
    fills: dict
    lines: dict

    @classmethod
    def of(cls, rows) -> _Style:
        other_losses = sorted({_loss(r) for r in rows} - set(LOSS_MARKERS))
        markers = {
            **LOSS_MARKERS,
            **{x: MARKERS[i % len(MARKERS)] for i, x in enumerate(other_losses)},
        }
        cmap = plt.get_cmap("tab10")
        colors = {m: cmap(i % 10) for i, m in enumerate(sorted({_mixture(r) for r in rows}))}
        # The most common architecture is the filled one (ties: by name).
        counts = Counter(_model(r) for r in rows)
        models = sorted(counts, key=lambda m: (-counts[m], m))
        fills = {m: ARCH_FILLS[i % len(ARCH_FILLS)] for i, m in enumerate(models)}
        lines = {m: ARCH_LINES[i % len(ARCH_LINES)] for i, m in enumerate(models)}
        return cls(markers, colors, fills, lines)

    def marker_kwargs(self, row) -> dict:
        """Line2D keyword arguments drawing the row's marker."""
        return dict(
            marker=self.markers[_loss(row)],
            mfc=self.colors[_mixture(row)],
            mfcalt="w",
            fillstyle=self.fills[_model(row)],
            mec="k",
            mew=1.0,
        )

    def legend_handles(self, rows) -> list:
        """One entry per objective, data mixture and architecture present (and the ring)."""
        handles = []

        def entry(label, **kw):
            handles.append(plt.Line2D([], [], ls=kw.pop("ls", ""), mec="k", label=label, **kw))

        for loss in sorted({_loss(r) for r in rows}):
            entry(f"objective: {LOSS_LABELS.get(loss, loss)}", marker=self.markers[loss], c="0.6")
        for mixture in sorted({_mixture(r) for r in rows}):
            entry(f"data: {mixture}", marker="s", c=self.colors[mixture])
        for model in sorted({_model(r) for r in rows}, key=list(self.fills).index):
            half = "" if self.fills[model] == "full" else f", {self.fills[model]} half filled"
            entry(
                f"architecture: {model}{half}",
                marker="o",
                c="0.4",
                mfcalt="w",
                fillstyle=self.fills[model],
            )
        for classifier in sorted({str(r.get("classifier")) for r in rows if _non_default(r)}):
            label = f"ringed: {CLASSIFIER_LABELS.get(classifier, classifier)}"
            handles.append(
                plt.Line2D([], [], ls="", marker="o", ms=12, mfc="none", mec="0.4", label=label)
            )
        return handles


def plot_robustness_vs_val(rows, out_dir: str, meta_csv: str | None = None) -> list[str]:
    style = _Style.of(rows)
    paths = []
    by_ls = defaultdict(list)
    for r in rows:
        if r.get("val_top1") is not None and r.get("avg_robustness") is not None:
            by_ls[str(r.get("label_set"))].append(r)
    for label_set, group in sorted(by_ls.items()):
        fig, ax = plt.subplots(figsize=(6.4, 5.2))
        pts = [(_on_logit_axis(r["val_top1"]), _on_logit_axis(r["avg_robustness"])) for r in group]
        shown = list(pts)
        meta = read_meta(meta_csv, label_set) if meta_csv else []
        if meta:
            shown += _draw_meta(ax, meta, pts)
        elif label_set == "in1000":
            shown += _draw_taori_baseline(ax, pts)
        for r, (x, y) in zip(group, pts):
            xerr, yerr = _err(r, "val_top1", x), _err(r, "avg_robustness", y)
            if xerr is not None or yerr is not None:
                ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor="0.35", lw=0.8,
                            capsize=2, zorder=2.5)  # fmt: skip
            ax.plot(x, y, ls="", ms=8, zorder=3, **style.marker_kwargs(r))
            if _non_default(r):
                ax.plot(x, y, ls="", marker="o", ms=15, mfc="none", mec="0.4", zorder=3)
        ax.legend(
            handles=ax.get_legend_handles_labels()[0] + style.legend_handles(group),
            fontsize=7,
            loc="best",
        )
        for axis, values in ((ax.xaxis, [x for x, _ in shown]), (ax.yaxis, [y for _, y in shown])):
            _logit_axis(ax, axis, values)
        notes = []
        if meta_csv and not meta:
            notes.append(f"the meta-analysis has no results on label set {label_set}")
        clipped = [r for r in group for k in ("val_top1", "avg_robustness") if r[k] in (0, 1)]
        if clipped:
            notes.append("0% / 100% are off a logit axis: drawn at 0.5% / 99.5%")
        if notes:
            ax.text(
                0.99,
                0.01,
                "\n".join(notes),
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=7,
                color="0.3",
            )
        mini = all(r.get("suite") == "mini" for r in group)
        ax.set_xlabel(
            ("JANuS-mini val" if mini else "ImageNet val") + " top-1 on the label set (logit scale)"
        )
        ax.set_ylabel("average robustness: mean top-1 of V2, Sketch, R, A (logit scale)")
        ax.set_title(f"Robustness vs in-distribution accuracy, label set {label_set}")
        ax.grid(True, which="major", alpha=0.3)
        paths += _save(fig, out_dir, f"robustness_vs_val_{safe_name(label_set)}")
    return paths


def _err(row, key: str, at: float):
    """[[below], [above]] of the row's 95% bounds (`KEY_lo/_hi`, janus.report: over seeds for a
    cell of >= 2 seeds, else binomial over the set's images) around `at`; None without bounds."""
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if lo is None or hi is None:
        return None
    lo, hi = _on_logit_axis(max(lo, 0.0)), _on_logit_axis(min(hi, 1.0))
    return [[max(at - lo, 0.0)], [max(hi - at, 0.0)]]


def _on_logit_axis(v: float) -> float:
    """Accuracies of exactly 0 or 1 are infinitely far out on a logit axis: pull them in."""
    return min(max(float(v), LOGIT_CLIP), 1 - LOGIT_CLIP)


def _draw_meta(ax, meta, pts) -> list[tuple[float, float]]:
    """The meta-analysis models as grey points, and the logit-linear fit of the label-trained
    ones (the paper's "standard models" trend). -> the drawn points (for the axis limits)."""
    conv = [(v, r) for v, r, t in meta if t == "Conventional"]
    other = [(v, r, t) for v, r, t in meta if t != "Conventional"]
    kinds = ", ".join(sorted({t for _, _, t in other}))
    for data, mk, label in (
        (conv, "o", f"paper's meta-analysis: trained on labels (n={len(conv)})"),
        (other, "^", f"paper's meta-analysis: image-text, {kinds} (n={len(other)})"),
    ):
        if data:
            xs, ys = [d[0] for d in data], [d[1] for d in data]
            ax.scatter(xs, ys, s=9, c="0.7", marker=mk, alpha=0.7, zorder=1, label=label)
    if len(conv) >= 2:
        a, b = metrics.fit_logit_line([100 * v for v, _ in conv], [100 * r for _, r in conv])
        xs = np.linspace(min(v for v, _ in conv + pts), max(v for v, _ in conv + pts), 200)
        ax.plot(
            xs,
            metrics.sigmoid(a * metrics.logit(xs) + b),
            "--",
            c="0.3",
            zorder=2,
            label="trend of label-trained models (logit-linear fit)",
        )
    return conv + [(v, r) for v, r, _ in other]


def _draw_taori_baseline(ax, pts) -> list[tuple[float, float]]:
    """Without meta data, on in1000: the reference Taori baseline (val -> mean of 5 shifts; it
    includes ObjectNet, so it guides the eye rather than predicting this exact y quantity)."""
    base = metrics.BASELINES["mean5"]
    xs = np.linspace(min(v for v, _ in pts) * 0.9, min(0.99, max(v for v, _ in pts) * 1.05))
    ys = [base.predict(x) for x in xs]
    ax.plot(
        xs,
        ys,
        "--",
        c="0.3",
        zorder=2,
        label="ImageNet standard models: val -> mean of 5 shifts (Taori et al. fit)",
    )
    return list(zip(xs, ys))


LOGIT_CLIP = 0.005
LOGIT_TICKS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)


def _logit_axis(ax, axis, values) -> None:
    """Logit scale over the data (padded), ticks labelled as percentages and spaced so that
    their labels do not overlap (the logit scale squeezes the middle of the range)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("logit")
    lo, hi = metrics.logit(min(values)), metrics.logit(max(values))
    pad = max(0.1 * (hi - lo), 1.0)
    lo, hi = lo - pad, hi + pad
    (ax.set_xlim if axis is ax.xaxis else ax.set_ylim)(metrics.sigmoid(lo), metrics.sigmoid(hi))
    ticks, last = [], -np.inf
    for t in LOGIT_TICKS:
        if lo <= metrics.logit(t) <= hi and metrics.logit(t) - last >= (hi - lo) / 10:
            ticks.append(t)
            last = metrics.logit(t)
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    axis.set_minor_locator(NullLocator())


def _non_default(row) -> bool:
    return row.get("classifier") != default_classifier(row.get("loss"))


def _human(n: float) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:g}{suffix}"
    return f"{n:g}"


def _budget_axis(ax) -> None:
    """Log x axis labelled 10k / 100k / 1M instead of 10^4 ..., minor labels off."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _human(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def accuracy_ylim(values, min_pad: float = 0.05) -> tuple[float, float]:
    """y limits for accuracies (fractions): the data with a margin (at least `min_pad`, so a single
    point is not drawn in a band of 0.1 %), never beyond 0 % or 100 %."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    pad = max(min_pad, 0.1 * (hi - lo))
    return max(0.0, lo - pad), min(1.0, hi + pad)


def plot_scaling(rows, out_dir: str) -> list[str]:
    rows = [r for r in rows if r.get("budget")]
    if not rows:
        return []
    style = _Style.of(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    lines = defaultdict(list)
    for r in rows:
        key = (_loss(r), _mixture(r), _model(r), str(r.get("label_set")), str(r.get("classifier")))
        lines[key].append(r)
    several_label_sets = len({k[3] for k in lines}) > 1
    for (loss, mixture, model, label_set, classifier), group in sorted(lines.items()):
        group = sorted(group, key=lambda r: r["budget"])
        probe = _non_default(group[0])
        label = f"{LOSS_LABELS.get(loss, loss)}, data {mixture}, {model}"
        label += f", {label_set}" if several_label_sets else ""
        label += f", {CLASSIFIER_LABELS.get(classifier, classifier)}" if probe else ""
        for ax, col in zip(axes, ("val_top1", "avg_robustness")):
            pts = [(r["budget"], r[col]) for r in group if r.get(col) is not None]
            for r in group:
                yerr = None if r.get(col) is None else _err(r, col, r[col])
                if yerr is not None:
                    ax.errorbar(r["budget"], r[col], yerr=yerr, fmt="none", lw=0.8, capsize=2,
                                ecolor=style.colors[mixture], alpha=0.7)  # fmt: skip
            if pts:
                ax.plot(
                    *zip(*pts),
                    c=style.colors[mixture],
                    ls=style.lines[model],
                    lw=1.0 if probe else 1.8,
                    alpha=0.6 if probe else 1.0,
                    label=label,
                    **style.marker_kwargs(group[0]),
                )
    for ax, title in zip(axes, ("val top-1 (label set)", "average robustness (V2, Sketch, R, A)")):
        _budget_axis(ax)
        ax.set_ylim(*accuracy_ylim([y for line in ax.get_lines() for y in line.get_ydata()]))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("data budget: number of training samples (log scale)")
        ax.set_ylabel(title)
        ax.set_title(f"{title} vs data budget")
        ax.grid(True, which="both", alpha=0.3)
    # Below both panels: a legend inside either one would hide points or tick labels.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir, "scaling")


def plot_wise(rows, out_dir: str) -> list[str]:
    by_ls = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("alpha") is not None and None not in (r.get("val_top1"), r.get("avg_robustness")):
            by_ls[str(r.get("label_set"))][str(r.get("run"))].append(r)
    paths = []
    cmap = plt.get_cmap("tab10")
    for label_set, runs in sorted(by_ls.items()):
        fig, ax = plt.subplots(figsize=(6.4, 5.2))
        labelled = set()  # runs of one CLIP share their alpha-0 point: label it once
        for i, (run, group) in enumerate(sorted(runs.items())):
            group = sorted(group, key=lambda r: float(r["alpha"]))
            pts = [(r["val_top1"], r["avg_robustness"]) for r in group]
            ax.plot(*zip(*pts), "-o", c=cmap(i % 10), ms=6, label=f"{run} ({_model(group[0])})")
            for r, (x, y) in zip(group, pts):
                text = f"α={float(r['alpha']):g}"
                if (text, round(x, 4), round(y, 4)) in labelled:
                    continue
                labelled.add((text, round(x, 4), round(y, 4)))
                ax.annotate(
                    text, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, c="0.25"
                )
        # Linear axes fitted to the curves: the ensembles of one run differ by a few points, which
        # the padded logit axes of the other figures would squeeze into one spot.
        drawn = [p for line in ax.get_lines() for p in line.get_xydata()]
        for axis, col, lim in ((ax.xaxis, 0, ax.set_xlim), (ax.yaxis, 1, ax.set_ylim)):
            lim(*accuracy_ylim([p[col] for p in drawn], min_pad=0.01))
            axis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        mini = all(r.get("suite") == "mini" for g in runs.values() for r in g)
        ax.set_xlabel(("JANuS-mini val" if mini else "ImageNet val") + " top-1 on the label set")
        ax.set_ylabel("average robustness: mean top-1 of V2, Sketch, R, A")
        ax.set_title(
            f"WiSE-FT: (1-α) zero-shot + α fine-tuned weights, label set {label_set}", fontsize=10
        )
        ax.legend(fontsize=7, loc="best")
        ax.grid(True, which="major", alpha=0.3)
        paths += _save(fig, out_dir, f"wise_{safe_name(label_set)}")
    return paths


def plot_all(rows: Sequence[dict], out_dir: str, meta_csv: str | None = None) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    plain = [r for r in rows if r.get("alpha") is None]  # WiSE-FT rows: their own figure
    paths = plot_robustness_vs_val(plain, out_dir, meta_csv) + plot_scaling(plain, out_dir)
    return paths + plot_wise(rows, out_dir)
