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
