"""Run safety, the way a user meets it: through `python -m janus.main` (and `janus.evaluate`).

- one writer per workdir: a second run exits 2 with one line naming the holder; a killed run's
  lock is taken over with a note; `janus.evaluate --watch` likewise (unit tests: the lease);
- config drift on resume: refused with the fields side by side (also another model: no orbax
  traceback), free fields pass, `--allow_config_change` records the change with its step, and
  config.json keeps describing the start;
- after a resume metrics.jsonl, TensorBoard and the eval results hold each step once;
- a process killed in the middle of writing a checkpoint: the previous one loads and is resumed.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
import test_train
from test_train import REPO, command, finish, metrics, run, start

from janus import checkpoint as ckpt_lib
from janus import workdir as workdir_lib

data_dir, env = test_train.data_dir, test_train.env  # the trainer tests' module fixtures


def _cmd(data_dir, workdir, sweep, *extra):
    return command(data_dir, workdir, sweep, *extra)


def _max_step(workdir):
    try:
        return max((r["step"] for r in metrics(workdir)), default=0)
    except (OSError, ValueError):
        return 0


def _wait(cond, proc, timeout=300, what=""):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before {what}: {proc.communicate()[1].decode()[-3000:]}")
        time.sleep(0.02)
    finish(proc, 0.1)
    pytest.fail(f"timed out waiting for {what}")


def _tb_scalars(workdir, tag):
    """The (step -> values) TensorBoard would show for `tag`: event files in order, and a
    SessionLog START at step p (purge_step) discards the earlier events at steps >= p."""
    from tensorboardX.proto import event_pb2

    seen: list[tuple[int, float]] = []
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            ev = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
                seen = [(s, v) for s, v in seen if s < ev.step]
            for v in ev.summary.value:
                if v.tag == tag:
                    seen.append((ev.step, v.simple_value))
    out: dict[int, list[float]] = {}
    for s, v in seen:
        out.setdefault(s, []).append(v)
    return out


# --------------------------------------------------------------------------------------------------
# 1 + 3: a second run is refused; a killed run's lock is taken over; the resume's rows are unique


def test_second_run_refused_killed_run_taken_over_rows_once(data_dir, env, tmp_path):
    from janus.evaluate import results

    workdir = tmp_path / "run"
    steps = 160
    cmd = _cmd(data_dir, workdir, f"steps={steps},res=32,batch=16",
               "--config.log.every_steps=1", "--config.checkpoint.every_steps=40")  # fmt: skip
    a = start(cmd, env)
    _wait(lambda: _max_step(workdir) >= 1, a, what="the first logged step")

    # A second run on the live workdir: status 2, one line naming host, pid and start time.
    b = run(cmd, env, timeout=180)
    assert b.returncode == 2, b.stderr[-3000:]
    lines = [ln for ln in b.stderr.splitlines() if ln.strip()]
    refusal = [ln for ln in lines if ln.startswith("janus.main:")]
    assert len(refusal) == 1 and "Traceback" not in b.stderr, b.stderr[-3000:]
    assert f"pid {a.pid}" in refusal[0] and socket.gethostname() in refusal[0]
    assert "started 20" in refusal[0]  # the holder's start time (UTC)

    # SIGKILL the first run after a checkpoint, with rows logged past it.
    def past_checkpoint():
        done = ckpt_lib.list_complete_steps(workdir)
        return bool(done) and _max_step(workdir) >= done[-1] + 5

    _wait(past_checkpoint, a, what="rows past a checkpoint")
    os.killpg(a.pid, signal.SIGKILL)
    finish(a, 60)
    assert (workdir / workdir_lib.LOCK_NAME).exists()  # left behind by the killed run
    restored = ckpt_lib.list_complete_steps(workdir)[-1]
    assert restored < steps and _max_step(workdir) > restored
    # Eval results of the steps the resume recomputes (as the in-loop hook writes them).
    for s in (restored, restored + 5):
        results.write_result(str(workdir), {"step": s, "classifier": "head", "loss": "ce",
                                            "sets": {}, "metrics": {}})  # fmt: skip

    c = run(cmd, env)
    assert c.returncode == 0, c.stderr[-3000:]
    assert "taking over the stale lock" in c.stdout and f"pid {a.pid} is gone" in c.stdout
    assert f"resuming from {ckpt_lib.checkpoints_dir(workdir)}/{restored}" in c.stdout
    assert not (workdir / workdir_lib.LOCK_NAME).exists()  # released at the end

    # metrics.jsonl: every step exactly once, in order.
    assert [r["step"] for r in metrics(workdir)] == list(range(1, steps + 1))
    # TensorBoard: one curve (the killed run's steps past the checkpoint are purged).
    loss = _tb_scalars(workdir, "loss")
    assert sorted(loss) == list(range(1, steps + 1))
    assert all(len(v) == 1 for v in loss.values())
    # Eval results: the recomputed step's row and JSON are gone, the restored step's stay.
    csv_rows = (workdir / "eval" / "results.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in csv_rows] == [str(restored)]
    assert (workdir / "eval" / f"{restored}.json").exists()
    assert not (workdir / "eval" / f"{restored + 5}.json").exists()
    history = [json.loads(x) for x in (workdir / "history.jsonl").read_text().splitlines()]
    assert [(h["event"], h["step"]) for h in history] == [("start", 0), ("resume", restored)]


# --------------------------------------------------------------------------------------------------
# 2: config drift on resume


def test_config_drift_on_resume(data_dir, env, tmp_path):
    workdir = tmp_path / "run"
    base = "res=32,batch=16"
    first = run(_cmd(data_dir, workdir, f"steps=20,{base}"), env)
    assert first.returncode == 0, first.stderr[-3000:]
    config_json = (workdir / "config.json").read_bytes()

    # Another learning rate: refused, old and new side by side; nothing written.
    out = run(_cmd(data_dir, workdir, f"steps=20,{base}", "--config.optimizer.lr=0.01"), env)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    lr_line = next(ln for ln in out.stderr.splitlines() if ln.strip().startswith("optimizer.lr"))
    assert lr_line.split()[1:] == ["0.002", "0.01"], lr_line
    assert "--allow_config_change=optimizer.lr" in out.stderr
    assert (workdir / "config.json").read_bytes() == config_json

    # Another model: the same clean refusal (no orbax traceback).
    out = run(_cmd(data_dir, workdir, f"steps=20,{base},arch=vit"), env)
    assert out.returncode == 2 and "model.name" in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "orbax" not in out.stderr

    # Periods may change freely.
    out = run(_cmd(data_dir, workdir, f"steps=20,{base}", "--config.log.every_steps=5",
                   "--config.checkpoint.every_steps=5"), env)  # fmt: skip
    assert out.returncode == 0 and "already trained" in out.stdout, out.stderr[-3000:]

    # More steps (another schedule): refused, then allowed with the flag the message names.
    longer = _cmd(data_dir, workdir, f"steps=30,{base}")
    out = run(longer, env)
    assert out.returncode == 2 and "total_steps" in out.stderr
    flag = next(w for w in out.stderr.split() if w.startswith("--allow_config_change="))
    out = run([*longer, flag], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ckpt_lib.list_complete_steps(workdir)[-1] == 30
    assert (workdir / "config.json").read_bytes() == config_json  # still how the run started
    history = [json.loads(x) for x in (workdir / "history.jsonl").read_text().splitlines()]
    assert [(h["event"], h["step"]) for h in history] == [
        ("start", 0), ("resume", 20), ("resume", 20),
    ]  # fmt: skip
    assert history[1]["changes"]["log.every_steps"] == {"old": 10, "new": 5}
    assert history[2]["changes"]["resolved.total_steps"] == {"old": 20, "new": 30}
    # The next resume compares with the checkpoint's config (30 steps): nothing to allow.
    out = run(longer, env)
    assert out.returncode == 0 and "already trained" in out.stdout, out.stderr[-3000:]


# --------------------------------------------------------------------------------------------------
# 5: killed in the middle of writing a checkpoint


def _tmp_checkpoints(workdir):
    d = ckpt_lib.checkpoints_dir(workdir)
    if not d.is_dir():
        return []
    return [p.name for p in d.iterdir() if not p.name.isdigit()]


def test_kill_during_checkpoint_write_resumes_from_previous(data_dir, env, tmp_path):
    workdir = tmp_path / "run"
    steps = 40
    cmd = _cmd(data_dir, workdir, f"steps={steps},res=32,batch=16",
               "--config.checkpoint.every_steps=1", "--config.checkpoint.keep=3",
               "--config.log.every_steps=50")  # fmt: skip
    for _attempt in range(5):
        p = start(cmd, env)
        ckdir = ckpt_lib.checkpoints_dir(workdir)
        # Kill the moment a checkpoint is being written (orbax's temporary directory exists).
        while p.poll() is None:
            if ckpt_lib.list_complete_steps(workdir) and _tmp_checkpoints(workdir):
                os.killpg(p.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        finish(p, 60)
        assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        if _tmp_checkpoints(workdir):  # killed mid-write (not just after the rename)
            break
    else:
        pytest.skip("could not kill a run in the middle of a checkpoint write")
    previous = ckpt_lib.list_complete_steps(workdir)[-1]
    # The previous complete checkpoint loads.
    _, variables, step = ckpt_lib.load_for_inference(workdir)
    assert step == previous and "params" in variables
    out = run([*cmd, "--config.checkpoint.every_steps=20"], env)  # a free change: fewer saves
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming from {ckdir}/{previous}" in out.stdout
    assert ckpt_lib.list_complete_steps(workdir)[-1] == steps
    assert not _tmp_checkpoints(workdir)


# --------------------------------------------------------------------------------------------------
# The lock itself; janus.evaluate --watch


HOLD = """
import sys, time
from janus import workdir
lock = workdir.WorkdirLock(sys.argv[1], name=sys.argv[2], what="test holder").acquire()
print("held", flush=True)
time.sleep(120)
"""


def _holder(directory, name=workdir_lib.LOCK_NAME):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), name], cwd=REPO,
                         stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    assert p.stdout.readline().strip() == b"held"
    return p


def test_lock_busy_dead_pid_and_expired_lease(tmp_path):
    d = tmp_path / "w"
    holder = _holder(d)
    try:
        with pytest.raises(workdir_lib.WorkdirBusy, match=f"pid {holder.pid}, started"):
            workdir_lib.WorkdirLock(d).acquire()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    notes = []
    with workdir_lib.WorkdirLock(d, log=notes.append):
        assert json.loads((d / "LOCK").read_text())["pid"] == os.getpid()
    assert "is gone" in notes[0] and not (d / "LOCK").exists()

    # Another host's lock (a shared filesystem): busy while its lease is fresh, then taken over.
    other = {"host": "elsewhere", "pid": 1, "start": time.time() - 100, "token": "x"}
    (d / "LOCK").write_text(json.dumps(other))
    with pytest.raises(workdir_lib.WorkdirBusy, match="host elsewhere, pid 1"):
        workdir_lib.WorkdirLock(d, lease_s=60).acquire()
    os.utime(d / "LOCK", (time.time() - 120, time.time() - 120))
    notes = []
    with workdir_lib.WorkdirLock(d, lease_s=60, log=notes.append):
        pass
    assert "lease expired" in notes[0]


def test_second_evaluate_watch_exits_2(tmp_path, env):
    workdir = tmp_path / "run"
    holder = _holder(workdir / "eval", "WATCH_LOCK")
    try:
        out = subprocess.run([sys.executable, "-m", "janus.evaluate", f"--workdir={workdir}",
                              "--watch", "--watch_timeout=1"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=180)  # fmt: skip
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"pid {holder.pid}" in out.stderr and "Traceback" not in out.stderr


def test_second_builder_on_one_out_is_refused(tmp_path):
    """The data builder holds <out>/.build_lock; janus.data.build reports a ValueError as
    `error: ...` with status 2, and WorkdirBusy is one."""
    import types

    from janus.data.ingest import builder

    out = tmp_path / "records"
    holder = _holder(out, ".build_lock")
    try:
        with pytest.raises(ValueError, match=f"pid {holder.pid}"):
            builder.build_dataset(types.SimpleNamespace(out=str(out)))
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def test_two_process_job_refused_on_a_held_workdir(data_dir, env, tmp_path):
    """Multi-host: process 0 takes the lock for the job; when it cannot, every process exits 2."""
    workdir = tmp_path / "two"
    holder = _holder(workdir)
    try:
        cmd = [sys.executable, str(REPO / "launch" / "local.py"), "--nproc", "2",
               "--devices-per-process", "4", "--",
               *_cmd(data_dir, workdir, "steps=10,res=32,batch=16")]  # fmt: skip
        out = run(cmd, env, timeout=240)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-4000:]
    assert f"pid {holder.pid}" in out.stderr and "Traceback" not in out.stderr
    assert not (workdir / "metrics.jsonl").exists() and not (workdir / "checkpoints").exists()


def test_watch_reevaluates_a_step_whose_result_a_resume_dropped(tmp_path):
    """--watch re-reads the evaluated steps every poll: a result the resumed trainer removed
    (its step is recomputed) is evaluated again instead of counting as done."""
    import types

    import numpy as np

    from janus.evaluate import results, watch

    workdir = tmp_path / "run"
    for s in (10, 20):
        ckpt_lib.save_for_inference(workdir, s, {"loss": "ce"}, {"params": {"w": np.ones(2)}})
    stale = {"step": 20, "classifier": "head", "loss": "ce", "sets": {"val": {}}, "metrics": {}}
    results.write_result(str(workdir), stale)
    seen = []

    def evaluate_step(wd, step):
        seen.append(step)
        if step == 10:  # meanwhile the trainer resumes at 10: step 20's result is dropped
            results.drop_results_after(wd, 10)
        if step == 20:  # ... and the trainer goes on to its last step
            ckpt_lib.save_for_inference(wd, 30, {"loss": "ce"}, {"params": {"w": np.ones(2)}})
        return {**stale, "step": step}

    ev = types.SimpleNamespace(opts=types.SimpleNamespace(classifier="head", label_set=None))
    ev.evaluate_step = evaluate_step
    assert watch.watch(ev, str(workdir), final_step=30, poll=0.01, timeout=30) == [10, 20, 30]
    assert seen == [10, 20, 30] and not (workdir / "eval" / watch.WATCH_LOCK).exists()


def test_reused_pid_lock_is_taken_over(tmp_path):
    """A lock naming a live pid of this host that holds no flock on it (the pid was reused)."""
    d = tmp_path / "w"
    d.mkdir()
    mine = {"host": socket.gethostname(), "pid": os.getppid(), "start": 0, "token": "x"}
    (d / "LOCK").write_text(json.dumps(mine))
    os.utime(d / "LOCK", (time.time() - 60, time.time() - 60))
    notes = []
    with workdir_lib.WorkdirLock(d, log=notes.append):
        pass
    assert "pid reused" in notes[0]


def test_dropping_metrics_rows_is_atomic(tmp_path, monkeypatch):
    """A crash while metrics.jsonl is rewritten loses nothing: the old file stays whole."""
    from janus import fileio, run_records

    rows = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6))
    (tmp_path / "metrics.jsonl").write_text(rows + '{"step": 6, "lo')  # a killed run's half line

    def crash(*a):
        raise OSError("killed")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError):
        run_records.drop_rows_after(str(tmp_path), 3)
    assert (tmp_path / "metrics.jsonl").read_text() == rows + '{"step": 6, "lo'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary left
    monkeypatch.undo()
    run_records.drop_rows_after(str(tmp_path), 3)
    assert [r["step"] for r in metrics(tmp_path)] == [1, 2, 3]


def test_fields_added_later_at_their_off_value_do_not_refuse_an_older_runs_resume(tmp_path):
    from janus import run_records

    class NoCheckpoint:  # the stored config then comes from config.json
        directory = tmp_path / "checkpoints"

    old = {"optimizer": {"lr": 0.1}, "input": {"batch_size": 8}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    now = {"optimizer": {"lr": 0.1, "ema_decay": 0.0}, "input": {"batch_size": 8, "mixup": 0.0}}
    changes = run_records.check_resume(str(tmp_path), NoCheckpoint, 10, now, allow_changes="")
    assert changes == {"input.mixup": ("<unset>", 0.0), "optimizer.ema_decay": ("<unset>", 0.0)}
    # Turned on at resume, the same field changes the experiment.
    on = {**now, "optimizer": {"lr": 0.1, "ema_decay": 0.999}}
    with pytest.raises(run_records.RunRefused, match="optimizer.ema_decay"):
        run_records.check_resume(str(tmp_path), NoCheckpoint, 10, on, allow_changes="")
