"""TFRecord framing, tf.train.Example encoding, shard indexes, random access and damage reports."""

import os
import pathlib
import pickle

import google_crc32c
import numpy as np
import pytest

from janus.data import records, tfrecord

GRAIN_TFRECORD = (
    pathlib.Path(__import__("grain").__file__).parent
    / "_src/python/testdata/morris_sequence_first_5.tfrecord"
)


def _example(i: int) -> dict:
    return {
        "image/encoded": bytes([i % 256]) * (10 + i),
        "image/format": "png" if i % 2 else "jpeg",
        "label": [i % 1000, 7] if i % 3 == 0 else [i % 1000],
        "label/source": "matched:single",
        "caption": [f"a photo of thing {i}", "second caption"],
        "source": "src",
        "key": f"src/{i:04d}",
    }


def _write(path, n, start=0):
    with tfrecord.ShardWriter(path) as w:
        offsets = [w.write(records.encode_example(_example(start + i))) for i in range(n)]
    return offsets


def test_crc32c_and_masking_known_vectors():
    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value
    # first record of a TFRecord file written by TensorFlow (shipped as grain test data)
    assert tfrecord.frame_record(b"1") == bytes.fromhex("01000000000000000175de4131c30c4ad6")


@pytest.mark.skipif(not GRAIN_TFRECORD.exists(), reason="grain test data not installed")
def test_framing_is_byte_identical_to_tensorflow():
    data = GRAIN_TFRECORD.read_bytes()
    recs = list(tfrecord.iter_tfrecord(GRAIN_TFRECORD))
    assert [p for _, p in recs] == [b"1", b"1 1", b"2 1", b"1 2 1 1", b"1 1 1 2 2 1"]
    assert b"".join(tfrecord.frame_record(p) for _, p in recs) == data
    assert tfrecord.build_index(GRAIN_TFRECORD).tolist() == [o for o, _ in recs]


def test_example_round_trip_and_tfds_proto_parses_it():
    from tensorflow_datasets.proto import tf_example_generated_pb2 as pb2

    ex = _example(3)
    data = records.encode_example(ex)
    back = records.decode_example(data)
    assert back["image/encoded"] == ex["image/encoded"]
    assert back["label"].dtype == np.int64 and back["label"].tolist() == [3, 7]
    assert back["caption"] == ex["caption"] and back["key"] == "src/0003"
    assert back["image/format"] == "png" and back["label/source"] == "matched:single"
    parsed = pb2.Example.FromString(data).features.feature
    assert list(parsed["label"].int64_list.value) == [3, 7]
    assert parsed["source"].bytes_list.value[0] == b"src"
    assert set(parsed) == set(records.FEATURES)


def test_empty_label_and_bad_payload():
    ex = dict(_example(1), label=[])
    assert records.decode_example(records.encode_example(ex))["label"].shape == (0,)
    with pytest.raises(ValueError, match="tf.train.Example"):
        records.decode_example(b"\xff\xff\xff")


def test_shards_index_and_random_access(tmp_path):
    offs0 = _write(tmp_path / records.shard_name("train", 0, 2), 5)
    _write(tmp_path / records.shard_name("train", 1, 2), 3, start=5)
    _write(tmp_path / records.shard_name("val", 0, 1), 2, start=100)
    shard0 = tmp_path / "train-00000-of-00002.tfrecord"
    assert tfrecord.read_index(shard0).tolist() == offs0 == tfrecord.build_index(shard0).tolist()
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.tmp*"))
    ds = records.RecordsDataSource(tmp_path, "train")
    assert len(ds) == 8 and len(records.RecordsDataSource(tmp_path, "val")) == 2
    keys = [records.decode_example(ds[i])["key"] for i in range(8)]
    assert keys == [f"src/{i:04d}" for i in range(8)]
    assert records.decode_example(ds[-1])["key"] == "src/0007"
    assert ds.keys_of([6, 0]) == ["src/0006", "src/0000"]
    with pytest.raises(IndexError):
        ds[8]
    path, off = ds.locate(6)
    assert records.decode_example(tfrecord.read_record_at(path, off))["key"] == "src/0006"
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2[2] == ds[2]


def test_shard_without_index_is_scanned(tmp_path):
    p = tmp_path / records.shard_name("train", 0, 1)
    _write(p, 4)
    os.remove(str(p) + ".index")
    ds = records.RecordsDataSource(tmp_path)
    assert len(ds) == 4 and records.decode_example(ds[3])["key"] == "src/0003"


def test_missing_shard_of_a_set_is_an_error(tmp_path):
    _write(tmp_path / records.shard_name("train", 0, 2), 2)
    with pytest.raises(FileNotFoundError, match="missing"):
        records.RecordsDataSource(tmp_path)
    with pytest.raises(FileNotFoundError, match="no shards"):
        records.RecordsDataSource(tmp_path, "val")


def test_corrupted_payload_names_file_and_offset(tmp_path):
    p = tmp_path / records.shard_name("train", 0, 1)
    offs = _write(p, 3)
    data = bytearray(p.read_bytes())
    data[offs[1] + 20] ^= 0xFF  # inside record 1's payload
    p.write_bytes(bytes(data))
    ds = records.RecordsDataSource(tmp_path)
    ds[0]
    with pytest.raises(tfrecord.CorruptRecordError) as e:
        ds[1]
    assert e.value.offset == offs[1] and str(p) in str(e.value) and "CRC" in str(e.value)
    with pytest.raises(tfrecord.CorruptRecordError):
        list(tfrecord.iter_tfrecord(p))
    again = pickle.loads(pickle.dumps(e.value))  # crosses process boundaries intact
    assert (again.path, again.offset, str(again)) == (e.value.path, e.value.offset, str(e.value))


def test_corrupted_length_field(tmp_path):
    p = tmp_path / records.shard_name("train", 0, 1)
    offs = _write(p, 2)
    data = bytearray(p.read_bytes())
    data[offs[1]] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(tfrecord.CorruptRecordError, match="length CRC"):
        tfrecord.read_record_at(p, offs[1])
    with pytest.raises(tfrecord.CorruptRecordError, match=f"offset {offs[1]}"):
        tfrecord.build_index(p)


def test_truncated_shard(tmp_path):
    p = tmp_path / records.shard_name("train", 0, 1)
    offs = _write(p, 3)
    data = p.read_bytes()
    p.write_bytes(data[:-5])
    with pytest.raises(tfrecord.CorruptRecordError, match="truncated or rewritten"):
        records.RecordsDataSource(tmp_path)
    with pytest.raises(tfrecord.CorruptRecordError, match="truncated") as e:
        list(tfrecord.iter_tfrecord(p))
    assert e.value.offset == offs[2]
    os.remove(str(p) + ".index")
    with pytest.raises(tfrecord.CorruptRecordError, match="truncated"):
        records.RecordsDataSource(tmp_path)


def test_damaged_index(tmp_path):
    p = tmp_path / records.shard_name("train", 0, 1)
    _write(p, 2)
    idx = pathlib.Path(str(p) + ".index")
    idx.write_bytes(b"NOTANIDX" + idx.read_bytes()[8:])
    with pytest.raises(tfrecord.CorruptRecordError, match="magic"):
        records.RecordsDataSource(tmp_path)


def test_writer_abort_leaves_no_shard(tmp_path):
    p = tmp_path / records.shard_name("train", 0, 1)
    with pytest.raises(RuntimeError), tfrecord.ShardWriter(p) as w:
        w.write(b"x")
        raise RuntimeError("boom")
    assert not p.exists() and not list(tmp_path.iterdir())


def test_info_and_manifest(tmp_path):
    records.write_info(tmp_path, {"name": "x", "splits": {"train": 2}})
    assert records.read_info(tmp_path)["splits"] == {"train": 2}
    rows = [{"key": "a", "labels": [1]}, {"key": "b", "labels": []}]
    builds = {"train": {"seed": 3, "command": "python -m janus.data.build ...", "n": 2}}
    records.write_manifest(tmp_path, rows, builds)
    assert list(records.read_manifest(tmp_path)) == rows
    assert records.read_manifest_builds(tmp_path) == {
        "train": {"split": "train", **builds["train"]}
    }
    header = (tmp_path / records.MANIFEST_FILE).read_bytes()[:10]
    assert header[3] & 0x08 == 0  # no file name in the gzip header: same bytes from any process
    with pytest.raises(FileNotFoundError, match="records directory"):
        records.read_info(tmp_path / "nope")


def test_a_third_party_tfrecord_reader_reads_our_shards(tmp_path):
    from grain.experimental import TFRecordIterDataset

    p = tmp_path / records.shard_name("train", 0, 1)
    _write(p, 4)
    keys = [records.decode_example(x)["key"] for x in TFRecordIterDataset(str(p))]
    assert keys == [f"src/{i:04d}" for i in range(4)]


def test_shard_cut_inside_a_middle_record_without_index(tmp_path):
    p = tmp_path / records.shard_name("train", 0, 1)
    offs = _write(p, 4)
    p.write_bytes(p.read_bytes()[: offs[1] + 15])  # record 1's header survives, its payload not
    os.remove(str(p) + ".index")
    with pytest.raises(tfrecord.CorruptRecordError, match=f"offset {offs[1]}: truncated record"):
        records.RecordsDataSource(tmp_path)
    with pytest.raises(tfrecord.CorruptRecordError, match=f"offset {offs[1]}: truncated record"):
        list(tfrecord.iter_tfrecord(p))


def test_the_documented_readers_are_importable_from_records():
    # docs/data.md names these as janus.data.records.*; their home is janus.data.tfrecord.
    for name in ("iter_tfrecord", "read_record_at", "build_index", "CorruptRecordError"):
        assert getattr(records, name) is getattr(tfrecord, name)
