"""A damaged checkpoint is not the end (docs/training.md, "Run safety"): on resume the newest step
that does not restore is named in one line, moved aside to `<step>.damaged` and recorded in
history.jsonl, and the run resumes from the newest step that restores, ending as an uninterrupted
run would; with no good step left it exits 2 in one line and moves nothing.

One 20-step run (checkpoints 10 and 20) is copied for each fault: a data file cut to 50 bytes
(through `python -m janus.main`, to the end, bitwise), a deleted item, a missing or torn metadata
file, a torn input-iterator state (in process, with the loop left out: the restore is what
counts); both steps damaged (through janus.main: exit 2).
"""

import json
import os
import shutil

import pytest
import test_train
from test_train import REPO, assert_bitwise_equal, command, full_state, run

from janus import checkpoint as ckpt_lib

data_dir, env = test_train.data_dir, test_train.env  # the trainer tests' module fixtures
SWEEP = "steps=20,res=32,batch=16"


@pytest.fixture(scope="module")
def trained(data_dir, env, tmp_path_factory):
    """A finished 20-step run with checkpoints 10 and 20, and its step-20 state."""
    workdir = tmp_path_factory.mktemp("faults") / "run"
    out = run(command(data_dir, workdir, SWEEP), env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ckpt_lib.list_complete_steps(workdir) == [10, 20]
    return workdir, full_state(workdir, 20)


def _copy(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained[0], workdir)
    return workdir


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def _cut_largest_data_file(step_dir):
    data = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    largest = max(data, key=lambda p: p.stat().st_size)
    _truncate(largest, 50)


def _history(workdir):
    return [json.loads(x) for x in (workdir / "history.jsonl").read_text().splitlines()]


def test_truncated_data_file_falls_back_and_resumes_exactly(trained, data_dir, env, tmp_path):
    workdir = _copy(trained, tmp_path)
    ckdir = workdir / "checkpoints"
    _cut_largest_data_file(ckdir / "20")
    (workdir / "DONE").unlink()

    out = run(command(data_dir, workdir, SWEEP), env)
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout.splitlines()
    named = [ln for ln in said if f"{ckdir}/20 does not restore" in ln]
    assert len(named) == 1 and "size 50" in named[0] and f"{ckdir}/20/state" in named[0], said
    assert f"resuming from {ckdir}/10" in out.stdout
    assert (ckdir / "20.damaged" / "state").is_dir()  # moved aside, not deleted
    # Step 20 trained again from 10: the uninterrupted run's state, bitwise, and DONE.
    assert ckpt_lib.list_complete_steps(workdir) == [10, 20]
    assert_bitwise_equal(full_state(workdir, 20), trained[1])
    assert json.loads((workdir / "DONE").read_text())["step"] == 20
    rows = _history(workdir)
    assert [(r["event"], r["step"]) for r in rows] == [
        ("start", 0),
        ("damaged", 20),
        ("resume", 10),
    ]
    assert rows[1]["moved_to"] == f"{ckdir}/20.damaged" and "size 50" in rows[1]["error"]


def _rm_state(step_dir):
    shutil.rmtree(step_dir / "state")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_rm_state, id="deleted-item"),
        pytest.param(lambda d: os.remove(d / "state" / "_METADATA"), id="missing-_METADATA"),
        pytest.param(lambda d: _truncate(d / "state" / "_METADATA", 20), id="torn-_METADATA"),
        pytest.param(lambda d: _truncate(d / "state" / "manifest.ocdbt", 10), id="torn-manifest"),
        pytest.param(
            lambda d: _truncate(d / "data_iter" / "process_0-of-1.json", 5), id="torn-data_iter"
        ),
    ],
)
def test_each_kind_of_damage_falls_back_to_the_previous_step(
    trained, data_dir, tmp_path, damage, capsys
):
    import importlib.util

    from janus import loop, train

    workdir = _copy(trained, tmp_path)
    ckdir = workdir / "checkpoints"
    damage(ckdir / "20")
    spec = importlib.util.spec_from_file_location("cfg_mini", REPO / "configs" / "mini.py")
    mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mini)
    config = mini.get_config(f"root={data_dir},{SWEEP}")
    config.data.budget = 200
    config.input.pp = test_train.PP
    restored = {}

    def no_loop(run, model, opt, state, *, start, **_):  # the restore is what is tested
        restored["step"] = start
        return loop.TrainResult(start, state, {}, True)

    mp = pytest.MonkeyPatch()
    mp.setattr(loop, "train", no_loop)
    try:
        train.train_and_evaluate(config, str(workdir), allow_changes="all")
    finally:
        mp.undo()
    said = capsys.readouterr().out
    assert restored["step"] == 10
    assert f"{ckdir}/20 does not restore: " in said and f"resuming from {ckdir}/10" in said
    assert sorted(os.listdir(ckdir)) == ["10", "20.damaged"]
    assert ckpt_lib.list_complete_steps(workdir) == [10]
    rows = _history(workdir)
    assert [(r["event"], r["step"]) for r in rows] == [
        ("start", 0),
        ("damaged", 20),
        ("resume", 10),
    ]


def test_no_checkpoint_restores_exits_2_and_moves_nothing(trained, data_dir, env, tmp_path):
    workdir = _copy(trained, tmp_path)
    ckdir = workdir / "checkpoints"
    _cut_largest_data_file(ckdir / "20")
    os.remove(ckdir / "10" / "state" / "_METADATA")
    history = (workdir / "history.jsonl").read_bytes()

    out = run(command(data_dir, workdir, SWEEP), env)
    assert out.returncode == 2, out.stderr[-3000:]
    # The one line is there; orbax's event loop may still print its own noise at exit, but no
    # traceback runs through janus.
    said = [ln.strip() for ln in out.stderr.splitlines() if "janus.main: " in ln]
    assert len(said) == 1, out.stderr[-3000:]
    assert said[0].startswith(f"janus.main: no checkpoint in {ckdir} restores (steps 20, 10")
    log = workdir / "errors.log"  # the traceback is kept there, and the line names it
    assert said[0].endswith(f" (traceback: {log})") and "NoGoodCheckpoint" in log.read_text()
    assert "janus/" not in "".join(
        ln for ln in out.stderr.splitlines() if ln.strip().startswith("File")
    )
    assert sorted(os.listdir(ckdir)) == ["10", "20"]  # nothing moved, nothing lost
    assert (workdir / "history.jsonl").read_bytes() == history  # no resume recorded
    assert (workdir / "DONE").exists()
