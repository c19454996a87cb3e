"""The JANuS records directory: `tf.train.Example` samples in TFRecord shards, info and manifest.

A records directory holds `<split>-SSSSS-of-NNNNN.tfrecord` shards with their `.index`,
`info.json` and `manifest.jsonl.gz`: first one `{"build": {...}}` line per split (split, seed,
label set, command, per-class and per-source counts), then one JSON object per sample (key,
source, labels, label_source, split, shard, offset). Each record's payload is a serialized
`tf.train.Example` with the `FEATURES` below, written and read without TensorFlow.

The byte level (framing, CRCs, `.index` files, `ShardWriter`) is `janus.data.tfrecord`; its
readers `iter_tfrecord`, `read_record_at`, `build_index` and its `CorruptRecordError` are
documented here too and stay importable from this module.
"""

from __future__ import annotations

import bisect
import gzip
import json
import os
import pathlib
import re
from collections.abc import Iterator

import numpy as np

# Imported eagerly, in the importing thread: a first import from several grain prefetch threads at
# once deadlocks inside tensorflow_datasets' lazy-import machinery (seen in multi-process runs).
from tensorflow_datasets.proto import tf_example_generated_pb2 as example_pb2

from janus.data.tfrecord import CorruptRecordError, RecordsError, ShardFiles, shard_offsets
from janus.data.tfrecord import build_index as build_index  # documented here: docs/data.md
from janus.data.tfrecord import iter_tfrecord as iter_tfrecord
from janus.data.tfrecord import read_record_at as read_record_at
from janus.fileio import atomic_open, atomic_write

INFO_FILE = "info.json"
MANIFEST_FILE = "manifest.jsonl.gz"

FEATURES = {
    "image/encoded": "bytes",
    "image/format": "bytes",
    "label": "int64 list",
    "label/source": "bytes",
    "caption": "bytes list",
    "source": "bytes",
    "key": "bytes",
}


# ----------------------------------------------------------------------------- tf.train.Example


def _as_bytes(value) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def encode_example(example: dict) -> bytes:
    """Serialize a sample dict (DESIGN.md features) into a tf.train.Example."""
    ex = example_pb2.Example()
    feat = ex.features.feature
    missing = [k for k in ("image/encoded", "key") if k not in example]
    if missing:
        raise ValueError(f"example is missing {missing}")
    feat["image/encoded"].bytes_list.value.append(bytes(example["image/encoded"]))
    feat["image/format"].bytes_list.value.append(_as_bytes(example.get("image/format", "jpeg")))
    labels = np.asarray(example.get("label", []), dtype=np.int64).reshape(-1)
    feat["label"].int64_list.value.extend(int(x) for x in labels)
    feat["label/source"].bytes_list.value.append(_as_bytes(example.get("label/source", "")))
    captions = example.get("caption", [])
    if isinstance(captions, str | bytes):
        captions = [captions]
    feat["caption"].bytes_list.value.extend(_as_bytes(c) for c in captions)
    feat["source"].bytes_list.value.append(_as_bytes(example.get("source", "")))
    feat["key"].bytes_list.value.append(_as_bytes(example["key"]))
    # deterministic=True sorts the feature map, so equal samples give equal bytes in any process.
    return ex.SerializeToString(deterministic=True)


def parse_example(data: bytes) -> dict[str, list]:
    """Every feature of any serialized tf.train.Example -> list of values (bytes / int / float)."""
    ex = example_pb2.Example()
    ex.ParseFromString(data)
    out = {}
    for name, feature in ex.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = list(getattr(feature, kind).value) if kind else []
    return out


def decode_example(data: bytes) -> dict:
    """Parse a serialized tf.train.Example with the DESIGN.md features (missing ones -> empty)."""
    ex = example_pb2.Example()
    try:
        ex.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError has no stable import path
        raise ValueError(f"not a serialized tf.train.Example: {e}") from None
    feat = ex.features.feature

    def one(name: str) -> str:
        values = feat[name].bytes_list.value if name in feat else []
        return values[0].decode("utf-8") if values else ""

    return {
        "image/encoded": bytes(feat["image/encoded"].bytes_list.value[0])
        if "image/encoded" in feat and feat["image/encoded"].bytes_list.value
        else b"",
        "image/format": one("image/format"),
        "label": np.asarray(
            list(feat["label"].int64_list.value) if "label" in feat else [], dtype=np.int64
        ),
        "label/source": one("label/source"),
        "caption": [c.decode("utf-8") for c in feat["caption"].bytes_list.value]
        if "caption" in feat
        else [],
        "source": one("source"),
        "key": one("key"),
    }


# ----------------------------------------------------------------------------- records directories

_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.tfrecord$")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """(split, index, count) of a shard file name, None if it is not one."""
    m = _SHARD_RE.match(os.path.basename(name))
    return (m["split"], int(m["i"]), int(m["n"])) if m else None


class MissingShardsError(RecordsError, FileNotFoundError):
    """A split's shards are not all there; the message names the missing files."""


def list_shards(records_dir, split: str) -> list[pathlib.Path]:
    """The split's shards in order; `MissingShardsError` naming the files of the `-of-NNNNN` set
    that are missing (or the split, when it has none)."""
    root = pathlib.Path(records_dir)
    found = {}
    for p in root.iterdir() if root.is_dir() else []:
        parsed = parse_shard_name(p.name)
        if parsed and parsed[0] == split:
            found[parsed[1:]] = p
    if not found:
        raise MissingShardsError(f"no shards for split {split!r} in {root}")
    counts = {n for _, n in found}
    if len(counts) != 1:
        raise CorruptRecordError(root, 0, f"split {split!r} mixes shard counts {sorted(counts)}")
    (n,) = counts
    missing = [i for i in range(n) if (i, n) not in found]
    if missing:
        names = ", ".join(shard_name(split, i, n) for i in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise MissingShardsError(
            f"split {split!r} in {root}: {len(missing)} of {n} shards missing: {names}{more} "
            "(rebuild the records with the command in info.json)"
        )
    return [found[(i, n)] for i in range(n)]


class RecordsDataSource:
    """grain RandomAccessDataSource over the shards of a split; items are serialized Examples.

    Picklable (file descriptors are reopened lazily in each process). Shards without a `.index` are
    scanned once on open.
    """

    def __init__(self, records_dir, split: str = "train"):
        self.records_dir = pathlib.Path(records_dir)
        self.split = split
        self._paths = [str(p) for p in list_shards(self.records_dir, split)]
        self._offsets = [shard_offsets(p) for p in self._paths]
        self._starts = np.cumsum([0] + [len(o) for o in self._offsets]).tolist()
        self._files = ShardFiles(self._paths)

    def __len__(self) -> int:
        return self._starts[-1]

    def _find(self, index: int) -> tuple[int, int]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"record {index} out of range for {n} records")
        s = bisect.bisect_right(self._starts, index) - 1
        return s, int(self._offsets[s][index - self._starts[s]])

    def locate(self, index: int) -> tuple[str, int]:
        """(shard path, byte offset) of record `index`."""
        s, offset = self._find(int(index))
        return self._paths[s], offset

    def __getitem__(self, index: int) -> bytes:
        return self._files.read(*self._find(int(index)))

    def keys_of(self, indices) -> list[str]:
        return [decode_example(self[int(i)])["key"] for i in indices]

    def __repr__(self) -> str:
        return f"RecordsDataSource({str(self.records_dir)!r}, split={self.split!r}, n={len(self)})"


class RecordRefs:
    """grain RandomAccessDataSource over records named by (shard, byte offset): a run's selected
    examples. Holds 12 bytes per record and nothing about the shards' other records; picklable.

    ``images_verified``: per shard path, whether its images are known to decode whole (its
    info.json says ``images_verified``); ``verified(index)`` answers it for a record."""

    def __init__(self, paths, shard: np.ndarray, offset: np.ndarray, images_verified=None):
        if len(shard) != len(offset):
            raise ValueError(f"{len(shard)} shard numbers for {len(offset)} offsets")
        self._files = ShardFiles(paths)
        self.shard = np.asarray(shard, dtype=np.int32)
        self.offset = np.asarray(offset, dtype=np.uint64)
        verified = [False] * len(paths) if images_verified is None else list(images_verified)
        if len(verified) != len(paths):
            raise ValueError(f"{len(verified)} images_verified flags for {len(paths)} shards")
        self._verified = np.array(verified, dtype=bool)

    def verified(self, index: int) -> bool:
        return bool(self._verified[self.shard[index]])

    def __len__(self) -> int:
        return len(self.offset)

    def __getitem__(self, index: int) -> bytes:
        return self._files.read(int(self.shard[index]), int(self.offset[index]))

    def __repr__(self) -> str:
        return f"RecordRefs(n={len(self)})"


def read_info(records_dir) -> dict:
    path = pathlib.Path(records_dir) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a janus records directory")
    with open(path) as f:
        return json.load(f)


def write_info(records_dir, info: dict) -> None:
    data = json.dumps(info, indent=2, sort_keys=False).encode() + b"\n"
    atomic_write(pathlib.Path(records_dir) / INFO_FILE, data)


def _manifest_lines(records_dir) -> Iterator[dict]:
    path = pathlib.Path(records_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {lineno} is not JSON ({e})") from None


def _is_build_line(row: dict) -> bool:
    return "build" in row and "key" not in row


def read_manifest(records_dir) -> Iterator[dict]:
    """One dict per sample: key, source, labels, label_source, split, shard, offset."""
    return (row for row in _manifest_lines(records_dir) if not _is_build_line(row))


def read_manifest_builds(records_dir) -> dict[str, dict]:
    """{split: how it was built}: seed, label set, command, per-class and per-source counts."""
    rows = _manifest_lines(records_dir)
    return {row["build"]["split"]: row["build"] for row in rows if _is_build_line(row)}


def write_manifest(records_dir, entries, builds: dict[str, dict] | None = None) -> None:
    """Write manifest.jsonl.gz atomically: a `{"build": ...}` line per split, then the samples.

    Byte-reproducible: gzip mtime 0 and no file name in the gzip header (the temporary name
    holds the pid).
    """
    path = pathlib.Path(records_dir) / MANIFEST_FILE
    with (
        atomic_open(path) as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
    ):
        for split in sorted(builds or {}):
            gz.write((json.dumps({"build": {"split": split, **builds[split]}}) + "\n").encode())
        for e in entries:
            gz.write((json.dumps(e, separators=(",", ":")) + "\n").encode())
