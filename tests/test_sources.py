"""Raw-source readers: folder trees, CSV/TSV/parquet manifests, webdataset tars, OpenImages."""

import csv
import io
import json
import pathlib
import tarfile

import pytest
from PIL import Image

from janus.data import labelsets
from janus.data.ingest.skips import SkipCounter
from janus.data.ingest.sources import (
    _path_joiner,
    iter_table,
    make_source,
    parse_labels,
    parse_source_arg,
    read_bytes,
)

WNIDS = labelsets.imagenet_wnids()


def _jpeg(colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _scan(spec):
    skips = SkipCounter()
    return list(make_source(spec).scan(skips)), skips


def test_folder_source_with_sidecar_captions(tmp_path):
    for idx in (2, 6):
        d = tmp_path / "train" / WNIDS[idx]
        d.mkdir(parents=True)
        for j in range(2):
            (d / f"img{idx}_{j}.JPEG").write_bytes(_jpeg())
    (tmp_path / "train" / "not_a_wnid").mkdir()
    (tmp_path / "train" / "not_a_wnid" / "x.jpg").write_bytes(_jpeg())
    side = tmp_path / "caps.csv"
    side.write_text("file,caption\nimg2_0.JPEG,a shark in the sea\n")
    cands, skips = _scan(
        {"kind": "folder", "name": "in", "path": str(tmp_path), "captions": str(side)}
    )
    assert [c.key for c in cands] == [
        f"in/{WNIDS[2]}/img2_0",
        f"in/{WNIDS[2]}/img2_1",
        f"in/{WNIDS[6]}/img6_0",
        f"in/{WNIDS[6]}/img6_1",
    ]
    assert cands[0].labels == (2,) and cands[2].labels == (6,) and cands[0].label_source == "human"
    assert cands[0].captions == ("a shark in the sea",) and cands[1].captions == ()
    assert read_bytes(cands[0].locator) == _jpeg()
    assert skips.counts == {"unknown wnid folder": 1}


def _write_csv(path, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_manifest_source_formats(tmp_path, fmt):
    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(3):
        (tmp_path / "imgs" / f"{i}.jpg").write_bytes(_jpeg())
        rows.append(
            {
                "filepath": f"imgs/{i}.jpg",
                "title": f"title {i}",
                "caption": "" if i else "c0",
                "idx": f"[{i}, 5]" if i == 2 else str(i),
            }
        )
    path = tmp_path / f"m.{fmt}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        _write_csv(path, rows, "\t" if fmt == "tsv" else ",")
    cands, _ = _scan(
        {
            "kind": "manifest",
            "name": "m",
            "path": str(path),
            "caption_cols": "title+caption",
            "label_cols": "idx",
        }
    )
    assert [c.key for c in cands] == ["m/imgs/0", "m/imgs/1", "m/imgs/2"]
    assert [c.labels for c in cands] == [(0,), (1,), (2, 5)]
    assert cands[0].captions == ("title 0", "c0") and cands[1].captions == ("title 1",)
    assert read_bytes(cands[2].locator) == _jpeg()
    # without label columns the labels are left to caption matching
    cands, _ = _scan({"kind": "manifest", "name": "m", "path": str(path)})
    assert cands[0].labels is None and cands[0].captions == ("title 0",)


def test_manifest_missing_column_lists_columns(tmp_path):
    path = tmp_path / "m.csv"
    _write_csv(path, [{"filepath": "a.jpg", "title": "x"}])
    with pytest.raises(
        ValueError, match=r"missing column\(s\) \['blipcaption_title'\].*'filepath', 'title'"
    ):
        _scan(
            {
                "kind": "manifest",
                "name": "m",
                "path": str(path),
                "caption_cols": "blipcaption_title",
            }
        )
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        _scan({"kind": "manifest", "name": "m", "path": str(tmp_path / "nope.csv")})


def test_parse_labels():
    assert parse_labels("3", "w") == [3] and parse_labels("[1, 2]", "w") == [1, 2]
    assert (
        parse_labels("4 5", "w") == [4, 5]
        and parse_labels("", "w") == []
        and parse_labels(7, "w") == [7]
    )
    with pytest.raises(ValueError, match="row 9"):
        parse_labels("cat", "row 9")


def _add(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_webdataset_source(tmp_path):
    path = tmp_path / "00000.tar"
    with tarfile.open(path, "w") as tf:
        _add(tf, "000000001.jpg", _jpeg())
        _add(tf, "000000001.txt", b"a great white shark")
        _add(tf, "000000001.json", json.dumps({"caption": "ignored", "idx": 2}).encode())
        _add(tf, "000000002.jpg", _jpeg((0, 0, 255)))
        _add(tf, "000000002.json", json.dumps({"caption": "a stingray"}).encode())
        _add(tf, "000000003.txt", b"orphan caption")
    cands, skips = _scan({"kind": "webdataset", "name": "laion", "path": str(tmp_path)})
    assert [c.key for c in cands] == ["laion/000000001", "laion/000000002"]
    assert cands[0].captions == ("a great white shark",) and cands[0].labels is None
    assert cands[1].captions == ("a stingray",)
    assert read_bytes(cands[1].locator) == _jpeg((0, 0, 255))
    assert skips.counts == {"no image in tar group": 1}
    cands, _ = _scan({"kind": "webdataset", "name": "w", "path": str(path), "label_field": "idx"})
    assert cands[0].labels == (2,) and cands[0].label_source == "human"


def test_truncated_tar_keeps_earlier_members(tmp_path):
    path = tmp_path / "00000.tar"
    with tarfile.open(path, "w") as tf:
        for i in range(3):
            _add(tf, f"{i:03d}.jpg", _jpeg())
            _add(tf, f"{i:03d}.txt", b"caption")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    cands, skips = _scan({"kind": "webdataset", "name": "w", "path": str(path)})
    assert 1 <= len(cands) < 3
    assert skips.total >= 1
    for c in cands:
        assert read_bytes(c.locator) == _jpeg()


def test_openimages_official_layout(tmp_path):
    for image_id in ("aa", "bb", "cc"):
        (tmp_path / f"{image_id}.jpg").write_bytes(_jpeg())
    mapping = labelsets.openimages_map()
    mid, mid2 = "/m/01wb7", next(m for m, v in mapping.items() if v != 497)
    _write_csv(
        tmp_path / "labels.csv",
        [
            {"ImageID": "aa", "Source": "human", "LabelName": mid, "Confidence": "1"},
            {"ImageID": "aa", "Source": "human", "LabelName": mid2, "Confidence": "1"},
            {"ImageID": "bb", "Source": "human", "LabelName": mid, "Confidence": "0"},
            {"ImageID": "cc", "Source": "human", "LabelName": "/m/notmapped", "Confidence": "1"},
        ],
    )
    cands, skips = _scan({"kind": "openimages", "name": "oi", "path": str(tmp_path / "labels.csv")})
    assert [c.key for c in cands] == ["oi/aa"]
    assert cands[0].labels == (497, mapping[mid2]) and cands[0].label_source == "mapped:openimages"
    assert read_bytes(cands[0].locator) == _jpeg()
    assert skips.counts == {"no OpenImages label maps to ImageNet": 1}


def test_source_spec_errors():
    assert parse_source_arg("kind=folder,name=x,path=/a/b") == {
        "kind": "folder",
        "name": "x",
        "path": "/a/b",
    }
    with pytest.raises(ValueError, match="unknown"):
        make_source({"kind": "zip", "name": "x", "path": "p"})
    with pytest.raises(ValueError, match="unknown option"):
        make_source({"kind": "folder", "name": "x", "path": "p", "colour": "red"})
    with pytest.raises(ValueError, match="needs name"):
        make_source({"kind": "folder", "path": "p"})
    with pytest.raises(ValueError, match="not key=value"):
        parse_source_arg("kind=folder,oops")


def test_openimages_one_row_per_image(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x1.jpg").write_bytes(_jpeg())
    m = labelsets.openimages_map()
    mids = [k for k, v in m.items() if v == 497][:1] + ["/m/unmapped"]
    _write_csv(tmp_path / "oi.csv", [{"path": "img/x1.jpg", "mids": "|".join(mids), "cap": "hi"}])
    spec = {
        "kind": "openimages",
        "name": "oi",
        "path": str(tmp_path / "oi.csv"),
        "image_col": "path",
        "label_col": "mids",
        "caption_cols": "cap",
    }
    cands, skips = _scan(spec)
    assert len(cands) == 1 and cands[0].key == "oi/img/x1"
    assert cands[0].labels == (497,) and cands[0].captions == ("hi",) and skips.total == 0
    assert read_bytes(cands[0].locator) == _jpeg()


def test_iter_table_streams_rows_as_csv_dictreader_reads_them(tmp_path):
    """Chunks of tuples, row for row what csv.DictReader gives: blank lines skipped, a short row's
    missing cells None, a repeated column name read from its last column."""
    text = "a,b,c,b\n1,2,3,4\n\n5,6\n7,8,9,10,11\n" + "".join(f"{i},x,y,z\n" for i in range(9))
    path = tmp_path / "t.csv"
    path.write_text(text)
    want = [(r["c"], r["b"], r["a"]) for r in csv.DictReader(io.StringIO(text))]
    chunks = list(iter_table(path, ["c", "b", "a"], chunk=5))
    assert [len(c) for c in chunks] == [5, 5, 2]
    assert [row for c in chunks for row in c] == want
    assert want[1] == (None, None, "5") and want[0] == ("3", "4", "1")


def test_iter_table_reads_parquet_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"p": [f"{i}.jpg" for i in range(7)], "n": list(range(7))}), path)
    chunks = list(iter_table(path, ["n", "p"], chunk=3))
    assert [row for c in chunks for row in c] == [(i, f"{i}.jpg") for i in range(7)]
    assert max(len(c) for c in chunks) <= 3


@pytest.mark.parametrize("root", [".", "/", "/a/b", "a", "./x"])
def test_path_joiner_gives_pathlib_s_string(root):
    join = _path_joiner(pathlib.Path(root))
    for rel in ["x.png", "d/x.png", "./x", "d//x", "/abs/x", "d/", "../x", "a/../b", ".", "d/./x"]:
        assert join(rel) == str(pathlib.Path(root) / rel)
