"""The report's tables: rows (runs or cells) as markdown that also reads as plain text, values
to 4 significant digits, or 'value ± half-width' of their 95% interval.

`summary_table(rows)` is the short console table (val, the shift sets, average robustness and the
robustness ratio) that `janus.main` prints after a run and `janus.sweep` after a study.
"""

from __future__ import annotations

from collections.abc import Sequence

from janus import display, report_stats


def _cell(v) -> str:
    if v is None:
        return "n/a"
    return display.metric(v) if isinstance(v, float) else str(v)


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
