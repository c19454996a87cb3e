"""Issue #26 items 4 and 5: the records and the run must agree, and errors point to the fix.

Each check is tested on the function that raises (a one-line message naming the file or value),
plus a `janus.main` run for the exit status and the absence of a traceback.
"""

from __future__ import annotations

import json

import pytest
from test_cli_errors import _one_line, _run

from janus import config as config_lib
from janus import train
from janus.config import records_check
from janus.config import sweep as config_sweep


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """A tiny JANuS-mini (label set mini10): 2 train samples per class, 20 in all."""
    from janus.data.ingest import synthetic

    out = tmp_path_factory.mktemp("agree") / "mini"
    synthetic.build_mini(out, train_per_class=2, eval_per_class=1, size=32, train_shards=2)
    return out


def _config(records, **fields):
    c = config_lib.apply_sweep(config_lib.paper_config(), {})
    c.label_set = "mini10"
    c.model.name = "resnet_tiny"
    c.input.batch_size = 8
    c.total_epochs = 1.0
    c.optimizer.warmup_steps = 0
    c.data.train = str(records)
    c.data.budget = None
    for k, v in fields.items():
        config_sweep._assign(c, k, v)
    return c


# ------------------------------------------------------------------ 4. records and run agree


def test_records_info_is_read_and_an_unreadable_one_is_named(records, tmp_path):
    copy = tmp_path / "rec"
    copy.mkdir()
    info = json.loads((records / "info.json").read_text())
    assert info["label_set"] == "mini10"
    (copy / "info.json").write_text("{not json")
    with pytest.raises(config_lib.ConfigError, match=r"info\.json cannot be read") as e:
        records_check.check_records_label_set("data.train", str(copy), "mini10")
    assert str(copy / "info.json") in str(e.value) and "\n" not in str(e.value)


def test_a_label_set_outside_the_records_set_is_refused(records, tmp_path):
    records_check.check_records_label_set("data.train", str(records), "mini10")  # the same set
    check = records_check.check_records_label_set
    check("data.train", str(records), "random:3:0:mini10")  # a subset
    with pytest.raises(config_lib.ConfigError) as e:
        records_check.check_records_label_set("data.train", str(records), "mini25")
    msg = str(e.value)
    assert "'mini25'" in msg and "built for label set 'mini10'" in msg, msg
    assert "holds 5 of the run's 25 classes" in msg, msg
    assert "it would keep 10 of the records' 20 samples" in msg, msg
    assert "--config.label_set=mini10" in msg and "\n" not in msg
    # validate (config check) runs it for every dir of data.train
    with pytest.raises(config_lib.ConfigError, match="built for label set 'mini10'"):
        config_lib.validate(_config(records, label_set="mini25"), num_devices=1)


def test_dropped_samples_are_said_in_one_line(records):
    said = []
    c = _config(records, label_set="random:3:0:mini10", **{"input.batch_size": 4})
    selection = train._select_data(c)
    assert selection.manifest["n_examples"] == 6
    train.check_selection(c, selection.manifest, say=said.append)
    assert said == [
        "data: 14 of the 20 records have no label in label set 'random:3:0:mini10' and are left "
        "out (6 selected; data_manifest.json 'skipped' has the first keys)"
    ]
    said.clear()
    train.check_selection(_config(records), train._select_data(_config(records)).manifest,
                          say=said.append)  # fmt: skip
    assert said == []


def test_a_budget_that_cannot_be_met_is_one_line(records):
    with pytest.raises(config_lib.ConfigError) as e:
        train._select_data(_config(records, **{"data.budget": 30}))
    msg = str(e.value)
    assert "'data.budget' = 30" in msg and str(records) in msg, msg
    assert "has 20 eligible" in msg and "eligible per source: " in msg, msg
    assert "label set 'mini10'" in msg and "lower data.budget or add data" in msg, msg
    assert "\n" not in msg


def test_a_batch_larger_than_the_selection_is_refused(records):
    c = _config(records, **{"input.batch_size": 32})
    with pytest.raises(config_lib.ConfigError) as e:
        train._select_data(c)
    msg = str(e.value)
    assert "'input.batch_size' = 32" in msg and "20 samples selected" in msg, msg


def test_main_budget_error_is_one_line_exit_2(records, tmp_path):
    out = _run(
        "janus.main",
        "--config",
        "configs/mini.py",
        "--workdir",
        str(tmp_path / "w"),
        "--config.data.prepare=none",
        f"--config.data.train={records}",
        "--config.label_set=mini10",
        "--config.data.budget=800",
    )
    assert out.returncode == 2, out.stderr
    line = _one_line(out.stderr)
    assert line.startswith("janus.main: invalid config: config field 'data.budget' = 800"), line
    assert "lower data.budget or add data" in line, line


# ------------------------------------------------------------------ 5. errors that point to the fix


def test_a_folder_of_images_gets_the_builder_command(tmp_path):
    train_dir = tmp_path / "photos" / "train" / "n01440764"
    train_dir.mkdir(parents=True)
    (train_dir / "a.jpg").write_bytes(b"\xff\xd8")
    for given, parent, split in [
        (tmp_path / "photos", tmp_path / "photos", "train"),
        (tmp_path / "photos" / "train", tmp_path / "photos", "train"),
    ]:
        c = _config(given, label_set="mini25")
        with pytest.raises(config_lib.ConfigError) as e:
            config_lib.validate(c, num_devices=1)
        msg = str(e.value)
        assert "not a records directory" in msg and "\n" not in msg, msg
        assert (
            f"`python -m janus.data.build --out {given}_records --label-set mini25 "
            f"--source kind=folder,name=photos,path={parent},split={split}`"
        ) in msg, msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(_config(empty), num_devices=1)
    assert "janus.data.build" not in str(e.value)


def test_the_builder_says_split_when_path_is_the_split(tmp_path):
    from janus.data.ingest.sources import FolderSource

    (tmp_path / "photos" / "train" / "n01440764").mkdir(parents=True)
    src = FolderSource(name="p", path=str(tmp_path / "photos" / "train"))
    with pytest.raises(FileNotFoundError) as e:
        list(src.scan(None))
    msg = str(e.value)
    assert f"path={tmp_path / 'photos'},split=train" in msg and "split=" in msg, msg


def test_a_missing_shard_is_named_by_its_file(records, tmp_path):
    import shutil

    from janus.data import records as records_lib

    copy = tmp_path / "rec"
    shutil.copytree(records, copy)
    (copy / "train-00001-of-00002.tfrecord").unlink()
    with pytest.raises(FileNotFoundError) as e:
        records_lib.list_shards(copy, "train")
    assert "train-00001-of-00002.tfrecord" in str(e.value), e.value


def test_a_workdir_that_is_a_file_is_one_line_exit_2(records, tmp_path):
    wd = tmp_path / "w"
    wd.write_text("")
    out = _run(
        "janus.main",
        "--config",
        "configs/mini.py",
        "--workdir",
        str(wd),
        "--config.data.prepare=none",
        f"--config.data.train={records}",
        "--config.label_set=mini10",
        "--config.data.budget=16",
        "--config.input.batch_size=8",
    )
    assert out.returncode == 2, out.stderr
    line = _one_line(out.stderr)
    assert f"workdir {wd} is not a directory" in line, line


def test_a_missing_arrow_manifest_is_one_warning_with_the_command(records, tmp_path, caplog):
    import logging
    import shutil

    from janus.data import manifest as manifest_lib

    copy = tmp_path / "rec"
    shutil.copytree(records, copy)
    (copy / manifest_lib.COLUMNS_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="janus.data.manifest"):
        n1 = sum(b.num_rows for b in manifest_lib.batches(copy))
        n2 = sum(b.num_rows for b in manifest_lib.batches(copy))
    assert n1 == n2 > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"python -m janus.data.manifest convert {copy}" in warnings[0]
    assert "per million samples" in warnings[0] and "\n" not in warnings[0]


def test_a_nan_loss_names_the_step_and_the_last_finite_loss():
    import numpy as np

    from janus.metric_window import MetricWindow, NonFiniteLossError

    class Run:
        config = {"log": {"every_steps": 1}, "input": {"batch_size": 8}}
        durations = type("D", (), {"total_steps": 10, "steps_per_epoch": 2.0})()
        device_kind = "cpu"

    w = MetricWindow(Run(), flops=None, num_devices=1)
    for step, loss in [(1, 2.5), (2, 2.25)]:
        w.add({"loss": np.float32(loss), "learning_rate": np.float32(0.1)})
        w.check_finite(step)
        w.flush(step)
    w.add({"loss": np.float32("nan"), "learning_rate": np.float32(0.1)})
    with pytest.raises(NonFiniteLossError) as e:
        w.check_finite(3)
    msg = str(e.value)
    assert "at step 3" in msg and "last finite loss 2.25 at step 2" in msg, msg
    assert "\n" not in msg
