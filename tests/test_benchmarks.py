"""The benchmarks' code runs, at tiny sizes on the CPU: gpu.sh --smoke and data_scale.py; a ratio is
refused on a loaded machine (benchmarks/machine.py)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_smoke_prints_every_measurement():
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("XLA_FLAGS", None)  # one device, as on one GPU
    out = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--smoke"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    by_bench = {}
    for r in rows:
        by_bench.setdefault(r["bench"], []).append(r)
    assert sorted(by_bench) == [
        "device", "evaluator", "input_per_core", "total", "train_pipeline", "train_synthetic"
    ]  # fmt: skip
    assert by_bench["device"][0]["platform"] == "cpu"
    assert by_bench["device"][0]["peak_flops_per_device"] is None  # so MFU is null, not made up
    train = {(r["model"], r["loss"]): r for r in by_bench["train_synthetic"]}
    assert sorted(train) == [("clip_rn_tiny", "infonce"), ("resnet_tiny", "ce"), ("vit_tiny", "ce")]
    for r in train.values():
        assert r["dtype"] == "bfloat16" and r["global_batch"] == 8 and r["devices"] == 1
        assert r["images_per_s_per_device"] > 0 and r["flops_per_step_per_device"] > 0
        assert r["mfu"] is None and r["target_mfu"] == 0.45
    assert train[("vit_tiny", "ce")]["target_images_per_s_per_device"] == 1600.0
    assert train[("resnet_tiny", "ce")]["target_images_per_s_per_device"] == 3000.0
    (pipe,) = by_bench["train_pipeline"]
    assert pipe["model"] == "resnet_tiny" and pipe["workers"] >= 1 and pipe["jpegs"] == 16
    assert pipe["images_per_s_per_device"] > 0 and pipe["ratio"] > 0
    (ev,) = by_bench["evaluator"]
    assert ev["images"] == 20 and ev["images_per_s_per_device"] > 0 and ev["ratio"] > 0
    (host,) = by_bench["input_per_core"]  # the DALI loader's CPU side where DALI is installed
    sides = ["grain", "plans"] + (["dali_cpu"] if host["dali"][0].isdigit() else [])
    assert sorted(host["images_per_s_per_core"]) == sorted(sides), host
    assert all(host["cores_per_device"]["vit_tiny"][side] > 0 for side in sides)


def test_mfu_is_flops_over_step_time_over_peak():
    from types import SimpleNamespace

    from benchmarks import gpu_bench

    config = SimpleNamespace(
        model=SimpleNamespace(name="resnet50", dtype="bfloat16"), loss="ce",
        input=SimpleNamespace(batch_size=256, resolution=224),
    )  # fmt: skip
    bench = SimpleNamespace(config=config, flops=4.0e12)
    row = gpu_bench.train_row(bench, 0.01, 1.0, 3000.0, peak=989e12, n_dev=2)
    assert row["mfu"] == round(4.0e12 / 0.01 / 989e12, 4)
    assert row["images_per_s_per_device"] == 12800.0 and row["ratio"] == round(12800 / 3000, 3)
    assert gpu_bench.train_row(bench, 0.01, 1.0, None, peak=None, n_dev=1)["mfu"] is None


@pytest.mark.slow
def test_data_scale_benchmark_runs_at_a_tiny_size(tmp_path):
    """Its synthetic records dir and caption source are valid inputs: the loader selects the
    budget, and the builder picks the same samples with 1 and 2 workers."""
    cmd = [sys.executable, "benchmarks/data_scale.py", "--n", "3000", "--dir", str(tmp_path / "p")]
    cmd += ["--budget", "500", "--paths", "convert,columnar", "--measure", "startup", "builder"]
    cmd += ["--workers", "1", "2", "--build-budget", "100"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    by_bench = {r["bench"]: r for r in rows}
    assert by_bench["convert"]["file_mb"] > 0
    assert by_bench["startup_loader"]["n_examples"] == 500
    assert 0 < by_bench["startup_count"]["n_examples"] < 3000  # some rows are not in IN100
    builds = [r for r in rows if r["bench"] == "builder"]
    assert [r["workers"] for r in builds] == [1, 2]
    assert all(r["same_selection_as_peer"] and r["captions_per_s"] > 0 for r in builds)
    assert "jsonl" not in {r.get("path") for r in rows}  # --paths left the peer out


def test_a_ratio_is_refused_on_a_loaded_machine_unless_allowed(monkeypatch):
    """benchmarks/machine.py: above half the cores' load the benchmark stops with one line; with
    --allow-load it goes on and the row says under_load."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import machine
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (1.4, 1.0, 1.0))
    with pytest.raises(SystemExit, match="load average 1.4 is above half of 2 cores"):
        machine.require_quiet()
    row = machine.require_quiet(allow_load=True)
    assert row["under_load"] and row["load_average_1m"] == 1.4 and row["cores"] == 2
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (0.6, 1.0, 1.0))
    quiet = machine.require_quiet()
    assert not quiet["under_load"] and quiet["processor"]


def test_input_benchmark_alternates_every_side_and_reports_median_and_range():
    """benchmarks/data_pipeline.py: each round times the PIL loop, janus and every peer that is
    installed (tf.data as big_vision, with and without antialias, and reading the records; DALI's
    CPU pipeline); a peer that is not installed is a row naming its package. In CI this also runs
    in the peers' venv (.ci/run, JANUS_PEERS_REQUIRED=1: a skipped peer fails there)."""
    cmd = [sys.executable, "benchmarks/data_pipeline.py", "--batches", "3", "--batch-size", "8"]
    cmd += ["--rounds", "2", "--workers", "0", "--chains", "train", "--allow-load"]
    cmd += ["--min-records", "400"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    summary = next(r for r in rows if r["bench"] == "summary_per_core")
    assert summary["rounds"] == 2
    sides = ["pil_loop", "janus_train_w0"]
    for peer in ("tfdata", "tfdata_aa", "tfdata_records", "dali"):
        skipped = [r for r in rows if r["bench"] == f"{peer}_224" and "skipped" in r]
        if skipped:
            assert skipped[0]["skipped"].endswith("not installed"), skipped
            assert not os.environ.get("JANUS_PEERS_REQUIRED"), f"{peer}: {skipped[0]['skipped']}"
        else:
            sides.append(peer)
    for side in sides:
        bench = {"pil_loop": "pil_loop_224", "janus_train_w0": "janus_train_224"}.get(side)
        timed = [r for r in rows if r["bench"] == (bench or f"{side}_224") and "round" in r]
        assert [r["round"] for r in timed] == [0, 1], side
        assert all(r["images"] == 24 and r["images_per_s_per_core"] > 0 for r in timed), side
        low, high = summary[f"{side}_range"]
        assert low <= summary[f"{side}_images_per_s_per_core"] <= high, side
        if side != "pil_loop":
            assert summary[f"{side}_vs_pil_loop"] > 0, side
    records = next(r for r in rows if r["bench"] == "records")
    assert records["under_load"] in (True, False) and records["processor"]
    images, repeated = records["images"], records["records"]  # repeated to --min-records:
    assert repeated % images == 0 and 400 <= repeated < 400 + images, records


@pytest.mark.parametrize("min_macs", [None, 0])
def test_conv_layers_benchmark_times_every_convolution_of_the_model(min_macs):
    """benchmarks/conv_layers.py: one row per distinct convolution, their counts adding up to the
    model's convolutions, every part timed on both sides; the path janus takes follows the size
    rule (at resnet_tiny's 32 px nothing reaches the default threshold; with --min-macs 0 every 1x1
    convolution is a matrix product). vit_tiny's patch embedding has "VALID" padding, made
    explicit."""
    cmd = [sys.executable, "benchmarks/conv_layers.py", "--model", "resnet_tiny", "--res", "32"]
    cmd += ["--model", "vit_tiny", "--batch", "2", "--reps", "1", "--allow-load"]
    cmd += [] if min_macs is None else ["--min-macs", str(min_macs)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    *layers, total, vit_patches, vit_total = rows
    assert vit_patches["kernel"] == [8, 8, 3, 64] and vit_total["model"] == "vit_tiny"
    assert sum(r["count"] for r in layers) == 12  # resnet_tiny: stem, 4 blocks x 2, 3 downsamples
    for r in layers:
        assert r["matmul_on_cpu"] == (min_macs == 0 and r["kernel"][:2] == [1, 1]), r
        assert all(s > 0 for part in r["seconds"].values() for s in part.values()), r
        assert r["macs"] > 0
    assert set(total["ratio_xla_over_janus"]) == {"forward", "input_grad", "kernel_grad"}
    assert total["under_load"] in (True, False) and total["processor"] and total["jax"]
