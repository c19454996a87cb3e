"""Building a records split from raw sources: scan, label, budget, verify, write shards in parallel.

One job: one records split from a config, stage by stage; long because of resumability (plan,
finished shards, torn files) and the worker pool's shutdown, which belong to those stages.

Stages (all deterministic in the config, whatever the worker count):
1. scan every source into candidates (`janus.data.ingest.sources`), label caption-only ones with
   `janus.data.ingest.matching.Matcher` and restrict labels to the label set
   (`janus.data.ingest.labeling`), add template captions to labelled samples without one; drop
   (counted) what cannot be used. This runs in the worker pool, streaming, chunk by chunk
   (`janus.data.ingest.scan`);
2. choose the budget (`janus.data.budget.select_budget_columns`); decode each chosen image once
   (in the worker pool); images that fail are counted skips and the budget is chosen again
   without them (still nested: a bad image is excluded at every budget), until every chosen
   image decodes;
3. order the chosen samples by a seeded hash, cut them into shards and save the plan in
   `<out>/.build/<split>.plan.json.gz`;
4. write the shards in a process pool; each finished shard gets its `.index` and a `.done` marker.

Resume: a rerun with the same config reuses the saved plan and keeps every shard whose `.done`
marker, shard and index agree; only unfinished shards are (re)written. Killed before the plan was
saved, it reuses the chunks the scan finished. A different config for a split that already has
shards is an error unless `overwrite=True`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import pathlib
import shutil
import sys
from collections import Counter

import numpy as np

from janus.data import labelsets, records, tfrecord
from janus.data import manifest as manifest_lib
from janus.data.budget import select_budget_columns, shortlist_budget
from janus.data.ingest import scan
from janus.data.ingest.config import BUILDER_VERSION, BuildConfig
from janus.data.ingest.images import BadImageError, prepare_image
from janus.data.ingest.parallel import ProcessMap, Progress
from janus.data.ingest.skips import SkipCounter
from janus.data.ingest.sources import make_source, read_bytes
from janus.fileio import atomic_open, atomic_write
from janus.workdir import locked

_PLAN_DIR = ".build"


# ----------------------------------------------------------------------------- workers


def _verify_one(locator) -> tuple[str | None, str, str]:
    """(error or None, sha1 of the raw bytes, stored format)."""
    try:
        data = read_bytes(locator)
    except OSError as e:
        return f"missing or unreadable file: {e}", "", ""
    try:
        _, fmt = prepare_image(data)
    except BadImageError as e:
        return f"undecodable image: {e}", "", ""
    return None, hashlib.sha1(data).hexdigest(), fmt


def _verify_chunk(locators: list) -> list:
    return [_verify_one(tuple(loc)) for loc in locators]


def _shard_paths(out: pathlib.Path, split: str, i: int, n: int):
    shard = out / records.shard_name(split, i, n)
    return shard, pathlib.Path(str(shard) + ".done")


def _write_shard(task) -> tuple[int, list[int]]:
    out, split, i, n, fingerprint, rows = task
    shard, done = _shard_paths(pathlib.Path(out), split, i, n)
    with tfrecord.ShardWriter(shard) as w:
        for row in rows:
            data = read_bytes(tuple(row["locator"]))
            if hashlib.sha1(data).hexdigest() != row["sha1"]:
                raise RuntimeError(
                    f"{row['locator']}: file changed during the build ({row['key']})"
                )
            fmt = row["format"]
            if not _is_jpeg_or_png(data):  # verification found another format: re-encode it
                data, fmt = prepare_image(data)
            w.write(
                records.encode_example(
                    {
                        "image/encoded": data,
                        "image/format": fmt,
                        "label": row["labels"],
                        "label/source": row["label_source"],
                        "caption": row["captions"],
                        "source": row["source"],
                        "key": row["key"],
                    }
                )
            )
        offsets = list(w.offsets)
    marker = {"fingerprint": fingerprint, "n": len(rows), "offsets": offsets}
    atomic_write(done, json.dumps(marker))
    return i, offsets


def _is_jpeg_or_png(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n"


def _shard_done(
    out: pathlib.Path, split: str, i: int, n: int, fingerprint: str, rows
) -> list | None:
    shard, done = _shard_paths(out, split, i, n)
    if not (done.is_file() and shard.is_file()):
        return None
    try:
        marker = json.loads(done.read_text())
        offsets = tfrecord.read_index(shard)
    except (ValueError, OSError):
        return None
    if marker.get("fingerprint") != fingerprint or marker.get("n") != len(rows):
        return None
    if offsets.tolist() != marker["offsets"]:
        return None
    return marker["offsets"]


# ----------------------------------------------------------------------------- plan


def _plan_path(out: pathlib.Path, split: str) -> pathlib.Path:
    return out / _PLAN_DIR / f"{split}.plan.json.gz"


def _save_json_gz(path: pathlib.Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as gz:
        gz.write(json.dumps(obj).encode())


def _load_json_gz(path: pathlib.Path):
    with gzip.open(path, "rt") as f:
        return json.load(f)


def _choose(cfg: BuildConfig, found: scan.Scan, bad: list[int], pool, skips) -> list[int]:
    """The budget's candidates, leaving out those found bad: the selection runs on the shortlist
    of candidates it can reach, so only that is read from the scan's columns into memory."""
    budget_args = {
        "class_balanced": cfg.class_balanced,
        "source_weights": cfg.source_weights,
        "source_counts": cfg.source_counts,
    }
    short = shortlist_budget(
        found.prio,
        found.classes,
        cfg.budget,
        source_codes=found.source,
        source_names=found.source_names,
        exclude=bad,
        **budget_args,
    )
    try:
        pos = select_budget_columns(
            found.prio[short],
            found.classes[short].astype(np.int64),
            cfg.budget,
            keys_at=lambda p: [c.key for c in found.load(short[p], pool).values()],
            sources=np.asarray(found.source_names, dtype=object)[found.source[short]],
            **budget_args,
        )
    except ValueError as e:
        note = f" ({len(bad)} candidates were dropped as bad images)" if bad else ""
        raise ValueError(f"{e}{note}\n{skips.report()}") from None
    return short[pos].tolist()


def make_plan(
    cfg: BuildConfig, out: pathlib.Path, pool: ProcessMap, progress: bool, log, scan_chunk: int
) -> dict:
    skips = SkipCounter()
    names = [make_source(s).name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    fingerprint = cfg.fingerprint()
    scan_dir = scan.scan_dir_for(out, cfg.split, fingerprint)
    found = scan.scan_sources(
        cfg, fingerprint, scan_dir, pool, skips, chunk_size=scan_chunk, progress=progress, log=log
    )
    log(f"scanned {sum(found.scanned.values())} candidates from {len(names)} source(s)")
    coverage = found.coverage.summary() if found.coverage.captions else None
    log(f"{len(found)} candidates usable for label set {cfg.label_set}")
    for name in (cfg.source_counts or {}) | (cfg.source_weights or {}):
        if name not in names:
            raise ValueError(f"budget names source {name!r}, not among the sources {names}")

    cands: dict[int, object] = {}  # the candidates chosen so far, read back from the scan
    bad: set[int] = set()
    verified: dict[int, tuple[str, str]] = {}
    chunk = 64
    while True:
        if cfg.budget is None:
            chosen = np.setdiff1d(np.arange(len(found)), list(bad)).tolist()
        else:
            chosen = _choose(cfg, found, sorted(bad), pool, skips)
        todo = [i for i in chosen if i not in verified]
        if not todo:
            break
        cands.update(found.load(todo, pool))
        bar = Progress("verifying images", len(todo), progress)
        pieces = [todo[j : j + chunk] for j in range(0, len(todo), chunk)]
        results = pool.map(_verify_chunk, [[cands[i].locator for i in p] for p in pieces])
        for piece, res in zip(pieces, results):
            for i, (err, digest, fmt) in zip(piece, res):
                if err:
                    bad.add(i)
                    reason = err.split(":")[0]
                    skips.add(reason, cands[i].key, err[len(reason) + 2 :][:120])
                else:
                    verified[i] = (digest, fmt)
            bar.update(len(piece))
    if not chosen:
        raise ValueError(f"nothing to build for split {cfg.split!r}\n{skips.report()}")

    # Shuffle across shards by a seeded hash of the key: the order is a function of the config only.
    ordered = [chosen[j] for j in np.argsort(found.prio[chosen], kind="stable")]
    num_shards = max(1, min(cfg.num_shards, len(ordered)))
    bounds = np.linspace(0, len(ordered), num_shards + 1).round().astype(int)
    shards = []
    for s in range(num_shards):
        rows = []
        for i in ordered[bounds[s] : bounds[s + 1]]:
            c = cands[i]
            rows.append(
                {
                    "key": c.key,
                    "source": c.source,
                    "labels": list(c.labels),
                    "captions": list(c.captions),
                    "label_source": c.label_source,
                    "locator": list(c.locator),
                    "sha1": verified[i][0],
                    "format": verified[i][1],
                }
            )
        shards.append(rows)
    return {
        "fingerprint": fingerprint,
        "shards": shards,
        "skipped": skips.to_dict(),
        "scanned": found.scanned,
        "usable": found.usable,
        "source_kinds": {n: spec.get("kind") for n, spec in zip(names, cfg.sources)},
        "matching": coverage,
    }


# ----------------------------------------------------------------------------- build


# One builder per --out at a time: <out>/.build_lock names the holder (janus.workdir).
@locked(lambda cfg, **_: cfg.out, name=".build_lock", what="janus.data.build")
def build_dataset(
    cfg: BuildConfig,
    *,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    command: str | None = None,
    log=None,
    scan_chunk: int = scan.CHUNK,
) -> dict:
    """Build (or resume) one split of a records directory; returns the split's build summary.

    `scan_chunk`: rows (or candidates) per worker task of the scan; the output does not depend on
    it."""
    log = log or (lambda msg: print(f"[build] {msg}", file=sys.stderr) if progress else None)
    out = pathlib.Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    labelsets.resolve_label_set(cfg.label_set)  # unknown label set: fail before any work
    if scan_chunk < 1:
        raise ValueError(f"scan_chunk must be at least 1, got {scan_chunk}")
    if (out / records.INFO_FILE).is_file():
        existing = records.read_info(out).get("label_set")
        if existing not in (None, cfg.label_set):
            raise ValueError(
                f"{out} holds label set {existing!r}; this build uses {cfg.label_set!r}"
            )
    fingerprint = cfg.fingerprint()
    plan_path = _plan_path(out, cfg.split)
    plan = _load_json_gz(plan_path) if plan_path.is_file() else None
    if plan is not None and plan["fingerprint"] != fingerprint:
        if not overwrite:
            raise ValueError(
                f"{out} already holds a build of split {cfg.split!r} with a different config; "
                "pass --overwrite to replace it"
            )
        plan = None
    if plan is None:
        existing = [p.name for p in out.glob(f"{cfg.split}-*-of-*.tfrecord")]
        if existing and not plan_path.is_file() and not overwrite:
            raise ValueError(
                f"{out} already has shards of split {cfg.split!r} ({existing[0]}, ...) that this "
                "builder did not plan; pass --overwrite to replace them"
            )
        _remove_split(out, cfg.split, keep_scan=fingerprint)

    try:
        with ProcessMap(workers) as pool:
            if plan is None:
                plan = make_plan(cfg, out, pool, progress, log, scan_chunk)
                _save_json_gz(plan_path, plan)
                # the plan holds all the build needs from the scan now
                shutil.rmtree(scan.scan_dir_for(out, cfg.split, fingerprint))
            else:
                log(f"resuming split {cfg.split!r} from the saved plan")
            shards = plan["shards"]
            n_shards = len(shards)
            offsets: dict[int, list[int]] = {}
            tasks = []
            for i, rows in enumerate(shards):
                done = _shard_done(out, cfg.split, i, n_shards, fingerprint, rows)
                if done is not None:
                    offsets[i] = done
                else:
                    tasks.append((str(out), cfg.split, i, n_shards, fingerprint, rows))
            if offsets:
                log(f"kept {len(offsets)} finished shard(s), writing {len(tasks)}")
            total = sum(len(r) for r in shards)
            kept = sum(len(shards[i]) for i in offsets)
            bar = Progress(f"writing {cfg.split}", total, progress, already_done=kept)
            for i, offs in pool.imap_unordered(_write_shard, tasks):
                offsets[i] = offs
                bar.update(len(offs), f" shards {len(offsets)}/{n_shards}")
    except BaseException:
        # Ctrl-C or an error terminated the workers: their torn shards and scan chunks go
        _remove_torn_files(out, cfg.split)
        raise

    manifest = []
    for i, rows in enumerate(shards):
        name = records.shard_name(cfg.split, i, n_shards)
        for row, off in zip(rows, offsets[i]):
            manifest.append(
                {
                    "key": row["key"],
                    "source": row["source"],
                    "labels": row["labels"],
                    "label_source": row["label_source"],
                    "split": cfg.split,
                    "shard": name,
                    "offset": off,
                }
            )
    summary = {
        "n": len(manifest),
        "seed": cfg.seed,
        "command": command,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"},
        "fingerprint": fingerprint,
        "num_shards": n_shards,
        "per_source": dict(sorted(Counter(m["source"] for m in manifest).items())),
        "per_class": _per_class(manifest),
        "label_source": dict(sorted(Counter(m["label_source"] for m in manifest).items())),
        "skipped": plan["skipped"],
        "matching": plan.get("matching"),
    }
    sources_info = {
        name: {
            "kind": plan["source_kinds"].get(name),
            "scanned": plan["scanned"].get(name, 0),
            "usable": plan["usable"].get(name, 0),
            "selected": summary["per_source"].get(name, 0),
        }
        for name in plan["source_kinds"]
    }
    finalize_split(out, cfg.split, manifest, summary, cfg.label_set, sources_info, cfg.name)
    skips = SkipCounter()
    skips.merge(plan["skipped"])
    log(f"split {cfg.split!r}: {len(manifest)} samples in {n_shards} shard(s)")
    log(skips.report())
    return summary


def _per_class(manifest) -> dict[str, int]:
    c = Counter(m["labels"][0] if m["labels"] else -1 for m in manifest)
    return {str(k): v for k, v in sorted(c.items())}


def _remove_torn_files(out: pathlib.Path, split: str) -> None:
    for p in [*out.glob(f"{split}-*.partial"), *(out / _PLAN_DIR).glob(f"{split}.scan-*/*.tmp*")]:
        p.unlink(missing_ok=True)


def _remove_split(out: pathlib.Path, split: str, keep_scan: str) -> None:
    """Removes the split's shards and plan, and scans of other configs (`keep_scan`: this one's
    fingerprint, whose finished chunks a resumed build reuses)."""
    for p in out.iterdir():
        if p.name.startswith(f"{split}-") and ".tfrecord" in p.name:
            p.unlink()
    _plan_path(out, split).unlink(missing_ok=True)
    for p in (out / _PLAN_DIR).glob(f"{split}.scan-*"):
        if p != scan.scan_dir_for(out, split, keep_scan):
            shutil.rmtree(p)


# What the manifest's per-split build line repeats from the build summary (info.json has it all).
_MANIFEST_BUILD_KEYS = ("n", "seed", "command", "per_source", "per_class", "config")


def finalize_split(
    out: pathlib.Path,
    split: str,
    manifest: list[dict],
    summary: dict,
    label_set: str,
    sources_info: dict,
    name: str | None = None,
    extra_info: dict | None = None,
) -> dict:
    """Merge this split into manifest.jsonl.gz and info.json (other splits are kept)."""
    old, builds = [], {}
    if (out / records.MANIFEST_FILE).is_file():
        old = [m for m in records.read_manifest(out) if m.get("split") != split]
        builds = records.read_manifest_builds(out)
    repeated = {k: summary[k] for k in _MANIFEST_BUILD_KEYS if k in summary}
    builds[split] = {"label_set": label_set, **repeated}
    manifest_lib.write_manifest(out, old + manifest, builds)  # jsonl + manifest.arrow
    info = records.read_info(out) if (out / records.INFO_FILE).is_file() else {}
    if info.get("label_set") not in (None, label_set):
        raise ValueError(
            f"{out}: info.json has label set {info['label_set']!r}, this split uses {label_set!r}"
        )
    info.setdefault("name", name or out.resolve().name)
    info["splits"] = {**info.get("splits", {}), split: len(manifest)}
    info["features"] = records.FEATURES
    info["label_set"] = label_set
    srcs = info.get("sources", {})
    for src, rec in sources_info.items():
        srcs.setdefault(src, {})[split] = rec
    info["sources"] = srcs
    info["builder_version"] = BUILDER_VERSION
    # Every image stored was decoded whole here (stage 2) or encoded here (JANuS-mini): the loader
    # may then decode a crop without reading the rest of the file (janus.data.input.jpeg_region).
    info["images_verified"] = True
    info["build"] = {**info.get("build", {}), split: summary}
    info.update(extra_info or {})
    records.write_info(out, info)
    return info
