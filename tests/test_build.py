"""The builder end to end: every source kind, budgets, bad input, resume, determinism, the CLI."""

import collections
import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from janus.data import labelsets, records
from janus.data.ingest import cli
from janus.data.ingest.builder import build_dataset
from janus.data.ingest.config import BuildConfig

WNIDS = labelsets.imagenet_wnids()
NAMES = labelsets.class_names("clip")
CLASSES = [2, 6, 8]  # in mini10 (and in100)


def _img(seed: int, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    # folder tree: 3 classes x 6 images, plus an undecodable and a truncated file
    for c in CLASSES:
        d = root / "folder" / "train" / WNIDS[c]
        d.mkdir(parents=True)
        for j in range(6):
            (d / f"{c}_{j}.JPEG").write_bytes(_img(c * 100 + j))
    bad_dir = root / "folder" / "train" / WNIDS[2]
    (bad_dir / "garbage.JPEG").write_bytes(b"this is not an image")
    (bad_dir / "truncated.JPEG").write_bytes(_img(999)[:200])
    (bad_dir / "bitmap.bmp").write_bytes(_img(998, "BMP"))
    # manifest with labels and captions, one row pointing at a missing file
    (root / "man" / "imgs").mkdir(parents=True)
    with open(root / "man" / "meta.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title", "idx"])
        for j in range(6):
            (root / "man" / "imgs" / f"{j}.png").write_bytes(_img(500 + j, "PNG"))
            w.writerow([f"imgs/{j}.png", f"picture number {j}", CLASSES[j % 3]])
        w.writerow(["imgs/missing.png", "gone", 2])
    # img2dataset-style tar: captions only (labels come from matching)
    (root / "wds").mkdir()
    with tarfile.open(root / "wds" / "00000.tar", "w") as tf:
        caps = [f"a photo of a {NAMES[c]} on the beach" for c in CLASSES] * 2
        caps += ["", "a photo of a cat"]  # empty caption; caption naming no class of the set
        for j, cap in enumerate(caps):
            for name, data in ((f"{j:04d}.jpg", _img(700 + j)), (f"{j:04d}.txt", cap.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    # OpenImages official layout
    mid = next(
        m
        for m, v in labelsets.openimages_map().items()
        if v in labelsets.resolve_label_set("in100")
    )
    (root / "oi").mkdir()
    with open(root / "oi" / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageID", "LabelName", "Confidence"])
        for j in range(3):
            (root / "oi" / f"oi{j}.jpg").write_bytes(_img(900 + j))
            w.writerow([f"oi{j}", mid, 1])
    return root


def _folder(raw):
    return {"kind": "folder", "name": "in", "path": str(raw / "folder")}


def _cfg(raw, out, **kw):
    kw.setdefault("sources", [_folder(raw)])
    kw.setdefault("label_set", "mini10")
    kw.setdefault("num_shards", 3)
    return BuildConfig(out=str(out), **kw)


def _all(out, split="train"):
    ds = records.RecordsDataSource(out, split)
    return [records.decode_example(ds[i]) for i in range(len(ds))]


def _bytes_of(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_folder_build_exact_budget_skips_bad_images(raw, tmp_path):
    out = tmp_path / "ds"
    s = build_dataset(_cfg(raw, out, budget=17, seed=1), progress=False, command="test")
    exs = _all(out)
    assert len(exs) == 17 == s["n"]
    keys = [e["key"] for e in exs]
    assert len(set(keys)) == 17
    assert not any("garbage" in k or "truncated" in k for k in keys)
    assert s["skipped"]["undecodable image"]["count"] == 2
    assert any("garbage" in k for k in s["skipped"]["undecodable image"]["first"])
    for e in exs:
        assert e["label"].tolist()[0] in CLASSES and e["label/source"] == "human"
        assert e["caption"] == [f"a photo of a {NAMES[e['label'][0]]}."]  # template caption
        assert e["image/format"] in ("jpeg", "png") and e["source"] == "in"
        Image.open(io.BytesIO(e["image/encoded"])).load()
    # the BMP (if chosen) was re-encoded as JPEG
    bmp = [e for e in exs if e["key"].endswith("bitmap")]
    assert all(e["image/format"] == "jpeg" and e["image/encoded"][:2] == b"\xff\xd8" for e in bmp)
    info = records.read_info(out)
    assert info["splits"] == {"train": 17} and info["label_set"] == "mini10"
    assert info["build"]["train"]["seed"] == 1 and info["build"]["train"]["command"] == "test"
    assert sum(info["build"]["train"]["per_class"].values()) == 17
    assert info["images_verified"] is True  # every stored image decoded whole: the loader trusts it
    man = list(records.read_manifest(out))
    assert sorted(m["key"] for m in man) == sorted(keys)
    for m in man[:5]:
        payload = records.read_record_at(out / m["shard"], m["offset"])
        assert records.decode_example(payload)["key"] == m["key"]


def test_budgets_nest_across_builds(raw, tmp_path):
    small = build_dataset(_cfg(raw, tmp_path / "a", budget=6, seed=3), progress=False)
    build_dataset(_cfg(raw, tmp_path / "b", budget=12, seed=3), progress=False)
    ka = {m["key"] for m in records.read_manifest(tmp_path / "a")}
    kb = {m["key"] for m in records.read_manifest(tmp_path / "b")}
    assert len(ka) == small["n"] == 6 and ka < kb


def test_class_balanced_build(raw, tmp_path):
    s = build_dataset(_cfg(raw, tmp_path / "cb", budget=15, class_balanced=True), progress=False)
    assert sorted(s["per_class"].values()) == [5, 5, 5]


def test_output_is_independent_of_worker_count(raw, tmp_path):
    build_dataset(_cfg(raw, tmp_path / "w1", budget=12), workers=1, progress=False)
    build_dataset(_cfg(raw, tmp_path / "w2", budget=12), workers=2, progress=False)
    a, b = _bytes_of(tmp_path / "w1"), _bytes_of(tmp_path / "w2")
    info_a, info_b = a.pop("info.json"), b.pop("info.json")
    assert a == b and json.loads(info_a)["build"] == json.loads(info_b)["build"]


def test_resume_rewrites_only_unfinished_shards(raw, tmp_path):
    out = tmp_path / "r"
    cfg = _cfg(raw, out, budget=12)
    build_dataset(cfg, progress=False)
    before = _bytes_of(out)
    shard1 = out / records.shard_name("train", 1, 3)
    # an interrupted shard: marker gone, file cut short
    os.remove(str(shard1) + ".done")
    shard1.write_bytes(shard1.read_bytes()[:50])
    shard0 = out / records.shard_name("train", 0, 3)
    mtime0 = shard0.stat().st_mtime_ns
    logs = []
    build_dataset(cfg, progress=True, log=logs.append)
    assert shard0.stat().st_mtime_ns == mtime0
    assert any("kept 2 finished shard(s), writing 1" in m for m in logs)
    assert _bytes_of(out) == before
    # a different config for the same split needs --overwrite
    with pytest.raises(ValueError, match="different config"):
        build_dataset(_cfg(raw, out, budget=9), progress=False)
    build_dataset(_cfg(raw, out, budget=9), progress=False, overwrite=True)
    assert len(records.RecordsDataSource(out)) == 9
    # shards this builder did not plan (e.g. written by another tool) are not replaced silently
    (out / ".build" / "train.plan.json.gz").unlink()
    with pytest.raises(ValueError, match="did not plan"):
        build_dataset(_cfg(raw, out, budget=9), progress=False)


def test_mixture_of_all_source_kinds(raw, tmp_path):
    out = tmp_path / "mix"
    sources = [
        _folder(raw),
        {
            "kind": "manifest",
            "name": "man",
            "path": str(raw / "man" / "meta.csv"),
            "label_cols": "idx",
        },
        {"kind": "webdataset", "name": "laion", "path": str(raw / "wds")},
        {"kind": "openimages", "name": "oi", "path": str(raw / "oi" / "labels.csv")},
    ]
    counts = {"in": 4, "man": 5, "laion": 6, "oi": 0}
    cfg = _cfg(raw, out, sources=sources, label_set="in100", budget=15, source_counts=counts)
    s = build_dataset(cfg, progress=False)
    assert s["per_source"] == {"in": 4, "laion": 6, "man": 5}
    exs = {e["key"]: e for e in _all(out)}
    laion = [e for e in exs.values() if e["source"] == "laion"]
    assert {e["label/source"] for e in laion} == {"matched:single"}
    for e in laion:  # the matched label is the class named in the caption
        assert NAMES[e["label"][0]] in e["caption"][0]
    assert s["skipped"]["empty caption"]["count"] == 1
    assert s["skipped"]["caption matched no class"]["count"] == 1
    assert s["matching"]["captions"] == 7 and s["matching"]["matched"] == 6
    man = [e for e in exs.values() if e["source"] == "man"]
    assert all(e["caption"][0].startswith("picture number") for e in man)
    assert all(e["image/format"] == "png" for e in man)
    info = records.read_info(out)
    assert info["sources"]["laion"]["train"]["selected"] == 6
    # all sources usable: the openimages source alone
    s = build_dataset(
        _cfg(raw, tmp_path / "oi", sources=[sources[3]], label_set="in100"), progress=False
    )
    assert s["n"] == 3 and s["label_source"] == {"mapped:openimages": 3}


def test_missing_file_is_a_counted_skip(raw, tmp_path):
    src = {
        "kind": "manifest",
        "name": "man",
        "path": str(raw / "man" / "meta.csv"),
        "label_cols": "idx",
    }
    s = build_dataset(_cfg(raw, tmp_path / "m", sources=[src]), progress=False)
    assert s["n"] == 6 and s["skipped"]["missing or unreadable file"]["count"] == 1
    assert "man/imgs/missing" in s["skipped"]["missing or unreadable file"]["first"][0]


def test_impossible_budget_names_shortfall(raw, tmp_path):
    with pytest.raises(ValueError, match="needs 100, has"):
        build_dataset(_cfg(raw, tmp_path / "x", budget=100), progress=False)


def test_cli(raw, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "--out",
        str(out),
        "--label-set",
        "mini10",
        "--budget",
        "9",
        "--seed",
        "2",
        "--num-shards",
        "2",
        "--workers",
        "1",
        "--source",
        f"kind=folder,name=in,path={raw / 'folder'}",
    ]
    assert cli.main(argv) == 0
    info = records.read_info(out)
    assert info["splits"] == {"train": 9}
    assert info["build"]["train"]["command"].startswith("python -m janus.data.build --out")
    err = capsys.readouterr().err
    assert "skipped" in err
    assert "[build] verifying images: " in err and "[build] writing train: 9/9" in err
    # spec file + a val split into the same directory
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"sources": [_folder(raw)], "label_set": "mini10", "budget": 3}))
    assert (
        cli.main(["build", "--spec", str(spec), "--out", str(out), "--split", "val", "--quiet"])
        == 0
    )
    info = records.read_info(out)
    assert info["splits"] == {"train": 9, "val": 3}
    assert {m["split"] for m in records.read_manifest(out)} == {"train", "val"}


def test_cli_errors(raw, tmp_path, capsys):
    base = ["--out", str(tmp_path / "e"), "--quiet", "--workers", "1"]
    src = f"kind=folder,name=in,path={raw / 'folder'}"
    assert cli.main([*base, "--label-set", "in42", "--source", src]) == 2
    assert "unknown label set 'in42'" in capsys.readouterr().err
    man = f"kind=manifest,name=m,path={raw / 'man' / 'meta.csv'},caption_cols=blip"
    assert cli.main([*base, "--source", man]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) ['blip']" in err and "meta.csv" in err and "'filepath'" in err
    assert cli.main([*base, "--source", "kind=zip,name=z,path=x"]) == 2
    assert "source kind 'zip' unknown" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(base)
    with pytest.raises(SystemExit):
        cli.main([*base, "--source", src, "--source-counts", "in=many"])
    assert "expected name=value,name=value with int values" in capsys.readouterr().err


def _write_tar(path, captions):
    with tarfile.open(path, "w") as tf:
        for j, cap in enumerate(captions):
            for name, data in ((f"{j:04d}.jpg", _img(800 + j)), (f"{j:04d}.txt", cap.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def test_cli_matching_compat_changes_labels(tmp_path):
    # "tiger shark" (3) is the longest n-gram; the original code tries "tiger" (292) first.
    _write_tar(tmp_path / "sharks.tar", ["a tiger shark near the reef", "two tiger sharks"])
    labels = {}
    for flags in ([], ["--matching-compat"]):
        out = tmp_path / f"out{len(flags)}"
        src = f"kind=webdataset,name=web,path={tmp_path / 'sharks.tar'}"
        assert cli.main(["--out", str(out), "--quiet", "--source", src, *flags]) == 0
        labels[bool(flags)] = {m["key"]: m["labels"] for m in records.read_manifest(out)}
        assert records.read_info(out)["build"]["train"]["config"]["matching_compat"] is bool(flags)
    assert labels[False] == {"web/0000": [3], "web/0001": [3]}
    assert labels[True] == {"web/0000": [292], "web/0001": [292]}


@pytest.mark.parametrize(
    "budget_flags, per_source",
    [
        (["--source-counts", "in=6,man=3"], {"in": 6, "man": 3}),
        (["--source-weights", "in=2,man=1"], {"in": 6, "man": 3}),
        (["--source-counts", "in=6,man=3", "--class-balanced"], {"in": 6, "man": 3}),
    ],
)
def test_cli_mixture_budgets_and_manifest(raw, tmp_path, budget_flags, per_source):
    out = tmp_path / "mix"
    argv = [
        "--out",
        str(out),
        "--label-set",
        "mini10",
        "--budget",
        "9",
        "--seed",
        "4",
        "--quiet",
        "--source",
        f"kind=folder,name=in,path={raw / 'folder'}",
        "--source",
        f"kind=manifest,name=man,path={raw / 'man' / 'meta.csv'},label_cols=idx",
        *budget_flags,
    ]
    assert cli.main(argv) == 0
    rows = list(records.read_manifest(out))
    assert dict(sorted(collections.Counter(r["source"] for r in rows).items())) == per_source
    if "--class-balanced" in budget_flags:  # per source: in 2+2+2, man 1+1+1
        assert collections.Counter(r["labels"][0] for r in rows) == dict.fromkeys(CLASSES, 3)
    # the manifest says how the split was built: keys (rows), counts, seed, label set, command
    (built,) = records.read_manifest_builds(out).values()
    assert built["split"] == "train" and built["seed"] == 4 and built["label_set"] == "mini10"
    assert built["command"] == "python -m janus.data.build " + " ".join(argv)
    assert built["per_source"] == per_source and sum(built["per_class"].values()) == 9
    assert built["per_class"] == dict(collections.Counter(str(r["labels"][0]) for r in rows))
    assert len({r["key"] for r in rows}) == 9 == built["n"]


def _feed_fifo(path, data):
    with open(path, "wb") as f:  # blocks until the builder opens the pipe to read
        f.write(data)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_cli_build_resumes(tmp_path, sig, interrupt):
    """Ctrl-C or kill mid-write, then the same command: finished shards kept, result exact.

    One image is a named pipe: it is fed once (for verification), so writing its shard blocks
    while the other shards finish; that is the moment the build is interrupted.
    """
    images = tmp_path / "a" / "imgs"
    images.mkdir(parents=True)
    data = {f"{j}.jpg": _img(300 + j) for j in range(12)}
    for name, img in data.items():
        (images / name).write_bytes(img)
    blocked = images / "0.jpg"
    blocked.unlink()
    os.mkfifo(blocked)
    with open(tmp_path / "a" / "meta.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title", "idx"])
        for j, name in enumerate(data):
            w.writerow([f"imgs/{name}", f"picture {name}", CLASSES[j % 3]])
    out = tmp_path / "out"
    src = f"kind=manifest,name=man,path={tmp_path / 'a' / 'meta.csv'},label_cols=idx"
    cmd = [sys.executable, "-m", "janus.data.build", "--out", str(out), "--label-set", "mini10"]
    cmd += ["--num-shards", "4", "--workers", "2", "--source", src]
    feeder = threading.Thread(target=_feed_fifo, args=(blocked, data["0.jpg"]), daemon=True)
    feeder.start()
    returncode, err = interrupt(cmd, lambda: len(list(out.glob("*.done"))) >= 3, sig)
    assert returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    if sig == signal.SIGINT:
        assert "rerun the same command to resume" in err
        assert not list(out.glob("*.partial"))
    assert len(list(out.glob("*.done"))) == 3 and not (out / "info.json").exists()

    blocked.unlink()
    blocked.write_bytes(data["0.jpg"])
    resumed = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, timeout=60, check=True)
    assert "kept 3 finished shard(s), writing 1" in resumed.stderr
    assert not list(out.glob("*.partial"))
    # the same as an uninterrupted build
    ref = tmp_path / "ref"
    ref_cmd = [*cmd[3:], "--quiet", "--workers", "1"]  # the last --workers wins
    ref_cmd[1] = str(ref)
    assert cli.main(ref_cmd) == 0
    resumed_files, ref_files = _bytes_of(out), _bytes_of(ref)
    info_out, info_ref = resumed_files.pop("info.json"), ref_files.pop("info.json")
    for name in ("manifest.jsonl.gz", "manifest.arrow"):  # they name (the size of) the command
        resumed_files.pop(name), ref_files.pop(name)
    assert resumed_files == ref_files
    assert list(records.read_manifest(out)) == list(records.read_manifest(ref))
    assert (
        json.loads(info_out)["build"]["train"]["per_class"]
        == json.loads(info_ref)["build"]["train"]["per_class"]
    )


def test_a_dead_worker_fails_the_build_instead_of_hanging():
    from concurrent.futures.process import BrokenProcessPool

    from janus.data.ingest.parallel import ProcessMap

    with pytest.raises(BrokenProcessPool), ProcessMap(2) as pool:
        list(pool.imap_unordered(os._exit, [3, 3]))  # a worker killed mid-task


def _sigint_self_then_sleep(seconds):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(seconds)
    return os.getpid()


def test_ctrl_c_terminates_stuck_workers_instead_of_waiting():
    """Workers ignore SIGINT (the main process decides); leaving the pool's block with an
    exception terminates them at once, even mid-task."""
    from janus.data.ingest.parallel import ProcessMap

    with ProcessMap(2) as pool:  # a worker's own Ctrl-C does not interrupt its task
        pids = list(pool.imap_unordered(_sigint_self_then_sleep, [0.1, 0.1]))
    assert all(isinstance(pid, int) for pid in pids)

    with pytest.raises(KeyboardInterrupt), ProcessMap(2) as pool:
        busy = [pool._pool.submit(time.sleep, 600) for _ in range(2)]
        while not all(f.running() for f in busy):
            time.sleep(0.01)
        processes = list(pool._pool._processes.values())  # spawned on demand after jax's import
        t0 = time.monotonic()
        raise KeyboardInterrupt
    assert time.monotonic() - t0 < 60  # the 600 s tasks were not waited for
    assert len(processes) == 2 and not any(p.is_alive() for p in processes)
