"""JANuS-mini: deterministic, learnable, and its shifted splits really are shifted."""

import io

import numpy as np
import pytest
from PIL import Image

from janus.data import labelsets, records
from janus.data.ingest import cli
from janus.data.ingest.synthetic import SPLITS, build_mini, render

MINI10 = labelsets.resolve_label_set("mini10").tolist()


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini")
    argv = ["synthetic", "--out", str(out), "--train-per-class", "30", "--eval-per-class", "10"]
    assert cli.main(argv) == 0
    return out


def _load(out, split, px=16):
    ds = records.RecordsDataSource(out, split)
    xs, ys, exs = [], [], []
    for i in range(len(ds)):
        e = records.decode_example(ds[i])
        img = Image.open(io.BytesIO(e["image/encoded"])).convert("RGB")
        xs.append(np.asarray(img.resize((px, px)), np.float32).ravel() / 255)
        ys.append(int(e["label"][0]))
        exs.append(e)
    return np.array(xs), np.array(ys), exs


def test_layout_and_info(mini):
    info = records.read_info(mini)
    assert info["suite"] == "mini" and info["label_set"] == "mini10"
    assert info["splits"] == {s: (300 if s == "train" else 100) for s in SPLITS}
    assert set(info["features"]) == set(records.FEATURES)
    assert info["images_verified"] is True  # the builder encoded them (test_examples decodes)
    man = list(records.read_manifest(mini))
    assert len(man) == 300 + 6 * 100 and {m["split"] for m in man} == set(SPLITS)
    assert len({m["key"] for m in man}) == len(man)


def test_examples(mini):
    _, ys, exs = _load(mini, "train")
    assert sorted(set(ys.tolist())) == MINI10 and np.bincount(ys)[MINI10].tolist() == [30] * 10
    names = labelsets.class_names("clip")
    for i, e in enumerate(exs):
        img = Image.open(io.BytesIO(e["image/encoded"]))
        img.load()  # each decodes whole, as info.json's images_verified says
        assert img.size == (64, 64) and img.mode == "RGB"
        if i < 50:
            assert e["image/format"] == "jpeg" and e["label/source"] == "human"
            assert names[e["label"][0]] in e["caption"][0]


def test_deterministic(mini, tmp_path):
    build_mini(tmp_path, train_per_class=30, eval_per_class=10, splits=("train", "sketch"))
    for split in ("train", "sketch"):
        for shard in records.list_shards(tmp_path, split):
            assert shard.read_bytes() == (mini / shard.name).read_bytes()
    a = render(3, "val", np.random.default_rng(0))
    assert np.array_equal(a, render(3, "val", np.random.default_rng(0)))


def test_learnable_and_shifted(mini):
    # a ridge-regression classifier on 16x16 pixels: fast, and enough to tell learnable from not
    x, y, _ = _load(mini, "train")
    x1 = np.concatenate([x, np.ones((len(x), 1))], 1)
    targets = np.eye(1000)[y][:, MINI10]
    w = np.linalg.solve(x1.T @ x1 + 1.0 * np.eye(x1.shape[1]), x1.T @ targets)

    def score(split):
        xs, ys, _ = _load(mini, split)
        pred = np.asarray(MINI10)[(np.concatenate([xs, np.ones((len(xs), 1))], 1) @ w).argmax(1)]
        return float((pred == ys).mean())

    acc = {s: score(s) for s in SPLITS if s != "train"}
    assert acc["val"] >= 0.7, acc  # chance is 0.1
    for shifted in ("sketch", "r", "a"):
        assert acc[shifted] < acc["val"] - 0.2, acc


def test_refuses_to_overwrite_other_datasets(tmp_path):
    records.write_info(tmp_path, {"name": "real", "splits": {}})
    with pytest.raises(ValueError, match="non-mini"):
        build_mini(tmp_path, train_per_class=1, eval_per_class=1)
