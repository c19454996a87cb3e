"""The evaluator end to end: JANuS-mini records, an ImageFolder layout, a fake tfds dir, zero-shot
and linear-probe classifiers, and --watch picking up checkpoints while they are written."""

import csv
import functools
import io
import json
import os
import threading
import time

import jax
import numpy as np
import pytest
from PIL import Image

from janus.checkpoint import save_for_inference
from janus.data import labelsets, records, tfrecord
from janus.data.input.pixel_scaling import scale_pixels
from janus.evaluate import results, runner, sets, watch
from janus.evaluate.__main__ import main as evaluate_main
from janus.models import create_model, init_variables

RES = 32
TINY_TEXT = {"width": 32, "layers": 1, "heads": 2, "context_length": 77, "vocab_size": 49408}


def _config(loss, name, train_dir, label_set="mini10"):
    return {
        "loss": loss,
        "label_set": label_set,
        "total_steps": None,
        "model": {
            "name": name,
            "dtype": "float32",
            "text": TINY_TEXT if loss == "infonce" else None,
        },
        "data": {"train": str(train_dir)},
        "input": {"resolution": RES},
    }


@functools.cache
def _init(name, loss):
    # Initialising even a tiny model takes seconds on a busy 2-core machine: once per model.
    model = create_model(name, loss, text=TINY_TEXT if loss == "infonce" else None)
    return model, jax.tree.map(np.asarray, init_variables(model, 0, RES))


def _save(workdir, step, config, seed=0):
    model, variables = _init(config["model"]["name"], config["loss"])
    if seed:  # different weights per step, without another init
        variables = jax.tree.map(lambda x: x * np.float32(1 + 0.05 * seed), variables)
    save_for_inference(str(workdir), step, config, variables)
    return model, variables


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    from janus.data.ingest import synthetic

    out = tmp_path_factory.mktemp("mini")
    synthetic.build_mini(out, train_per_class=3, eval_per_class=3, size=40, train_shards=1)
    return out


def _png(rng, size=40):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _expected_top1(model, variables, items, classes, pp):
    """Independent reference: per-image preprocessing, model.apply, argmax over the class set."""
    from janus.data.input.preprocess import build_pp

    f = build_pp(pp)
    xs, labels = [], []
    for i in range(len(items)):
        ex = records.decode_example(items[i])
        x = f({"image/encoded": ex["image/encoded"]}, np.random.default_rng(0))["image"]
        xs.append(scale_pixels(x, f.scaling))
        labels.append(ex["label"].tolist())
    logits = np.asarray(
        jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, np.stack(xs))
    )
    pred = classes[np.argmax(logits[:, classes], axis=-1)]
    return float(np.mean([p in lab for p, lab in zip(pred, labels)]))


@pytest.mark.slow
def test_cli_on_mini_records_ce(mini, tmp_path):
    wd = tmp_path / "run"
    model, variables = _save(wd, 7, _config("ce", "resnet_tiny", mini))
    assert evaluate_main(["--workdir", str(wd), "--batch_size", "16"]) == 0
    result = json.loads((wd / "eval" / "7.json").read_text())
    assert result["suite"] == "mini" and result["label_set"] == "mini10"
    assert result["classifier"] == "head" and result["checkpoint"] == "checkpoints/7"
    assert set(result["sets"]) == {"val", "v2", "sketch", "r", "a", "objectnet"}
    for r in result["sets"].values():
        assert r["n"] == 30 and r["classes"] == 10 and 0 <= r["top1"] <= r["top5"] <= 1
    m = result["metrics"]
    top1 = {k: v["top1"] for k, v in result["sets"].items()}
    assert m["avg_robustness"] == pytest.approx(
        np.mean([top1[s] for s in ("v2", "sketch", "r", "a")])
    )
    assert m["effective_robustness"] == pytest.approx(m["avg_robustness"] / top1["val"])
    assert m["taori_er_mean5"] is None and any("taori" in n for n in result["notes"])
    # The counts match an independent per-image computation.
    classes = labelsets.resolve_label_set("mini10")
    src = records.RecordsDataSource(mini, "val")
    pp = result["eval_pp"]
    assert top1["val"] == pytest.approx(_expected_top1(model, variables, src, classes, pp))
    rows = list(csv.DictReader(open(wd / "eval" / "results.csv")))
    assert [(r["step"], r["classifier"]) for r in rows] == [("7", "head")]
    # The CSV is for people: 4 decimals (the JSON keeps full precision).
    assert rows[0]["val_top1"] == f"{top1['val']:.4f}"


def test_csv_rows_round_floats_and_leave_counts_and_nulls():
    result = {"step": 5, "classifier": "head", "label_set": "in100", "suite": "imagenet"}
    result["sets"] = {"val": {"top1": 0.40800000000000003, "top5": 1.0, "n": 250}}
    result["metrics"] = {"avg_robustness": None, "robustness_ratio": 1 / 3}
    row = results.csv_row(result)
    assert (row["val_top1"], row["val_top5"], row["val_n"]) == ("0.4080", "1.0000", "250")
    assert (row["avg_robustness"], row["robustness_ratio"], row["v2_top1"]) == ("", "0.3333", "")


@pytest.mark.slow
def test_zeroshot_and_linear_probe_on_mini(mini, tmp_path):
    wd = tmp_path / "vl"
    _save(wd, 3, _config("infonce", "clip_rn_tiny", mini))
    opts = runner.EvalOptions(sets=("val", "sketch"), templates="single", batch_size=16)
    ev = runner.Evaluator(opts, cache_dir=str(wd / "eval" / "cache"))
    result = ev.evaluate_step(str(wd), 3)
    assert result["classifier"] == "zeroshot" and result["templates"] == "single"
    assert result["sets"]["val"]["n"] == 30 and result["metrics"]["avg_robustness"] is None
    assert any("avg_robustness is null" in n for n in result["notes"])
    # One class matrix (same classes for both sets), built once, reused for the second set.
    assert ev.zs_cache.misses == 1 and ev.zs_cache.hits >= 1
    assert len(list((wd / "eval" / "cache").glob("zs_*.npy"))) == 1
    # Independent check: text embeddings of "a photo of a {name}." and image embeddings.
    from janus.data.input.preprocess import build_pp
    from janus.data.input.tokenizer import Tokenizer

    model, variables = _init("clip_rn_tiny", "infonce")
    classes = labelsets.resolve_label_set("mini10")
    names = [labelsets.class_names("clip")[c] for c in classes]
    tokens = Tokenizer(77)([f"a photo of a {n}." for n in names])
    text = np.asarray(model.apply(variables, tokens, method="encode_text"))
    src = records.RecordsDataSource(mini, "val")
    f = build_pp(result["eval_pp"])
    exs = [records.decode_example(src[i]) for i in range(len(src))]
    x = np.stack([f({"image/encoded": e["image/encoded"]}, None)["image"] for e in exs])
    x = scale_pixels(x, f.scaling)
    img = np.asarray(model.apply(variables, x, method="encode_image"))
    pred = classes[np.argmax(img @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T, -1)]
    expected = np.mean([p in e["label"].tolist() for p, e in zip(pred, exs)])
    # (one near-tie may flip between batched/sharded and single-call float sums)
    assert result["sets"]["val"]["top1"] == pytest.approx(expected, abs=1.5 / 30)
    results.write_result(str(wd), result)
    probe_opts = runner.EvalOptions(
        sets=("val", "r"),
        classifier="linear_probe",
        batch_size=16,
        probe_per_class=2,
        probe_C=1.0,
    )
    probe = runner.Evaluator(probe_opts).evaluate_step(str(wd), 3)
    assert probe["classifier"] == "linear_probe"  # trained once, evaluated on every set
    assert [(s, r["n"]) for s, r in probe["sets"].items()] == [("val", 30), ("r", 30)]
    path = results.write_result(str(wd), probe)
    assert os.path.basename(path) == "3_linear_probe.json" and (wd / "eval" / "3.json").exists()
    rows = list(csv.DictReader(open(wd / "eval" / "results.csv")))
    assert sorted(r["classifier"] for r in rows) == ["linear_probe", "zeroshot"]
    # `--label_set X` beside the run's own: its own file and row; --watch counts each apart
    other = {**result, "label_set": "random:5:0:mini10"}
    path = results.write_result(str(wd), other, "random:5:0:mini10")
    assert os.path.basename(path) == "3_ls-random-5-0-mini10.json"
    assert json.loads((wd / "eval" / "3.json").read_text())["label_set"] == result["label_set"]
    rows = list(csv.DictReader(open(wd / "eval" / "results.csv")))
    assert len(rows) == 3 and {r["label_set"] for r in rows} == {"mini10", "random:5:0:mini10"}
    assert results.evaluated_steps(str(wd), "zeroshot") == {3}
    assert results.evaluated_steps(str(wd), "zeroshot", "random:5:0:mini10") == {3}
    assert results.evaluated_steps(str(wd), "zeroshot", "in100") == set()


def _write_folder_sets(root, rng):
    """val: wnid folders (2 IN100 classes + 1 outside); v2: numeric folders; objectnet folders."""
    in100 = labelsets.resolve_label_set("in100").tolist()
    wnids = labelsets.imagenet_wnids()
    outside = next(i for i in range(1000) if i not in in100)
    for cls in (in100[0], in100[1], outside):
        d = root / "val" / wnids[cls]
        d.mkdir(parents=True)
        for j in range(2):
            (d / f"{j}.JPEG").write_bytes(_png(rng))
    for cls in (in100[2], outside):
        d = root / "v2" / str(cls)
        d.mkdir(parents=True)
        (d / "a.jpeg").write_bytes(_png(rng))
    onet = labelsets.objectnet_folder_map()
    inside = [f for f, idx in onet.items() if set(idx) & set(in100)][:2]
    other = next(f for f, idx in onet.items() if not set(idx) & set(in100))
    for f in [*inside, other, "not_an_imagenet_thing"]:
        d = root / "objectnet-1.0" / "images" / f
        d.mkdir(parents=True)
        (d / "x.png").write_bytes(_png(rng))


def _tf_example(rng, label_key="label", labels=()):
    """A serialized tf.train.Example as tfds stores image datasets (no TensorFlow)."""
    from tensorflow_datasets.proto import tf_example_generated_pb2 as pb2

    ex = pb2.Example()
    ex.features.feature["image"].bytes_list.value.append(_png(rng))
    ex.features.feature[label_key].int64_list.value.extend(labels)
    return ex.SerializeToString()


def _write_tfds_tfrecord(data_dir, dataset, split, examples, version="1.0.0"):
    d = data_dir / dataset / version
    d.mkdir(parents=True)
    name = dataset.split("/")[0]
    with open(d / f"{name}-{split}.tfrecord-00000-of-00001", "wb") as f:
        for ex in examples:
            f.write(tfrecord.frame_record(ex))


def _write_fake_tfds(data_dir, rng):
    """imagenet_r as TFRecord shards: 2 images inside in100 ∩ R, 1 outside; imagenet_a prepared
    with file_format="array_record": 1 image inside in100 ∩ A, 1 outside."""
    in100 = set(labelsets.resolve_label_set("in100").tolist())
    r_cls = labelsets.shift_set_classes("r").tolist()
    labels = [c for c in r_cls if c in in100][:2] + [next(c for c in r_cls if c not in in100)]
    r_examples = [_tf_example(rng, labels=[lab]) for lab in labels]
    _write_tfds_tfrecord(data_dir, "imagenet_r", "test", r_examples, version="0.1.0")
    from array_record.python.array_record_module import ArrayRecordWriter

    d = data_dir / "imagenet_a" / "0.1.0"
    d.mkdir(parents=True)
    a_cls = labelsets.shift_set_classes("a").tolist()
    w = ArrayRecordWriter(str(d / "imagenet_a-test.array_record-00000-of-00001"), "group_size:1")
    for lab in [c for c in a_cls if c in in100][:1] + [next(c for c in a_cls if c not in in100)]:
        w.write(_tf_example(rng, labels=[lab]))
    w.close()


def _write_real_folder(root, rng, in100):
    """ImageNet-ReaL as distributed: real.json + val images. Image 1 has an in100 ReaL label (and
    one outside), image 2 no ReaL label, image 3 only a label outside in100."""
    outside = next(i for i in range(1000) if i not in in100)
    root.mkdir(parents=True)
    (root / "real.json").write_text(json.dumps([[outside, in100[5]], [], [outside]]))
    for i in (1, 2, 3):
        (root / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(_png(rng))
    (root / "README.txt").write_text("not an image")


def test_v2_variants_and_real_readers(tmp_path):
    """tfds ImageNet-V2 variant selection, ReaL from tfds (real_label) and from real.json."""
    rng = np.random.default_rng(1)
    data = tmp_path / "tfds"
    v2 = [_tf_example(rng, labels=[c]) for c in (1, 2, 3)]
    _write_tfds_tfrecord(data, "imagenet_v2/threshold-0.7", "test", v2, version="3.0.0")
    with pytest.raises(sets.SetNotFound, match="imagenet_v2/matched-frequency"):
        sets.open_set("v2", f"tfds:{data}")  # the default variant is not there: named
    es = sets.open_set("v2", f"tfds:{data}", v2_variant="threshold-0.7")
    assert len(es) == 3 and es.where.endswith("imagenet_v2/threshold-0.7")
    with pytest.raises(ValueError, match="v2 variant"):
        sets.open_set("v2", f"tfds:{data}", v2_variant="nope")
    # ReaL in tfds: the multi-label `real_label` feature, not the original label.
    real = [_tf_example(rng, "real_label", labels) for labels in ([4, 9], [], [7])]
    _write_tfds_tfrecord(data, "imagenet2012_real", "validation", real)
    es = sets.open_set("real", f"tfds:{data}")
    assert [es.groups[g] for g in es.item_groups] == [[4, 9], [], [7]]
    kept, targets = sets.filter_to_classes(es, [4, 7, 9])
    assert len(kept) == 2 and kept.skipped["no label"] == 1
    assert targets[kept.item_groups].astype(int).tolist() == [[1, 0, 1], [0, 1, 0]]
    # ReaL from its distribution: real.json beside the val images (class folders would be wrong).
    in100 = labelsets.resolve_label_set("in100").tolist()
    _write_real_folder(tmp_path / "real", rng, in100)
    es = sets.open_set("real", f"folder:{tmp_path / 'real'}")
    outside = next(i for i in range(1000) if i not in in100)
    got = [es.groups[g] for g in es.item_groups]
    assert got == [sorted([outside, in100[5]]), [], [outside]]
    with pytest.raises(sets.SetNotFound, match="real.json"):
        sets.open_set("real", f"folder:{tmp_path / 'tfds'}")


def test_objectnet_multi_class_folder_counts_any_match(tmp_path):
    """An ObjectNet folder mapped to several ImageNet classes: a prediction of any counts."""
    from janus.evaluate import classifiers, restrict

    onet = labelsets.objectnet_folder_map()
    folder, targets_1000 = next((f, idx) for f, idx in onet.items() if len(idx) > 1)
    d = tmp_path / "objectnet-1.0" / "images" / folder
    d.mkdir(parents=True)
    (d / "1.png").write_bytes(_png(np.random.default_rng(2)))
    es = sets.open_set("objectnet", str(tmp_path / "objectnet-1.0"))
    assert es.groups == [sorted(targets_1000)]
    classes = restrict.eval_classes(np.arange(1000), labelsets.shift_set_classes("objectnet"))
    assert len(classes) == 125
    es, targets = sets.filter_to_classes(es, classes)
    head = classifiers.SubsetHead(classes)
    for c in targets_1000:  # the second (and any) mapped class is a hit, another class is not
        logits = np.zeros((1, 1000), np.float32)
        logits[0, c] = 1.0
        assert classifiers.topk_counts(head(logits), targets[es.item_groups])[1] == 1
    logits = np.zeros((1, 1000), np.float32)
    logits[0, next(c for c in classes if c not in targets_1000)] = 1.0
    assert classifiers.topk_counts(head(logits), targets[es.item_groups])[1] == 0


@pytest.mark.slow
def test_folder_layout_and_tfds_dir_in100(tmp_path):
    rng = np.random.default_rng(0)
    _write_folder_sets(tmp_path / "sets", rng)
    _write_fake_tfds(tmp_path / "tfds", rng)
    _write_real_folder(tmp_path / "real", rng, labelsets.resolve_label_set("in100").tolist())
    wd = tmp_path / "run"
    _save(wd, 1, _config("ce", "resnet_tiny", tmp_path / "no_train_data", label_set="in100"))
    s = tmp_path / "sets"
    argv = [
        "--workdir",
        str(wd),
        "--batch_size",
        "8",
        "--sets",
        "val,v2,sketch,r,a,objectnet,real",
        f"--data.val=folder:{s / 'val'}",
        f"--data.real=folder:{tmp_path / 'real'}",
        f"--data.v2={s / 'v2'}",
        f"--data.objectnet=folder:{s / 'objectnet-1.0'}",
        f"--data.r=tfds:{tmp_path / 'tfds'}",
        f"--data.a={tmp_path / 'tfds'}",
        f"--data.sketch=folder:{tmp_path / 'missing'}",
    ]
    assert evaluate_main(argv) == 0
    result = json.loads((wd / "eval" / "1.json").read_text())
    got = {k: (v["n"], v["classes"]) for k, v in result["sets"].items()}
    assert got == {
        "val": (4, 100),
        "v2": (1, 100),
        "r": (2, 36),
        "a": (1, 37),
        "objectnet": (2, 14),
        "real": (1, 100),
    }
    assert result["v2_variant"] == "matched-frequency"
    assert result["skipped"]["real"] == {"no label": 1, "label outside the class set": 1}
    assert result["suite"] == "imagenet" and result["metrics"]["avg_robustness"] is None
    assert any("sketch" in n and "not found" in n for n in result["notes"])
    assert result["extra_sets"]["val_on_objectnet_classes"]["classes"] == 14
    skipped = result["skipped"]["objectnet"]
    assert skipped["folder without an ImageNet class"] == 1
    assert skipped["label outside the class set"] == 1


def test_objectnet_border_crop_and_spec_parsing(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (10, 8)).save(buf, "PNG")
    item = sets.BorderCrop([{"image/encoded": buf.getvalue(), "label": 0}], 2)[0]
    assert Image.open(io.BytesIO(item["image/encoded"])).size == (6, 4)
    (tmp_path / "info.json").write_text("{}")
    assert sets.parse_spec(f"{tmp_path}#v2") == ("records", str(tmp_path), "v2")
    assert sets.parse_spec("tfds:/x") == ("tfds", "/x", None)
    with pytest.raises(sets.SetNotFound, match="imagenet_sketch"):
        sets.open_set("sketch", f"tfds:{tmp_path}")


@pytest.mark.slow
def test_watch_picks_up_checkpoints_while_written(mini, tmp_path):
    wd = tmp_path / "run"
    config = _config("ce", "resnet_tiny", mini)
    _save(wd, 1, config)
    # A checkpoint still being written (no finalised state) is ignored.
    (wd / "checkpoints" / "99").mkdir(parents=True)

    def trainer():
        for step in (2, 3):
            time.sleep(0.3)
            _save(wd, step, config, seed=step)
        (wd / watch.DONE_MARKER).write_text("")

    opts = runner.EvalOptions(sets=("val",), batch_size=16, max_examples=8)
    thread = threading.Thread(target=trainer)
    thread.start()
    seen = []
    ev = runner.Evaluator(opts)
    done = watch.watch(
        ev,
        str(wd),
        timeout=60,
        poll=0.2,
        on_result=lambda r: seen.append(r["step"]),
    )
    thread.join()
    assert done == seen == [1, 2, 3]
    assert sorted(p.name for p in (wd / "eval").glob("*.json")) == ["1.json", "2.json", "3.json"]
    rows = list(csv.DictReader(open(wd / "eval" / "results.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    # The CSV header is the fixed schema, whichever sets were evaluated.
    with open(wd / "eval" / "results.csv") as f:
        assert next(csv.reader(f)) == list(results.CSV_COLUMNS)
    # Inference compiled once for three checkpoints (same model, same padded batch shape).
    (emb,) = ev._embedders.values()
    assert len(emb.compiled_shapes) == 1 and emb._fn._cache_size() == 1
    # Watching a finished run returns at once: its final step (config total_steps) has a result.
    (wd / watch.DONE_MARKER).unlink()
    (wd / "config.json").write_text(json.dumps({"total_steps": 3}))
    t0 = time.time()
    assert watch.watch(ev, str(wd), timeout=60, poll=0.2) == []
    assert time.time() - t0 < 5


def test_watch_evaluates_a_checkpoint_finished_just_before_done(mini, tmp_path, monkeypatch):
    """The trainer saves its last checkpoint and writes DONE while the watcher is between listing
    the checkpoints and looking for DONE: the watcher must still evaluate that checkpoint (it reads
    DONE first, then lists). Forced here: the listing itself finishes step 2 and writes DONE (the
    test fails on the order before; CI saw the race once)."""
    import janus.checkpoint as ckpt_lib

    wd = tmp_path / "run"
    config = _config("ce", "resnet_tiny", mini)
    _save(wd, 1, config)
    real_list = ckpt_lib.list_complete_steps

    def list_then_finish(workdir):
        steps = real_list(workdir)
        if steps == [1] and (wd / "eval" / "1.json").exists():  # step 1 evaluated: the trainer ends
            _save(wd, 2, config, seed=2)
            (wd / watch.DONE_MARKER).write_text("")
        return steps

    monkeypatch.setattr(ckpt_lib, "list_complete_steps", list_then_finish)
    opts = runner.EvalOptions(sets=("val",), batch_size=16, max_examples=8)
    assert watch.watch(runner.Evaluator(opts), str(wd), timeout=30, poll=0.05) == [1, 2]


def test_no_set_found_exits_2_and_names_the_sets(tmp_path, capsys):
    wd = tmp_path / "run"
    _save(wd, 5, _config("ce", "resnet_tiny", tmp_path / "nowhere", label_set="in100"))
    assert evaluate_main(["--workdir", str(wd)]) == 2
    watch_args = ["--workdir", str(wd), "--watch", "--watch_timeout", "5", "--watch_poll", "0.1"]
    assert evaluate_main(watch_args) == 2
    err = capsys.readouterr().err
    assert err.count("no set could be evaluated") == 2
    assert "set 'objectnet' skipped: no data source given for it" in err
    # Nothing was evaluated, so nothing is written (the watcher's lock file may remain in eval/).
    assert not list(wd.glob("eval/*.json")) and not (wd / "eval" / "results.csv").exists()


def test_sum_over_processes_is_exact_single_process():
    counts = np.array([[3, 5, 7], [0, 1, 2]], np.int64)
    assert (runner.sum_over_processes(counts) == counts).all()


@pytest.mark.slow
def test_inloop_hook_returns_scalars_and_writes_json(mini, tmp_path):
    import ml_collections

    from janus.evaluate.inloop import make_inloop_evaluators

    cfg = _config("ce", "resnet_tiny", mini)
    cfg["evals"] = {"quick": {"every_steps": 5, "set": "val,sketch", "batch_size": 16}}
    config = ml_collections.ConfigDict(cfg)
    model, variables = _init("resnet_tiny", "ce")
    (hook,) = make_inloop_evaluators(config, model, None, workdir=str(tmp_path))
    assert hook.name == "quick" and hook.every_steps == 5
    out = hook(10, variables)
    assert set(out) == {"val/top1", "val/top5", "sketch/top1", "sketch/top5"}
    result = json.loads((tmp_path / "eval" / "10.json").read_text())
    assert result["sets"]["val"]["top1"] == pytest.approx(out["val/top1"])
    assert result["checkpoint"] == f"checkpoints/{result['step']}"
    assert any("in-loop evaluation (evals.quick)" in n for n in result["notes"])


_WORKER = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
port, pid, wd = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
assert jax.process_count() == 2 and len(jax.local_devices()) == 2, jax.devices()
from janus.evaluate import runner, watch
ev = runner.Evaluator(runner.EvalOptions(sets=("val",), batch_size=8))
seen = []
if pid == 1:  # checkpoint 7 is not (yet) in process 1's listing: process 0's view must decide
    import janus.checkpoint
    janus.checkpoint.list_complete_steps = lambda workdir: []
watch.watch(ev, wd, timeout=30, poll=0.1, final_step=7, on_result=seen.append)
print("RESULT", json.dumps(seen[0]["sets"] if seen else None))
"""


@pytest.mark.slow
def test_two_processes_combine_counts_exactly(mini, tmp_path):
    import socket
    import subprocess
    import sys

    wd = tmp_path / "run"
    _save(wd, 7, _config("ce", "resnet_tiny", mini))
    single = runner.Evaluator(runner.EvalOptions(sets=("val",), batch_size=8)).evaluate_step(
        str(wd), 7
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(port), str(i), str(wd)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    for out in outs:
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        # Each process evaluated its half; the summed counts equal the one-process result.
        assert json.loads(line[len("RESULT ") :]) == single["sets"]
    assert json.loads((wd / "eval" / "7.json").read_text())["sets"] == single["sets"]


def test_unreadable_eval_images_are_counted_not_silently_dropped():
    """A corrupt image is left out of n (masked) and reported, not silently lost."""
    rng = np.random.default_rng(0)
    items = [{"image/encoded": _png(rng), "label": 0} for _ in range(3)]
    items.insert(1, {"image/encoded": b"\xff\xd8 not a jpeg", "label": 0, "key": "bad"})

    class FakeEmbedder:  # logits [B, 2] that always predict class position 0
        def dispatch(self, images, scaling):
            return np.tile(np.float32([1.0, 0.0]), (len(images), 1))

        fetch = staticmethod(np.asarray)

    targets = np.array([[True, False]])  # group 0: class position 0
    view = runner._View("val", np.array([3, 7]), targets, np.ones(1, bool), lambda x: x)
    es = sets.EvalSet("val", items, [[3]], np.zeros(4, np.int64), "test")
    counts, unreadable, first = runner.Evaluator(runner.EvalOptions())._run_views(
        es, [view], FakeEmbedder(), 2, "decode|resize(8)|normalize"
    )
    assert counts == [(3, 3, 3)]
    assert unreadable == 1 and first == ["bad"]


def test_a_rerun_keeps_the_earlier_result_and_the_json_names_unreadable_images(
    mini, tmp_path, capsys
):
    """issue #26: the evaluator rerun on a step keeps the earlier eval JSON (eval/previous/), which
    janus.report, --watch and results.csv do not read twice; a set's unreadable images are counted
    and named in the JSON and on the console."""
    from janus import report

    in100 = labelsets.resolve_label_set("in100").tolist()
    wnids, rng = labelsets.imagenet_wnids(), np.random.default_rng(5)
    for cls in in100[:2]:
        (tmp_path / "val" / wnids[cls]).mkdir(parents=True)
        for j in range(2):
            (tmp_path / "val" / wnids[cls] / f"{j}.JPEG").write_bytes(_png(rng, 36))
    bad = tmp_path / "val" / wnids[in100[0]] / "bad.JPEG"
    bad.write_bytes(b"\xff\xd8 cut short")
    wd = tmp_path / "run"
    _save(wd, 7, _config("ce", "resnet_tiny", mini))
    argv = ["--workdir", str(wd), "--batch_size", "8", "--label_set", "in100", "--sets", "val",
            f"--data.val=folder:{tmp_path / 'val'}"]  # fmt: skip
    name = "7_ls-in100.json"

    assert evaluate_main(argv) == 0
    first = json.loads((wd / "eval" / name).read_text())
    assert first["sets"]["val"]["n"] == 4 and "replaces" not in first
    assert first["skipped"]["val"] == {"unreadable image": 1}
    assert first["skipped_files"] == {"val": [str(bad)]}
    out = capsys.readouterr().out
    assert f"val: 1 unreadable image(s) left out of n (first: {bad})" in out

    assert evaluate_main(argv) == 0  # the same step again
    kept = wd / "eval" / "previous" / "7_ls-in100.1.json"
    assert json.loads(kept.read_text()) == first
    second = json.loads((wd / "eval" / name).read_text())
    assert second["replaces"] == "eval/previous/7_ls-in100.1.json"
    said = capsys.readouterr().out
    assert "the earlier result is kept as eval/previous/7_ls-in100.1.json" in said
    assert results.evaluated_steps(str(wd), given_label_set="in100") == {7}
    assert [r["step"] for r in report.load_rows([str(wd)], all_steps=True)] == [7]
    with open(wd / "eval" / "results.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["7"]
    assert evaluate_main(argv) == 0  # a third: .2
    assert (wd / "eval" / "previous" / "7_ls-in100.2.json").exists() and kept.exists()


def test_eval_pp_scales_pixels_like_the_training_chain():
    from janus.evaluate.inference import eval_pp

    base = {"input": {"resolution": 32}}
    assert eval_pp(base) == "decode|resize_small(37)|center_crop(32)|normalize"
    trained = {"input": {"resolution": 32, "pp": "decode|rrc(32)|flip|normalize('imagenet')"}}
    assert eval_pp(trained).endswith("|center_crop(32)|normalize('imagenet')")
    vr = {"input": {"resolution": 32, "pp": "decode|rrc(32)|value_range(-1, 1)"}}
    assert eval_pp(vr).endswith("|center_crop(32)|value_range(-1, 1)")
    assert eval_pp({"input": {"eval_pp": "decode|resize(32)|normalize"}}) == (
        "decode|resize(32)|normalize"
    )


def test_every_objectnet_folder_name_is_read(tmp_path):
    """All 113 mapped folders (`t-shirt` has a hyphen) are read under their distributed names."""
    onet = labelsets.objectnet_folder_map()
    for folder in onet:
        d = tmp_path / "images" / folder
        d.mkdir(parents=True)
        (d / "1.png").write_bytes(b"")  # only listed, never decoded here
    es = sets.open_set("objectnet", f"folder:{tmp_path}")
    assert len(es) == len(onet) == 113
    assert not es.skipped


def test_objectnet_border_crop_is_lossless_and_bad_images_become_counted_skips():
    from janus.data.input.preprocess import BadImageError, build_pp

    pixels = np.random.default_rng(0).integers(0, 255, (8, 10, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    items = [{"image/encoded": buf.getvalue(), "label": 0}, {"image/encoded": b"junk", "label": 0}]
    good, bad = sets.BorderCrop(items, 2)[0], sets.BorderCrop(items, 2)[1]
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(good["image/encoded"]))), pixels[2:-2, 2:-2]
    )
    with pytest.raises(BadImageError):
        build_pp("decode|resize(4)")(bad, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------
# The protocol follows each set (where it is read from), never the training data.


def _write_shift_folders(root, rng):
    """val, v2, sketch, r and a in their distributed layouts. -> the image count each set keeps
    under in100: 2 per class inside the set's class set; one image of a class outside it too."""
    in100 = labelsets.resolve_label_set("in100").tolist()
    wnids = labelsets.imagenet_wnids()
    outside = next(i for i in range(1000) if i not in in100)
    kept = {}
    for name in ("val", "v2", "sketch", "r", "a"):
        covered = labelsets.shift_set_classes(name).tolist() if name in ("r", "a") else range(1000)
        inside = [c for c in in100 if c in covered][:2]
        # R and A: an IN100 class the set does not hold is outside its class set, as is `outside`.
        dropped = [outside] + [c for c in in100 if c not in covered][:1]
        for cls in inside + dropped:
            d = root / name / (str(cls) if name == "v2" else wnids[cls])
            d.mkdir(parents=True)
            for j in range(2 if cls in inside else 1):
                (d / f"{j}.JPEG").write_bytes(_png(rng, 36))
        kept[name] = 2 * len(inside)
    return kept


def _write_objectnet_archive(root, rng):
    """ObjectNet as extracted from its archive: root/objectnet-1.0/images/<folder>. -> kept."""
    in100 = set(labelsets.resolve_label_set("in100").tolist())
    onet = labelsets.objectnet_folder_map()
    inside = [f for f, idx in onet.items() if set(idx) & in100][:2]
    for f in inside + [next(f for f, idx in onet.items() if not set(idx) & in100)]:
        d = root / "objectnet-1.0" / "images" / f
        d.mkdir(parents=True)
        (d / "1.png").write_bytes(_png(rng, 36))
    return len(inside)


def _folder_args(root, names=("val", "v2", "sketch", "r", "a")):
    return [f"--data.{s}=folder:{root / s}" for s in names]


def test_protocol_follows_each_set_not_the_training_data(mini, tmp_path, capsys):
    """The issue's probe: a model trained on JANuS-mini, `--label_set in100`, the shift sets in
    their real layouts. R and A are restricted to in100 ∩ their classes (36, 37), every set is
    suite imagenet, and ObjectNet, which was not given, is not read from the mini records."""
    kept = _write_shift_folders(tmp_path / "sets", np.random.default_rng(3))
    wd = tmp_path / "run"
    _save(wd, 4, _config("ce", "resnet_tiny", mini))  # trained on the mini records
    argv = ["--workdir", str(wd), "--batch_size", "8", "--label_set", "in100"]
    assert evaluate_main(argv + _folder_args(tmp_path / "sets")) == 0
    # a label set other than the run's own gets its own file: the run's 4.json is never replaced
    assert not (wd / "eval" / "4.json").exists()
    result = json.loads((wd / "eval" / "4_ls-in100.json").read_text())
    got = {k: (v["classes"], v["n"]) for k, v in result["sets"].items()}
    assert got == {
        "val": (100, kept["val"]),
        "v2": (100, kept["v2"]),
        "sketch": (100, kept["sketch"]),
        "r": (36, kept["r"]),
        "a": (37, kept["a"]),
    }
    assert kept["r"] == kept["a"] == 4
    for name, r in result["sets"].items():
        assert (r["suite"], r["protocol"]) == ("imagenet", "imagenet")
        assert r["data"] == result["data"][name] == f"folder:{tmp_path / 'sets' / name}"
    assert result["suite"] == "imagenet" and result["label_set"] == "in100"
    assert result["skipped"]["r"]["label outside the class set"] == 2
    skip = "set 'objectnet' skipped: no data source given"
    assert any(n.startswith(skip) for n in result["notes"])
    assert result["metrics"]["avg_robustness"] is not None
    assert result["metrics"]["taori_er_r"] is not None  # every set entering it is ImageNet data
    out = capsys.readouterr().out
    assert out.startswith("step 4 val=") and "avg_rob=" in out


def test_mini_v2_real_layouts_keep_the_imagenet_restriction(mini, tmp_path):
    """JANuS-mini v2 writes its shift sets in the real layouts, marked by sets.SUITE_MARKER: R / A
    / ObjectNet are restricted exactly as on real data, the suite says mini, and the Taori numbers
    (ImageNet baselines) are null. ObjectNet is found from the folder the archive was extracted
    into."""
    rng = np.random.default_rng(4)
    root = tmp_path / "mini_v2"
    kept = _write_shift_folders(root, rng)
    kept["objectnet"] = _write_objectnet_archive(root / "objectnet_extracted", rng)
    (root / sets.SUITE_MARKER).write_text(json.dumps({"suite": "mini", "name": "janus_mini_v2"}))
    wd = tmp_path / "run"
    _save(wd, 2, _config("ce", "resnet_tiny", mini))
    argv = ["--workdir", str(wd), "--batch_size", "8", "--label_set", "in100"]
    argv += _folder_args(root) + [f"--data.objectnet=folder:{root / 'objectnet_extracted'}"]
    assert evaluate_main(argv) == 0
    result = json.loads((wd / "eval" / "2_ls-in100.json").read_text())
    got = {k: (v["classes"], v["n"], v["suite"], v["protocol"]) for k, v in result["sets"].items()}
    assert {k: v[:2] for k, v in got.items()} == {
        "val": (100, kept["val"]),
        "v2": (100, kept["v2"]),
        "sketch": (100, kept["sketch"]),
        "r": (36, kept["r"]),
        "a": (37, kept["a"]),
        "objectnet": (14, kept["objectnet"]),
    }
    assert {v[2:] for v in got.values()} == {("mini", "imagenet")}
    assert result["data"]["objectnet"].endswith("objectnet_extracted/objectnet-1.0/images")
    assert result["suite"] == "mini" and result["v2_variant"] is None
    assert result["extra_sets"]["val_on_objectnet_classes"]["classes"] == 14
    m, val = result["metrics"], result["sets"]["val"]["top1"]
    assert m["avg_robustness"] is not None  # one suite: averaged
    assert m["robustness_ratio"] == (pytest.approx(m["avg_robustness"] / val) if val else None)
    assert all(m[k] is None for k in m if k.startswith("taori_er"))
    assert any("taori_er_* are null" in n and "r: mini" in n for n in result["notes"])
    # The mini records splits keep the mini protocol (no intersection, no border crop).
    es = sets.open_set("objectnet", f"records:{mini}")
    assert (es.suite, es.protocol) == ("mini", "mini")
    assert not isinstance(es.items, sets.BorderCrop)
    onet = sets.open_set("objectnet", str(root / "objectnet_extracted"))
    assert onet.suite == "mini" and isinstance(onet.items, sets.BorderCrop)


def test_sets_of_different_suites_are_never_averaged(mini, tmp_path):
    """Mini records splits with a real-layout R: each set is evaluated under its own protocol,
    but no average or ratio is taken across the suites; the notes name every set's suite."""
    _write_shift_folders(tmp_path / "sets", np.random.default_rng(5))
    wd = tmp_path / "run"
    _save(wd, 3, _config("ce", "resnet_tiny", mini))
    argv = ["--workdir", str(wd), "--batch_size", "16", "--label_set", "in100"]
    argv += [f"--data.records={mini}", f"--data.r=folder:{tmp_path / 'sets' / 'r'}"]
    assert evaluate_main(argv) == 0
    result = json.loads((wd / "eval" / "3_ls-in100.json").read_text())
    s = result["sets"]
    assert (s["r"]["suite"], s["r"]["protocol"], s["r"]["classes"]) == ("imagenet", "imagenet", 36)
    for name in ("val", "v2", "sketch", "a", "objectnet"):  # mini protocol: no intersection
        assert (s[name]["suite"], s[name]["protocol"], s[name]["classes"]) == ("mini", "mini", 100)
        assert s[name]["n"] == 30
    assert result["suite"] == "mixed"
    m = result["metrics"]
    assert m["avg_robustness"] is None and m["robustness_ratio"] is None
    assert all(m[k] is None for k in m if k.startswith("taori_er"))
    note = next(n for n in result["notes"] if n.startswith("avg_robustness is null"))
    assert "v2: mini, sketch: mini, r: imagenet, a: mini" in note and "across suites" in note
    assert any("different suites" in n and "r: imagenet (folder:" in n for n in result["notes"])
    assert "val_on_objectnet_classes" not in result["extra_sets"]  # mini ObjectNet


def test_val_top1_zero_prints_na_and_exits_0(tmp_path, capsys):
    """An early or broken checkpoint (every prediction wrong): the ratio is null because val
    top-1 is 0, said so; the summary prints n/a and the exit status is 0."""
    _write_shift_folders(tmp_path / "sets", np.random.default_rng(6))
    wd = tmp_path / "run"
    config = _config("ce", "resnet_tiny", tmp_path / "none", label_set="in100")
    _, variables = _init("resnet_tiny", "ce")
    params = dict(variables["params"])
    bias = np.zeros(1000, np.float32)
    both = set(labelsets.shift_set_classes("r")) & set(labelsets.shift_set_classes("a"))
    wrong = [c for c in labelsets.resolve_label_set("in100") if c in both][-1]
    bias[wrong] = 1e4  # a class of every class set that no image here has
    params["head"] = {"kernel": np.zeros_like(params["head"]["kernel"]), "bias": bias}
    save_for_inference(str(wd), 1, config, {**variables, "params": params})
    argv = ["--workdir", str(wd), "--batch_size", "16", *_folder_args(tmp_path / "sets")]
    assert evaluate_main(argv) == 0
    result = json.loads((wd / "eval" / "1.json").read_text())
    assert result["sets"]["val"]["top1"] == 0 and result["metrics"]["avg_robustness"] == 0
    assert result["metrics"]["robustness_ratio"] is None
    assert "robustness_ratio is null: val top-1 is 0, so the ratio is undefined" in result["notes"]
    assert not any("val not evaluated" in n for n in result["notes"])
    out = capsys.readouterr().out
    assert "avg_rob=0 ratio=n/a" in out  # 4 significant digits: a zero is 0
    from janus.evaluate.__main__ import _summary

    result["sets"]["r"]["top1"] = None
    assert "r=n/a" in _summary(result)


def test_locate_decides_protocol_and_suite_per_set(mini, tmp_path):
    rng = np.random.default_rng(7)
    _write_shift_folders(tmp_path / "real", rng)
    # A records dir that is not JANuS-mini is read under the ImageNet protocol.
    (tmp_path / "recs").mkdir()
    (tmp_path / "recs" / "info.json").write_text(json.dumps({"name": "in100_1k"}))
    cases = {
        f"records:{mini}#r": ("mini", "mini"),
        str(mini): ("mini", "mini"),
        f"records:{tmp_path / 'recs'}": ("imagenet", "imagenet"),
        f"folder:{tmp_path / 'real' / 'r'}": ("imagenet", "imagenet"),
        f"tfds:{tmp_path / 'tfds'}": ("imagenet", "imagenet"),
    }
    for spec, want in cases.items():
        src = sets.locate("r", spec)
        assert (src.suite, src.protocol) == want, spec
    # The marker is looked for up to SUITE_MARKER_LEVELS folders above the given path.
    deep = tmp_path / "gen" / "a" / "b" / "c" / "d"
    d = deep / "r" / labelsets.imagenet_wnids()[labelsets.shift_set_classes("r")[0]]
    d.mkdir(parents=True)
    (d / "1.png").write_bytes(_png(rng))
    (tmp_path / "gen" / sets.SUITE_MARKER).write_text(json.dumps({"suite": "mini", "name": "x"}))
    src = sets.locate("r", str(deep / "r"))
    assert src.marker is None and src.suite == "imagenet"  # 5 levels up: out of reach
    (tmp_path / "gen" / "a" / sets.SUITE_MARKER).write_text('{"suite": "mini"}')
    src = sets.locate("r", str(deep / "r"))
    assert (src.suite, src.protocol) == ("mini", "imagenet")
    assert src.marker == str(tmp_path / "gen" / "a" / sets.SUITE_MARKER)
    (tmp_path / "gen" / "a" / sets.SUITE_MARKER).write_text("not json")
    with pytest.raises(sets.SetNotFound, match="suite marker"):
        sets.locate("r", str(deep / "r"))


def test_objectnet_folder_levels_and_the_layout_named_in_errors(tmp_path):
    """`--data.objectnet=folder:DIR` reads DIR = objectnet-1.0/images, objectnet-1.0 or the folder
    the archive was extracted into; an empty folder names the expected layout."""
    kept = _write_objectnet_archive(tmp_path / "x", np.random.default_rng(8))
    in100 = labelsets.resolve_label_set("in100")
    classes = labelsets.shift_set_classes("objectnet")
    for sub in ("", "objectnet-1.0", "objectnet-1.0/images"):
        es = sets.open_set("objectnet", f"folder:{tmp_path / 'x' / sub}")
        assert es.where == f"folder:{tmp_path / 'x' / 'objectnet-1.0' / 'images'}"
        kept_es, _ = sets.filter_to_classes(es, np.intersect1d(in100, classes))
        assert len(kept_es) == kept
    (tmp_path / "empty" / "stuff").mkdir(parents=True)
    with pytest.raises(sets.SetNotFound, match="extracted into"):
        sets.open_set("objectnet", f"folder:{tmp_path / 'empty'}")
    with pytest.raises(sets.SetNotFound, match="<wnid>"):
        sets.open_set("r", f"folder:{tmp_path / 'empty'}")


def test_metrics_never_mix_suites_and_taori_needs_imagenet_sets():
    from janus.evaluate import metrics

    top1 = {s: {"top1": 0.5} for s in ("val", "v2", "sketch", "r", "a")}
    # val from another suite than the robustness sets: the average stands, the ratio does not.
    m, notes = metrics.compute_metrics(top1, suites={"val": "mini"})
    assert m["avg_robustness"] == 0.5 and m["robustness_ratio"] is None
    assert any("val is suite 'mini'" in n for n in notes)
    assert m["taori_er_v2"] is None and m["taori_er_sketch"] is None
    # Taori numbers are kept where every set entering them is ImageNet data.
    m, notes = metrics.compute_metrics(top1, suites={"sketch": "mini"})
    assert m["avg_robustness"] is None and m["taori_er_sketch"] is None
    assert m["taori_er_v2"] is not None and m["taori_er_r"] is not None
    assert any("sketch: mini" in n and "ImageNet fits" in n for n in notes)
    # A ratio that is null because val top-1 is 0 says so (val was evaluated).
    m, notes = metrics.compute_metrics({**top1, "val": {"top1": 0.0}})
    assert m["robustness_ratio"] is None
    assert "robustness_ratio is null: val top-1 is 0, so the ratio is undefined" in notes
