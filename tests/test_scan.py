"""The builder's scan in its workers: the same plan, skips and coverage as one process scanning
everything, whatever the workers and chunk size; duplicate keys across chunks; resume mid-scan."""

import csv
import gzip
import io
import itertools
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from janus.data import labelsets, records
from janus.data.budget import select_budget
from janus.data.ingest import cli, scan
from janus.data.ingest.builder import build_dataset
from janus.data.ingest.config import BuildConfig
from janus.data.ingest.labeling import Labeler, label_candidates
from janus.data.ingest.scan import KeyIndex, key_digests
from janus.data.ingest.skips import SkipCounter
from janus.data.ingest.sources import make_source

NAMES = labelsets.class_names("clip")
IN100 = labelsets.resolve_label_set("in100").tolist()
OUTSIDE = next(c for c in range(1000) if c not in IN100)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _captions(root, n: int, seed: int = 0):
    """A caption-only CSV of n rows with every kind of row the scan must count: matches, strict
    rejects, no match, out-of-set classes, empty captions and image paths, repeated keys (within a
    chunk and chunks apart), and a few missing images (skipped at verification)."""
    (root / "imgs").mkdir(parents=True)
    for j in range(8):
        (root / "imgs" / f"{j}.png").write_bytes(_png(j))
    rng = np.random.default_rng(seed)
    path = root / "captions.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "filepath", "title"])
        for i in range(n):
            a, b = (IN100[k] for k in rng.integers(0, len(IN100), 2))
            title = [
                f"a photo of a {NAMES[a]} in the garden",
                f"{NAMES[a]} next to a {NAMES[b]}",
                "sunset over the city",
                f"my {NAMES[OUTSIDE]}",
                "",
                f"Cute {NAMES[a]}s!!",
            ][rng.integers(0, 6)]
            image = f"imgs/{i % 8}.png" if i % 50 else ("" if i % 100 else "imgs/missing.png")
            key = f"r{i - 1}" if i % 37 == 1 else f"r{i - 40}" if i % 53 == 7 else f"r{i}"
            w.writerow([key, image, title])
    return {"kind": "manifest", "name": "cap", "path": str(path), "key_col": "id"}


@pytest.fixture(scope="module")
def caption_source(tmp_path_factory):
    return _captions(tmp_path_factory.mktemp("caps"), 600)


def _cfg(source, out, **kw):
    kw.setdefault("label_set", "in100")
    kw.setdefault("matching", "strict")
    kw.setdefault("num_shards", 3)
    return BuildConfig(sources=[source], out=str(out), **kw)


def _one_process_reference(cfg):
    """What the builder did before its scan moved into the workers: every candidate in one list,
    duplicates dropped on the way, labelled in one pass, then the budget over all of them."""
    skips, raw, seen, dups = SkipCounter(), [], set(), set()
    for spec in cfg.sources:
        for c in make_source(spec).scan(skips):
            if c.key in seen:
                dups.add(len(raw))
            seen.add(c.key)
            raw.append(c)
    labeler = Labeler(cfg)
    cands = label_candidates(raw, cfg, skips, labeler, dups)
    return cands, skips, labeler.coverage.summary()


def _plan(out):
    with gzip.open(out / ".build" / "train.plan.json.gz", "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("spill", [False, True])
def test_key_index_reports_keys_seen_before_in_order(tmp_path, spill):
    # spilled: every run of 8 keys or more is a file (the path for sources of millions of keys)
    make = (lambda: KeyIndex(tmp_path / "keys", in_memory=8)) if spill else KeyIndex
    index = make()
    assert index.add(key_digests(["a", "b", "a", "c"])) == [2]
    assert index.add(key_digests([])) == []
    for k in range(20):  # enough chunks to merge the sorted runs several times
        assert index.add(key_digests([f"x{k}", f"y{k}", "b"])) == [2]
    assert index.add(key_digests(["x3", "new", "y19", "new"])) == [0, 2, 3]
    assert len(index) == 3 + 40 + 1
    if spill:  # the runs merged away left no files behind
        files = sorted(p.name for p in (tmp_path / "keys").iterdir())
        on_disk = [r for r in index._runs if isinstance(r[0], np.memmap)]
        assert on_disk and len(files) == 2 * len(on_disk)
    # digests whose first halves agree (the binary search's key) are still told apart
    index, half = make(), b"\x01" * 8
    assert index.add(np.array([half + b"\x02" * 8, half + b"\x03" * 8], dtype="S16")) == []
    again = np.array([half + b"\x03" * 8, half + b"\x04" * 8, half + b"\x04" * 8], dtype="S16")
    assert index.add(again) == [0, 2]


def test_merging_runs_block_by_block_keeps_every_key_in_order():
    from janus.data.ingest.scan import _merge_runs

    rng = np.random.default_rng(0)
    cases = [(1, 1), (50, 3), (3, 50), (1000, 999), (0, 5)]
    for (n_a, n_b), block in itertools.product(cases, [1, 7, 1 << 18]):
        hi, lo = rng.integers(0, 2**63, (2, n_a + n_b), dtype=np.uint64)
        hi[::5] = hi[0]  # equal first halves, within and across the runs
        runs = []
        for part in (slice(0, n_a), slice(n_a, None)):
            order = np.argsort(hi[part], kind="stable")
            runs.append((hi[part][order], lo[part][order]))
        out = (np.empty(n_a + n_b, np.uint64), np.empty(n_a + n_b, np.uint64))
        _merge_runs(*runs, out, block=block)
        assert (out[0][1:] >= out[0][:-1]).all()  # sorted by the first halves
        got = sorted(zip(out[0].tolist(), out[1].tolist()))
        assert got == sorted(zip(hi.tolist(), lo.tolist()))  # every key, once


@pytest.mark.parametrize(
    "workers,chunk,keys_in_memory", [(1, 1000, None), (1, 7, None), (2, 13, None), (1, 7, 16)]
)
def test_scan_in_chunks_equals_one_process_scan(
    caption_source, tmp_path, monkeypatch, workers, chunk, keys_in_memory
):
    if keys_in_memory:  # the key index's runs of 16 keys or more are files, as at millions
        monkeypatch.setattr(scan, "KEYS_IN_MEMORY", keys_in_memory)
    cfg = _cfg(caption_source, tmp_path / "out", budget=None)
    summary = build_dataset(cfg, workers=workers, progress=False, scan_chunk=chunk)
    cands, skips, coverage = _one_process_reference(cfg)
    assert skips.counts["duplicate key"] > 5 and skips.counts["empty image path"] == 6
    assert summary["matching"] == coverage
    # every usable candidate was chosen (no budget); the missing images are the only extra skips
    missing = summary["skipped"].pop("missing or unreadable file")
    assert summary["skipped"] == skips.to_dict()
    assert missing["count"] == sum(c.locator[1].endswith("missing.png") for c in cands)
    rows = [r for shard in _plan(tmp_path / "out")["shards"] for r in shard]
    by_key = {c.key: c for c in cands if not c.locator[1].endswith("missing.png")}
    assert sorted(r["key"] for r in rows) == sorted(by_key)
    for r in rows:
        c = by_key[r["key"]]
        assert (r["labels"], r["captions"]) == (list(c.labels), list(c.captions))
    info = records.read_info(tmp_path / "out")["sources"]["cap"]["train"]
    assert info["usable"] == len(cands) and info["scanned"] == 600 - 6


def test_budget_equals_one_process_selection(caption_source, tmp_path):
    cfg = _cfg(caption_source, tmp_path / "out", budget=60, class_balanced=False, seed=3)
    build_dataset(cfg, workers=2, progress=False, scan_chunk=50)
    cands, _, _ = _one_process_reference(cfg)
    # the reference's budget, with the missing images dropped as the builder's retry does
    alive = [c for c in cands if not c.locator[1].endswith("missing.png")]
    entries = [{"key": c.key, "source": c.source, "labels": c.labels} for c in alive]
    want = {alive[i].key for i in select_budget(entries, 60, seed=3)}
    got = {m["key"] for m in records.read_manifest(tmp_path / "out")}
    assert got == want


def test_torn_or_foreign_chunk_files_are_scanned_again(caption_source, tmp_path):
    """A killed build's chunk files may be torn, or pickled by a janus whose classes lived at other
    module paths: those chunks are made again, and the result equals a clean build's."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    build_dataset(_cfg(caption_source, ref, budget=60), workers=1, progress=False, scan_chunk=50)
    cfg = _cfg(caption_source, out, budget=60)
    scan_dir = scan.scan_dir_for(out, cfg.split, cfg.fingerprint())
    scan_dir.mkdir(parents=True)
    foreign = b"cjanus.data.scan\nChunkResult\n."  # a class from before janus/data/ingest/
    for k, payload in ((0, foreign), (1, b"\x80\x05torn")):
        with gzip.open(scan_dir / f"{k:07d}.pkl.gz", "wb") as f:
            f.write(payload)
    build_dataset(cfg, workers=1, progress=False, scan_chunk=50)
    files = [{p.name: p.read_bytes() for p in o.iterdir() if p.is_file()} for o in (ref, out)]
    for f in files:
        f.pop("info.json")  # names the output folder
    assert files[0] == files[1]


def test_parallel_build_is_byte_identical_to_one_worker(caption_source, tmp_path):
    outs = {}
    for workers, chunk in ((1, 10_000), (2, 11)):
        out = tmp_path / f"w{workers}"
        cfg = _cfg(caption_source, out, budget=80, class_balanced=True, seed=1, name="same")
        build_dataset(cfg, workers=workers, progress=False, scan_chunk=chunk)
        outs[workers] = out
        assert not list((out / ".build").glob("train.scan-*"))  # removed once planned
    files = [{p.name: p.read_bytes() for p in o.iterdir() if p.is_file()} for o in outs.values()]
    assert files[0] == files[1]  # shards, indexes, manifest and info.json


@pytest.mark.slow
def test_build_killed_mid_scan_resumes(tmp_path, interrupt):
    """SIGKILL while the workers scan, then the same command: the finished chunks are reused and
    the result equals an uninterrupted build's."""
    src = _captions(tmp_path / "caps", 4000, seed=5)
    out = tmp_path / "out"
    spec = ",".join(f"{k}={v}" for k, v in src.items())
    argv = ["--out", str(out), "--label-set", "in100", "--matching", "strict", "--budget", "50"]
    argv += ["--num-shards", "2", "--source", spec, "--scan-chunk", "20"]
    cmd = [sys.executable, "-m", "janus.data.build", *argv, "--workers", "2"]
    finished_chunks = out / ".build"
    returncode, _ = interrupt(
        cmd, lambda: len(list(finished_chunks.glob("train.scan-*/*.pkl.gz"))) >= 5, signal.SIGKILL
    )
    assert returncode == -signal.SIGKILL
    assert not (out / ".build" / "train.plan.json.gz").exists(), "killed too late: not mid-scan"
    finished = len(list(finished_chunks.glob("train.scan-*/*.pkl.gz")))
    assert 5 <= finished < 200

    resumed = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, timeout=300, check=True)
    # chunks whose duplicate keys the killed build had not yet settled are labelled again
    reused = int(resumed.stderr.split("] reused ")[1].split()[0])
    assert 1 <= reused <= finished
    ref = tmp_path / "ref"
    assert cli.main([*argv, "--out", str(ref), "--workers", "1", "--quiet"]) == 0
    got = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    want = {p.name: p.read_bytes() for p in ref.iterdir() if p.is_file()}
    info_got, info_want = json.loads(got.pop("info.json")), json.loads(want.pop("info.json"))
    for name in ("manifest.jsonl.gz", "manifest.arrow"):  # they name (the size of) the command
        got.pop(name), want.pop(name)
    assert got == want
    assert list(records.read_manifest(out)) == list(records.read_manifest(ref))
    for key in ("skipped", "matching", "per_class"):
        assert info_got["build"]["train"][key] == info_want["build"]["train"][key]
    assert info_got["sources"] == info_want["sources"]
