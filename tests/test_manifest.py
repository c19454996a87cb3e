"""The columnar manifest: same selections as before, conversion of older dirs, bad input named."""

import gzip
import json
import logging
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from selection_cases import CASES, comparable, make_dirs, resolve
from test_pipeline import PLAIN, _assert_same, _take, make_records

from janus.data import manifest, records
from janus.data.ingest.builder import finalize_split
from janus.data.input import pipeline
from janus.data.tfrecord import RecordsError

GOLDEN = json.loads((pathlib.Path(__file__).parent / "data" / "selection_golden.json").read_text())


@pytest.fixture(scope="module")
def jsonl_dirs(tmp_path_factory):
    """Dirs as older builders wrote them: manifest.jsonl.gz only."""
    return make_dirs(tmp_path_factory.mktemp("jsonl"))


@pytest.fixture(scope="module")
def columnar_dirs(jsonl_dirs, tmp_path_factory):
    """The same dirs, converted with the command."""
    root = tmp_path_factory.mktemp("columnar")
    out = {}
    for name, d in jsonl_dirs.items():
        out[name] = shutil.copytree(d, root / name)
        assert manifest.main(["convert", str(out[name])]) == 0
    return out


@pytest.mark.parametrize("path", ["jsonl", "columnar"])
def test_selections_equal_the_recorded_row_by_row_results(path, jsonl_dirs, columnar_dirs):
    dirs = jsonl_dirs if path == "jsonl" else columnar_dirs
    for d in dirs.values():
        assert (d / manifest.COLUMNS_FILE).is_file() == (path == "columnar")
    for name, which, kwargs in CASES:
        selection = pipeline.select_examples(resolve(which, dirs), **kwargs)
        got = comparable(selection.items, selection.manifest)
        assert got["manifest"].pop("captions") == kwargs.get("captions", False)
        # Recorded since data.subset_seed: without one, the subset is chosen with the run's seed.
        assert got["manifest"].pop("subset_seed") == kwargs.get("seed", 0)
        # Recorded since region decoding trusts built records; these info.json files do not say so.
        assert [d.pop("images_verified") for d in got["manifest"]["dirs"]] == [False] * len(
            got["manifest"]["dirs"]
        )
        assert got == GOLDEN[name], name


def test_budgets_nest_on_the_columnar_path(columnar_dirs):
    d = columnar_dirs["mixed"]
    for balanced in (False, True):
        previous = set()
        for n in (5, 12, 30, 66, 120):
            items = pipeline.select_examples(d, seed=9, budget=n, class_balanced=balanced).items
            chosen = set(map(tuple, items.tolist()))
            assert len(chosen) == n and previous <= chosen
            previous = chosen


def test_selected_records_are_the_items(columnar_dirs):
    selection = pipeline.select_examples(
        [(columnar_dirs["mixed"], 1.0), (columnar_dirs["plain"], 1.0)], seed=2, budget=50
    )
    by_dir = [records.RecordsDataSource(columnar_dirs[name]) for name in ("mixed", "plain")]
    for i, (d, r) in enumerate(selection.items.tolist()):
        assert selection.source[i] == by_dir[d][r]


def test_columns_hold_the_jsonl_rows(columnar_dirs):
    d = columnar_dirs["mixed"]
    table = manifest.load(d)
    rows = list(records.read_manifest(d))
    assert table.num_rows == len(rows) == 240
    assert table.column("key").to_pylist() == [r["key"] for r in rows]
    assert table.column("labels").to_pylist() == [r["labels"] for r in rows]
    assert table.column("source").to_pylist() == [r["source"] for r in rows]
    numbers = [records.parse_shard_name(r["shard"])[1] for r in rows]
    assert table.column("shard").to_pylist() == numbers
    assert table.column("offset").to_pylist() == [r["offset"] for r in rows]


def test_the_loader_reads_the_same_batches_either_way(jsonl_dirs, columnar_dirs):
    def batches(d):
        it, man = pipeline.train_loader(
            d, global_batch_size=8, pp=PLAIN, seed=3, budget=40, shard_index=0, shard_count=1
        )
        return _take(it, 6), man

    a, man_a = batches(jsonl_dirs["mixed"])
    b, man_b = batches(columnar_dirs["mixed"])
    _assert_same(a, b)
    assert man_a["per_class"] == man_b["per_class"] and man_a["n_examples"] == 40


def test_a_selection_is_reused_only_with_the_same_arguments(columnar_dirs):
    d = columnar_dirs["mixed"]
    args = dict(global_batch_size=8, pp=PLAIN, seed=3, shard_index=0, shard_count=1)
    selection = pipeline.select_examples(d, seed=3, budget=40)
    it, _ = pipeline.train_loader(d, budget=40, selection=selection, **args)
    ref, _ = pipeline.train_loader(d, budget=40, **args)
    _assert_same(_take(it, 3), _take(ref, 3))
    with pytest.raises(ValueError, match=r"budget=40 \(loader: 41\)"):
        pipeline.train_loader(d, budget=41, selection=selection, **args)
    with pytest.raises(ValueError, match="dirs="):
        pipeline.train_loader(columnar_dirs["plain"], budget=40, selection=selection, **args)


def test_the_builder_writes_both_files(tmp_path):
    d = make_records(tmp_path / "b", 12)
    rows = list(records.read_manifest(d))
    summary = {"n": 12, "seed": 0, "command": "test"}
    finalize_split(d, "train", rows, summary, "in1k", {"src": {"selected": 12}})
    assert manifest.load(d).column("key").to_pylist() == [r["key"] for r in rows]
    assert records.read_manifest_builds(d)["train"]["command"] == "test"


def test_a_stale_columnar_file_is_not_used(tmp_path, caplog):
    d = make_records(tmp_path / "s", 12)
    manifest.convert(d)
    rows = list(records.read_manifest(d))[:5]
    records.write_manifest(d, rows)  # the jsonl changed; manifest.arrow is from before
    with caplog.at_level(logging.WARNING):
        table = manifest.load(d)
    assert table.num_rows == 5 and "manifest.arrow does not match" in caplog.text
    assert "python -m janus.data.manifest convert" in caplog.text


def test_convert_command_as_documented(tmp_path):
    d = make_records(tmp_path / "c", 10)
    done = subprocess.run(
        [sys.executable, "-m", "janus.data.manifest", "convert", str(d)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "10 rows" in done.stdout and (d / manifest.COLUMNS_FILE).is_file()
    missing = manifest.main(["convert", str(tmp_path / "nowhere")])
    assert missing == 1


def _with_rows(tmp_path, edit) -> pathlib.Path:
    d = make_records(tmp_path / "e", 12)
    rows = list(records.read_manifest(d))
    edit(rows)
    records.write_manifest(d, rows)
    return d


@pytest.mark.parametrize("convert", [False, True])
def test_bad_rows_are_named(tmp_path, convert):
    def bad_label(rows):
        rows[4]["labels"] = [3, 1000]

    d = _with_rows(tmp_path, bad_label)
    if convert:
        manifest.convert(d)
    with pytest.raises(ValueError, match=r"key='k0004': label 1000 outside \[0, 1000\)"):
        pipeline.select_examples(d)


def test_rows_that_point_nowhere_are_named(tmp_path):
    def moved(rows):
        rows[7]["offset"] += 1

    d = _with_rows(tmp_path / "a", moved)
    manifest.convert(d)
    # A RecordsError: janus.main says it in one line, exit 2 (a swapped index of the same size).
    with pytest.raises(RecordsError, match=r"key='k0007' points at train-00001-of-00002.*disagree"):
        pipeline.select_examples(d)

    def not_a_shard(rows):
        rows[2]["shard"] = "somefile.bin"

    with pytest.raises(ValueError, match=r"key='k0002'.*not a shard file name"):
        manifest.convert(_with_rows(tmp_path / "b", not_a_shard))

    def far_shard(rows):
        rows[3]["shard"] = 9

    d = _with_rows(tmp_path / "c", far_shard)
    with pytest.raises(RecordsError, match=r"key='k0003' names shard 9, the split has 2"):
        pipeline.select_examples(d)


def test_duplicate_keys_fail_a_budget(tmp_path):
    def duplicate(rows):
        rows[5]["key"] = rows[6]["key"]

    d = _with_rows(tmp_path, duplicate)
    manifest.convert(d)
    with pytest.raises(ValueError, match="keys are not unique"):
        pipeline.select_examples(d, budget=4)


def test_rows_without_shard_and_offset_are_records_in_order(tmp_path):
    d = make_records(tmp_path / "o", 10)
    rows = [
        {k: v for k, v in r.items() if k not in ("shard", "offset")}
        for r in records.read_manifest(d)
    ]
    records.write_manifest(d, rows)
    manifest.convert(d)
    selection = pipeline.select_examples(d, budget=4, seed=1)
    for i, (_, r) in enumerate(selection.items.tolist()):
        assert records.decode_example(selection.source[i])["key"] == f"k{r:04d}"
    records.write_manifest(d, rows[:-1])
    manifest.convert(d)
    with pytest.raises(ValueError, match="9 entries for the split but the shards hold 10"):
        pipeline.select_examples(d)


def test_a_damaged_columnar_file_is_named(tmp_path):
    d = make_records(tmp_path / "x", 6)
    (d / manifest.COLUMNS_FILE).write_bytes(b"not arrow at all")
    with pytest.raises(ValueError, match=r"manifest\.arrow: not a readable Arrow IPC file"):
        manifest.load(d)
    table = pa.table({"key": ["a"]})
    with pa.ipc.new_file(d / manifest.COLUMNS_FILE, table.schema) as w:
        w.write_table(table)
    with pytest.raises(ValueError, match=r"columns \['source', 'labels'"):
        manifest.load(d)


def test_gzip_of_the_jsonl_is_untouched_by_convert(tmp_path):
    d = make_records(tmp_path / "g", 8)
    before = (d / records.MANIFEST_FILE).read_bytes()
    manifest.convert(d)
    assert (d / records.MANIFEST_FILE).read_bytes() == before
    assert gzip.decompress(before).count(b"\n") == 8


def test_select_budget_columns_accepts_priority_collisions_of_distinct_keys():
    from janus.data.budget import select_budget_columns

    prio = np.asarray([7, 7, 3], np.uint64)  # two distinct keys with the same 64-bit priority
    keys = ["a", "b", "c"]
    chosen = select_budget_columns(
        prio, np.zeros(3, np.int64), 2, keys_at=lambda p: [keys[i] for i in p]
    )
    assert chosen.tolist() == [0, 2]  # c first, then the stable first of the tie
    with pytest.raises(ValueError, match="not unique"):
        select_budget_columns(prio, np.zeros(3, np.int64), 2, keys_at=lambda p: ["a", "a"])
