"""Unwritable places fail at start, in one line (docs/training.md, "Run safety"): a workdir,
checkpoints/ or eval/ where no file can be made ends `janus.main` with exit 2 before compiling,
naming the directory and the OS error; checkpoints/ made read-only mid-run, even between a save's
probe and orbax's own mkdir, ends it within seconds at that save (exit 1, one line, the traceback
in errors.log), the checkpoints already saved kept.

Tests run as root, whom permissions do not stop: the runs drop the capabilities that let root
write anywhere (`setpriv`, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), as a user's job has none.
"""

import shutil
import subprocess
import sys
import time

import pytest
import test_train
from test_train import command, finish, run, start

from janus import checkpoint as ckpt_lib

data_dir, env = test_train.data_dir, test_train.env  # the trainer tests' module fixtures
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
          "--inh-caps", "-dac_override,-dac_read_search"]  # fmt: skip


@pytest.fixture(scope="module")
def as_user(tmp_path_factory):
    """The prefix that runs a command without root's permission overrides (skips if impossible)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop root's DAC override")
    ro = tmp_path_factory.mktemp("ro")
    ro.chmod(0o555)
    probe = f"open({str(ro / 'x')!r}, 'w')"
    out = subprocess.run([*NO_DAC, sys.executable, "-c", probe], capture_output=True, text=True)
    if out.returncode == 0 or "Permission denied" not in out.stderr:
        pytest.skip(f"dropping CAP_DAC_OVERRIDE did not stop a write here: {out.stderr[-300:]}")
    return NO_DAC


@pytest.mark.parametrize("where", ["", "checkpoints", "eval"])
def test_unwritable_directory_is_refused_before_compiling(as_user, data_dir, env, tmp_path, where):
    workdir = tmp_path / "run"
    target = workdir / where
    target.mkdir(parents=True)
    target.chmod(0o555)
    t = time.time()
    out = run([*as_user, *command(data_dir, workdir, "steps=20,res=32,batch=16")], env)
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last == (
        f"janus.main: refusing to train: {str(target).rstrip('/')} is not writable: "
        "[Errno 13] Permission denied"
    ), last
    assert "Traceback" not in out.stderr and "setup+compile" not in out.stdout
    assert time.time() - t < 120


# janus.main, with checkpoints/ made read-only right after the save of step 20 has probed it: the
# race a chmod from outside could only hit by chance (orbax's own mkdir is what is refused).
PROBE_THEN_LOCK = """
import os
from absl import app
from janus import main, workdir
probe = workdir.not_writable
def probe_then_lock(d):
    found = probe(d)
    if os.path.basename(str(d)) == "checkpoints" and os.path.isdir(os.path.join(d, "10")):
        os.chmod(d, 0o555)
    return found
workdir.not_writable = probe_then_lock
app.run(main.main, flags_parser=main.parse_flags)
"""


def test_checkpoints_made_read_only_after_the_probe_end_the_run_at_that_save(
    as_user, data_dir, env, tmp_path
):
    workdir = tmp_path / "run"
    ckdir = workdir / "checkpoints"
    cmd = command(data_dir, workdir, "steps=40,res=32,batch=16")
    assert cmd[1:3] == ["-m", "janus.main"]
    p = start([*as_user, cmd[0], "-c", PROBE_THEN_LOCK, *cmd[3:]], env)
    try:
        _, stderr = finish(p, 200)  # orbax's wait, were it back, is 300 s: fails with the stacks
    finally:
        if ckdir.is_dir():
            ckdir.chmod(0o755)
    stderr = stderr.decode()
    assert p.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    log = workdir / "errors.log"
    assert last.startswith(f"janus.main: checkpoint 20 not saved in {ckdir}: PermissionError: "), (
        last
    )
    assert "Permission denied" in last and last.endswith(f"(traceback: {log})"), last
    assert "Traceback" not in stderr and "step_directory_creation" not in stderr
    assert "SaveFailed" in log.read_text()
    assert ckpt_lib.list_complete_steps(workdir) == [10]  # what was saved is kept


THREAD_FAILS = """
import os, sys, numpy as np
from janus import checkpoint as c
ck = c.Checkpointer(sys.argv[1], keep=5)
state = {"step": np.asarray(1), "params": {"w": np.ones((256, 256), np.float32)}}
ck.save(1, state)
ck.wait()
ck.save(2, state)  # asynchronous: orbax renames its temporary directory in its thread
os.chmod(ck.directory, 0o555)
try:
    ck.wait()
except c.SaveFailed as e:
    print(e)
os.chmod(ck.directory, 0o755)
ck.close()  # the failure was raised already: closes quietly
print("steps", c.list_complete_steps(sys.argv[1]))
"""


def test_a_save_failing_in_orbaxs_thread_is_raised_in_one_line(as_user, tmp_path):
    out = subprocess.run([*as_user, sys.executable, "-c", THREAD_FAILS, str(tmp_path)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout.splitlines()
    ckdir = tmp_path / "checkpoints"
    assert said[0].startswith(f"checkpoint 2 not saved in {ckdir}: PermissionError: "), said
    assert "Permission denied" in said[0] and said[1] == "steps [1]"
