"""The report's intervals against references computed here independently: Clopper-Pearson from
its defining tail equations (and published values), t quantiles from a numerical integration of
the t density, and the seed-mean interval from numpy."""

import json
import math

import numpy as np
import pytest

from janus import report, report_cells, report_stats


@pytest.mark.parametrize(
    "k, n, lo, hi",
    # Published 95% Clopper-Pearson intervals (e.g. Brown, Cai & DasGupta 2001; R binom.test).
    [(0, 10, 0.0, 0.30850), (10, 10, 0.69150, 1.0), (5, 10, 0.18709, 0.81291)],
)
def test_clopper_pearson_published_values(k, n, lo, hi):
    got = report_stats.clopper_pearson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-5)


@pytest.mark.parametrize("k, n", [(1, 10), (37, 50), (656, 1000), (3, 750)])
def test_clopper_pearson_solves_its_tail_equations(k, n):
    lo, hi = report_stats.clopper_pearson(k, n)

    def pmf(i, p):
        return math.comb(n, i) * p**i * (1 - p) ** (n - i)

    assert sum(pmf(i, lo) for i in range(k, n + 1)) == pytest.approx(0.025, abs=1e-9)
    assert sum(pmf(i, hi) for i in range(k + 1)) == pytest.approx(0.025, abs=1e-9)
    assert lo < k / n < hi


def _t_cdf_by_integration(t, df):
    """Simpson's rule on the t density from 0 to t, plus 1/2."""
    x = np.linspace(0.0, t, 200_001)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = c * (1 + x**2 / df) ** (-(df + 1) / 2)
    h = x[1] - x[0]
    return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 14, 29, 2.7])
def test_t_quantile_against_numerical_integration(df):
    q = report_stats.t_quantile(0.975, df)
    assert _t_cdf_by_integration(q, df) == pytest.approx(0.975, abs=1e-7)
    assert report_stats.t_quantile(0.025, df) == pytest.approx(-q)


def test_t_quantile_table_values():
    table = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 29: 2.045}  # standard two-sided 95% table
    for df, q in table.items():
        assert report_stats.t_quantile(0.975, df) == pytest.approx(q, abs=5e-4)
    assert report_stats.t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)


def test_seed_interval_matches_numpy():
    rng = np.random.default_rng(0)
    for k in (2, 3, 5, 10):
        v = rng.normal(0.6, 0.02, size=k)
        i = report_stats.seed_interval(list(v))
        half = report_stats.t_quantile(0.975, k - 1) * v.std(ddof=1) / np.sqrt(k)
        assert (i.value, i.lo, i.hi, i.df) == pytest.approx((v.mean(), v.mean() - half,
                                                             v.mean() + half, k - 1))  # fmt: skip
    one = report_stats.seed_interval([0.5])
    assert one.lo is None and str(one) == "0.5000"
    assert report_stats.seed_interval([0.5, None]) is None


def test_difference_paired_by_seed_or_welch():
    a, b = {0: 0.60, 1: 0.62, 2: 0.61}, {0: 0.65, 1: 0.66, 2: 0.67}
    d = report_stats.difference(a, b)
    diffs = np.array([0.05, 0.04, 0.06])
    half = report_stats.t_quantile(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert d.method == "paired t" and (d.lo, d.hi) == pytest.approx((0.05 - half, 0.05 + half))
    assert d.excludes(0)
    w = report_stats.difference(a, {5: 0.65, 6: 0.66, 7: 0.67})  # other seeds: Welch
    va, vb = np.var(list(a.values()), ddof=1) / 3, np.var([0.65, 0.66, 0.67], ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = report_stats.t_quantile(0.975, df) * math.sqrt(va + vb)
    assert w.method == "welch t" and w.df == pytest.approx(df)
    assert (w.lo, w.hi) == pytest.approx((0.05 - half, 0.05 + half))
    assert report_stats.difference({0: 0.5}, {0: 0.6}).lo is None  # one seed: no interval


def _run(root, name, seed, val, rob, n_val=500, classifier="head", suite="mini"):
    d = root / name
    (d / "eval").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"seed": seed, "loss": "ce", "model": {"name": "m"}}))
    sets = {s: {"top1": rob, "n": 100, "classes": 10} for s in ("v2", "sketch", "r", "a")}
    sets["val"] = {"top1": val, "n": n_val, "classes": 10}
    result = {"step": 10, "model": "m", "loss": "ce", "label_set": "mini10", "suite": suite,
              "classifier": classifier, "sets": sets,
              "metrics": {"avg_robustness": rob, "robustness_ratio": rob / val,
                          "effective_robustness": rob / val}}  # fmt: skip
    (d / "eval" / "10.json").write_text(json.dumps(result))
    return d


def test_report_cells_average_seeds_with_t_intervals(tmp_path, capsys):
    vals = [0.60, 0.64, 0.62]
    for s, v in enumerate(vals):
        _run(tmp_path / "runs", f"ce_s{s}", s, v, 0.3 + 0.01 * s)
    _run(tmp_path / "runs", "alone", 0, 0.5, 0.25)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    rows = report.load_rows(report.find_runs([str(tmp_path / "runs")]))
    alone = next(r for r in rows if r["run"] == "alone")
    assert (alone["val_top1_lo"], alone["val_top1_hi"]) == pytest.approx(
        report_stats.clopper_pearson(250, 500)
    )
    cells, refusals = report_cells.cell_rows(rows)
    assert not refusals
    ce = next(c for c in cells if c["run"] == "ce")
    i = report_stats.seed_interval(vals)
    assert ce["seeds"] == 3 and (ce["val_top1"], ce["val_top1_lo"]) == pytest.approx(
        (i.value, i.lo)
    )
    assert ce["robustness_ratio_hi"] > ce["robustness_ratio"] > ce["robustness_ratio_lo"]
    out = capsys.readouterr().out
    assert f"| ce    | 3     | head       | {i}" in out  # 'mean ± half-width', 4 digits
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Cells" in md and str(i) in md
    svg = (tmp_path / "out" / "robustness_vs_val_mini10.svg").read_text()
    assert svg.count('<g id="LineCollection') >= 2  # error bars drawn


def test_runs_evaluated_differently_are_refused_not_averaged(tmp_path, capsys):
    _run(tmp_path / "runs", "ce_s0", 0, 0.6, 0.3)
    _run(tmp_path / "runs", "ce_s1", 1, 0.62, 0.31, n_val=400)
    cells, refusals = report_cells.cell_rows(
        report.load_rows(report.find_runs([str(tmp_path / "runs")]))
    )
    assert [c["run"] for c in cells] == [] and len(refusals) == 1
    assert "set val n: 500 vs 400" in refusals[0]
    _run(tmp_path / "b", "vl_s0", 0, 0.6, 0.3, classifier="zeroshot")
    _run(tmp_path / "b", "lp_s0", 0, 0.6, 0.3, classifier="linear_probe")
    assert report.main(["--compare", str(tmp_path / "runs/ce_s0"), str(tmp_path / "b")]) == 2
    assert "no classifier in common" in capsys.readouterr().err
    _run(tmp_path / "c", "x_s0", 0, 0.6, 0.3, suite="imagenet")
    assert report.main(["--compare", str(tmp_path / "runs/ce_s0"), str(tmp_path / "c")]) == 2
    assert "suite: 'mini' vs 'imagenet'" in capsys.readouterr().err


def test_compare_prints_the_difference_over_seeds(tmp_path, capsys):
    for s in range(3):
        _run(tmp_path / "a", f"ce_s{s}", s, 0.60 + 0.01 * s, 0.30)
        _run(tmp_path / "b", f"mix_s{s}", s, 0.66 + 0.012 * s, 0.30 + 0.001 * s)
    assert report.main(["--compare", str(tmp_path / "a"), str(tmp_path / "b/mix_s*")]) == 0
    out = capsys.readouterr().out
    d = report_stats.difference({s: 0.60 + 0.01 * s for s in range(3)},
                                {s: 0.66 + 0.012 * s for s in range(3)})  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("| val_top1"))
    assert str(d) in line and "| yes " in line and "paired t, df 2" in line


def test_compare_takes_ce_head_against_zero_shot_on_the_same_sets(tmp_path, capsys):
    """The study's question: one classifier a side (CE's head, a CLIP's zero-shot) is compared,
    as long as the sets are the same; different sets are still refused."""
    for s in range(2):
        _run(tmp_path / "ce", f"ce_s{s}", s, 0.60 + 0.01 * s, 0.30)
        _run(tmp_path / "vl", f"vl_s{s}", s, 0.50 + 0.01 * s, 0.31, classifier="zeroshot")
    assert report.main(["--compare", str(tmp_path / "ce"), str(tmp_path / "vl")]) == 0
    out = capsys.readouterr().out
    assert "A head, B zeroshot: A 2 seed(s), B 2 seed(s)" in out
    _run(tmp_path / "vl400", "vl_s0", 0, 0.5, 0.31, classifier="zeroshot", n_val=400)
    assert report.main(["--compare", str(tmp_path / "ce"), str(tmp_path / "vl400")]) == 2
    assert "set val n: 500 vs 400" in capsys.readouterr().err
