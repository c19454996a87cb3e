"""The report: table and plots from a few fake runs' eval results (and the meta-analysis CSV)."""

import csv
import json

import pytest

from janus import report, report_tables


def _run(root, name, loss, model, budget, val, rob, steps=(100, 200), sources=("in100",)):
    d = root / name
    (d / "eval").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"loss": loss, "model": {"name": model}}))
    per_source = {s: budget // len(sources) for s in sources} | {"unused": 0}
    (d / "data_manifest.json").write_text(json.dumps({"budget": budget, "per_source": per_source}))
    for step in steps:
        frac = step / max(steps)
        sets = {
            s: {"top1": rob * frac, "top5": 0.9, "n": 50, "classes": 100}
            for s in ("v2", "sketch", "r", "a")
        }
        sets["val"] = {"top1": val * frac, "top5": 0.99, "n": 500, "classes": 100}
        result = {
            "step": step,
            "checkpoint": f"checkpoints/{step}",
            "model": model,
            "loss": loss,
            "label_set": "in100",
            "suite": "imagenet",
            "classifier": "head",
            "sets": sets,
            "metrics": {
                "avg_robustness": rob * frac,
                "robustness_ratio": rob / val,
                "effective_robustness": rob / val,
            },
            "notes": [],
        }
        (d / "eval" / f"{step}.json").write_text(json.dumps(result))
    return d


def test_report_table_and_plots(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "ce_1x", "ce", "clip_rn50", 120_000, 0.87, 0.425)
    _run(runs, "ce_20x", "ce", "clip_rn50", 2_400_000, 0.92, 0.70)
    _run(runs, "vl_1x", "infonce", "clip_rn50", 120_000, 0.85, 0.415)
    _run(runs, "vl_vit", "infonce", "vit_s16", 120_000, 0.80, 0.35)
    _run(runs, "vl_mix", "infonce", "clip_rn50", 240_000, 0.84, 0.45, sources=("laion", "in100"))
    out = tmp_path / "out"
    assert report.main([str(runs), "--out", str(out), "--meta"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["run"] for r in rows] == ["ce_1x", "ce_20x", "vl_1x", "vl_mix", "vl_vit"]
    assert rows[1]["step"] == "200" and float(rows[1]["val_top1"]) == pytest.approx(0.92)
    assert rows[0]["budget"] == "120000" and rows[2]["loss"] == "infonce"
    # The data mixture: the sources with a non-zero count, sorted, joined by '+'.
    assert [r["mixture"] for r in rows] == ["in100"] * 3 + ["in100+laion", "in100"]
    md = (out / "results.md").read_text()
    assert "| ce_20x | 200  |" in md and "avg_robustness" in md and "| in100+laion |" in md
    for stem in ("robustness_vs_val_in100", "scaling"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 5000, stem
    svg = (out / "robustness_vs_val_in100.svg").read_text()
    assert "meta-analysis" in svg and "average robustness" in svg
    assert "trend of label-trained models" in svg  # the baseline line
    assert "80%" in svg  # percent logit ticks
    # Marker per objective, colour per data mixture, fill per architecture (the commoner filled).
    for label in ("objective: VL: InfoNCE on captions", "objective: CE on labels",
                  "data: in100+laion", "architecture: clip_rn50",
                  "architecture: vit_s16, bottom half filled"):  # fmt: skip
        assert label in svg, label
    assert "InfoNCE on captions, data in100+laion, clip_rn50" in (out / "scaling.svg").read_text()
    # All steps on request.
    report.main([str(runs / "ce_1x"), "--out", str(tmp_path / "o2"), "--all_steps"])
    assert len(list(csv.DictReader(open(tmp_path / "o2" / "results.csv")))) == 2


def test_report_mini_run_at_100_percent(tmp_path):
    """A JANuS-mini run with val 100 % (off a logit axis) and no meta-analysis columns."""
    d = _run(tmp_path, "mini", "ce", "resnet_tiny", 2000, 1.0, 0.4, steps=(200,))
    result = json.loads((d / "eval" / "200.json").read_text())
    result.update(label_set="mini10", suite="mini")
    (d / "eval" / "200.json").write_text(json.dumps(result))
    assert report.main([str(d), "--out", str(tmp_path / "out"), "--meta"]) == 0
    svg = (tmp_path / "out" / "robustness_vs_val_mini10.svg").read_text()
    assert "JANuS-mini val top-1" in svg and "no results on label set mini10" in svg
    assert "drawn at 0.5% / 99.5%" in svg


def test_summary_table_prints_na_for_missing_values(tmp_path):
    """The table janus.main prints at the end of a run (and janus.sweep after a study)."""
    d = _run(tmp_path, "mini", "ce", "resnet_tiny", 2000, 0.9, 0.4, steps=(200,))
    result = json.loads((d / "eval" / "200.json").read_text())
    del result["sets"]["a"]
    result["metrics"]["robustness_ratio"] = None
    (d / "eval" / "200.json").write_text(json.dumps(result))
    lines = report_tables.summary_table(report.load_rows([str(d)])).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "run", "step", "classifier", "val", "V2", "Sketch", "R", "A", "ObjectNet",
        "avg robustness", "robustness ratio",
    ]  # fmt: skip
    assert [c.strip() for c in lines[2].strip("|").split("|")] == [
        "mini", "200", "head", "0.9000", "0.4000", "0.4000", "0.4000", "n/a", "n/a", "0.4000",
        "n/a",
    ]  # fmt: skip
    assert len({len(line) for line in lines}) == 1  # padded: the columns line up


def test_run_mixture_without_per_source_counts(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"data": {"train": "d/web*1+d/curated*3"}}))
    assert report.run_mixture(str(tmp_path)) == "curated+web"
    manifest = {"dirs": [{"dir": "/x/mini/flickr/"}, {"dir": "/x/mini/oi"}]}
    (tmp_path / "data_manifest.json").write_text(json.dumps(manifest))
    assert report.run_mixture(str(tmp_path)) == "flickr+oi"
    assert report.run_mixture(str(tmp_path / "nothing")) is None


def test_report_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        report.find_runs([str(tmp_path / "nothing_here")])


def test_scaling_y_axis_stays_within_0_and_100_percent():
    from janus.report_plots import accuracy_ylim

    assert accuracy_ylim([0.5]) == (0.45, 0.55)  # a single point: a 10-point band around it
    assert accuracy_ylim([0.99]) == (0.94, 1.0)  # never beyond 100 %
    assert accuracy_ylim([0.01, None]) == (0.0, 0.060000000000000005)
    lo, hi = accuracy_ylim([0.2, 0.8])
    assert (round(lo, 6), round(hi, 6)) == (0.14, 0.86)
    assert accuracy_ylim([]) == (0.0, 1.0)


def test_figure_names_from_label_sets_are_one_path_component(tmp_path):
    """A random label set's name holds ':' and a label-set file's holds '/': the figure's file name
    keeps them out, its title keeps the name."""
    d = _run(tmp_path, "ls5", "ce", "resnet_tiny", 160, 0.7, 0.4, steps=(75,))
    result = json.loads((d / "eval" / "75.json").read_text())
    result.update(label_set="random:5:0:mini25", suite="mini")
    (d / "eval" / "75.json").write_text(json.dumps(result))
    assert report.main([str(d), "--out", str(tmp_path / "out")]) == 0
    svg = (tmp_path / "out" / "robustness_vs_val_random-5-0-mini25.svg").read_text()
    assert "label set random:5:0:mini25" in svg


def test_wise_curve_one_point_per_alpha(tmp_path):
    """`janus.evaluate --wise` results: one row per alpha (the latest step of each), drawn only in
    the WiSE-FT figure, in alpha order and labelled; older results (no alpha) stay as they were."""
    d = _run(tmp_path / "runs", "mini_ft", "ce", "clip_rn_tiny", 800, 0.7, 0.3, steps=(125,))
    plain = json.loads((d / "eval" / "125.json").read_text())
    for step in (50, 125):
        for alpha, val, rob in ((0.0, 0.5, 0.3), (0.5, 0.65, 0.35), (1.0, 0.7, 0.3)):
            wise = dict(plain, step=step, alpha=alpha, label_set="mini25", suite="mini")
            wise["sets"] = {**plain["sets"], "val": {**plain["sets"]["val"], "top1": val}}
            wise["metrics"] = {**plain["metrics"], "avg_robustness": rob + step / 1e4}
            (d / "eval" / f"{step}_wise{alpha:g}.json").write_text(json.dumps(wise))
    out = tmp_path / "out"
    assert report.main([str(d), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["step"], r["alpha"], r["label_set"]) for r in rows] == [
        ("125", "", "in100"),
        ("125", "0.0000", "mini25"),
        ("125", "0.5000", "mini25"),
        ("125", "1.0000", "mini25"),
    ]
    assert float(rows[2]["avg_robustness"]) == pytest.approx(0.3625)
    svg = (out / "wise_mini25.svg").read_text()
    assert "α=0.5" in svg and "mini_ft (clip_rn_tiny)" in svg and "WiSE-FT" in svg
    assert not (out / "robustness_vs_val_mini25.svg").exists()  # WiSE rows only in their figure
    assert (out / "robustness_vs_val_in100.svg").exists()
