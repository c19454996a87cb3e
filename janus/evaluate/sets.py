"""Shift-set readers: one `EvalSet` per set, from a tfds data dir, a distribution folder layout or a
janus records directory.

Set names (DESIGN.md): val, v2, sketch, r, a, objectnet, real. A set's location is a SPEC string:

- `records:DIR[#SPLIT]`  a janus records dir (split defaults to the set name, `val` for val);
- `tfds:DATA_DIR`        a tfds data dir the user prepared (TFRecord or array_record shards);
                         dataset per set: imagenet2012 (validation), imagenet_v2/<variant> (test),
                         imagenet_sketch, imagenet_r, imagenet_a (test), imagenet2012_real
                         (validation, `real_label`); labels there are 1000-way indices;
- `folder:DIR`           the layout the set is distributed in: class folders named by WordNet id
                         (val, Sketch, R, A), by class index (V2's `0`..`999`) or by ObjectNet
                         folder name (`objectnet-1.0/images`; the 200 folders without an ImageNet
                         class are skipped and counted); for ReaL, the val images
                         (`ILSVRC2012_val_<8 digits>.JPEG`, flat or in class folders) with ReaL's
                         `real.json` in DIR;
- a bare path: `records` if it holds info.json, `tfds` if it holds a known dataset folder, else
  `folder`.

Every item is {"image/encoded": bytes, "label": group id}; `groups[g]` lists the 1000-way labels
accepted for that item (one for most sets; several for ObjectNet folders that map to several
ImageNet classes, and for multi-label records / ImageNet-ReaL). ObjectNet images lose a 2-pixel
border on each side before resizing (ObjectNet's protocol): `BorderCrop` re-encodes losslessly.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import io
import json
import os
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image

from janus.data import labelsets, records
from janus.evaluate.restrict import target_table

SET_NAMES = ("val", "v2", "sketch", "r", "a", "objectnet", "real")
DEFAULT_SETS = ("val", "v2", "sketch", "r", "a", "objectnet")
V2_VARIANTS = ("matched-frequency", "threshold-0.7", "topimages")

# tfds dataset name and split per set ({v2} = variant config).
TFDS_NAMES = {
    "val": ("imagenet2012", "validation"),
    "v2": ("imagenet_v2/{v2}", "test"),
    "sketch": ("imagenet_sketch", "test"),
    "r": ("imagenet_r", "test"),
    "a": ("imagenet_a", "test"),
    "real": ("imagenet2012_real", "validation"),
}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_WNID = re.compile(r"^n\d{8}$")


class SetNotFound(FileNotFoundError):
    """A set's data is not where its spec points; the runner reports it and goes on."""


@dataclasses.dataclass
class EvalSet:
    name: str
    items: Sequence  # random access; item i -> {"image/encoded": bytes, "label": group id}
    groups: list[list[int]]  # group id -> accepted 1000-way labels
    item_groups: np.ndarray  # int [len(items)] group id per item (without reading images)
    where: str  # human-readable origin
    skipped: dict = dataclasses.field(default_factory=dict)  # reason -> count

    def __len__(self) -> int:
        return len(self.items)


# --------------------------------------------------------------------------------------------
# Item sequences


class Subset:
    """Items `positions` of a base sequence (the images kept by the label-set filter)."""

    def __init__(self, base, positions):
        self.base, self.positions = base, np.asarray(positions, dtype=np.int64)

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, i):
        return self.base[int(self.positions[i])]


class _ExampleItems:
    """Serialized tf.train.Example source -> items, with precomputed group ids."""

    def __init__(self, source, item_groups, image_key: str = "image/encoded"):
        self.source, self.item_groups, self.image_key = source, item_groups, image_key

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        ex = records.parse_example(self.source[int(i)])
        img = ex.get(self.image_key) or ex.get("image") or [b""]
        key = (ex.get("key") or ex.get("file_name") or [str(i).encode()])[0]
        return {
            "image/encoded": bytes(img[0]),
            "label": int(self.item_groups[i]),
            "key": key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key),
        }


class _FileItems:
    def __init__(self, paths, item_groups):
        self.paths, self.item_groups = list(paths), item_groups

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with open(self.paths[int(i)], "rb") as f:
            return {
                "image/encoded": f.read(),
                "label": int(self.item_groups[i]),
                "key": self.paths[i],
            }


class BorderCrop:
    """Removes `px` pixels from each side (ObjectNet's 2-pixel border); re-encodes losslessly.

    BMP, not PNG: encoding and decoding it is ~20x faster (mere copies) for the same pixels. An
    image that cannot be read gets empty bytes, so the eval pipeline counts it as unreadable
    instead of crashing here or evaluating it uncropped."""

    def __init__(self, base, px: int = 2):
        self.base, self.px = base, px

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = dict(self.base[i])
        try:
            img = Image.open(io.BytesIO(item["image/encoded"]))
            w, h = img.size
            if w > 2 * self.px and h > 2 * self.px:
                img = img.convert("RGB").crop((self.px, self.px, w - self.px, h - self.px))
                buf = io.BytesIO()
                img.save(buf, format="BMP")
                item["image/encoded"] = buf.getvalue()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            item["image/encoded"] = b""
        return item


def filter_to_classes(es: EvalSet, classes) -> tuple[EvalSet, np.ndarray]:
    """Keeps the items with any accepted label in `classes`. -> (EvalSet, targets bool [G, C]).

    Items without any label (ImageNet-ReaL's images its raters left unlabelled) are dropped too,
    counted apart from those whose labels lie outside the class set."""

    targets, keep_group = target_table(es.groups, classes)
    unlabelled_group = np.array([len(g) == 0 for g in es.groups], bool)
    keep = keep_group[es.item_groups] if len(es.item_groups) else np.zeros(0, bool)
    unlabelled = unlabelled_group[es.item_groups] if len(es.item_groups) else keep
    positions = np.nonzero(keep)[0]
    skipped = {
        **es.skipped,
        "label outside the class set": int((~keep & ~unlabelled).sum()),
        "no label": int(unlabelled.sum()),
    }
    sub = dataclasses.replace(
        es,
        items=Subset(es.items, positions),
        item_groups=es.item_groups[positions],
        skipped=skipped,
    )
    return sub, targets


# --------------------------------------------------------------------------------------------
# Readers


def _group_ids(label_lists) -> tuple[np.ndarray, list[list[int]]]:
    table: dict[tuple, int] = {}
    ids = np.empty(len(label_lists), dtype=np.int64)
    for i, labels in enumerate(label_lists):
        key = tuple(sorted({int(x) for x in labels}))
        ids[i] = table.setdefault(key, len(table))
    groups = [list(k) for k in sorted(table, key=table.get)]
    return ids, groups


def read_records(name: str, records_dir: str, split: str | None = None) -> EvalSet:
    """A janus records split; labels from manifest.jsonl.gz when it lines up, else decoded."""

    split = split or name
    try:
        src = records.RecordsDataSource(records_dir, split)
    except FileNotFoundError as e:
        raise SetNotFound(f"set {name!r}: {e}") from None
    labels = None
    try:
        by_loc = {
            (os.path.basename(str(e.get("shard", ""))), int(e.get("offset", -1))): e.get("labels")
            for e in records.read_manifest(records_dir)
            if e.get("split", split) == split
        }
        locs = [src.locate(i) for i in range(len(src))]
        labels = [by_loc.get((os.path.basename(p), int(o))) for p, o in locs]
        if any(x is None for x in labels):
            labels = None
    except (FileNotFoundError, ValueError, TypeError):
        labels = None
    if labels is None:  # decode every record's label (reads the split once)
        labels = [records.decode_example(src[i])["label"].tolist() for i in range(len(src))]
    ids, groups = _group_ids(labels)
    items = _ExampleItems(src, ids)
    return EvalSet(name, items, groups, ids, f"records:{records_dir}#{split}")


def _tfds_files(data_dir: str, dataset: str, split: str) -> tuple[list[str], str]:
    base = os.path.join(data_dir, dataset)
    if not os.path.isdir(base):
        raise SetNotFound(f"tfds dataset {dataset!r} not found under {data_dir}")
    versions = sorted(
        (d for d in os.listdir(base) if re.fullmatch(r"\d+\.\d+\.\d+", d)),
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    for version in reversed(versions):
        stem = os.path.join(base, version, f"{dataset.split('/')[0]}-{split}")
        for fmt in ("tfrecord", "array_record"):
            files = sorted(glob.glob(f"{stem}.{fmt}-*-of-*"))
            if files:
                return files, fmt
    raise SetNotFound(f"tfds dataset {dataset!r} under {data_dir}: no {split!r} shards")


class _TfdsTFRecordSource:
    """Random access over tfds TFRecord shards via janus.data.records' offset index."""

    def __init__(self, files, offsets):
        self.files, self.offsets = files, offsets  # offsets: list of (file idx, offset)

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, i):

        f, off = self.offsets[int(i)]
        return records.read_record_at(self.files[f], off)


def _tfds_labels(ex: dict, label_key: str) -> list[int]:
    return [int(x) for x in ex.get(label_key, [])]


def read_tfds(name: str, data_dir: str, v2_variant: str = "matched-frequency") -> EvalSet:

    if name not in TFDS_NAMES:
        raise SetNotFound(f"set {name!r} has no tfds dataset (known: {sorted(TFDS_NAMES)})")
    if v2_variant not in V2_VARIANTS:
        raise ValueError(f"v2 variant {v2_variant!r}; known: {V2_VARIANTS}")
    dataset, split = TFDS_NAMES[name]
    dataset = dataset.format(v2=v2_variant)
    files, fmt = _tfds_files(data_dir, dataset, split)
    label_key = "real_label" if name == "real" else "label"
    labels = []
    if fmt == "tfrecord":
        offsets = []
        for fi, path in enumerate(files):
            for off, payload in records.iter_tfrecord(path):
                offsets.append((fi, off))
                labels.append(_tfds_labels(records.parse_example(payload), label_key))
        source = _TfdsTFRecordSource(files, offsets)
    else:
        import grain

        source = grain.sources.ArrayRecordDataSource(files)
        labels = [
            _tfds_labels(records.parse_example(source[i]), label_key) for i in range(len(source))
        ]
    ids, groups = _group_ids(labels)
    return EvalSet(
        name, _ExampleItems(source, ids, "image"), groups, ids, f"tfds:{data_dir}/{dataset}"
    )


def _objectnet_key(folder: str) -> str:
    return folder.strip().lower().replace(" ", "_").replace("-", "_")


@functools.cache
def _objectnet_folders() -> dict[str, list[int]]:
    """ObjectNet folder -> ImageNet indices, keyed like `_objectnet_key` (e.g. `t-shirt`)."""
    return {_objectnet_key(k): v for k, v in labelsets.objectnet_folder_map().items()}


def _folder_labels(folder: str) -> list[int] | None:
    if _WNID.match(folder):
        idx = labelsets.wnid_to_index().get(folder)
        return None if idx is None else [idx]
    if folder.isdigit():
        return [int(folder)] if int(folder) < 1000 else None
    return _objectnet_folders().get(_objectnet_key(folder))


def _image_files(root: str) -> list[str]:
    return sorted(
        os.path.join(dp, f)
        for dp, _, fs in os.walk(root)
        for f in fs
        if f.lower().endswith(IMAGE_EXTS)
    )


_VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.", re.IGNORECASE)


def read_real_folder(root: str) -> EvalSet:
    """ImageNet-ReaL as distributed: `root/real.json` (one label list per val image, in file
    number order) and the val images named ILSVRC2012_val_<number>, anywhere under `root`."""
    real_json = os.path.join(root, "real.json")
    if not os.path.isfile(real_json):
        raise SetNotFound(
            f"set 'real': {real_json} not found (ImageNet-ReaL's labels, from "
            "github.com/google-research/reassessed-imagenet, beside the val images)"
        )
    with open(real_json) as f:
        real = json.load(f)
    paths, labels, skipped = [], [], Counter()
    for path in _image_files(root):
        m = _VAL_FILE.search(os.path.basename(path))
        number = int(m.group(1)) if m else 0
        if not 1 <= number <= len(real):
            skipped["file name without a val image number in real.json"] += 1
            continue
        paths.append(path)
        labels.append([int(x) for x in real[number - 1]])
    if not paths:
        raise SetNotFound(f"set 'real': no ILSVRC2012_val_* images under {root}")
    ids, groups = _group_ids(labels)
    return EvalSet("real", _FileItems(paths, ids), groups, ids, f"folder:{root}", dict(skipped))


def read_folder(name: str, root: str) -> EvalSet:
    """Class folders under `root` (see module docstring); for ObjectNet also `root/images`."""
    if not os.path.isdir(root):
        raise SetNotFound(f"set {name!r}: folder {root} not found")
    if name == "real":  # its class folders would give the original labels, not ReaL's
        return read_real_folder(root)
    if name == "objectnet" and os.path.isdir(os.path.join(root, "images")):
        root = os.path.join(root, "images")
    paths, labels, skipped = [], [], Counter()
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    unknown = []
    for d in folders:
        lab = _folder_labels(d)
        files = _image_files(os.path.join(root, d))
        if lab is None:
            unknown.append(d)
            skipped["folder without an ImageNet class"] += len(files)
            continue
        paths += files
        labels += [lab] * len(files)
    if not paths:
        raise SetNotFound(f"set {name!r}: no images in class folders under {root}")
    ids, groups = _group_ids(labels)
    es = EvalSet(name, _FileItems(paths, ids), groups, ids, f"folder:{root}", dict(skipped))
    if unknown:
        es.skipped["unmapped folders (first 5): " + ", ".join(unknown[:5])] = len(unknown)
    return es


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """'kind:path[#split]' or a bare path -> (kind, path, split)."""
    kind = None
    m = re.match(r"^(records|tfds|folder):(.*)$", spec)
    if m:
        kind, spec = m.group(1), m.group(2)
    path, _, split = spec.partition("#")
    path = os.path.expanduser(path)
    if kind is None:
        if os.path.isfile(os.path.join(path, "info.json")):
            kind = "records"
        elif any(
            os.path.isdir(os.path.join(path, d.split("/")[0])) for d, _ in TFDS_NAMES.values()
        ):
            kind = "tfds"
        else:
            kind = "folder"
    return kind, path, split or None


def open_set(name: str, spec: str, *, v2_variant: str = "matched-frequency", suite="imagenet"):
    """Reads one set from its spec. Raises SetNotFound when the data is not there."""
    if name not in SET_NAMES:
        raise ValueError(f"unknown set {name!r}; known: {SET_NAMES}")
    kind, path, split = parse_spec(spec)
    if kind == "records":
        es = read_records(name, path, split)
    elif kind == "tfds":
        es = read_tfds(name, path, v2_variant)
    else:
        es = read_folder(name, path)
    if name == "objectnet" and suite != "mini":
        es.items = BorderCrop(es.items, 2)
    return es
