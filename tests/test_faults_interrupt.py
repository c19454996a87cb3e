"""Ctrl-C saves like SIGTERM (docs/training.md, "Run safety"): the first SIGINT to the run's
process group (what a terminal sends) saves a checkpoint at the end of the step and exits 130 within
seconds, with no traceback; the saved step resumes to the end. A second SIGINT ends the process at
once, also 130 (a subprocess with the loop's `StopFlag`: deterministic, no training).
"""

import json
import os
import signal
import subprocess
import sys
import time

import test_train
from test_train import REPO, command, finish, run, start

from janus import checkpoint as ckpt_lib

data_dir, env = test_train.data_dir, test_train.env  # the trainer tests' module fixtures


def _logged_step(workdir):
    try:
        return max(json.loads(x)["step"] for x in open(workdir / "metrics.jsonl"))
    except (OSError, ValueError):
        return 0


def test_first_ctrl_c_saves_the_step_reached_and_exits_130(data_dir, env, tmp_path):
    workdir = tmp_path / "run"
    cmd = command(data_dir, workdir, "steps=40,res=32,batch=16", "--config.log.every_steps=5")
    p = start(cmd, env)
    end = time.time() + 300
    while _logged_step(workdir) < 25:  # past checkpoint 20, before 30
        assert p.poll() is None and time.time() < end, "ended or stalled before step 25"
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    t = time.time()
    stdout, stderr = (s.decode() for s in finish(p, 120))
    assert p.returncode == 130, stderr[-3000:]
    assert time.time() - t < 30
    saved = ckpt_lib.list_complete_steps(workdir)
    assert 25 <= saved[-1] < 40 and saved[-1] % 10, saved  # the step reached, not a periodic one
    assert f"stopped by SIGINT at step {saved[-1]} (checkpoint saved)" in stdout
    assert "SIGINT: saving a checkpoint at the end of this step" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not (workdir / "DONE").exists()

    out = run(cmd, env)  # resumes from the saved step to the end
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming from {ckpt_lib.checkpoints_dir(workdir)}/{saved[-1]}" in out.stdout
    assert (workdir / "DONE").exists()


SECOND = """
import os, signal, time
from janus import loop
stop = loop.StopFlag().install()
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.1)
assert stop.event.is_set() and stop.reason == "SIGINT"
print("flag set", flush=True)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(5)
print("still running", flush=True)
"""


def test_second_ctrl_c_exits_at_once_with_130():
    out = subprocess.run(
        [sys.executable, "-c", SECOND], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 130, out.stderr
    assert out.stdout == "flag set\n"  # the sleep after the second Ctrl-C never ended
    assert "second Ctrl-C: exiting at once" in out.stderr and "Traceback" not in out.stderr
