"""The report: table and plots from a few fake runs' eval results (and the meta-analysis CSV)."""

import csv
import json

import pytest

from janus import report


def _run(root, name, loss, model, budget, val, rob, steps=(100, 200)):
    d = root / name
    (d / "eval").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"loss": loss, "model": {"name": model}}))
    (d / "data_manifest.json").write_text(json.dumps({"budget": budget}))
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
    out = tmp_path / "out"
    assert report.main([str(runs), "--out", str(out), "--meta"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["run"] for r in rows] == ["ce_1x", "ce_20x", "vl_1x", "vl_vit"]
    assert rows[1]["step"] == "200" and float(rows[1]["val_top1"]) == pytest.approx(0.92)
    assert rows[0]["budget"] == "120000" and rows[2]["loss"] == "infonce"
    md = (out / "results.md").read_text()
    assert "| ce_20x | 200 |" in md and "avg_robustness" in md
    for stem in ("robustness_vs_val_in100", "scaling"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 5000, stem
    svg = (out / "robustness_vs_val_in100.svg").read_text()
    assert "meta-analysis" in svg and "average robustness" in svg
    assert "trend of label-trained models" in svg  # the baseline line
    assert "80%" in svg and "objective: VL: InfoNCE on captions" in svg  # percent logit ticks
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


def test_report_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        report.find_runs([str(tmp_path / "nothing_here")])
