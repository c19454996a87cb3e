"""Unwritable places fail at start, in one line (docs/training.md, "Run safety"): a workdir,
checkpoints/ or eval/ where no file can be made ends `janus.main` with exit 2 before compiling,
naming the directory and the OS error; checkpoints/ made read-only mid-run ends it within seconds
at the next save (exit 1, one line), the checkpoints already saved kept.

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


@pytest.mark.xfail(
    strict=False,
    reason="known race, seen in 1 of 2 full CI runs: checkpoints/ made read-only between the "
    "save's probe and orbax's own write leaves the run waiting on orbax (issue 26 item 3)",
)
def test_checkpoints_made_read_only_mid_run_end_it_at_the_next_save(
    as_user, data_dir, env, tmp_path
):
    workdir = tmp_path / "run"
    ckdir = workdir / "checkpoints"
    p = start([*as_user, *command(data_dir, workdir, "steps=40,res=32,batch=16")], env)
    end = time.time() + 300
    while ckpt_lib.list_complete_steps(workdir) != [10]:
        assert p.poll() is None and time.time() < end, "ended or stalled before checkpoint 10"
        time.sleep(0.02)
    ckdir.chmod(0o555)
    t = time.time()
    try:
        _, stderr = finish(p, 120)
    finally:
        ckdir.chmod(0o755)
    stderr = stderr.decode()
    assert p.returncode == 1, stderr[-3000:]
    assert time.time() - t < 60
    last = stderr.strip().splitlines()[-1]
    # The save after the chmod, refused at once (20); or 20 failing in orbax's thread, named at the
    # next save, when it had started before the chmod.
    step = int(last.split()[2]) if last.startswith("janus.main: checkpoint ") else None
    assert step == 20 and str(ckdir) in last and "Permission denied" in last, last
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
