"""The columnar manifest: `manifest.arrow` beside `manifest.jsonl.gz`, read a batch at a time.

`manifest.jsonl.gz` stays the manifest for people and for older dirs. The builder also writes the
same rows as an Arrow IPC file: uncompressed, so a record batch is read straight into its arrays
with no decoding (Parquet would be ~5x smaller but must be decoded; `benchmarks/data_scale.py
--measure formats` compares the two). Selection streams the batches, so memory does not grow with
the file. Columns:

| column | type | from the jsonl row |
| --- | --- | --- |
| `key` | string | `key` (required) |
| `source` | string | `source`, "" when missing |
| `labels` | list<int64> | `labels`, [] when missing |
| `label_source` | string | `label_source`, null when missing |
| `split` | string | `split`, null when missing (the row then belongs to every split) |
| `shard` | int32 | `shard`: the shard's number in its split (names are parsed), null if missing |
| `offset` | uint64 | `offset`, null when missing |

The file's schema metadata holds the byte size of the `manifest.jsonl.gz` it was written with; a
reader that finds another size (the jsonl was rewritten) warns and reads the jsonl instead.

Convert an older dir (writes `manifest.arrow`; the jsonl is not touched):

    python -m janus.data.manifest convert RECORDS_DIR [RECORDS_DIR ...]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import pathlib
import sys
from collections.abc import Iterable, Iterator, Mapping

import pyarrow as pa

from janus.data import records
from janus.fileio import atomic_open

log = logging.getLogger(__name__)

COLUMNS_FILE = "manifest.arrow"
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("labels", pa.list_(pa.int64())),
        ("label_source", pa.string()),
        ("split", pa.string()),
        ("shard", pa.int32()),
        ("offset", pa.uint64()),
    ]
)
_SIZE_KEY = b"janus.jsonl_size"
_BATCH_ROWS = 1 << 16  # rows per record batch: bounds the Python objects alive while converting


def _shard_number(row: Mapping, where: str) -> int | None:
    shard = row.get("shard")
    if shard is None or isinstance(shard, int):
        return shard
    parsed = records.parse_shard_name(str(shard))
    if parsed is None:
        raise ValueError(f"{where}: shard {shard!r} is not a shard file name")
    split = row.get("split")
    if split is not None and parsed[0] != split:
        raise ValueError(f"{where}: shard {shard!r} is not a shard of split {split!r}")
    return parsed[1]


def _batch(rows: list[Mapping], first_line: int, where: str) -> pa.RecordBatch:
    columns = {name: [] for name in SCHEMA.names}
    for i, row in enumerate(rows):
        if "key" not in row:
            raise ValueError(f"{where}: sample row {first_line + i} has no key")
        columns["key"].append(str(row["key"]))
        columns["source"].append(str(row.get("source", "")))
        columns["labels"].append(list(row.get("labels") or []))
        columns["label_source"].append(row.get("label_source"))
        columns["split"].append(row.get("split"))
        columns["shard"].append(_shard_number(row, f"{where}: key={row['key']!r}"))
        columns["offset"].append(row.get("offset"))
    try:
        return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)
    except (pa.ArrowException, TypeError, OverflowError) as e:
        raise ValueError(f"{where}: rows {first_line}-{first_line + len(rows) - 1}: {e}") from None


def row_batches(rows: Iterable[Mapping], where: str) -> Iterator[pa.RecordBatch]:
    """Manifest rows (dicts as in the jsonl) -> record batches of SCHEMA."""
    it = iter(rows)
    for start in itertools.count(1, _BATCH_ROWS):
        chunk = list(itertools.islice(it, _BATCH_ROWS))
        if not chunk:
            return
        yield _batch(chunk, start, where)


def write_columns(records_dir, rows: Iterable[Mapping]) -> pathlib.Path:
    """Write `manifest.arrow` from the sample rows of the dir's current `manifest.jsonl.gz`."""
    root = pathlib.Path(records_dir)
    jsonl_size = (root / records.MANIFEST_FILE).stat().st_size
    schema = SCHEMA.with_metadata({_SIZE_KEY: str(jsonl_size).encode()})
    path = root / COLUMNS_FILE
    with atomic_open(path) as f, pa.ipc.new_file(f, schema) as writer:
        for batch in row_batches(rows, str(root / records.MANIFEST_FILE)):
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
    return path


def write_manifest(records_dir, entries: list[Mapping], builds: dict | None = None) -> None:
    """`records.write_manifest` (the jsonl) and then the columnar file with the same rows."""
    records.write_manifest(records_dir, entries, builds)
    write_columns(records_dir, entries)


def _reader(path: pathlib.Path, jsonl: pathlib.Path) -> pa.ipc.RecordBatchFileReader | None:
    """A reader of the columnar file, or None if it is stale (the jsonl was rewritten after it)."""
    try:
        reader = pa.ipc.open_file(pa.OSFile(str(path)))
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable Arrow IPC file ({e})") from None
    have = dict(zip(reader.schema.names, reader.schema.types))
    wrong = [f.name for f in SCHEMA if have.get(f.name) != f.type]
    if wrong:
        raise ValueError(f"{path}: columns {wrong} are missing or of the wrong type")
    written_for = (reader.schema.metadata or {}).get(_SIZE_KEY)
    if jsonl.is_file() and written_for is not None and int(written_for) != jsonl.stat().st_size:
        log.warning(
            "%s does not match %s (rewritten since); reading the jsonl. Refresh it with "
            "`python -m janus.data.manifest convert %s`",
            path.name,
            jsonl,
            path.parent,
        )
        return None
    return reader


_WARNED: set[str] = set()  # dirs already warned about (selection reads a manifest twice)


def _warn_no_columns(root: pathlib.Path, jsonl: pathlib.Path) -> None:
    """One warning line per dir: the slow path's cost and the command that ends it."""
    if str(root) in _WARNED:
        return
    _WARNED.add(str(root))
    log.warning(
        "%s has no %s; reading %s row by row instead (slow: some 20-50 s per million samples "
        "against about 1 s). Write it with `python -m janus.data.manifest convert %s`",
        root,
        COLUMNS_FILE,
        jsonl.name,
        root,
    )


def batches(records_dir) -> Iterator[pa.RecordBatch]:
    """The dir's manifest, one record batch of SCHEMA at a time: from `manifest.arrow` when present
    and current, else parsed from `manifest.jsonl.gz` (slow at millions of rows; see `convert`).
    Only one batch is held at a time, so memory does not grow with the manifest."""
    root = pathlib.Path(records_dir)
    path, jsonl = root / COLUMNS_FILE, root / records.MANIFEST_FILE
    reader = _reader(path, jsonl) if path.is_file() else None
    if reader is not None:
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i).select(SCHEMA.names)
        return
    if not path.is_file() and jsonl.is_file():
        _warn_no_columns(root, jsonl)
    yield from row_batches(records.read_manifest(root), str(jsonl))


def load(records_dir) -> pa.Table:
    """The whole manifest as one table (for inspection; selection streams `batches`)."""
    return pa.Table.from_batches(list(batches(records_dir)), schema=SCHEMA)


def convert(records_dir) -> pathlib.Path:
    """Write `manifest.arrow` for a dir that has only `manifest.jsonl.gz`."""
    return write_columns(records_dir, records.read_manifest(records_dir))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m janus.data.manifest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="write manifest.arrow from manifest.jsonl.gz")
    conv.add_argument("dirs", nargs="+", help="records dirs")
    args = parser.parse_args(argv)
    for d in args.dirs:
        try:
            path = convert(d)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"wrote {path} ({load(d).num_rows} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
