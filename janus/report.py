"""Gather eval results of many runs into a table and plots.

    python -m janus.report RUNDIR [RUNDIR ...] [--out DIR] [--meta [CSV]] [--all_steps]

Reads only `RUNDIR/eval/*.json` (the evaluator's output, DESIGN.md), `RUNDIR/config.json` and
`RUNDIR/data_manifest.json` (for the data budget and mixture), and optionally the paper's
meta-analysis CSV (`--meta` alone: the vendored `vlhub_meta_analysis.csv`). RUNDIR may also be a
parent folder of runs (every subfolder with an `eval/` folder is a run). Writes to --out (default
`report/`): `results.md`, `results.csv`, and the figures of `janus.report_plots` as PNG and SVG.
One row per (run, classifier, WiSE-FT alpha): the latest evaluated step, unless --all_steps.

`summary_table(rows)` is the short console table (val, the shift sets, average robustness and the
robustness ratio) that `janus.main` prints at the end of a run and `janus.sweep` at the end of a
study; `markdown_table` draws it and results.md.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from collections.abc import Sequence

from janus import display, report_stats
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
)
# The metrics a cell averages over seeds (and --compare differences).
METRICS = [f"{s}_top1" for s in SET_NAMES] + [
    "avg_robustness",
    "robustness_ratio",
    "effective_robustness",
    "taori_er_mean5",
]
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
        if not all_steps:  # latest step per classifier (and WiSE-FT alpha)
            latest = {}
            for r in results:
                c = (r.get("classifier"), r.get("alpha"))
                if c not in latest or int(r.get("step", -1)) > int(latest[c].get("step", -1)):
                    latest[c] = r
            results = list(latest.values())
        name = os.path.basename(os.path.normpath(rundir))
        seed = (_read_json(os.path.join(rundir, "config.json")) or {}).get("seed")
        cell = name[: -len(f"_s{seed}")] if name.endswith(f"_s{seed}") else name

        def order(r):
            alpha = -1.0 if r.get("alpha") is None else float(r["alpha"])
            return str(r.get("classifier")), alpha, int(r.get("step", -1))

        for r in sorted(results, key=order):
            row = {
                "run": name,
                "seed": seed,
                "cell": cell,
                "budget": budget,
                "mixture": mixture,
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


def _cell(v) -> str:
    return display.metric(v) if isinstance(v, float) else _fmt(v, "n/a")


# (row key, header) of the summary printed after a run or a study.
SUMMARY_COLUMNS = (
    ("run", "run"),
    ("step", "step"),
    ("classifier", "classifier"),
    ("val_top1", "val"),
    ("v2_top1", "V2"),
    ("sketch_top1", "Sketch"),
    ("r_top1", "R"),
    ("a_top1", "A"),
    ("objectnet_top1", "ObjectNet"),
    ("avg_robustness", "avg robustness"),
    ("robustness_ratio", "robustness ratio"),
)


def _with_interval(row: dict, key: str) -> str:
    """'value ± half-width' where the row has the key's bounds (`KEY_lo`, `KEY_hi`), else the
    value alone."""
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if not isinstance(v, float) or lo is None or hi is None:
        return _cell(v)
    return str(report_stats.Interval(v, lo, hi))


def markdown_table(
    rows: Sequence[dict], columns: Sequence[tuple[str, str]], intervals: bool = False
) -> str:
    """A markdown table of `rows` over (key, header) columns, padded so that it also reads as
    plain text; a null or missing value is 'n/a'. `intervals`: 'value ± half-width' where a row
    has bounds (half the 95% interval's width; a binomial interval is not symmetric, the CSV has
    its bounds)."""
    fmt = _with_interval if intervals else (lambda row, key: _cell(row.get(key)))
    cells = [[header for _, header in columns]]
    cells += [[fmt(row, key) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    lines = [line(cells[0]), line(["-" * w for w in widths])] + [line(c) for c in cells[1:]]
    return "\n".join(lines)


def summary_table(rows: Sequence[dict], intervals: bool = False) -> str:
    """val, V2, Sketch, R, A, ObjectNet top-1, average robustness and robustness ratio per row
    (`load_rows`, or `cell_rows`' cells); n/a where a run has no value; `intervals`: with
    '± half-width' of the 95% interval where there is one."""
    return markdown_table(rows, SUMMARY_COLUMNS, intervals)


CELL_COLUMNS = (
    ("run", "cell"),
    ("seeds", "seeds"),
    ("classifier", "classifier"),
) + SUMMARY_COLUMNS[3:]


def _group_key(row: dict) -> tuple:
    return row.get("cell") or row.get("run"), row.get("classifier"), row.get("alpha")


def cell_rows(rows: Sequence[dict]) -> tuple[list[dict], list[str]]:
    """Runs that differ only by seed (one cell, classifier and alpha) as one row: each metric's
    mean over seeds with the 95% t-interval (`report_stats.seed_interval`) as `KEY_lo/_hi`; a
    cell of one run keeps its run's row (binomial bounds). -> (cell rows, refusals): a cell
    whose runs were evaluated on different sets or protocols is not averaged; its refusal names
    the difference."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(_group_key(row), []).append(row)
    cells, refusals = [], []
    for (cell, _, _), group in groups.items():
        if len(group) == 1:
            cells.append({**group[0], "run": cell, "seeds": 1})
            continue
        first = group[0]
        diffs = []
        for other in group[1:]:
            d = report_stats.protocol_difference(
                first.get("protocol", {}), other.get("protocol", {})
            )
            if d:
                diffs.append(f"{first['run']} vs {other['run']}: {'; '.join(d)}")
        seeds = [r.get("seed") for r in group]
        if len(set(seeds)) < len(seeds):
            diffs.append(f"runs {[r['run'] for r in group]} repeat a seed ({seeds})")
        if diffs:
            refusals.append(
                f"cell {cell}: not averaged, evaluated differently: {' | '.join(diffs)}"
            )
            continue
        out = {k: first.get(k) for k in ("model", "loss", "label_set", "suite", "classifier")}
        out.update(run=cell, cell=cell, seeds=len(group), alpha=first.get("alpha"))
        out.update(budget=first.get("budget"), mixture=first.get("mixture"))
        out["step"] = "/".join(sorted({str(r.get("step")) for r in group}))
        for key in METRICS:
            i = report_stats.seed_interval([r.get(key) for r in group])
            out[key] = None if i is None else i.value
            if i is not None and i.lo is not None:
                out[f"{key}_lo"], out[f"{key}_hi"] = i.lo, i.hi
        cells.append(out)
    return cells, refusals


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
        markdown_table(rows, [(c, c) for c in cols if not c.endswith(("_lo", "_hi"))], True),
    ]
    cells, refusals = cell_rows(rows)
    if any(c["seeds"] > 1 for c in cells) or refusals:
        lines += [
            "",
            "## Cells (runs that differ only by seed)",
            "",
            "Mean over seeds ± half-width of the 95% t-interval over seeds (df = seeds - 1); a "
            "cell of one run: its own value ± half the 95% Clopper-Pearson interval over the "
            "set's images (avg robustness: normal approximation over its four sets).",
            "",
            markdown_table(cells, CELL_COLUMNS, True),
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
    cells = cell_rows(rows)[0] if not all_steps else rows
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


def compare(rows_a: Sequence[dict], rows_b: Sequence[dict]) -> tuple[str, list[str]]:
    """The difference B - A of every metric over seeds, per (classifier, alpha) both sides have
    (or between the one classifier each side has, e.g. CE's head against a CLIP's zero-shot):
    mean(B) - mean(A) with its 95% t-interval (paired by seed when both sides hold the same
    seeds, else Welch) and whether it excludes 0. -> (table, refusals). Runs evaluated on
    different sets or protocols are refused (the refusal names the difference), and so is a side
    that repeats a seed (a side is one cell's seeds)."""
    refusals = []
    sides = []
    for label, rows in (("A", rows_a), ("B", rows_b)):
        by = {}
        for r in rows:
            by.setdefault((r.get("classifier"), r.get("alpha")), []).append(r)
        sides.append(by)
        for key, group in by.items():
            seeds = [r.get("seed") for r in group]
            if len(set(seeds)) < len(seeds):
                refusals.append(
                    f"side {label} ({key[0]}): runs {[r['run'] for r in group]} repeat a seed "
                    f"({seeds}); a side is the seeds of one cell"
                )
    a_side, b_side = sides
    common = [(k, k) for k in a_side if k in b_side]
    cross = not common and len(a_side) == 1 and len(b_side) == 1
    if cross:  # one classifier a side, e.g. CE's head against InfoNCE's zero-shot: the study's
        common = [(next(iter(a_side)), next(iter(b_side)))]  # question, on the same sets
    if not common:
        refusals.append(
            f"no classifier in common: A has {sorted(map(str, a_side))}, B has "
            f"{sorted(map(str, b_side))} (several classifiers a side: compare one each)"
        )
    # Across objectives the classifier (and its templates) differ by design; the sets may not.
    ignore = ("classifier", "templates") if cross else ()
    lines = []
    for key_a, key_b in common:
        group = a_side[key_a] + b_side[key_b]
        ref = group[0]
        diffs = [
            f"{ref['run']} vs {r['run']}: {'; '.join(d)}"
            for r in group[1:]
            if (d := report_stats.protocol_difference(ref["protocol"], r["protocol"], ignore))
        ]
        if diffs:
            refusals.append(f"{key_a[0]}: evaluated differently, not compared: {' | '.join(diffs)}")
            continue
        if refusals:
            continue
        head = f"classifier {key_a[0]}" if key_a == key_b else f"A {key_a[0]}, B {key_b[0]}"
        head += "" if key_a[1] is None else f", alpha {key_a[1]}"
        n_a, n_b = len(a_side[key_a]), len(b_side[key_b])
        lines += [f"{head}: A {n_a} seed(s), B {n_b} seed(s)", ""]
        table = []
        for m in METRICS:
            a = {r.get("seed"): r.get(m) for r in a_side[key_a]}
            b = {r.get("seed"): r.get(m) for r in b_side[key_b]}
            if all(v is None for v in (*a.values(), *b.values())):
                continue
            ia = report_stats.seed_interval(list(a.values()))
            ib = report_stats.seed_interval(list(b.values()))
            d = report_stats.difference(a, b)
            excl = "n/a (needs >= 2 seeds a side)" if d is None or d.lo is None else (
                "yes" if d.excludes(0) else "no"
            )  # fmt: skip
            method = "" if d is None or d.lo is None else f"{d.method}, df {d.df:.3g}"
            table.append(
                {"metric": m, "A": str(ia) if ia else "n/a", "B": str(ib) if ib else "n/a",
                 "B - A": str(d) if d else "n/a", "interval": "n/a" if d is None or d.lo is None
                 else f"[{display.metric(d.lo)}, {display.metric(d.hi)}]",
                 "excludes 0": excl, "method": method}
            )  # fmt: skip
        cols = ["metric", "A", "B", "B - A", "interval", "excludes 0", "method"]
        lines += [markdown_table(table, [(c, c) for c in cols]), ""]
    return "\n".join(lines), refusals


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
        table, refusals = compare(rows_a, rows_b)
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
    cells, refusals = cell_rows(rows)
    if args.all_steps:
        print(summary_table(rows, intervals=True))
    else:  # a row per cell: the mean over its seeds, or its one run
        print(markdown_table(cells, CELL_COLUMNS, intervals=True))
    for r in refusals:
        print(f"janus.report: {r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
