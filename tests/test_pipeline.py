"""grain pipelines: exact resume, per-process sharding, epochs, budgets, bad input, eval padding."""

import io
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from janus.data import records, tfrecord
from janus.data.input import pipeline

AUG = (
    "decode|rrc(16, scale=(0.3, 1.0))|flip|color_jitter(p=0.8)|grayscale(p=0.2)|blur(p=0.5)"
    "|normalize"
)
PLAIN = "decode|resize(4)"  # uint8, solid colours survive: each image's colour encodes its index


def _solid_jpeg(index: int, size=(24, 20)) -> bytes:
    colour = (8 * (index % 32), 8 * (index // 32), 100)
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _ids(batch) -> list[int]:
    """Example indices encoded in the colour of PLAIN-processed solid images."""
    px = batch["image"][:, 0, 0, :2].astype(int)
    return (np.round(px[:, 0] / 8) + 32 * np.round(px[:, 1] / 8)).astype(int).tolist()


def make_records(
    out: pathlib.Path,
    n: int = 48,
    *,
    shards: int = 2,
    classes: int = 10,
    bad_images=(),
    empty_captions=(),
    unlabeled=(),
    source="src",
    split="train",
) -> pathlib.Path:
    """A tiny records dir written with records.py: solid JPEGs whose colour encodes the index."""
    out.mkdir(parents=True, exist_ok=True)
    manifest, per = [], -(-n // shards)
    for s in range(shards):
        name = records.shard_name(split, s, shards)
        with tfrecord.ShardWriter(out / name) as w:
            for i in range(s * per, min(n, (s + 1) * per)):
                img = _solid_jpeg(i)
                if i in bad_images:
                    img = img[: len(img) // 2]
                labels = [] if i in unlabeled else [i % classes] + ([7] if i % 5 == 0 else [])
                caps = [""] if i in empty_captions else [f"photo {i}", f"picture number {i}"]
                src = source if isinstance(source, str) else source[i % len(source)]
                ex = {"image/encoded": img, "label": labels, "caption": caps, "source": src}
                offset = w.write(records.encode_example({**ex, "key": f"k{i:04d}"}))
                manifest.append(
                    {
                        "key": f"k{i:04d}",
                        "source": src,
                        "labels": labels,
                        "label_source": "human",
                        "split": split,
                        "shard": name,
                        "offset": offset,
                    }
                )
    records.write_manifest(out, manifest)
    records.write_info(out, {"name": out.name, "splits": {split: n}})
    return out


@pytest.fixture(scope="module")
def rdir(tmp_path_factory):
    return make_records(tmp_path_factory.mktemp("rec") / "d", 48, bad_images={5})


def _loader(d, **kw):
    args = dict(global_batch_size=8, pp=PLAIN, seed=3, shard_index=0, shard_count=1)
    args.update(kw)
    return pipeline.train_loader(d, **args)


def _take(it, k):
    return [next(it) for _ in range(k)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_resume_is_exact_with_augmentation(rdir):
    it, _ = _loader(rdir, pp=AUG, captions=True, multi_hot=True)
    _take(it, 4)
    state = json.loads(json.dumps(it.get_state()))  # what orbax's grain handler stores
    expected = _take(it, 9)  # crosses the epoch boundary (47 good examples / 8)
    it2, _ = _loader(rdir, pp=AUG, captions=True, multi_hot=True)
    it2.set_state(state)
    _assert_same(_take(it2, 9), expected)
    assert it2.skip_report() == it.skip_report()


@pytest.mark.parametrize("worker_count", [0, 2])
def test_chunked_batches_equal_the_element_stream(rdir, worker_count):
    """Threads and workers make whole collated chunks; the batches are still the element stream
    with skips dropped, cut every 8 rows (a skip leaves a chunk short: the next batch straddles
    two chunks), and a resume from any batch boundary continues it exactly."""
    it, _ = _loader(rdir, pp=AUG, worker_count=worker_count)
    got = _take(it, 14)  # two epochs of 47 good examples: skips in both
    ds = it._stream.map_ds
    rows = [e for e in (ds[i] for i in range(it.get_state()["position"])) if "_skip" not in e]
    assert len(rows) == 14 * 8
    expected = [
        {k: np.stack([r[k] for r in rows[b : b + 8]]) for k in rows[0]} for b in range(0, 112, 8)
    ]
    _assert_same(got, expected)
    assert it.skip_report()["counts"] == {"bad_image": 2}
    it.close()
    states = [_state_after(rdir, b) for b in range(12)]  # after b batches
    mid_chunk = [b for b, st in enumerate(states) if st["position"] % 8]
    assert mid_chunk  # after the first skip, batches start inside a chunk
    for b in (mid_chunk[0] - 1, mid_chunk[0]):
        again, _ = _loader(rdir, pp=AUG, worker_count=worker_count)
        again.set_state(states[b])
        _assert_same(_take(again, 3), expected[b : b + 3])
        again.close()


def _state_after(d, batches: int) -> dict:
    it, _ = _loader(d, pp=AUG)
    _take(it, batches)
    return it.get_state()


def test_resume_through_orbax_grain_checkpoint(rdir, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    import grain

    it, _ = _loader(rdir, pp=AUG)
    _take(it, 3)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt")
    mngr.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = _take(it, 3)
    it2, _ = _loader(rdir, pp=AUG)
    mngr.restore(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(it2)))
    _assert_same(_take(it2, 3), expected)


def test_device_prefetch_checkpoints_the_batches_consumed_not_the_batches_fetched(rdir):
    """A prefetching iterator's state is the plain iterator's after the batches handed out, so a
    resume re-reads the prefetched ones: the resumed stream equals the uninterrupted one."""
    from janus.data.input.prefetch import DevicePrefetch

    puts = []

    def put(batch):  # stands in for the transfer to the devices
        puts.append(batch)
        return dict(batch)

    plain, _ = _loader(rdir)
    it = DevicePrefetch(_loader(rdir)[0], put, depth=3)
    _assert_same(_take(it, 5), _take(plain, 5))
    assert len(puts) == 7  # 2 batches in flight
    state = json.loads(json.dumps(it.get_state()))  # what orbax's grain handler stores
    assert state == plain.get_state() and it.skip_report() == plain.skip_report()
    expected = _take(plain, 4)  # into the 2nd epoch
    it2 = DevicePrefetch(_loader(rdir)[0], put, depth=3)
    it2.set_state(state)
    _assert_same(_take(it2, 4), expected)
    _assert_same(_take(it, 4), expected)
    assert it2.skip_report() == it.skip_report() == plain.skip_report()
    assert plain.skip_report()["first_keys"]["bad_image"][0] == "k0005"  # a skip was crossed


def test_epochs_are_reshuffled_permutations(rdir):
    it, manifest = _loader(rdir, num_epochs=2, global_batch_size=2)
    assert manifest["n_examples"] == 48 and manifest["steps_per_epoch"] == 24
    ids = [i for b in it for i in _ids(b)]
    assert 5 not in ids  # the truncated JPEG is never emitted ...
    assert it.skip_report()["counts"] == {"bad_image": 2}  # ... but counted, once per epoch
    assert it.skip_report()["first_keys"]["bad_image"] == ["k0005", "k0005"]
    first, second = ids[:47], ids[47:]
    assert sorted(first) == sorted(second) == sorted(set(range(48)) - {5})
    assert first != second


def test_batch_contents(rdir):
    it, _ = _loader(rdir, pp=AUG, captions=True, multi_hot=True)
    b = next(it)
    # uint8 leaves the host; the normalisation of AUG runs in the jitted step.
    assert b["image"].shape == (8, 16, 16, 3) and b["image"].dtype == np.uint8
    assert b["label"].dtype == np.int32 and b["tokens"].shape == (8, 77)
    assert b["labels"].shape == (8, 1000) and b["labels"].dtype == np.float32
    np.testing.assert_array_equal(b["labels"][np.arange(8), b["label"]], 1.0)
    assert (b["tokens"][:, 0] == 49406).all()


def test_two_processes_partition_the_global_stream(rdir):
    single, _ = _loader(rdir, global_batch_size=8)
    procs = [_loader(rdir, global_batch_size=8, shard_index=i, shard_count=2)[0] for i in range(2)]
    for _ in range(5):
        g = next(single)
        parts = [next(p) for p in procs]
        assert all(len(p["label"]) == 4 for p in parts)
        assert sorted(_ids(parts[0]) + _ids(parts[1])) == sorted(_ids(g))
    with pytest.raises(ValueError, match="global_batch_size=9.*shard_count=2"):
        _loader(rdir, global_batch_size=9, shard_count=2, shard_index=0)


def test_label_set_budget_and_mixture(tmp_path):
    d1 = make_records(tmp_path / "a", 40, source="a")
    d2 = make_records(tmp_path / "b", 40, source="b", unlabeled={0, 1})
    # Label set {2, 7}: examples with neither label are dropped (counted); label = first in set.
    it, man = _loader(d1, label_set=[2, 7], global_batch_size=4)
    assert man["n_examples"] == 16  # i % 10 in {2, 7} (8), or i % 5 == 0 (8; label 7 added)
    assert man["skipped"]["counts"]["no_label_in_set"] == 40 - man["n_examples"]
    labels = np.concatenate([next(it)["label"] for _ in range(3)])
    assert set(labels.tolist()) <= {2, 7}
    # Budget: exactly N, nested in N for the same seed.
    _, items10, m10 = pipeline.select_examples(d1, seed=1, budget=10)
    _, items20, _ = pipeline.select_examples(d1, seed=1, budget=20)
    assert m10["n_examples"] == 10 and set(map(tuple, items10)) <= set(map(tuple, items20))
    # Mixture: the budget is split by weight; unlabeled examples are dropped for CE runs only.
    _, items, man = pipeline.select_examples([(d1, 3.0), (d2, 1.0)], seed=1, budget=20)
    assert [d["selected"] for d in man["dirs"]] == [15, 5]
    assert man["per_source"] == {"a": 15, "b": 5}
    assert man["skipped"]["counts"] == {"no_label": 2}
    assert pipeline.select_examples(d2, captions=True)[2]["n_examples"] == 40
    assert pipeline.num_train_examples([d1, d2]) == 78
    assert pipeline.num_train_examples(d1, budget=7) == 7
    with pytest.raises(ValueError, match="need data.budget"):
        pipeline.select_examples([(d1, 3.0), (d2, 1.0)])


def test_empty_captions_are_counted_skips_for_vl(tmp_path):
    d = make_records(tmp_path / "c", 16, empty_captions={1, 2, 3})
    it, _ = _loader(d, captions=True, global_batch_size=4, num_epochs=1)
    n = sum(len(b["label"]) for b in it)
    assert n == 12  # 13 good examples, whole batches only
    report = it.skip_report()
    assert report["counts"] == {"empty_caption": 3}
    assert sorted(report["first_keys"]["empty_caption"]) == ["k0001", "k0002", "k0003"]


def test_corrupt_shard_is_a_clear_error(tmp_path):
    d = make_records(tmp_path / "x", 16)
    shard = d / records.shard_name("train", 1, 2)
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip a byte inside some record's payload
    shard.write_bytes(bytes(raw))
    it, _ = _loader(d, global_batch_size=4)
    with pytest.raises(records.CorruptRecordError, match=r"train-00001-of-00002\.tfrecord"):
        for _ in range(8):
            next(it)


def test_truncated_shard_is_a_clear_error(tmp_path):
    d = make_records(tmp_path / "t", 16)
    shard = d / records.shard_name("train", 0, 2)
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(records.CorruptRecordError, match=r"train-00000-of-00002"):
        it, _ = _loader(d, global_batch_size=4)
        for _ in range(8):
            next(it)


def test_unknown_label_set_is_an_error(rdir):
    with pytest.raises(ValueError, match="in100"):
        _loader(rdir, label_set="no_such_set")


def test_eval_loader_pads_and_masks(rdir):
    source = records.RecordsDataSource(rdir)  # 48 examples, one bad image (index 5)
    pp = "decode|resize_small(8)|center_crop(8)|normalize('imagenet')"
    runs = []
    for shard in range(2):
        it = pipeline.eval_loader(
            source, global_batch_size=20, pp=pp, shard_index=shard, shard_count=2
        )
        runs.append(list(it))
        assert len(runs[-1]) == 3  # ceil(48 / 20) batches on every process
        assert all(b["image"].shape == (10, 8, 8, 3) for b in runs[-1])
        assert it.skip_report()["counts"] == ({"bad_image": 1} if shard == 0 else {})
    masks = np.concatenate([b["mask"] for r in runs for b in r])
    labels = np.concatenate([b["label"] for r in runs for b in r])
    assert masks.sum() == 47 and (labels[~masks] == -1).all()  # padding and the bad image
    expected = sorted(i % 10 for i in range(48) if i != 5)
    assert sorted(labels[masks].tolist()) == expected
    again = list(
        pipeline.eval_loader(source, global_batch_size=20, pp=pp, shard_index=0, shard_count=2)
    )
    _assert_same(again, runs[0])


def test_eval_loader_accepts_dicts():
    items = [{"image/encoded": _solid_jpeg(i), "label": i % 3} for i in range(5)]
    batches = list(
        pipeline.eval_loader(items, global_batch_size=4, pp=PLAIN, shard_count=1, shard_index=0)
    )
    assert [b["mask"].sum() for b in batches] == [4, 1]
    assert batches[1]["label"].tolist() == [1, -1, -1, -1]


@pytest.mark.slow
def test_worker_processes_match_in_process_and_resume(rdir):
    ref, _ = _loader(rdir, pp=AUG)
    expected = _take(ref, 6)
    it, _ = _loader(rdir, pp=AUG, worker_count=2)
    try:
        _assert_same(_take(it, 3), expected[:3])
        state = it.get_state()
    finally:
        it.close()
    it2, _ = _loader(rdir, pp=AUG, worker_count=1)  # the state does not depend on worker_count
    try:
        it2.set_state(state)
        _assert_same(_take(it2, 3), expected[3:])
    finally:
        it2.close()


@pytest.mark.slow
def test_corrupt_shard_in_a_worker_process_is_a_clear_error(tmp_path):
    d = make_records(tmp_path / "w", 16)
    shard = d / records.shard_name("train", 1, 2)
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    it, _ = _loader(d, global_batch_size=4, worker_count=1)
    try:
        with pytest.raises(records.CorruptRecordError, match=r"train-00001-of-00002.*offset"):
            for _ in range(8):
                next(it)
    finally:
        it.close()


def test_manifest_with_shard_numbers_and_an_empty_shard(tmp_path):
    """An int manifest "shard" is the shard's number in the split, empty shards included."""
    d = tmp_path / "d"
    d.mkdir()
    manifest, i = [], 0
    for s, count in enumerate((2, 0, 2)):
        with tfrecord.ShardWriter(d / records.shard_name("train", s, 3)) as w:
            for _ in range(count):
                ex = {"image/encoded": _solid_jpeg(i), "label": [i], "key": f"k{i}"}
                offset = w.write(records.encode_example(ex))
                manifest.append({"key": f"k{i}", "labels": [i], "shard": s, "offset": offset})
                i += 1
    records.write_manifest(d, manifest)
    records.write_info(d, {"name": "d", "splits": {"train": 4}})
    selection = pipeline.select_examples(d)
    assert selection.items.tolist() == [[0, 0], [0, 1], [0, 2], [0, 3]]
    keys = [records.decode_example(selection.source[i])["key"] for i in range(4)]
    assert keys == ["k0", "k1", "k2", "k3"]


def test_crops_of_records_whose_builder_verified_the_images_stop_after_the_crop(
    tmp_path, monkeypatch
):
    """info.json's ``images_verified`` (janus' builder writes it) reaches the region decoder, which
    may then stop after the crop; other records are read to the end. The batches are the same."""
    from janus.data.input import jpeg_region

    d = make_records(tmp_path / "d", 16)
    calls = []
    decode_region = jpeg_region.decode_region

    def spy(data, box, read_to_end=True):
        calls.append(read_to_end)
        return decode_region(data, box, read_to_end)

    monkeypatch.setattr(jpeg_region, "decode_region", spy)
    runs = {}
    for verified in (False, True):
        records.write_info(d, {"name": "d", "splits": {"train": 16}, "images_verified": verified})
        it, man = _loader(d, pp="decode|rrc(16, scale=(0.2, 0.5))", num_epochs=1)
        assert man["dirs"][0]["images_verified"] is verified
        runs[verified] = list(it)  # to the end: no read-ahead left to count in the next run
        assert calls and set(calls) == {not verified}, verified
        calls.clear()
    _assert_same(runs[False], runs[True])
