"""Writes JANuS-mini v2's raw data: four training sources and five shift sets, each in the on-disk
format of the real collection it stands for, so that janus reads them with its real readers.

    python -m janus.data.mini.generate --out data/mini_raw [--seed 0] [--workers 2]

- `curated/train/<wnid>/*.JPEG`, `curated/val/<wnid>/*.JPEG`: ImageNet-100; an ImageFolder tree,
  human labels (the folder).
- `web/NNNNN.tar`: LAION; img2dataset webdataset tars (`<key>.jpg`, `.txt`, `.json`), alt-text
  captions, no labels.
- `flickr/metadata.parquet` + `flickr/images/*.jpg`: YFCC; a manifest with `title` and
  `description` columns, no labels.
- `oi/labels.csv` + `oi/images/*.jpg`: OpenImages; the official `ImageID,Source,LabelName,
  Confidence` rows with MIDs (some images hold two objects; some rows are verified negatives).
- `shifts/imagenetv2-matched-frequency-format-val/<class index>/`: ImageNet-V2.
- `shifts/sketch/<wnid>/`, `shifts/imagenet-r/<wnid>/`, `shifts/imagenet-a/<wnid>/`:
  ImageNet-Sketch, -R and -A.
- `shifts/objectnet-1.0/images/<ObjectNet folder>/*.png`: ObjectNet (the 4 classes it holds).

`janus_suite.json` at the top marks every set below it as JANuS-mini's (janus.evaluate.sets reads
it: synthetic sets get no ImageNet baselines). Each source and shift set samples its images under
its own `render.Conditions` (`SOURCES`, `SHIFTS`): the curated source is canonical photos; the web
sources mix styles, poses and settings; each shift set changes one family of conditions. Every
file is a function of (seed, source, index): the same seed gives byte-identical files for any
number of workers.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import multiprocessing
import os
import pathlib
import shutil
import tarfile
import time

import numpy as np

from janus.data import labelsets
from janus.data.mini import SUITE_FILE, captions, render, world

GENERATOR_VERSION = 3

C = render.Conditions
# Training sources. Curated: canonical photos. The web sources: many styles, poses and settings.
SOURCES = {
    "curated": C(),
    "web": C(
        styles=(
            ("photo", 0.4),
            ("drawing", 0.15),
            ("cartoon", 0.15),
            ("painting", 0.15),
            ("pattern", 0.15),
        ),
        context_match=0.4,
        rotation=45,
        scale=(0.75, 1.15),
        offset=0.12,
        distractors=(0, 1),
        quality=(60, 95),
    ),
    "flickr": C(
        styles=(("photo", 0.8), ("painting", 0.1), ("drawing", 0.1)),
        context_match=0.3,
        rotation=70,
        scale=(0.7, 1.1),
        offset=0.15,
        light=(0.6, 1.2),
        noise=0.05,
        blur=1.0,
        distractors=(0, 2),
        quality=(50, 90),
    ),
    "oi": C(
        context_match=0.3,
        rotation=45,
        scale=(0.75, 1.1),
        offset=0.12,
        light=(0.7, 1.2),
        distractors=(0, 1),
        second_object=0.2,
        quality=(70, 95),
    ),
}
# Shift sets: each changes one family of conditions against the curated source.
SHIFTS = {
    "val": SOURCES["curated"],
    "v2": C(
        context_match=0.5,
        scale=(0.8, 1.0),
        light=(0.7, 1.05),
        noise=0.06,
        blur=0.7,
        quality=(55, 80),
    ),
    "sketch": C(styles=(("drawing", 1.0),), rotation=30),
    "r": C(styles=(("cartoon", 0.4), ("painting", 0.3), ("pattern", 0.3)), rotation=30),
    "a": C(context_match=0.2, scale=(0.65, 0.85), offset=0.15, distractors=(3, 5), occlude=0.7),
    "objectnet": C(
        context_match=0.0, rotation=180, offset=0.18, patterned_background=0.5, light=(0.6, 1.2)
    ),
}
SHIFT_DIRS = {
    "v2": "shifts/imagenetv2-matched-frequency-format-val",
    "sketch": "shifts/sketch",
    "r": "shifts/imagenet-r",
    "a": "shifts/imagenet-a",
    "objectnet": "shifts/objectnet-1.0",
}
_IDS = {name: i for i, name in enumerate([*SOURCES, "train", *SHIFTS])}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Images per source (per class where named so)."""

    curated_train_per_class: int = 128  # 4x the 1x budget of configs/mini.py (800)
    val_per_class: int = 30  # val and each shift set except ObjectNet
    objectnet_per_class: int = 50  # ObjectNet has 4 of the 25 classes
    web: int = 1400
    flickr: int = 1200
    oi: int = 900
    tar_size: int = 500  # samples per web tar


# A few of everything: 8 curated images per class (200, the budget the trainer tests train on).
# The JANuS-mini of the tests and the install checks (tests/conftest.py, tests/installs/check.sh):
# the full one's code paths, built in about 5 s of CPU instead of 68 s.
SMALL = Sizes(
    curated_train_per_class=8,
    val_per_class=2,
    objectnet_per_class=3,
    web=60,
    flickr=50,
    oi=40,
    tar_size=25,
)


def eval_sets(raw_dir: str) -> dict[str, str]:
    """{set: evaluator spec} of the generated shift sets (janus.evaluate `--data.<set>`)."""
    out = {"val": f"folder:{raw_dir}/curated/val"}
    out.update({name: f"folder:{raw_dir}/{d}" for name, d in SHIFT_DIRS.items()})
    return out


# ---------------------------------------------------------------------------------------------
# One sample: (source, index) -> bytes and metadata, a pure function of the seed.


def _objectnet_folders() -> dict[int, str]:
    """ImageNet index -> ObjectNet folder, for the mini classes ObjectNet holds."""
    out = {}
    for folder, idx in sorted(labelsets.objectnet_folder_map().items()):
        for c in idx:
            if c in world.label_set():
                out.setdefault(c, folder)
    return out


def _sample(task) -> tuple:
    seed, kind, cls, i = task
    rng = np.random.default_rng([seed, _IDS[kind], cls if cls is not None else 99, i])
    if cls is None:  # web sources: the class is drawn, not given
        cls = int(rng.integers(world.NUM_CLASSES))
    f = world.classes()[cls]
    cond = SOURCES.get(kind) or SHIFTS[kind if kind != "train" else "val"]
    style = cond.pick_style(rng)
    others = ()
    if rng.random() < cond.second_object:
        others = (world.classes()[(cls + int(rng.integers(1, world.NUM_CLASSES))) % 25],)
    arr = render.render(f, style, cond, rng, others)
    data = render.encode(arr, "png" if kind == "objectnet" else "jpeg", rng, cond)
    meta = {"class": cls, "style": style, "others": [o.index for o in others]}
    if kind == "web":
        meta["caption"] = captions.alt_text(rng, f, style, captions.Noise())
    elif kind == "flickr":
        meta["title"], meta["description"] = captions.title_description(
            rng, f, style, captions.Noise()
        )
    elif kind == "oi":
        meta["image_id"] = "".join(f"{int(x):x}" for x in rng.integers(0, 16, 16))
    return data, meta


# ---------------------------------------------------------------------------------------------
# Writers, one per real format


def _write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tf.addfile(info, io.BytesIO(data))


def _per_class_tasks(seed, kind, per_class):
    return [(seed, kind, c, i) for c in range(world.NUM_CLASSES) for i in range(per_class)]


class _Writer:
    def __init__(self, out: pathlib.Path, pool):
        self.out, self.pool = out, pool
        self.wnids = labelsets.imagenet_wnids()

    def _run(self, tasks):
        chunk = max(1, len(tasks) // 64)
        yield from zip(tasks, self.pool.imap(_sample, tasks, chunksize=chunk))

    def folder(self, rel: str, tasks, folder_of, name_of, ext: str) -> int:
        n = 0
        for (_, _, cls, i), (data, _) in self._run(tasks):
            imagenet = world.classes()[cls].imagenet
            _write(self.out / rel / folder_of(imagenet) / f"{name_of(imagenet, i)}{ext}", data)
            n += 1
        return n

    def web(self, seed, n: int, tar_size: int) -> int:
        (self.out / "web").mkdir(parents=True, exist_ok=True)
        tasks = [(seed, "web", None, i) for i in range(n)]
        tf = None
        for (_, _, _, i), (data, meta) in self._run(tasks):
            shard, j = divmod(i, tar_size)
            if j == 0:
                if tf is not None:
                    tf.close()
                tf = tarfile.open(
                    self.out / "web" / f"{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT
                )
            key = f"{shard:05d}{j:04d}"
            sidecar = {
                "key": key,
                "caption": meta["caption"],
                "url": f"https://img.example.com/{seed}/{key}.jpg",
                "status": "success",
                "width": render.SIZE,
                "height": render.SIZE,
            }
            _tar_add(tf, f"{key}.jpg", data)
            _tar_add(tf, f"{key}.txt", meta["caption"].encode())
            _tar_add(tf, f"{key}.json", json.dumps(sidecar, sort_keys=True).encode())
        if tf is not None:
            tf.close()
        return n

    def flickr(self, seed, n: int) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = {"photoid": [], "filepath": [], "title": [], "description": []}
        for (_, _, _, i), (data, meta) in self._run([(seed, "flickr", None, i) for i in range(n)]):
            photoid = str(10_000_000 + i)
            _write(self.out / "flickr" / "images" / f"{photoid}.jpg", data)
            rows["photoid"].append(photoid)
            rows["filepath"].append(f"images/{photoid}.jpg")
            rows["title"].append(meta["title"])
            rows["description"].append(meta["description"])
        pq.write_table(pa.table(rows), self.out / "flickr" / "metadata.parquet")
        return n

    def openimages(self, seed, n: int) -> int:
        mids = {}
        for mid, c in sorted(labelsets.openimages_map().items()):
            mids.setdefault(c, mid)
        rows = []
        for (_, _, _, i), (data, meta) in self._run([(seed, "oi", None, i) for i in range(n)]):
            image_id = meta["image_id"]
            _write(self.out / "oi" / "images" / f"{image_id}.jpg", data)
            for c in [meta["class"], *meta["others"]]:
                rows.append((image_id, "verification", mids[world.classes()[c].imagenet], "1"))
            if i % 7 == 0:  # a verified negative: a class the image does NOT show
                absent = (meta["class"] + 1 + i % 23) % world.NUM_CLASSES
                if absent not in [meta["class"], *meta["others"]]:
                    rows.append(
                        (image_id, "verification", mids[world.classes()[absent].imagenet], "0")
                    )
        with open(self.out / "oi" / "labels.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["ImageID", "Source", "LabelName", "Confidence"])
            w.writerows(rows)
        return n


def generate(out, *, seed: int = 0, sizes: Sizes = Sizes(), workers: int = 2, log=print) -> dict:
    """Writes the raw sources and shift sets to `out` (replacing an earlier generation there)."""
    out = pathlib.Path(out)
    if out.exists():
        marker = out / SUITE_FILE
        if not marker.is_file() or json.loads(marker.read_text()).get("suite") != "mini":
            raise ValueError(
                f"{out} exists and is not a JANuS-mini raw dir; refusing to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.time()
    wnid = labelsets.imagenet_wnids()
    on_folders = _objectnet_folders()
    counts = {}
    ctx = multiprocessing.get_context("spawn") if workers > 1 else None
    pool = ctx.Pool(workers) if ctx else _SerialPool()
    try:
        w = _Writer(out, pool)
        counts["curated/train"] = w.folder(
            "curated/train",
            _per_class_tasks(seed, "train", sizes.curated_train_per_class),
            lambda c: wnid[c],
            lambda c, i: f"{wnid[c]}_{i}",
            ".JPEG",
        )
        counts["curated/val"] = w.folder(
            "curated/val",
            _per_class_tasks(seed, "val", sizes.val_per_class),
            lambda c: wnid[c],
            lambda c, i: f"ILSVRC2012_val_{c * 1000 + i + 1:08d}",
            ".JPEG",
        )
        counts["web"] = w.web(seed, sizes.web, sizes.tar_size)
        counts["flickr"] = w.flickr(seed, sizes.flickr)
        counts["oi"] = w.openimages(seed, sizes.oi)
        counts["v2"] = w.folder(
            SHIFT_DIRS["v2"],
            _per_class_tasks(seed, "v2", sizes.val_per_class),
            str,
            lambda c, i: f"{c:04d}{i:04d}",
            ".jpeg",
        )
        for name, ext in (("sketch", ".JPEG"), ("r", ".jpg"), ("a", ".jpg")):
            counts[name] = w.folder(
                SHIFT_DIRS[name],
                _per_class_tasks(seed, name, sizes.val_per_class),
                lambda c: wnid[c],
                lambda c, i, n=name: f"{n}_{i}",
                ext,
            )
        on_classes = [k for k, f in enumerate(world.classes()) if f.imagenet in on_folders]
        tasks = [
            (seed, "objectnet", k, i) for k in on_classes for i in range(sizes.objectnet_per_class)
        ]
        counts["objectnet"] = w.folder(
            f"{SHIFT_DIRS['objectnet']}/images",
            tasks,
            lambda c: on_folders[c],
            lambda c, i: f"{c:04d}_{i:04d}",
            ".png",
        )
    finally:
        pool.close()
    info = {
        "suite": "mini",
        "name": "janus_mini_v2",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "label_set": world.LABEL_SET,
        "sizes": dataclasses.asdict(sizes),
        "counts": counts,
    }
    (out / SUITE_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    log(f"[mini] generated {sum(counts.values())} images in {out} ({time.time() - t0:.1f} s)")
    return info


class _SerialPool:
    def imap(self, fn, tasks, chunksize=1):
        return map(fn, tasks)

    def close(self):
        pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m janus.data.mini.generate", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", default="data/mini_raw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)
    generate(args.out, seed=args.seed, workers=args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
