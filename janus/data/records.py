"""TFRecord files of `tf.train.Example`, written and read without TensorFlow, with random access.

TFRecord framing (the format TensorFlow reads and writes), per record::

    uint64 LE  length
    uint32 LE  masked_crc32c(length bytes)
    bytes      payload (a serialized tf.train.Example)
    uint32 LE  masked_crc32c(payload)

    masked_crc32c(x) = ((crc >> 15 | crc << 17) + 0xA282EAD8) mod 2**32, crc = CRC-32C(x)

Index file `<shard>.index` (janus' own format, written atomically by `ShardWriter`)::

    8 bytes    magic b"JANUSIX1"
    uint64 LE  n, the number of records
    n x uint64 LE  byte offset of each record's length field in the shard
    uint64 LE  the shard's total size in bytes (a shard that no longer matches is an error)

A records directory holds `<split>-SSSSS-of-NNNNN.tfrecord` shards with their `.index`,
`info.json` and `manifest.jsonl.gz`: first one `{"build": {...}}` line per split (split, seed,
label set, command, per-class and per-source counts), then one JSON object per sample (key,
source, labels, label_source, split, shard, offset). Every read checks both CRCs; damage raises
`CorruptRecordError` naming the file and offset.
"""

from __future__ import annotations

import bisect
import gzip
import json
import os
import pathlib
import re
import struct
from collections.abc import Iterator

import google_crc32c
import numpy as np

# Imported eagerly, in the importing thread: a first import from several grain prefetch threads at
# once deadlocks inside tensorflow_datasets' lazy-import machinery (seen in multi-process runs).
from tensorflow_datasets.proto import tf_example_generated_pb2 as example_pb2

from janus.fileio import atomic_open, atomic_write

INDEX_MAGIC = b"JANUSIX1"
INFO_FILE = "info.json"
MANIFEST_FILE = "manifest.jsonl.gz"
_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MASK_DELTA = 0xA282EAD8
# A length above this is certainly damage, not a record (guards against huge allocations).
_MAX_RECORD = 1 << 31

FEATURES = {
    "image/encoded": "bytes",
    "image/format": "bytes",
    "label": "int64 list",
    "label/source": "bytes",
    "caption": "bytes list",
    "source": "bytes",
    "key": "bytes",
}


class CorruptRecordError(IOError):
    """A TFRecord file is damaged: bad CRC, truncated record or an index that does not match."""

    def __init__(self, path, offset: int, reason: str):
        self.path = os.fspath(path)
        self.offset = int(offset)
        self.reason = reason
        super().__init__(f"{self.path}: corrupt record at byte offset {self.offset}: {reason}")

    def __reduce__(self):  # picklable, so worker processes can report it
        return (type(self), (self.path, self.offset, self.reason))


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
    """One TFRecord frame around `payload`."""
    length = _U64.pack(len(payload))
    return b"".join(
        (length, _U32.pack(masked_crc32c(length)), payload, _U32.pack(masked_crc32c(payload)))
    )


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


# ----------------------------------------------------------------------------- low-level reading


def _read_frame(f, path, offset: int, file_size: int) -> tuple[bytes, int]:
    """Read and check the record at `offset`; returns (payload, offset of the next record)."""
    if not 0 <= offset < file_size:  # a damaged index (os.pread overflows past 2**63)
        raise CorruptRecordError(path, offset, f"record offset beyond the file ({file_size} bytes)")
    header = os.pread(f, _HEADER.size, offset)
    if len(header) < _HEADER.size:
        raise CorruptRecordError(path, offset, f"truncated header ({len(header)} of 12 bytes)")
    length, length_crc = _HEADER.unpack(header)
    if masked_crc32c(header[:8]) != length_crc:
        raise CorruptRecordError(path, offset, "length CRC mismatch")
    end = offset + _HEADER.size + length + 4
    if length > _MAX_RECORD or end > file_size:
        raise CorruptRecordError(
            path, offset, f"truncated record (needs {end} bytes, file has {file_size})"
        )
    body = os.pread(f, length + 4, offset + _HEADER.size)
    if len(body) < length + 4:
        raise CorruptRecordError(path, offset, "truncated record payload")
    payload = body[:length]
    if masked_crc32c(payload) != _U32.unpack(body[length:])[0]:
        raise CorruptRecordError(path, offset, "payload CRC mismatch")
    return payload, end


def iter_tfrecord(path) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, payload) for every record of a TFRecord file, checking CRCs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            payload, nxt = _read_frame(fd, path, offset, size)
            yield offset, payload
            offset = nxt
    finally:
        os.close(fd)


def build_index(path) -> np.ndarray:
    """Record offsets of a TFRecord file without a .index (reads headers; checks length CRCs)."""
    offsets = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            header = os.pread(fd, _HEADER.size, offset)
            if len(header) < _HEADER.size:
                raise CorruptRecordError(path, offset, "truncated header")
            length, length_crc = _HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                raise CorruptRecordError(path, offset, "length CRC mismatch")
            end = offset + _HEADER.size + length + 4
            if end > size:
                raise CorruptRecordError(path, offset, f"truncated record (file has {size} bytes)")
            offsets.append(offset)
            offset = end
    finally:
        os.close(fd)
    return np.asarray(offsets, dtype=np.uint64)


def read_record_at(path, offset: int) -> bytes:
    """The payload of the record starting at `offset` (CRC checked)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_frame(fd, path, int(offset), os.fstat(fd).st_size)[0]
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- index files


def write_index(shard_path, offsets, file_size: int) -> None:
    offsets = np.asarray(offsets, dtype="<u8")
    data = INDEX_MAGIC + _U64.pack(len(offsets)) + offsets.tobytes() + _U64.pack(file_size)
    atomic_write(pathlib.Path(os.fspath(shard_path) + ".index"), data)


def read_index(shard_path) -> np.ndarray:
    """Offsets from `<shard>.index`; CorruptRecordError if it is damaged or does not match."""
    index_path = os.fspath(shard_path) + ".index"
    data = pathlib.Path(index_path).read_bytes()
    if len(data) < 16 or data[:8] != INDEX_MAGIC:
        raise CorruptRecordError(index_path, 0, "not a janus index file (bad magic)")
    (n,) = _U64.unpack_from(data, 8)
    if len(data) != 16 + 8 * n + 8:
        raise CorruptRecordError(index_path, 8, f"index holds {len(data)} bytes for {n} records")
    offsets = np.frombuffer(data, dtype="<u8", count=n, offset=16).astype(np.uint64)
    (expected_size,) = _U64.unpack_from(data, 16 + 8 * n)
    actual = os.path.getsize(shard_path)
    if actual != expected_size:
        raise CorruptRecordError(
            shard_path,
            min(actual, expected_size),
            f"shard has {actual} bytes, index expects {expected_size} (truncated or rewritten)",
        )
    return offsets


class ShardWriter:
    """Writes one TFRecord shard; on close writes `<path>.index` atomically.

    The shard is written to `<path>.partial` and renamed on success, so a crash never leaves a shard
    that looks complete. `.offsets` holds the byte offset of every record written.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._f = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
        self._pos = 0
        self.offsets: list[int] = []

    def write(self, serialized: bytes) -> int:
        """Append one record; returns its byte offset."""
        frame = frame_record(serialized)
        self.offsets.append(self._pos)
        self._f.write(frame)
        self._pos += len(frame)
        return self.offsets[-1]

    def close(self) -> None:
        if self._f is None:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        os.replace(self._tmp, self.path)
        write_index(self.path, self.offsets, self._pos)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
            self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ----------------------------------------------------------------------------- records directories

_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.tfrecord$")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """(split, index, count) of a shard file name, None if it is not one."""
    m = _SHARD_RE.match(os.path.basename(name))
    return (m["split"], int(m["i"]), int(m["n"])) if m else None


def list_shards(records_dir, split: str) -> list[pathlib.Path]:
    """The split's shards in order; error if some of the `-of-NNNNN` set is missing."""
    root = pathlib.Path(records_dir)
    found = {}
    for p in root.iterdir() if root.is_dir() else []:
        parsed = parse_shard_name(p.name)
        if parsed and parsed[0] == split:
            found[parsed[1:]] = p
    if not found:
        raise FileNotFoundError(f"no shards for split {split!r} in {root}")
    counts = {n for _, n in found}
    if len(counts) != 1:
        raise CorruptRecordError(root, 0, f"split {split!r} mixes shard counts {sorted(counts)}")
    (n,) = counts
    missing = [i for i in range(n) if (i, n) not in found]
    if missing:
        raise FileNotFoundError(f"split {split!r} in {root}: shards {missing[:10]} of {n} missing")
    return [found[(i, n)] for i in range(n)]


def shard_offsets(shard_path) -> np.ndarray:
    """Record offsets of a shard: its `.index` (checked against the shard), else a scan."""
    p = os.fspath(shard_path)
    return read_index(p) if os.path.exists(p + ".index") else build_index(p)


class _ShardFiles:
    """Reads CRC-checked records from a list of shard files; descriptors open lazily per process."""

    def __init__(self, paths):
        self._paths = [str(p) for p in paths]
        self._sizes = [os.path.getsize(p) for p in self._paths]
        self._fds: dict[int, int] = {}

    def read(self, shard: int, offset: int) -> bytes:
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self._paths[shard], os.O_RDONLY)
        return _read_frame(fd, self._paths[shard], offset, self._sizes[shard])[0]

    def __getstate__(self):
        return {**self.__dict__, "_fds": {}}

    def __del__(self, _close=os.close):  # bound default: os may be gone at interpreter shutdown
        for fd in getattr(self, "_fds", {}).values():
            try:
                _close(fd)
            except OSError:
                pass


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
        self._files = _ShardFiles(self._paths)

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
    examples. Holds 12 bytes per record and nothing about the shards' other records; picklable."""

    def __init__(self, paths, shard: np.ndarray, offset: np.ndarray):
        if len(shard) != len(offset):
            raise ValueError(f"{len(shard)} shard numbers for {len(offset)} offsets")
        self._files = _ShardFiles(paths)
        self.shard = np.asarray(shard, dtype=np.int32)
        self.offset = np.asarray(offset, dtype=np.uint64)

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
