"""TFRecord files: framing with CRCs, `.index` files of record offsets, and random access.

TFRecord framing (the format TensorFlow reads and writes), per record::

    uint64 LE  length
    uint32 LE  masked_crc32c(length bytes)
    bytes      payload
    uint32 LE  masked_crc32c(payload)

    masked_crc32c(x) = ((crc >> 15 | crc << 17) + 0xA282EAD8) mod 2**32, crc = CRC-32C(x)

Index file `<shard>.index` (janus' own format, written atomically by `ShardWriter`)::

    8 bytes    magic b"JANUSIX1"
    uint64 LE  n, the number of records
    n x uint64 LE  byte offset of each record's length field in the shard
    uint64 LE  the shard's total size in bytes (a shard that no longer matches is an error)

Byte level only: what the payloads hold, and how shards make up a records directory, is
`janus.data.records`. Every read checks both CRCs; damage raises `CorruptRecordError` naming the
file and offset (a `RecordsError`: records on disk that cannot be read as they are, which
janus.main reports in one line with exit status 2). A shard without its `.index` is scanned for
its offsets, with one warning per shard.
"""

from __future__ import annotations

import logging
import os
import pathlib
import struct
from collections.abc import Iterator

import google_crc32c
import numpy as np

from janus.fileio import atomic_write

log = logging.getLogger(__name__)

INDEX_MAGIC = b"JANUSIX1"
_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MASK_DELTA = 0xA282EAD8
# A length above this is certainly damage, not a record (guards against huge allocations).
_MAX_RECORD = 1 << 31


class RecordsError(OSError):
    """Records on disk that cannot be read as they are (a damaged or missing file); the message
    is one line naming the file. janus.main prints it without a traceback, exit status 2."""


class CorruptRecordError(RecordsError):
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


# ----------------------------------------------------------------------------- reading


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
            f"shard has {actual} bytes, its index {os.path.basename(index_path)} expects "
            f"{expected_size} (the shard truncated or rewritten, or the index of another shard)",
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


# ----------------------------------------------------------------------------- shards


_WARNED_NO_INDEX: set[str] = set()  # shards already warned about (a run reads offsets twice)


def shard_offsets(shard_path) -> np.ndarray:
    """Record offsets of a shard: its `.index` (checked against the shard), else a scan, said
    once per shard in one warning line (the scan reads every record's header)."""
    p = os.fspath(shard_path)
    if os.path.exists(p + ".index"):
        return read_index(p)
    offsets = build_index(p)
    if p not in _WARNED_NO_INDEX:
        _WARNED_NO_INDEX.add(p)
        log.warning(
            "%s.index is missing: scanned the shard for its %d record offsets instead (slower "
            "to open; the records are read as usual). Rebuild the records with the command in "
            "info.json to restore it",
            p,
            len(offsets),
        )
    return offsets


class ShardFiles:
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
