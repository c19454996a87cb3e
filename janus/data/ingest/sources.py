"""Readers of raw image collections. Each source scans cheaply (no decoding) into `Candidate`s.

One job: reading raw collections into candidates; long because there are four formats (folder,
manifest, webdataset, openimages), each with its own bad-input cases.

A candidate carries the key (unique: `<source name>/<local key>`), the source name, labels
(ImageNet-1k indices; `None` when the source has only captions and the builder must match them),
captions, the label provenance, and a small picklable `locator`; `read_bytes(locator)` fetches the
image bytes in any process. For the builder's workers every source also reads itself in chunks
(`read_chunks`, in the main process: (number of the first item, items)) that `candidates` turns
into candidates (in a worker): a manifest's chunks are raw table rows, so making its candidates
is spread over the workers.
Kinds (the `SOURCE_KINDS` registry):

- `folder`: an ImageNet-style tree `<path>/<split>/<wnid>/<file>`; label from the wnid; optional
  captions from a sidecar CSV (`captions=`; columns `caption_key_col` = file name, `caption_cols`).
- `manifest`: a CSV, TSV or parquet table (JANuS metadata style): `image_col` (path relative to
  `root`, default the table's folder), `caption_cols`, optional `label_cols` and `key_col`.
- `webdataset`: tar shards as img2dataset writes them (`<key>.jpg` + `<key>.txt` and/or `.json`).
- `openimages`: a table of OpenImages label MIDs (one row per image with `label_col` holding
  MIDs, or the official one row per (ImageID, LabelName) layout), mapped to ImageNet-1k with the
  reference map.

Problems with single samples (unknown wnid, missing file, unmapped labels) are counted skips;
problems with a whole input (missing columns, unreadable table) raise an error naming the file.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import glob
import json
import operator
import os
import pathlib
import tarfile
from collections.abc import Callable, Iterator

from janus.data import labelsets
from janus.data.ingest.skips import SkipCounter

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class Candidate:
    key: str
    source: str
    labels: tuple[int, ...] | None
    captions: tuple[str, ...]
    label_source: str
    locator: tuple


def read_bytes(locator: tuple) -> bytes:
    """Image bytes for a locator: ("file", path) or ("tar", path, offset, size)."""
    kind = locator[0]
    if kind == "file":
        with open(locator[1], "rb") as f:
            return f.read()
    if kind == "tar":
        _, path, offset, size = locator
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"{path}: truncated tar member at byte offset {offset}")
        return data
    raise ValueError(f"unknown locator kind {kind!r}")


def _split_list(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [v for v in str(value).split("+") if v]


def parse_labels(value, where: str) -> list[int]:
    """Labels from a table cell: an int, "3", "[3, 7]", "3 7", "3,7" (empty -> [])."""
    if value is None:
        return []
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [int(value)]
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    text = str(value).strip()
    if not text or text.lower() in ("nan", "none"):
        return []
    try:
        if text.startswith("["):
            return [int(v) for v in ast.literal_eval(text)]
        return [int(float(v)) for v in text.replace(",", " ").split()]
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"{where}: cannot parse labels from {value!r} ({e})") from None


# ----------------------------------------------------------------------------- tables


def _table_format(path: pathlib.Path, fmt: str | None) -> str:
    fmt = fmt or {".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}.get(
        path.suffix.lower(), "csv"
    )
    if fmt not in ("csv", "tsv", "parquet"):
        raise ValueError(f"{path}: unknown table format {fmt!r} (csv, tsv or parquet)")
    return fmt


def table_columns(path, fmt: str | None = None) -> list[str]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    fmt = _table_format(path, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",").fieldnames or [])


def read_table(path, columns: list[str], fmt: str | None = None) -> list[dict]:
    """Rows of a CSV/TSV/parquet file as dicts restricted to `columns`; error lists the columns."""
    return [dict(zip(columns, row)) for rows in iter_table(path, columns, fmt) for row in rows]


def iter_table(path, columns: list[str], fmt: str | None = None, chunk: int = 10_000):
    """The rows of a table as tuples of `columns`, `chunk` rows at a time: memory is bounded by
    the chunk, not the file. A short CSV row reads None in its missing cells, as DictReader does."""
    path = pathlib.Path(path)
    _check_columns(path, columns, table_columns(path, fmt))
    fmt = _table_format(path, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk, columns=columns):
            cols = [batch.column(c).to_pylist() for c in columns]
            yield list(zip(*cols))
        return
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t" if fmt == "tsv" else ",")
        header = next(reader, [])
        where = {name: i for i, name in enumerate(header)}  # a repeated name: the last wins
        idx = [where[c] for c in columns]
        width = max(idx) + 1
        pick = operator.itemgetter(*idx) if len(idx) > 1 else lambda r, i=idx[0]: (r[i],)
        rows = []
        for row in reader:
            if not row:
                continue  # a blank line: csv.DictReader skips it too
            if len(row) < width:
                row = row + [None] * (width - len(row))
            rows.append(pick(row))
            if len(rows) == chunk:
                yield rows
                rows = []
        if rows:
            yield rows


def _check_columns(path, wanted: list[str], present: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; the file has columns {list(present)}"
        )


def _path_joiner(root: pathlib.Path) -> Callable[[str], str]:
    """`str(root / rel)` for many rows: plain concatenation where it gives the same string (no
    empty or "." part for pathlib to drop), pathlib otherwise; a tenth of a manifest scan's time."""
    base = str(root)
    prefix = "" if base == "." else base if base.endswith("/") else base + "/"

    def join(rel: str) -> str:
        parts = rel.split("/")
        if "" in parts or "." in parts:
            return str(root / rel)
        return prefix + rel

    return join


def _clean_captions(values) -> tuple[str, ...]:
    out = []
    for v in values:
        if v is None:
            continue
        text = str(v).strip()
        if text and text.lower() != "nan":
            out.append(text)
    return tuple(out)


# ----------------------------------------------------------------------------- source kinds


class _ScannedInMainProcess:
    """Sources whose scan is cheap next to the labelling: their chunks hold ready candidates."""

    def read_chunks(self, skips: SkipCounter, chunk: int) -> Iterator[tuple[int, list]]:
        start, batch = 0, []
        for c in self.scan(skips):
            batch.append(c)
            if len(batch) == chunk:
                yield start, batch
                start, batch = start + chunk, []
        if batch:
            yield start, batch

    def candidates(self, items: tuple[int, list], skips: SkipCounter) -> Iterator[Candidate]:
        return iter(items[1])


@dataclasses.dataclass
class FolderSource(_ScannedInMainProcess):
    """`<path>/<split>/<wnid>/<file>`; split="" reads `<path>/<wnid>/<file>`."""

    name: str
    path: str
    split: str = "train"
    captions: str | None = None
    caption_key_col: str = "file"
    caption_cols: str = "caption"

    def scan(self, skips: SkipCounter) -> Iterator[Candidate]:
        root = pathlib.Path(self.path) / self.split if self.split else pathlib.Path(self.path)
        if not root.is_dir():
            hint = ""
            base = pathlib.Path(self.path)
            if self.split and base.name == self.split and base.is_dir():
                hint = (
                    f"; path= names the folder that holds the split folder, and split= the split "
                    f"(split={self.split}): path={base.parent},split={self.split}"
                )
            elif self.split and base.is_dir():
                hint = (
                    f"; is {base} itself the split? then give path={base.parent},split={base.name}"
                )
            raise FileNotFoundError(f"folder source {self.name!r}: {root} is not a directory{hint}")
        side = {}
        if self.captions:
            cols = _split_list(self.caption_cols)
            for row in read_table(self.captions, [self.caption_key_col, *cols]):
                side[str(row[self.caption_key_col])] = _clean_captions(row[c] for c in cols)
        wnid_index = labelsets.wnid_to_index()
        for class_dir in sorted(root.iterdir()):
            if not class_dir.is_dir():
                continue
            label = wnid_index.get(class_dir.name)
            for f in sorted(class_dir.iterdir()):
                if f.name.startswith(".") or f.is_dir():
                    continue
                key = f"{self.name}/{class_dir.name}/{f.stem}"
                if label is None:
                    skips.add("unknown wnid folder", key, str(class_dir))
                    continue
                caps = side.get(f.name, side.get(f.stem, ()))
                yield Candidate(key, self.name, (label,), caps, "human", ("file", str(f)))


@dataclasses.dataclass
class ManifestSource:
    """A CSV/TSV/parquet table of image paths, captions and optional labels."""

    name: str
    path: str
    root: str | None = None
    image_col: str = "filepath"
    caption_cols: str = "title"
    label_cols: str | None = None
    key_col: str | None = None
    format: str | None = None
    label_source: str = "human"

    def _columns(self) -> list[str]:
        cols = [self.image_col, *_split_list(self.caption_cols), *_split_list(self.label_cols)]
        return list(dict.fromkeys(cols + ([self.key_col] if self.key_col else [])))

    def read_chunks(self, skips: SkipCounter, chunk: int) -> Iterator[tuple[int, list]]:
        """The table's rows, `chunk` at a time, as (number of the first row, rows): only reading
        the file happens here, `candidates` (in any process) makes the candidates."""
        start = 0
        for rows in iter_table(self.path, self._columns(), self.format, chunk):
            yield start, rows
            start += len(rows)

    def candidates(self, items: tuple[int, list], skips: SkipCounter) -> Iterator[Candidate]:
        start, rows = items
        at = {c: j for j, c in enumerate(self._columns())}
        image, key_at = at[self.image_col], at[self.key_col] if self.key_col else None
        caps_at = [at[c] for c in _split_list(self.caption_cols)]
        labels_at = [(c, at[c]) for c in _split_list(self.label_cols)]
        root = pathlib.Path(self.root) if self.root else pathlib.Path(self.path).parent
        join = _path_joiner(root)
        for i, row in enumerate(rows, start):
            rel = row[image]
            local = str(row[key_at]) if self.key_col else str(rel or f"row{i}")
            key = f"{self.name}/{os.path.splitext(local)[0] if not self.key_col else local}"
            if not rel:
                skips.add("empty image path", key, f"{self.path} row {i + 2}")
                continue
            labels = None
            if labels_at:
                labels = []
                for c, j in labels_at:
                    labels += parse_labels(row[j], f"{self.path} row {i + 2} column {c!r}")
                labels = tuple(dict.fromkeys(labels))
            caps = _clean_captions(row[j] for j in caps_at)
            src = self.label_source if labels is not None else ""
            yield Candidate(key, self.name, labels, caps, src, ("file", join(str(rel))))

    def scan(self, skips: SkipCounter) -> Iterator[Candidate]:
        for items in self.read_chunks(skips, 10_000):
            yield from self.candidates(items, skips)


@dataclasses.dataclass
class WebDatasetSource(_ScannedInMainProcess):
    """img2dataset tar shards: a tar file, a directory of .tar files or a glob."""

    name: str
    path: str
    caption_field: str = "caption"
    label_field: str | None = None

    def tar_paths(self) -> list[str]:
        p = self.path
        if os.path.isdir(p):
            paths = sorted(glob.glob(os.path.join(p, "*.tar")))
        elif any(ch in p for ch in "*?["):
            paths = sorted(glob.glob(p))
        else:
            paths = [p]
        if not paths or not all(os.path.isfile(x) for x in paths):
            raise FileNotFoundError(f"webdataset source {self.name!r}: no tar files at {p}")
        return paths

    def scan(self, skips: SkipCounter) -> Iterator[Candidate]:
        for tar_path in self.tar_paths():
            size = os.path.getsize(tar_path)
            groups: dict[str, dict] = {}
            order: list[str] = []
            end = None
            try:
                with tarfile.open(tar_path, mode="r:") as tf:
                    for m in tf:
                        if not m.isfile():
                            continue
                        base = os.path.basename(m.name)
                        stem, _, ext = base.partition(".")
                        local = os.path.join(os.path.dirname(m.name), stem)
                        if local not in groups:
                            groups[local] = {}
                            order.append(local)
                        if m.offset_data + m.size > size:
                            groups[local]["truncated"] = m.offset_data
                            continue
                        ext = ext.lower()
                        if "." + ext in IMAGE_EXTS:
                            groups[local]["image"] = ("tar", tar_path, m.offset_data, m.size)
                        elif ext in ("txt", "json", "cls"):
                            f = tf.extractfile(m)
                            groups[local][ext] = f.read().decode("utf-8", "replace")
                    end = tf.offset
            except (tarfile.TarError, EOFError, OSError) as e:
                detail = f"{type(e).__name__}: {e}; members before the damage are kept"
                skips.add("damaged tar shard", tar_path, detail)
            if end is not None:
                # tarfile stops quietly at a cut between members; a whole tar ends in zero blocks.
                with open(tar_path, "rb") as raw:
                    raw.seek(end)
                    tail = raw.read(1024)
                if len(tail) < 1024 or tail.count(0) != 1024:
                    skips.add("truncated tar shard", tar_path, f"no end-of-archive at offset {end}")
            for local in order:
                g = groups[local]
                key = f"{self.name}/{local}"
                if "truncated" in g:
                    skips.add("truncated tar member", key, f"{tar_path} offset {g['truncated']}")
                    continue
                if "image" not in g:
                    skips.add("no image in tar group", key, tar_path)
                    continue
                caps, labels = [], None
                if "txt" in g:
                    caps.append(g["txt"])
                if "json" in g:
                    try:
                        meta = json.loads(g["json"])
                    except json.JSONDecodeError as e:
                        skips.add("bad json sidecar", key, f"{tar_path}: {e}")
                        continue
                    if not caps and meta.get(self.caption_field):
                        caps.append(meta[self.caption_field])
                    if self.label_field and self.label_field in meta:
                        labels = tuple(parse_labels(meta[self.label_field], f"{tar_path} {key}"))
                if labels is None and "cls" in g and self.label_field == "cls":
                    labels = tuple(parse_labels(g["cls"], f"{tar_path} {key}"))
                src = "human" if labels is not None else ""
                yield Candidate(key, self.name, labels, _clean_captions(caps), src, g["image"])


@dataclasses.dataclass
class OpenImagesSource(_ScannedInMainProcess):
    """OpenImages labels mapped to ImageNet-1k via `openimages_map()`.

    Either one row per image (`image_col` path + `label_col` MIDs separated by spaces, commas or
    '|'), or the official layout (`ImageID`, `LabelName`, optional `Confidence`; several rows per
    image, images at `<root>/<ImageID><ext>`). Rows with Confidence 0 are negative labels, ignored.
    """

    name: str
    path: str
    root: str | None = None
    image_col: str = "ImageID"
    label_col: str = "LabelName"
    caption_cols: str = ""
    ext: str = ".jpg"

    def scan(self, skips: SkipCounter) -> Iterator[Candidate]:
        caps_cols = _split_list(self.caption_cols)
        has_conf = "Confidence" in table_columns(self.path)
        cols = [self.image_col, self.label_col, *caps_cols] + (["Confidence"] if has_conf else [])
        first = read_table(self.path, list(dict.fromkeys(cols)))
        mapping = labelsets.openimages_map()
        root = pathlib.Path(self.root) if self.root else pathlib.Path(self.path).parent
        images: dict[str, dict] = {}
        for row in first:
            if has_conf and str(row["Confidence"]).strip() in ("0", "0.0"):
                continue
            img = str(row[self.image_col])
            rec = images.setdefault(img, {"mids": [], "caps": []})
            for mid in str(row[self.label_col]).replace("|", " ").replace(",", " ").split():
                rec["mids"].append(mid)
            rec["caps"] += [row[c] for c in caps_cols]
        for img, rec in images.items():
            key = f"{self.name}/{os.path.splitext(img)[0]}"
            labels = tuple(dict.fromkeys(mapping[m] for m in rec["mids"] if m in mapping))
            if not labels:
                skips.add("no OpenImages label maps to ImageNet", key, " ".join(rec["mids"][:3]))
                continue
            rel = img if os.path.splitext(img)[1] else img + self.ext
            yield Candidate(
                key,
                self.name,
                labels,
                _clean_captions(rec["caps"]),
                "mapped:openimages",
                ("file", str(root / rel)),
            )


SOURCE_KINDS: dict[str, Callable[..., object]] = {
    "folder": FolderSource,
    "manifest": ManifestSource,
    "webdataset": WebDatasetSource,
    "openimages": OpenImagesSource,
}


def make_source(spec: dict):
    """Build a source from a spec dict: {"kind": ..., "name": ..., "path": ..., other fields}."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in SOURCE_KINDS:
        raise ValueError(f"source kind {kind!r} unknown; expected one of {sorted(SOURCE_KINDS)}")
    cls = SOURCE_KINDS[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ValueError(
            f"source kind {kind!r}: unknown option(s) {unknown}; known: {sorted(fields)}"
        )
    for required in ("name", "path"):
        if not spec.get(required):
            raise ValueError(f"source kind {kind!r} needs {required}=...")
    if "/" in spec["name"]:
        raise ValueError(f"source name {spec['name']!r} must not contain '/'")
    return cls(**spec)


def parse_source_arg(text: str) -> dict:
    """`kind=folder,path=/data/in,name=in100` -> spec dict (list values use '+': a+b)."""
    spec = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"--source {text!r}: {part!r} is not key=value")
        k, v = part.split("=", 1)
        spec[k.strip()] = v.strip()
    return spec
