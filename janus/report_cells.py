"""Cells and their comparison: runs that differ only by seed averaged into one row with the 95%
t-interval over seeds (`cell_rows`), and the difference of two cells (`compare`, for
`janus.report --compare`). Runs evaluated on different sets or protocols are refused, never
averaged; the statistics are `janus.report_stats`'.
"""

from __future__ import annotations

from collections.abc import Sequence

from janus import display, report_stats
from janus.evaluate.sets import SET_NAMES
from janus.report_tables import markdown_table

# The metrics a cell averages over seeds (and --compare differences).
METRICS = [f"{s}_top1" for s in SET_NAMES] + [
    "avg_robustness",
    "robustness_ratio",
    "effective_robustness",
    "taori_er_mean5",
]


def _group_key(row: dict) -> tuple:
    cell = row.get("cell") or row.get("run")
    return cell, row.get("classifier"), row.get("alpha"), row.get("params")


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
    for (cell, *_), group in groups.items():
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
        out["params"] = first.get("params")
        out.update(budget=first.get("budget"), mixture=first.get("mixture"))
        out["step"] = "/".join(sorted({str(r.get("step")) for r in group}))
        for key in METRICS:
            i = report_stats.seed_interval([r.get(key) for r in group])
            out[key] = None if i is None else i.value
            if i is not None and i.lo is not None:
                out[f"{key}_lo"], out[f"{key}_hi"] = i.lo, i.hi
        cells.append(out)
    return cells, refusals


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
            by.setdefault((r.get("classifier"), r.get("alpha"), r.get("params")), []).append(r)
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
        head += "" if key_a[2] in (None, "params") else f", {key_a[2]} weights"
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
