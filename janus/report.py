"""Gather eval results of many runs into a table and plots.

    python -m janus.report RUNDIR [RUNDIR ...] [--out DIR] [--meta [CSV]] [--all_steps]

Reads only `RUNDIR/eval/*.json` (the evaluator's output, DESIGN.md), `RUNDIR/config.json` and
`RUNDIR/data_manifest.json` (for the data budget and mixture), and optionally the paper's
meta-analysis CSV (`--meta` alone: the vendored `vlhub_meta_analysis.csv`). RUNDIR may also be a
parent folder of runs (every subfolder with an `eval/` folder is a run). Writes to --out (default
`report/`): `results.md`, `results.csv`, and the figures of `janus.report_plots` as PNG and SVG.
One row per (run, classifier, WiSE-FT alpha): the latest evaluated step, unless --all_steps.

The tables are drawn by `janus.report_tables`; seeds are averaged into cells, and cells compared
(`--compare`), by `janus.report_cells`.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from collections.abc import Sequence

from janus import report_cells, report_stats, report_tables
from janus.evaluate.sets import SET_NAMES

COLUMNS = (
    ["run", "step", "model", "loss", "label_set", "suite", "classifier", "alpha", "mixture"]
    + ["budget"]
    + [f"{s}_top1" for s in SET_NAMES]
    + ["avg_robustness", "robustness_ratio", "taori_er_mean5"]
    # Added with issue #30 (after the original columns): the seed, its cell, the effective
    # robustness, and per set its image count and 95% Clopper-Pearson bounds.
    + ["seed", "cell", "effective_robustness"]
    + [f"{s}_n" for s in SET_NAMES]
    + [f"{s}_top1_{b}" for s in SET_NAMES for b in ("lo", "hi")]
    + ["avg_robustness_lo", "avg_robustness_hi"]
    # Added with issue #28: which weights were evaluated (params | ema | avg; janus.evaluate
    # --params), one row each.
    + ["params"]
)
ROBUSTNESS_SETS = ("v2", "sketch", "r", "a")


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def _get(d, dotted, default=None):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def run_budget(rundir: str) -> int | None:
    """Number of training examples: data_manifest.json's budget / example count, else config."""
    manifest = _read_json(os.path.join(rundir, "data_manifest.json")) or {}
    config = _read_json(os.path.join(rundir, "config.json")) or {}
    for value in (
        manifest.get("budget"),
        manifest.get("n"),
        manifest.get("num_examples"),
        manifest.get("n_examples"),
        _get(config, "resolved.budget"),
        _get(config, "resolved.num_train_examples"),
        _get(config, "data.budget"),
    ):
        if isinstance(value, int | float) and value > 0:
            return int(value)
    return None


def run_mixture(rundir: str) -> str | None:
    """The run's data mixture: the names of the sources it trained on (non-zero counts in
    data_manifest.json's per_source), sorted and joined by '+', e.g. 'curated' or
    'curated+flickr+oi+web'; without per-source counts, the records dirs' names (manifest `dirs`,
    else config.json's data.train). None when neither file says."""
    manifest = _read_json(os.path.join(rundir, "data_manifest.json")) or {}
    per_source = manifest.get("per_source")
    if isinstance(per_source, dict) and any(n for n in per_source.values()):
        return "+".join(sorted(str(s) for s, n in per_source.items() if n))
    dirs = [d.get("dir") for d in manifest.get("dirs") or [] if isinstance(d, dict)]
    if not dirs:
        train = _get(_read_json(os.path.join(rundir, "config.json")) or {}, "data.train")
        if isinstance(train, str):  # "dir" or "dir_a*1+dir_b*3"
            dirs = [part.rsplit("*", 1)[0] for part in train.split("+")]
        elif isinstance(train, list | tuple):
            dirs = [t.get("dir") if isinstance(t, dict) else t for t in train]
    names = sorted({os.path.basename(os.path.normpath(str(d))) for d in dirs if d})
    return "+".join(names) or None


def find_runs(paths: Sequence[str]) -> list[str]:
    runs = []
    for p in paths:
        if os.path.isdir(os.path.join(p, "eval")):
            runs.append(p)
        elif os.path.isdir(p):
            subs = sorted(d for d in glob.glob(os.path.join(p, "*")) if os.path.isdir(f"{d}/eval"))
            if not subs:
                raise FileNotFoundError(f"{p}: no eval/ folder in it or in its subfolders")
            runs.extend(subs)
        else:
            raise FileNotFoundError(f"{p}: not a directory")
    return runs


def _weights(result: dict) -> str:
    """The weights an eval result is of; results written before janus.evaluate --params: params."""
    return result.get("params") or "params"


def load_rows(rundirs: Sequence[str], all_steps: bool = False) -> list[dict]:
    """Table rows from the runs' eval JSONs (see COLUMNS)."""
    rows = []
    for rundir in rundirs:
        results = []
        for path in glob.glob(os.path.join(rundir, "eval", "*.json")):
            r = _read_json(path)
            if isinstance(r, dict) and "sets" in r:
                results.append(r)
        budget, mixture = run_budget(rundir), run_mixture(rundir)
        if not all_steps:  # latest step per classifier (and WiSE-FT alpha, and weights)
            latest = {}
            for r in results:
                c = (r.get("classifier"), r.get("alpha"), _weights(r))
                if c not in latest or int(r.get("step", -1)) > int(latest[c].get("step", -1)):
                    latest[c] = r
            results = list(latest.values())
        name = os.path.basename(os.path.normpath(rundir))
        seed = (_read_json(os.path.join(rundir, "config.json")) or {}).get("seed")
        cell = name[: -len(f"_s{seed}")] if name.endswith(f"_s{seed}") else name

        def order(r):
            alpha = -1.0 if r.get("alpha") is None else float(r["alpha"])
            return str(r.get("classifier")), alpha, _weights(r), int(r.get("step", -1))

        for r in sorted(results, key=order):
            row = {
                "run": name,
                "seed": seed,
                "cell": cell,
                "budget": budget,
                "mixture": mixture,
                "params": _weights(r),
                **{
                    k: r.get(k)
                    for k in ("step", "model", "loss", "label_set", "suite", "classifier", "alpha")
                },
            }
            for s in SET_NAMES:
                row[f"{s}_top1"], row[f"{s}_n"] = _get(r, f"sets.{s}.top1"), _get(r, f"sets.{s}.n")
                i = report_stats.top1_interval(row[f"{s}_top1"], row[f"{s}_n"])
                if i is not None and i.lo is not None:
                    row[f"{s}_top1_lo"], row[f"{s}_top1_hi"] = i.lo, i.hi
            m = r.get("metrics") or {}
            for k in (
                "avg_robustness",
                "robustness_ratio",
                "effective_robustness",
                "taori_er_mean5",
            ):
                row[k] = m.get(k)
            parts = [(row[f"{s}_top1"], row[f"{s}_n"]) for s in ROBUSTNESS_SETS]
            i = report_stats.mean_interval(parts)
            if i is not None and row["avg_robustness"] is not None:
                row["avg_robustness_lo"], row["avg_robustness_hi"] = i.lo, i.hi
            row["protocol"] = report_stats.protocol(r)  # not a column: for cells and --compare
            rows.append(row)
    return rows


def _fmt(v, missing: str = ""):
    if v is None:
        return missing
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_table(rows: list[dict], out_dir: str) -> tuple[str, str]:
    """results.csv (all columns) and results.md (columns with at least one value)."""
    os.makedirs(out_dir, exist_ok=True)
    csv_path, md_path = os.path.join(out_dir, "results.csv"), os.path.join(out_dir, "results.md")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
    cols = [c for c in COLUMNS if any(row.get(c) is not None for row in rows)]
    lines = [
        "# Results",
        "",
        "Top-1 accuracies (fractions) restricted to each run's label set; avg_robustness = mean "
        "top-1 over V2, Sketch, R and A; robustness_ratio = avg_robustness / val (the paper's "
        "'effective robustness'); taori_er_mean5 = mean-of-5-shifts accuracy minus the ImageNet "
        "baseline's prediction (Taori et al. 2020); mixture = the sources trained on.",
        "",
        report_tables.markdown_table(
            rows, [(c, c) for c in cols if not c.endswith(("_lo", "_hi"))], True
        ),
    ]
    cells, refusals = report_cells.cell_rows(rows)
    if any(c["seeds"] > 1 for c in cells) or refusals:
        lines += [
            "",
            "## Cells (runs that differ only by seed)",
            "",
            "Mean over seeds ± half-width of the 95% t-interval over seeds (df = seeds - 1); a "
            "cell of one run: its own value ± half the 95% Clopper-Pearson interval over the "
            "set's images (avg robustness: normal approximation over its four sets).",
            "",
            report_tables.markdown_table(cells, report_tables.CELL_COLUMNS, True),
            *[f"\n{r}" for r in refusals],
        ]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path, md_path


def write_report(
    rundirs: Sequence[str], out_dir: str, meta_csv: str | None = None, all_steps: bool = False
) -> tuple[list[dict], list[str]]:
    """The table and figures of `rundirs` in `out_dir`. -> (rows, written paths); no rows, no
    files."""
    rows = load_rows(rundirs, all_steps=all_steps)
    if not rows:
        return rows, []
    from janus import report_plots  # matplotlib only when plotting

    paths = list(write_table(rows, out_dir))
    # The figures draw a point per cell: the mean over its seeds with t-interval error bars.
    cells = report_cells.cell_rows(rows)[0] if not all_steps else rows
    return rows, paths + report_plots.plot_all(cells, out_dir, meta_csv=meta_csv)


def _side(spec: str) -> list[str]:
    """A --compare side: comma-separated run dirs, folders of runs or glob patterns."""
    paths = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        hits = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
        if not hits:
            raise FileNotFoundError(f"{part}: matches nothing")
        paths += hits
    return find_runs(paths)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m janus.report", description=__doc__.split("\n\n")[0])
    p.add_argument("rundirs", nargs="*", help="training workdirs (or folders of workdirs)")
    p.add_argument("--out", default="report", help="output folder (default: report/)")
    p.add_argument(
        "--meta",
        nargs="?",
        const="reference",
        default=None,
        help="meta-analysis CSV drawn as grey background points; alone: the vendored "
        "vlhub_meta_analysis.csv",
    )
    p.add_argument("--all_steps", action="store_true", help="one row per evaluated step")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("RUNS_A", "RUNS_B"),
        help="print B - A of every metric over seeds with its 95%% t-interval (paired by seed "
        "when both sides have the same seeds, else Welch) and whether it excludes 0; each side "
        "is comma-separated run dirs, folders of runs or quoted glob patterns (one cell's seeds)",
    )
    args = p.parse_args(argv)
    if args.compare:
        try:
            rows_a, rows_b = (load_rows(_side(s), args.all_steps) for s in args.compare)
        except (OSError, ValueError) as e:
            print(f"janus.report: {e}", file=sys.stderr)
            return 2
        table, refusals = report_cells.compare(rows_a, rows_b)
        for r in refusals:
            print(f"janus.report: refused: {r}", file=sys.stderr)
        if refusals:
            return 2
        print(f"B - A, B = {args.compare[1]}, A = {args.compare[0]}\n\n{table}")
        return 0
    if not args.rundirs:
        p.error("give RUNDIR(s), or --compare RUNS_A RUNS_B")

    meta = args.meta
    if meta == "reference":
        from janus.data.reference import reference_path

        meta = str(reference_path("vlhub_meta_analysis.csv"))
    rows, paths = write_report(find_runs(args.rundirs), args.out, meta, args.all_steps)
    if not rows:
        print("no eval results found in", args.rundirs, file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    cells, refusals = report_cells.cell_rows(rows)
    if args.all_steps:
        print(report_tables.summary_table(rows, intervals=True))
    else:  # a row per cell: the mean over its seeds, or its one run
        print(report_tables.markdown_table(cells, report_tables.CELL_COLUMNS, intervals=True))
    for r in refusals:
        print(f"janus.report: {r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
