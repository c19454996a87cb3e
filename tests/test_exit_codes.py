"""One exit-code table (janus/exit_codes.py): every command's --help ends with it, and
docs/training.md holds the same rows."""

import pathlib
import subprocess
import sys

import pytest

from janus import exit_codes, loop

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module", ["janus.main", "janus.evaluate", "janus.sweep", "janus.data.build"]
)
def test_every_command_shows_the_table_in_its_help(module):
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert exit_codes.epilog() in out.stdout


def test_the_docs_hold_the_same_table():
    assert exit_codes.markdown() in (ROOT / "docs" / "training.md").read_text()


def test_ctrl_c_is_the_tables_130():
    assert loop.INTERRUPTED_EXIT == exit_codes.INTERRUPTED == 130


def test_expected_failures_are_one_line_with_their_status():
    from janus import checkpoint as ckpt_lib
    from janus import main, train
    from janus.data import records
    from janus.data.tfrecord import CorruptRecordError

    cases = {
        KeyboardInterrupt(): exit_codes.INTERRUPTED,
        train.RunRefused("refusing to train: x"): exit_codes.EXPECTED_FAILURE,
        CorruptRecordError("/r/train-00000-of-00001.tfrecord", 7, "payload CRC mismatch"): 2,
        records.MissingShardsError("split 'train' in /r: 1 of 2 shards missing: ..."): 2,
        ckpt_lib.SaveFailed("checkpoint 20 not saved in /w/checkpoints: ..."): exit_codes.ERROR,
    }
    for e, status in cases.items():
        got = main.expected_failure(e)
        assert got is not None and got[0] == status and "\n" not in got[1], (e, got)
    _, line = main.expected_failure(list(cases)[2])
    assert line == (
        "damaged records: /r/train-00000-of-00001.tfrecord: corrupt record at byte offset 7: "
        "payload CRC mismatch; rebuild them with the command in their info.json"
    )
    assert main.expected_failure(ValueError("a bug")) is None  # unexpected: traceback, status 1


def test_the_traceback_log_is_kept_only_in_a_workdir_this_process_held(tmp_path):
    from janus import workdir as workdir_lib

    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    theirs.mkdir()
    with workdir_lib.held(mine):
        pass
    assert workdir_lib.held_here(mine) and not workdir_lib.held_here(theirs)
    for text in ("Traceback 1", "Traceback 2"):
        path = workdir_lib.append_error_log(mine, text, command="python -m janus.main")
    assert path == str(mine / workdir_lib.ERROR_LOG)
    entries = (mine / "errors.log").read_text().split("\n\n")
    assert entries[0].startswith("=== ") and entries[0].endswith("janus.main\nTraceback 1")
    assert entries[1].endswith("Traceback 2") and entries[2] == ""
    assert workdir_lib.append_error_log(tmp_path / "missing", "x") is None  # never makes a dir
    assert workdir_lib.append_error_log(mine, "x", process_index=3).endswith("errors.process3.log")


def test_an_evaluator_crash_keeps_its_traceback_in_the_workdir(tmp_path, monkeypatch, capsys):
    from janus.evaluate import __main__ as evaluate

    def crash(argv):
        raise RuntimeError("what no check foresaw")

    monkeypatch.setattr(evaluate, "main", crash)
    assert evaluate.run(["--workdir", str(tmp_path)]) == exit_codes.ERROR
    err = capsys.readouterr().err
    log = tmp_path / "errors.log"
    assert "RuntimeError: what no check foresaw" in err and "RuntimeError" in log.read_text()
    assert err.rstrip().endswith(f"janus.evaluate: the traceback above is also in {log}")
