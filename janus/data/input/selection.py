"""Which examples a run trains on: label set, budget and mixture over the manifests' columns.

Everything here is vectorised over the columns of `janus.data.manifest` (numpy and pyarrow
compute, one record batch at a time); the only per-row Python work is hashing the keys of the
budget's candidates (`budget.priorities`). Selections are the same as the row-by-row code's before
the columnar manifest (tests/test_manifest.py checks recorded results).

Per dir of the mixture:
1. rows of the split (a row without a split belongs to every split);
2. label range check (every label in [0, 1000), else an error naming the key), then the label set:
   a row keeps its labels in the set; a row with none left is a counted skip (`no_label_in_set`),
   and so is a row without labels when no set is given, unless captions are trained on;
3. the dir's share of the budget (`budget.apportion` over the mixture weights), chosen by
   `budget.select_budget_columns` (nested in the budget for the same seed; class-balanced by the
   first label in the set);
4. the chosen rows' records located through the shards' `.index` files (shard, byte offset).

The result holds 12 bytes per selected example (`records.RecordRefs`) plus the [n, 2] items;
nothing about unselected rows outlives the call.
"""

from __future__ import annotations

import collections
import os
import pathlib
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from janus.data import budget as budget_lib
from janus.data import labelsets, records, tfrecord
from janus.data import manifest as manifest_lib

NUM_CLASSES = 1000
_FIRST_KEYS = 5  # offending keys kept per skip reason


class Selection(NamedTuple):
    source: records.RecordRefs  # source[i] is the record of items[i]
    items: np.ndarray  # [n, 2] int64 (dir index, record index in the split), sorted
    manifest: dict  # what was chosen (the trainer writes it as data_manifest.json)


def normalise_dirs(dirs) -> list[tuple[str, float]]:
    """A records dir, a list of dirs, or a list of (dir, weight) / {dir, weight} -> [(dir, w)]."""
    if isinstance(dirs, (str, os.PathLike)):
        return [(str(dirs), 1.0)]
    out = []
    for d in dirs:
        if isinstance(d, (str, os.PathLike)):
            out.append((str(d), 1.0))
        elif isinstance(d, Mapping):
            out.append((str(d["dir"]), float(d.get("weight", 1.0))))
        else:
            path, weight = d
            out.append((str(path), float(weight)))
    if not out:
        raise ValueError("no training records dirs given")
    return out


def label_mask(label_set) -> np.ndarray | None:
    if label_set is None:
        return None
    return labelsets.class_mask(labelsets.resolve_label_set(label_set), NUM_CLASSES)


def label_set_json(label_set):
    if label_set is None or isinstance(label_set, str):
        return label_set
    if isinstance(label_set, os.PathLike):
        return str(label_set)
    return [int(x) for x in label_set]


class _Scan(NamedTuple):
    """What one pass over a dir's manifest keeps: a few numbers per candidate row, no strings."""

    in_split: np.ndarray  # bool per manifest row
    rows: np.ndarray  # int64 manifest rows kept (in the split, with a label when one is needed)
    classes: np.ndarray  # int16 first label in the set of each kept row, -1 if none
    shard: np.ndarray  # int32 shard number of each kept row (-1: not given)
    offset: np.ndarray  # uint64 byte offset of each kept row
    source: np.ndarray  # int32 index into `sources`
    sources: list[str]
    prio: np.ndarray | None  # uint64 budget priority of each kept row (None without a budget)
    located: bool  # every row of the split has shard and offset
    skipped: int
    first_keys: list[str]


def _scan(batches, split: str, mask, keep_unlabeled: bool, seed, where: str) -> _Scan:
    """One pass over the record batches; `seed` None: no budget, so no key is hashed."""
    parts = collections.defaultdict(list)
    sources: dict[str, int] = {}
    located, skipped, first_keys, start = True, 0, [], 0
    for b in batches:
        n = b.num_rows
        mine = pc.fill_null(pc.equal(b.column("split"), split), True).to_numpy(False)
        labels = b.column("labels")
        values = pc.list_flatten(labels).to_numpy(False)
        row_of = np.repeat(np.arange(n), pc.fill_null(pc.list_value_length(labels), 0).to_numpy())
        bad = np.flatnonzero(((values < 0) | (values >= NUM_CLASSES)) & mine[row_of])
        if bad.size:
            key = b.column("key")[int(row_of[bad[0]])].as_py()
            raise ValueError(
                f"{where}: manifest key={key!r}: label {int(values[bad[0]])} outside "
                f"[0, {NUM_CLASSES})"
            )
        hit = (values >= 0) & (values < NUM_CLASSES)  # False only on rows of other splits
        if mask is not None:
            hit &= mask[np.where(hit, values, 0)]
        hit_rows, hit_values = row_of[hit], values[hit]
        first = np.full(n, -1, np.int16)
        leading = np.r_[True, hit_rows[1:] != hit_rows[:-1]][: hit_rows.size]
        first[hit_rows[leading]] = hit_values[leading]
        keep = mine & ((first >= 0) | keep_unlabeled)
        local = np.flatnonzero(keep)
        shard, offset = b.column("shard"), b.column("offset")
        if located and (shard.null_count or offset.null_count):
            unlocated = pc.or_(pc.is_null(shard), pc.is_null(offset)).to_numpy(False)
            located = not (unlocated & mine).any()
        dropped = np.flatnonzero(mine & ~keep)
        skipped += dropped.size
        if dropped.size and len(first_keys) < _FIRST_KEYS:
            take = pa.array(dropped[: _FIRST_KEYS - len(first_keys)])
            first_keys += b.column("key").take(take).to_pylist()
        if seed is not None:
            keys = b.column("key").take(pa.array(local)).to_pylist()
            parts["prio"].append(budget_lib.priorities(keys, seed))
        codes = pc.dictionary_encode(pc.fill_null(b.column("source"), ""))
        names = [sources.setdefault(name, len(sources)) for name in codes.dictionary.to_pylist()]
        parts["source"].append(np.asarray(names, np.int32)[codes.indices.to_numpy()[local]])
        parts["shard"].append(pc.fill_null(shard, -1).to_numpy()[local])
        parts["offset"].append(pc.fill_null(offset, 0).to_numpy()[local])
        parts["in_split"].append(mine)
        parts["rows"].append(local + start)
        parts["classes"].append(first[local])
        start += n

    def cat(name, dtype):
        chunks = parts.pop(name, None)  # pop: each part is freed once joined
        return np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.zeros(0, dtype)

    return _Scan(
        cat("in_split", bool),
        cat("rows", np.int64),
        cat("classes", np.int16),
        cat("shard", np.int32),
        cat("offset", np.uint64),
        cat("source", np.int32),
        list(sources),
        None if seed is None else cat("prio", np.uint64),
        located,
        skipped,
        first_keys,
    )


def _keys_of(records_dir, rows: np.ndarray):
    """positions into `rows` -> their keys (for the budget's duplicate-key check; rare: only
    rows whose 64-bit priorities collide), read again from the manifest."""

    def keys_at(positions: np.ndarray) -> list[str]:
        wanted = np.sort(rows[positions])
        found, start = {}, 0
        for b in manifest_lib.batches(records_dir):
            here = wanted[(wanted >= start) & (wanted < start + b.num_rows)]
            keys = b.column("key").take(pa.array(here - start)).to_pylist()
            found.update(zip(here.tolist(), keys))
            start += b.num_rows
        return [found[r] for r in rows[positions].tolist()]

    return keys_at


def _key_at(records_dir, row: int) -> str:
    return _keys_of(records_dir, np.asarray([row]))(np.asarray([0]))[0]


def _locate(records_dir, scan: _Scan, pos: np.ndarray, shard_paths, where: str):
    """(shard number, byte offset, record index in the split) of the kept rows `pos`; also the
    split's record count. Reads each shard's index once, one shard at a time."""
    if not scan.located:  # entries without shard/offset: the i-th row of the split is record i
        offsets_of = [tfrecord.shard_offsets(p) for p in shard_paths]
        starts = np.cumsum([0] + [len(o) for o in offsets_of])
        n_rows = int(scan.in_split.sum())
        if n_rows != starts[-1]:
            raise ValueError(
                f"{where}: manifest has {n_rows} entries for the split but the shards hold "
                f"{starts[-1]} records, and entries carry no shard/offset"
            )
        record = np.cumsum(scan.in_split)[scan.rows[pos]] - 1
        shard = np.searchsorted(starts, record, side="right") - 1
        offset = np.concatenate(offsets_of)[record] if offsets_of else np.zeros(0, np.uint64)
        return shard.astype(np.int32), offset, record, int(starts[-1])
    shard, offset = scan.shard[pos], scan.offset[pos]
    out_of_range = np.flatnonzero((shard < 0) | (shard >= len(shard_paths)))
    if out_of_range.size:
        key = _key_at(records_dir, int(scan.rows[pos[out_of_range[0]]]))
        raise tfrecord.RecordsError(
            f"{where}: manifest entry key={key!r} names shard {int(shard[out_of_range[0]])}, the "
            f"split has {len(shard_paths)}"
        )
    record = np.empty(len(pos), np.int64)
    start = 0
    for s, path in enumerate(shard_paths):
        shard_offsets = tfrecord.shard_offsets(path)
        mine = np.flatnonzero(shard == s)
        if mine.size:
            at = np.searchsorted(shard_offsets, offset[mine])
            found = at < len(shard_offsets)
            found[found] = shard_offsets[at[found]] == offset[mine][found]
            if not found.all():
                j = mine[np.flatnonzero(~found)[0]]
                key = _key_at(records_dir, int(scan.rows[pos[j]]))
                raise tfrecord.RecordsError(
                    f"{where}: manifest entry key={key!r} points at "
                    f"{os.path.basename(path)}@{int(offset[j])}, which is not a record of the "
                    "split (manifest and shards disagree)"
                )
            record[mine] = start + at
        start += len(shard_offsets)
    return shard, offset, record, start


def select_examples(
    dirs,
    *,
    seed: int = 0,
    label_set=None,
    budget: int | None = None,
    class_balanced: bool = False,
    captions: bool = False,
    split: str = "train",
    subset_seed: int | None = None,
) -> Selection:
    """Applies label set, budget and mixture to the manifests (see the module docstring).
    The budget subset is chosen with `subset_seed` (config `data.subset_seed`), or with `seed`
    when it is None; the manifest records both."""
    chooser = seed if subset_seed is None else int(subset_seed) % 2**32
    dir_weights = normalise_dirs(dirs)
    mask = label_mask(label_set)
    weights = [w for _, w in dir_weights]
    if budget is None and len(set(weights)) > 1:
        raise ValueError(
            f"mixture weights {weights} need data.budget (they split the budget between dirs); "
            "without a budget every example of every dir is used"
        )
    if budget is not None:
        counts = budget_lib.apportion(int(budget), {str(i): w for i, w in enumerate(weights)})
    reason = "no_label_in_set" if mask is not None else "no_label"
    skipped, first_keys = 0, []
    per_class, per_source = collections.Counter(), collections.Counter()
    paths, items, shards, offsets, dir_info, verified = [], [], [], [], [], []
    for d, (path, weight) in enumerate(dir_weights):
        where = f"{path} (split {split!r})"
        shard_paths = [str(p) for p in records.list_shards(path, split)]
        scan = _scan(
            manifest_lib.batches(path),
            split,
            mask,
            keep_unlabeled=mask is None and captions,
            seed=None if budget is None else chooser,
            where=str(path),
        )
        skipped += scan.skipped
        first_keys += scan.first_keys[: _FIRST_KEYS - len(first_keys)]
        if budget is not None:
            try:
                pos = budget_lib.select_budget_columns(
                    scan.prio,
                    scan.classes,
                    counts[str(d)],
                    keys_at=_keys_of(path, scan.rows),
                    class_balanced=class_balanced,
                )
            except ValueError as e:
                eligible = np.bincount(scan.source, minlength=len(scan.sources))
                per_source = ", ".join(
                    f"{s or '(none)'} {k}" for s, k in zip(scan.sources, eligible)
                )
                raise ValueError(
                    f"{path}: {e} (eligible per source: {per_source or 'none'})"
                ) from None
        else:
            pos = np.arange(len(scan.rows))
        shard, offset, record, n_records = _locate(path, scan, pos, shard_paths, where)
        order = np.argsort(record, kind="stable")
        items.append(np.stack([np.full(len(order), d, np.int64), record[order]], 1))
        shards.append(shard[order] + len(paths))
        offsets.append(offset[order])
        paths += shard_paths
        images_verified = _images_verified(path)
        verified += [images_verified] * len(shard_paths)
        labels, n = np.unique(scan.classes[pos], return_counts=True)
        per_class.update({str(c) if c >= 0 else "none": int(k) for c, k in zip(labels, n)})
        n_source = np.bincount(scan.source[pos], minlength=len(scan.sources))
        per_source.update({s: int(k) for s, k in zip(scan.sources, n_source) if k})
        dir_info.append(
            {
                "dir": str(pathlib.Path(path).resolve()),
                "weight": weight,
                "split": split,
                "records": n_records,
                "eligible": len(scan.rows),
                "selected": len(pos),
                "images_verified": images_verified,
            }
        )
    items_arr = np.concatenate(items)
    skip_counts = {reason: skipped} if skipped else {}
    if len(items_arr) == 0:
        raise ValueError(
            f"no training examples left in {[p for p, _ in dir_weights]} (skipped {skip_counts})"
        )
    manifest = {
        "dirs": dir_info,
        "split": split,
        "n_examples": len(items_arr),
        "budget": budget,
        "class_balanced": class_balanced,
        "label_set": label_set_json(label_set),
        "seed": seed,
        "subset_seed": chooser,
        "captions": captions,
        "per_class": dict(sorted(per_class.items(), key=lambda kv: (len(kv[0]), kv[0]))),
        "per_source": dict(sorted(per_source.items())),
        "skipped": {
            "counts": skip_counts,
            "first_keys": {reason: first_keys} if skipped else {},
        },
    }
    source = records.RecordRefs(
        paths, np.concatenate(shards), np.concatenate(offsets), images_verified=verified
    )
    return Selection(source, items_arr, manifest)


def _images_verified(records_dir) -> bool:
    """Whether the dir's info.json says its builder decoded every image whole (janus' builder
    does: ``janus.data.ingest.builder.finalize_split``); records from elsewhere are not trusted."""
    try:
        return records.read_info(records_dir).get("images_verified") is True
    except FileNotFoundError:
        return False
