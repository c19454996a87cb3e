"""Damaged and incomplete records (docs/training.md, "Run safety"; issue 26 item 8): each fault on
the tiny JANuS-mini of tests/test_run_agreement.py, under a workdir that already holds checkpoint 2
of a 4-step run, which `python -m janus.main` then resumes.

- flipped bytes inside a shard (a payload CRC mismatch, found reading a batch), a truncated shard,
  a missing shard, a swapped index (shard A's `.index` beside shard B) and a missing or invalid
  `info.json`: exit 2 and one line on stderr naming the file; the traceback, where the run held its
  workdir, in `<workdir>/errors.log`; checkpoint 2 kept;
- a missing `.index` and a missing `manifest.arrow` (one run): one warning each naming the file
  (for the manifest, the slow path's cost and the convert command), then the run trains to the
  end.

One records copy at a fixed path (the resume's config names it) is restored before each case.
"""

import shutil
import sys

import pytest
import test_run_agreement
import test_train
from test_train import PP, REPO, run

from janus import checkpoint as ckpt_lib
from janus.data import tfrecord

records, env = test_run_agreement.records, test_train.env  # module fixtures: 20 samples, 2 shards
S0, S1 = "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"


def _command(rec, workdir, *extra):
    return [
        sys.executable, "-m", "janus.main",
        f"--config={REPO}/configs/mini.py:steps=4,res=32,batch=8",
        f"--workdir={workdir}",
        "--config.data.prepare=none",
        f"--config.data.train={rec}",
        "--config.label_set=mini10",
        "--config.data.budget=16",
        f"--config.input.pp={PP}",
        "--config.checkpoint.every_steps=2",
        "--config.log.every_steps=2",
        "--noinloop_eval",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def half_run(records, env, tmp_path_factory):
    """(records copy, workdir stopped at its checkpoint 2 of 4)."""
    base = tmp_path_factory.mktemp("faults_records")
    rec, workdir = base / "rec", base / "run"
    shutil.copytree(records, rec)
    out = run(_command(rec, workdir, "--config.stop_after_steps=2"), env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ckpt_lib.list_complete_steps(workdir) == [2]
    return rec, workdir


@pytest.fixture
def case(half_run, records, tmp_path):
    """-> (pristine records at the run's path, a copy of the half-run's workdir)."""
    rec, workdir = half_run
    shutil.rmtree(rec)
    shutil.copytree(records, rec)
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    return rec, copy


def _resume(rec, workdir, env):
    return run(_command(rec, workdir), env)


def _lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.strip()]


def _flip_a_byte_in_every_record(shard):
    data = bytearray(shard.read_bytes())
    for offset in tfrecord.read_index(shard):
        length = int.from_bytes(data[offset : offset + 8], "little")
        data[offset + 12 + length // 2] ^= 0xFF  # inside the payload: its CRC no longer matches
    shard.write_bytes(bytes(data))


def _truncate_to_half(shard):
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)


def _swap_indexes(rec):
    a, b = rec / f"{S0}.index", rec / f"{S1}.index"
    ia, ib = a.read_bytes(), b.read_bytes()
    a.write_bytes(ib)
    b.write_bytes(ia)


FAILS = [
    pytest.param(
        lambda rec: _flip_a_byte_in_every_record(rec / S0),
        S0,
        "payload CRC mismatch",
        True,
        id="flipped-bytes",
    ),
    pytest.param(
        lambda rec: _truncate_to_half(rec / S0),
        S0,
        f"its index {S0}.index expects",
        True,
        id="truncated-shard",
    ),
    pytest.param(lambda rec: (rec / S1).unlink(), S1, "1 of 2 shards missing", True, id="shard"),
    pytest.param(_swap_indexes, S0, f"its index {S0}.index expects", True, id="swapped-index"),
    pytest.param(lambda rec: (rec / "info.json").unlink(), "info.json", "", False, id="info"),
    pytest.param(
        lambda rec: (rec / "info.json").write_text("{not json"),
        "info.json",
        "cannot be read",
        False,
        id="invalid-info",
    ),
]


@pytest.mark.parametrize("damage, named, why, logged", FAILS)
def test_damaged_records_stop_the_run_in_one_line_naming_the_file(
    case, env, damage, named, why, logged
):
    rec, workdir = case
    damage(rec)
    history = (workdir / "history.jsonl").read_text()
    out = _resume(rec, workdir, env)
    assert out.returncode == 2, out.stderr[-3000:]
    said = _lines(out.stderr)
    assert len(said) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    line, log = said[0], workdir / "errors.log"
    assert line.startswith("janus.main: ") and str(rec) in line and named in line, line
    assert why in line, line
    # The traceback where the run held its workdir (a records error found at config check comes
    # before that: the line is all).
    assert line.endswith(f" (traceback: {log})") == logged == log.is_file(), line
    if logged:
        assert "Traceback (most recent call last)" in log.read_text()
    assert ckpt_lib.list_complete_steps(workdir) == [2]  # nothing saved is lost
    if "CRC" not in why:  # found before the state is restored: no resume recorded
        assert (workdir / "history.jsonl").read_text() == history


def test_a_missing_index_and_arrow_manifest_are_one_warning_each_then_the_run_trains(case, env):
    # Both in one run (each names its own file): the recoverable faults share the compile.
    rec, workdir = case
    (rec / f"{S0}.index").unlink()
    (rec / "manifest.arrow").unlink()
    out = _resume(rec, workdir, env)
    assert out.returncode == 0, out.stderr[-3000:]
    index = [ln for ln in _lines(out.stderr) if "index is missing" in ln]
    assert len(index) == 1 and f"{rec / S0}.index is missing" in index[0], out.stderr[-3000:]
    assert "scanned the shard for its 10 record offsets" in index[0], index
    arrow = [ln for ln in _lines(out.stderr) if "manifest.arrow" in ln]
    assert len(arrow) == 1, out.stderr[-3000:]
    assert f"{rec} has no manifest.arrow" in arrow[0] and "per million samples" in arrow[0], arrow
    assert f"`python -m janus.data.manifest convert {rec}`" in arrow[0], arrow
    assert ckpt_lib.list_complete_steps(workdir)[-2:] == [2, 4]
    assert (workdir / "DONE").exists()
