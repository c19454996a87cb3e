"""Shift-set readers: one `EvalSet` per set, from a tfds data dir, a distribution folder layout or a
janus records directory.

One job: from a set's spec to its items (where it is, its protocol and suite, what it holds);
long because it reads four layouts (records, tfds, class folders, ReaL) and ObjectNet's border.

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

Protocol and suite, per set, from where it is read (`locate`; no image is read to decide):

- `protocol` follows the layout. A tfds dir, a folder layout, or a records dir whose info.json does
  not say `"suite": "mini"` -> `imagenet`: R / A / ObjectNet are restricted to the label set
  intersected with the set's classes, and ObjectNet loses its 2-pixel border. A split of a records
  dir whose info.json says `"suite": "mini"` -> `mini`: no intersection, no border crop.
- `suite` says whose data it is: `mini` for a mini records split, and for a set whose folder (or
  one of its ancestors, up to `SUITE_MARKER_LEVELS` above the given path) holds `SUITE_MARKER`
  with `{"suite": "mini", ...}` (JANuS-mini v2 writes its shift sets in the real layouts with this
  marker); otherwise `imagenet`.
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

from janus.data import labelsets, records, tfrecord
from janus.data.mini import SUITE_FILE
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
#: The file that marks a folder / tfds set as synthetic data: {"suite": "mini", "name": ...}, in
#: the set's folder or one of its ancestors (the JANuS-mini v2 generator writes it).
SUITE_MARKER = SUITE_FILE
#: How many folders above a set's given path are searched for SUITE_MARKER.
SUITE_MARKER_LEVELS = 4
#: ObjectNet's folder names inside its archive: DIR may be any of these levels.
OBJECTNET_ROOTS = ("images", os.path.join("objectnet-1.0", "images"), "objectnet-1.0")
#: The folder layout each set is read in, for error messages.
FOLDER_LAYOUTS = {
    "val": "DIR/<wnid>/<image> (e.g. DIR/n01440764/ILSVRC2012_val_00000293.JPEG)",
    "v2": "DIR/<class index 0..999>/<image>",
    "sketch": "DIR/<wnid>/<image>",
    "r": "DIR/<wnid>/<image>",
    "a": "DIR/<wnid>/<image>",
    "objectnet": (
        "DIR/<objectnet folder>/<image> with DIR the archive's objectnet-1.0/images, "
        "objectnet-1.0 or the folder it was extracted into"
    ),
}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_WNID = re.compile(r"^n\d{8}$")


class SetNotFound(FileNotFoundError):
    """A set's data is not where its spec points; the runner reports it and goes on."""


@dataclasses.dataclass(frozen=True)
class SetSource:
    """Where one set is read from, and the protocol and suite that follow from it."""

    name: str
    kind: str  # records | tfds | folder
    path: str  # records / tfds: the dir given; folder: the root holding the class folders
    split: str | None  # records split (None: the set's name)
    protocol: str  # imagenet | mini: how the set is evaluated
    suite: str  # imagenet | mini: whose data it is
    label_set: str | None = None  # a mini records dir's label set (its info.json)
    marker: str | None = None  # the SUITE_MARKER file that decided the suite, if any


@dataclasses.dataclass
class EvalSet:
    name: str
    items: Sequence  # random access; item i -> {"image/encoded": bytes, "label": group id}
    groups: list[list[int]]  # group id -> accepted 1000-way labels
    item_groups: np.ndarray  # int [len(items)] group id per item (without reading images)
    where: str  # human-readable origin
    skipped: dict = dataclasses.field(default_factory=dict)  # reason -> count
    protocol: str = "imagenet"  # see the module docstring
    suite: str = "imagenet"

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
    """Random access over tfds TFRecord shards via janus.data.tfrecord's offset index."""

    def __init__(self, files, offsets):
        self.files, self.offsets = files, offsets  # offsets: list of (file idx, offset)

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, i):

        f, off = self.offsets[int(i)]
        return tfrecord.read_record_at(self.files[f], off)


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
            for off, payload in tfrecord.iter_tfrecord(path):
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


def folder_root(name: str, root: str) -> str:
    """The folder holding a set's class folders. For ObjectNet, DIR may be the archive's
    `objectnet-1.0/images`, `objectnet-1.0` or the folder the archive was extracted into."""
    if name == "objectnet":
        for sub in OBJECTNET_ROOTS:
            if os.path.isdir(os.path.join(root, sub)):
                return os.path.join(root, sub)
    return root


def read_folder(name: str, root: str) -> EvalSet:
    """Class folders under `root` (see module docstring and `folder_root`)."""
    if not os.path.isdir(root):
        raise SetNotFound(f"set {name!r}: folder {root} not found")
    if name == "real":  # its class folders would give the original labels, not ReaL's
        return read_real_folder(root)
    root = folder_root(name, root)
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
        layout = FOLDER_LAYOUTS.get(name, "DIR/<class folder>/<image>")
        raise SetNotFound(
            f"set {name!r}: no images in class folders under {root}; expected {layout}"
        )
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


def records_info(path: str | None) -> dict:
    """A records dir's info.json, or {} when there is none (or it cannot be read)."""
    if not path:
        return {}
    try:
        return records.read_info(path)
    except (FileNotFoundError, ValueError, OSError):
        return {}


def find_suite_marker(start: str, given: str, levels: int = SUITE_MARKER_LEVELS) -> str | None:
    """The nearest SUITE_MARKER file: in `start` (the folder a set is read from), its parents up
    to `given` (the path the user gave, at or above `start`), then up to `levels` folders above
    `given`. -> its path, or None."""
    start, given = os.path.abspath(start), os.path.abspath(given)
    dirs = []
    d = start
    while d.startswith(given + os.sep):  # from the set's folder up to the given path
        dirs.append(d)
        d = os.path.dirname(d)
    d = given
    for _ in range(levels + 1):
        dirs.append(d)
        if os.path.dirname(d) == d:
            break
        d = os.path.dirname(d)
    for d in dirs:
        path = os.path.join(d, SUITE_MARKER)
        if os.path.isfile(path):
            return path
    return None


def read_suite_marker(path: str) -> str:
    """The suite a SUITE_MARKER file names. A marker that cannot be read is an error naming it,
    never silently ignored (the suite decides which protocol and baselines apply)."""
    try:
        with open(path) as f:
            marker = json.load(f)
        suite = marker["suite"]
        if not isinstance(suite, str) or not suite:
            raise ValueError(f"'suite' is {suite!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SetNotFound(
            f"suite marker {path} is not a JSON object with a 'suite' string ({e!r}); "
            "fix or remove it"
        ) from None
    return suite


def locate(name: str, spec: str, *, v2_variant: str = "matched-frequency") -> SetSource:
    """Where a set is read from, its protocol and its suite (module docstring); reads no image.
    Raises SetNotFound for an unreadable suite marker."""
    if name not in SET_NAMES:
        raise ValueError(f"unknown set {name!r}; known: {SET_NAMES}")
    kind, path, split = parse_spec(spec)
    given = start = path
    info = {}
    if kind == "records":
        info = records_info(path)
        if info.get("suite") == "mini":
            return SetSource(name, kind, path, split, "mini", "mini", info.get("label_set"))
    elif kind == "tfds" and name in TFDS_NAMES:
        dataset = os.path.join(path, TFDS_NAMES[name][0].format(v2=v2_variant))
        start = dataset if os.path.isdir(dataset) else path
    elif kind == "folder":
        start = path = folder_root(name, path)
    marker = None if info.get("suite") else find_suite_marker(start, given)
    suite = info.get("suite") or (read_suite_marker(marker) if marker else "imagenet")
    return SetSource(name, kind, path, split, "imagenet", suite, marker=marker)


def open_source(source: SetSource, *, v2_variant: str = "matched-frequency") -> EvalSet:
    """Reads a located set. Raises SetNotFound when the data is not there."""
    name = source.name
    if source.kind == "records":
        es = read_records(name, source.path, source.split)
    elif source.kind == "tfds":
        es = read_tfds(name, source.path, v2_variant)
    else:
        es = read_folder(name, source.path)
    es.protocol, es.suite = source.protocol, source.suite
    if name == "objectnet" and source.protocol == "imagenet":
        es.items = BorderCrop(es.items, 2)
    return es


def open_set(name: str, spec: str, *, v2_variant: str = "matched-frequency") -> EvalSet:
    """Reads one set from its spec (`locate`, then `open_source`). Raises SetNotFound when the
    data is not there."""
    return open_source(locate(name, spec, v2_variant=v2_variant), v2_variant=v2_variant)
