"""Data at pool scale: loader start-up and memory on a records dir of N tiny samples.

Synthesises a records dir of N samples (default 1,000,000; `--n 10000000` on request) shaped like
the JANuS pool: 64 shards of real TFRecord frames with `.index` files, each record a
tf.train.Example with a 2x2 PNG (one serialised template per source and label list, the key
patched in), and the real `manifest.jsonl.gz` (about 60% of rows in the IN100 label set, some
with two labels, some with none). Every measurement runs in its own subprocess, so each peak
RSS is its own.

Measures (`--measure`, a registry; each prints JSON lines):
- `startup`: per manifest path, `pipeline.num_train_examples` with the label set (no budget) and
  `pipeline.train_loader(budget=...)` until it returns, then its first batch; peak RSS, RSS after,
  and the bytes each grain worker receives (the pickled dataset). The peer, in the same run, is the
  jsonl path (the dir without `manifest.arrow`, as older dirs are); then `convert` writes the
  columnar file (timed) and the columnar path runs. `--compare-src DIR` also runs the children
  against another checkout's `janus` (e.g. the code before the columnar manifest) on the same dir.
- `formats`: reading the selection's columns from `manifest.arrow` (Arrow IPC, memory-mapped) vs
  a Parquet copy, for the choice of format.
- `builder`: `build_dataset` on a CSV caption source of N rows over 64 tiny PNGs (a quarter each
  of captions naming one class, two classes, a plural with noise, none), strict matching, label
  set in1000, budget `--build-budget` (1,000: issue 13's setting), at each of `--workers`:
  captions/s, CPU seconds of the main process (`cpu_s`) and of the workers, peak RSS of the main
  process (`peak_mb`, with the pages of the memory-mapped scan files it touched, and
  `peak_anon_mb`, its own memory without them) and of its largest worker, and a digest of the
  selection. The main process's CPU per caption bounds what any worker count can reach
  (`main_bound_captions_per_s`). The peer, in the same run, is 1 worker, and with `--compare-src`
  that checkout's builder (1 process) first; the selections must be identical.

    python benchmarks/data_scale.py [--n 1000000] [--measure startup formats builder] [--dir DIR]
        [--budget 500000] [--label-set in100] [--processes 1] [--compare-src DIR]
        [--paths jsonl,convert,columnar,slope]
        [--workers 1 2] [--build-budget 1000]

A `--dir` that already holds a dir of N samples is reused (its `manifest.arrow` is removed before
the jsonl measurement), and so is its `<dir>_quarter` (N/4 samples, budget/4: the second size for
the columnar path's extrapolation). Without `--dir` a temporary dir is used and deleted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARDS = 64
PP = "decode|resize(4)"
BATCH = 256
# (source, share of rows, label kind weights: in-set, two labels (in-set first), other class, none)
POOL = [
    ("in100", 0.10, (1.0, 0.0, 0.0, 0.0)),
    ("laion", 0.50, (0.5, 0.1, 0.2, 0.2)),
    ("yfcc", 0.25, (0.5, 0.1, 0.2, 0.2)),
    ("oi", 0.15, (0.6, 0.2, 0.2, 0.0)),
]


# ----------------------------------------------------------------------------- synthesis


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (90, 120, 30)).save(buf, "PNG")
    return buf.getvalue()


def _rows(n: int, seed: int = 0):
    """(source index, labels) of every sample: the pool's mixture of label kinds."""
    from janus.data import labelsets

    rng = np.random.default_rng(seed)
    in_set = labelsets.resolve_label_set("in100")
    other = np.setdiff1d(np.arange(1000), in_set)
    shares = np.asarray([s for _, s, _ in POOL])
    source = rng.choice(len(POOL), n, p=shares / shares.sum())
    kinds = np.empty(n, np.int64)
    for i, (_, _, weights) in enumerate(POOL):
        mine = np.flatnonzero(source == i)
        kinds[mine] = rng.choice(4, len(mine), p=weights)
    first = np.where(kinds == 2, rng.choice(other, n), rng.choice(in_set, n))
    second = rng.choice(1000, n)
    return source, kinds, first, second


def synthesise(out: pathlib.Path, n: int) -> None:
    """The records dir: shards + .index + manifest.jsonl.gz + info.json (no manifest.arrow)."""
    from janus.data import records, tfrecord

    out.mkdir(parents=True, exist_ok=True)
    source, kinds, first, second = _rows(n)
    png, width = _png(), len(f"{n - 1:09d}")
    templates: dict = {}
    bounds = np.linspace(0, n, SHARDS + 1).astype(int)

    def rows():  # written as they are made: memory does not grow with n
        for s in range(SHARDS):
            name = records.shard_name("train", s, SHARDS)
            with tfrecord.ShardWriter(out / name) as w:
                for i in range(bounds[s], bounds[s + 1]):
                    src = POOL[source[i]][0]
                    kind = int(kinds[i])
                    labels = [] if kind == 3 else [int(first[i])] + [int(second[i])] * (kind == 1)
                    key = f"{src}/{i:0{width}d}"
                    tpl = templates.get((src, tuple(labels)))
                    if tpl is None:
                        holder = "\x01" * len(key)
                        ex = {"image/encoded": png, "image/format": "png", "label": labels}
                        ex |= {"caption": [f"a photo from {src}"], "source": src, "key": holder}
                        data = records.encode_example(ex)
                        tpl = templates[(src, tuple(labels))] = (data, data.index(holder.encode()))
                    data, at = tpl
                    offset = w.write(data[:at] + key.encode() + data[at + len(key) :])
                    yield {"key": key, "source": src, "labels": labels, "label_source": "human"} | {
                        "split": "train",
                        "shard": name,
                        "offset": offset,
                    }

    records.write_manifest(out, rows(), {"train": {"seed": 0, "command": "data_scale.py"}})
    records.write_info(out, {"name": out.name, "splits": {"train": n}})


def synthesise_captions(out: pathlib.Path, n: int, n_images: int = 64, seed: int = 0) -> None:
    """captions.csv (id, filepath, title) of n rows over n_images tiny PNGs in out/imgs."""
    import csv

    from PIL import Image

    from janus.data import labelsets

    (out / "imgs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for j in range(n_images):
        tile = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(tile).save(out / "imgs" / f"{j}.png")
    names = labelsets.class_names("clip")
    plain = ["sunset over the city", "my holiday", "a view from the window", "the best day"]
    with open(out / "captions.csv.partial", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "filepath", "title"])
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            kind, a, b = rng.integers(0, 4, m), rng.integers(0, 1000, m), rng.integers(0, 1000, m)
            for j in range(m):
                i, x = start + j, names[a[j]]
                title = (
                    plain[i % 4],
                    f"a photo of a {x} in the garden",
                    f"{x} and {names[b[j]]}",
                    f"Cute {x}s!! #{i % 97}",
                )[kind[j]]
                w.writerow([f"r{i}", f"imgs/{i % n_images}.png", title])
    os.replace(out / "captions.csv.partial", out / "captions.csv")  # complete, or not there


# ----------------------------------------------------------------------------- children


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """This process's peak RSS. Linux's ru_maxrss keeps the parent's peak across fork and exec
    (a child of a parent that synthesised 15M rows reads 700 MB before it does anything), so read
    VmHWM, which starts afresh with the exec'd program."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _AnonPeak:
    """Peak anonymous RSS (RssAnon, sampled every 10 ms by a thread): the process's own memory,
    without the pages of memory-mapped files, which the kernel drops and reads again at will."""

    def __init__(self):
        self.mb = 0.0
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            for line in pathlib.Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.mb = max(self.mb, int(line.split()[1]) / 1024)  # kB
            time.sleep(0.01)


class _Clock:
    """Wall and CPU seconds since creation. CPU seconds are what the wall time would be on an idle
    core (selection is single-threaded), so load from other jobs on a shared machine drops out."""

    def __init__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict:
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        return {"seconds": round(wall, 2), "cpu_s": round(cpu, 2)}


def child_baseline(d, args) -> dict:
    """The interpreter with the pipeline imported: the part of a peak that does not grow with N."""
    from janus.data.input import pipeline  # noqa: F401

    return {"seconds": 0.0, "cpu_s": 0.0}


def child_count(d, args) -> dict:
    from janus.data.input import pipeline

    clock = _Clock()
    n = pipeline.num_train_examples(d, label_set=args.label_set)
    return {**clock.read(), "n_examples": n}


def child_loader(d, args) -> dict:
    import pickle

    from janus.data.input import pipeline

    clock = _Clock()
    it, man = pipeline.train_loader(
        d,
        global_batch_size=BATCH * args.processes,
        pp=PP,
        seed=0,
        label_set=args.label_set,
        budget=args.budget,
        shard_index=0,
        shard_count=args.processes,
    )
    returned = clock.read()
    worker_bytes = len(pickle.dumps(it._stream.map_ds))  # what mp_prefetch sends each worker
    batch = next(it)
    assert batch["image"].shape == (BATCH, 4, 4, 3), batch["image"].shape
    return {
        **returned,
        "first_batch_s": round(clock.read()["seconds"] - returned["seconds"], 2),
        "n_examples": man["n_examples"],
        "rss_after_mb": round(_rss_now_mb(), 1),
        "per_worker_mb": round(worker_bytes / 2**20, 1),
    }


def child_convert(d, args) -> dict:
    from janus.data import manifest

    clock = _Clock()
    path = manifest.convert(d)
    return {**clock.read(), "file_mb": round(path.stat().st_size / 2**20, 1)}


def child_read_arrow(d, args) -> dict:
    from janus.data import manifest

    clock = _Clock()
    table = manifest.load(d).select(["key", "labels", "split", "shard", "offset"])
    total = sum(len(c.to_pylist()) if c.type == "string" else 0 for c in table.columns[:1])
    return {**clock.read(), "rows": table.num_rows, "keys": total}


def child_read_parquet(d, args) -> dict:
    import pyarrow.parquet as pq

    clock = _Clock()
    table = pq.read_table(
        d / "manifest.parquet", columns=["key", "labels", "split", "shard", "offset"]
    )
    total = len(table.column("key").to_pylist())
    return {**clock.read(), "rows": table.num_rows, "keys": total}


def child_build(d, args) -> dict:
    """One build of the caption source in `d`; the selection's digest, to compare code paths."""
    import hashlib

    from janus.data import records
    from janus.data.ingest.builder import build_dataset
    from janus.data.ingest.config import BuildConfig

    out = d / f"out_{os.getpid()}"
    cfg = BuildConfig(
        sources=[
            {"kind": "manifest", "name": "cap", "path": str(d / "captions.csv"), "key_col": "id"}
        ],
        out=str(out),
        label_set="in1000",
        budget=args.build_budget,
        matching="strict",
        num_shards=8,
    )
    clock = _Clock()
    build_dataset(cfg, workers=args.workers[0], progress=False)
    timing = clock.read()  # cpu_s: the main process's
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    chosen = [(m["key"], m["labels"], m["shard"], m["offset"]) for m in records.read_manifest(out)]
    shutil.rmtree(out)
    return {
        **timing,
        "cpu_workers_s": round(kids.ru_utime + kids.ru_stime, 1),
        "peak_worker_mb": round(kids.ru_maxrss / 1024, 1) if args.workers[0] > 1 else None,
        "selection_sha1": hashlib.sha1(json.dumps(chosen).encode()).hexdigest()[:16],
    }


CHILDREN = {
    "baseline": child_baseline,
    "count": child_count,
    "loader": child_loader,
    "convert": child_convert,
    "read_arrow": child_read_arrow,
    "read_parquet": child_read_parquet,
    "build": child_build,
}


def run_child(what: str, d: pathlib.Path, args, src: str | None = None) -> dict:
    """One measurement in a fresh interpreter (its own peak RSS)."""
    cmd = [sys.executable, __file__, "--child", what, "--dir", str(d), "--n", str(args.n)]
    cmd += ["--budget", str(args.budget), "--label-set", args.label_set]
    cmd += ["--processes", str(args.processes), "--build-budget", str(args.build_budget)]
    cmd += ["--workers", *map(str, args.workers)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": src or str(REPO)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd="/")
    if done.returncode:
        raise RuntimeError(f"child {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- measures


def _emit(row: dict) -> dict:
    print(json.dumps(row), flush=True)
    return row


def _extrapolate(row: dict, n: int, baseline_mb: float) -> dict:
    """Linear in N through the baseline interpreter (how issue 13 extrapolated): an estimate."""
    out = {}
    for target in (15_000_000, 100_000_000):
        f = target / n
        out[f"extrapolated_{target // 1_000_000}M_s"] = round(row["seconds"] * f, 1)
        out[f"extrapolated_{target // 1_000_000}M_cpu_s"] = round(row["cpu_s"] * f, 1)
        grown = (row["peak_mb"] - baseline_mb) * f
        out[f"extrapolated_{target // 1_000_000}M_peak_mb"] = round(baseline_mb + grown)
    return out


def _extrapolate_slope(small: dict, big: dict) -> dict:
    """Linear in N through two measured sizes (fixed costs such as first-call set-up cancel out):
    an estimate, with the budget growing with N (so the selected part is overestimated)."""
    out = {}
    for target in (15_000_000, 100_000_000):
        for key, unit in (("seconds", "s"), ("cpu_s", "cpu_s"), ("peak_mb", "peak_mb")):
            slope = (big[key] - small[key]) / (big["n"] - small["n"])
            value = big[key] + slope * (target - big["n"])
            out[f"extrapolated_{target // 1_000_000}M_{unit}"] = round(value, 1)
    return out


def _quarter(d: pathlib.Path, args):
    """A dir of N/4 samples beside `d`, converted, for the slope of the columnar path."""
    from janus.data import manifest

    small = argparse.Namespace(**{**vars(args), "n": args.n // 4, "budget": args.budget // 4})
    q = d.parent / f"{d.name}_quarter"
    info = q / "info.json"
    if not (info.is_file() and json.loads(info.read_text())["splits"]["train"] == small.n):
        synthesise(q, small.n)
    if not (q / "manifest.arrow").is_file():
        manifest.convert(q)
    return q, small


def measure_startup(d: pathlib.Path, args) -> list[dict]:
    columns = d / "manifest.arrow"
    columns.unlink(missing_ok=True)  # the peer: an older dir, manifest.jsonl.gz only
    baseline = _emit({"bench": "baseline", **run_child("baseline", d, args)})["peak_mb"]
    rows = []
    runs = [(p, None) for p in ("jsonl", "convert", "columnar") if p in args.paths]
    if args.compare_src:
        runs.append(("before", args.compare_src))
    for path, src in runs:
        if path == "convert":
            rows.append(_emit({"bench": "convert", "n": args.n, **run_child("convert", d, args)}))
            continue
        for step in ("count", "loader"):
            row = {"bench": f"startup_{step}", "path": path, "n": args.n}
            row |= {
                "processes": args.processes,
                "budget": args.budget if step == "loader" else None,
            }
            row |= run_child(step, d, args, src)
            rows.append(_emit(row | _extrapolate(row, args.n, baseline)))
    for step in ("count", "loader") if "slope" in args.paths else ():
        q, small = _quarter(d, args)
        row = {"bench": f"startup_{step}", "path": "columnar", "n": small.n}
        row |= {"processes": args.processes, "budget": small.budget if step == "loader" else None}
        row |= run_child(step, q, small)
        _emit(row)
        big = next(r for r in rows if r["bench"] == row["bench"] and r["path"] == "columnar")
        _emit({"bench": f"startup_{step}_slope", "path": "columnar"} | _extrapolate_slope(row, big))
    for step in ("count", "loader"):
        by = {r["path"]: r for r in rows if r["bench"] == f"startup_{step}"}
        for peer in [p for p in ("jsonl", "before") if p in by]:
            _emit(
                {
                    "bench": f"startup_{step}_ratio",
                    "peer": peer,
                    "time_ratio": round(by[peer]["seconds"] / by["columnar"]["seconds"], 1),
                    "cpu_ratio": round(by[peer]["cpu_s"] / by["columnar"]["cpu_s"], 1),
                    "peak_ratio": round(by[peer]["peak_mb"] / by["columnar"]["peak_mb"], 2),
                }
            )
    return rows


def measure_formats(d: pathlib.Path, args) -> list[dict]:
    import pyarrow.parquet as pq

    from janus.data import manifest

    if not (d / "manifest.arrow").is_file():
        manifest.convert(d)
    pq.write_table(manifest.load(d), d / "manifest.parquet")
    rows = []
    for fmt, name in (("arrow_ipc", "manifest.arrow"), ("parquet", "manifest.parquet")):
        row = run_child(f"read_{fmt.split('_')[0]}", d, args)
        mb = (d / name).stat().st_size / 2**20
        rows.append(
            _emit({"bench": "manifest_format", "format": fmt, "file_mb": round(mb, 1)} | row)
        )
    (d / "manifest.parquet").unlink()
    return rows


def measure_builder(d: pathlib.Path, args) -> list[dict]:
    """Builder throughput at each worker count, the peer first (see the module docstring)."""
    caps = d.parent / f"{d.name}_captions{args.n}"
    if not (caps / "captions.csv").is_file():
        synthesise_captions(caps, args.n)
    runs = [("before", args.compare_src, 1)] if args.compare_src else []
    runs += [("janus", None, w) for w in args.workers]
    rows = []
    for code, src, workers in runs:
        row = {"bench": "builder", "code": code, "workers": workers, "n": args.n}
        row |= run_child(
            "build", caps, argparse.Namespace(**{**vars(args), "workers": [workers]}), src
        )
        row["captions_per_s"] = round(args.n / row["seconds"])
        row["main_bound_captions_per_s"] = round(args.n / row["cpu_s"])
        peer = rows[0] if rows else row
        row["ratio_to_peer"] = round(peer["seconds"] / row["seconds"], 2)
        row["same_selection_as_peer"] = row["selection_sha1"] == peer["selection_sha1"]
        rows.append(_emit(row))
    return rows


MEASURES = {"startup": measure_startup, "formats": measure_formats, "builder": measure_builder}
_NEEDS_RECORDS = {"startup", "formats"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--measure", nargs="+", choices=sorted(MEASURES), default=["startup"])
    parser.add_argument("--dir", type=pathlib.Path, help="records dir to (re)use")
    parser.add_argument("--budget", type=int, default=500_000)
    parser.add_argument("--label-set", default="in100")
    parser.add_argument("--processes", type=int, default=1, help="shard_count of the loader")
    parser.add_argument(
        "--paths",
        type=lambda v: v.split(","),
        default=["jsonl", "convert", "columnar", "slope"],
        help="startup: which of jsonl,convert,columnar,slope to run (convert writes the arrow "
        "file the columnar path reads; slope synthesises an N/4 dir for the extrapolation)",
    )
    parser.add_argument("--compare-src", help="repo root of another janus checkout")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="builder workers")
    parser.add_argument("--build-budget", type=int, default=1000, help="builder budget")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if (
        args.compare_src
        and not (pathlib.Path(args.compare_src) / "janus" / "__init__.py").is_file()
    ):
        parser.error(f"--compare-src {args.compare_src}: no janus/__init__.py there")
    if args.child:
        anon = _AnonPeak()
        row = CHILDREN[args.child](args.dir, args)
        print(
            json.dumps(row | {"peak_mb": round(_peak_mb(), 1), "peak_anon_mb": round(anon.mb, 1)})
        )
        return
    tmp = None
    d = args.dir
    if d is None:
        tmp = tempfile.mkdtemp(prefix="janus_scale_")
        d = pathlib.Path(tmp) / f"pool{args.n}"  # its _quarter lands beside it, in tmp
    try:
        info = d / "info.json"
        fresh = info.is_file() and json.loads(info.read_text())["splits"]["train"] == args.n
        if _NEEDS_RECORDS & set(args.measure) and not fresh:
            clock = _Clock()
            synthesise(d, args.n)
            _emit({"bench": "synthesise", "n": args.n, **clock.read()})
        for name in args.measure:
            MEASURES[name](d, args)
    finally:
        if tmp:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
