"""launch/slurm.sbatch on a real SLURM 22.05 (CPU only), with janus.main training for real.

The cluster is tests/slurm/cluster.sh's (Debian's slurm-wlm and munge; .ci/run starts it before
the tests): one host, two nodes (two slurmd), so `--nodes=2` is a real two-node allocation. The
`slurm` fixture uses a running one, or starts it when the packages are installed and this is root,
and stops only what it started; otherwise every test here is skipped with the reason.
Jobs are submitted as a user would: `sbatch <CPU overrides> launch/slurm.sbatch <janus.main args>`
from a temp dir (so the script's default `--output` is used), with VENV = this python's venv, on
JANuS-mini (tests/conftest.py `mini_v2`), 2 CPU devices per job unless a test says otherwise.
Every wait is bounded; a failure shows the job's log and `scontrol show job`.

- a run to DONE with its eval JSON (the reference of the next tests);
- preempted twice, once by `scancel --signal=TERM` (SLURM signals the steps' tasks: what
  `--signal=TERM@120` does before the time limit) and once by `scancel --batch --signal=TERM` (the
  batch shell's trap has SLURM signal the steps): each time janus saves, the script requeues, the
  job resumes; the log keeps all three segments; final state and eval JSON bitwise the reference's;
- stopped by the time limit: `--time=3` with the script's `--signal=TERM@120`, signalled by
  slurmctld's own time-limit check (its log says so; no scancel), requeued once, resumed, DONE;
  final state and eval JSON bitwise the reference's;
- a requeued job whose newest checkpoint is damaged resumes from the previous one;
- 2 nodes x 1 task, 1 CPU device each (explicit JANUS_* coordinates from the script) = 1 process
  x 2 devices (1 node x 2 tasks where the cluster has one node);
- an array of 2 (`--sweep`), then `janus.sweep --dry_run` lists both runs as done;
- a bad config: janus exits 2, the job FAILED once, never requeued; a missing venv: exit 2 and one
  line naming it;
- the environment the script computes for 2 tasks on 2 nodes and on 1 node (JANUS_* per task),
  with a stand-in python.
The cluster has cred_expire=10 (tests/slurm/cluster.sh), so a requeued job waits about 11 s
before it starts again instead of SLURM's default 121 s.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_train import assert_bitwise_equal, full_state, metrics

from janus import checkpoint as ckpt_lib

pytestmark = pytest.mark.slurm

REPO = pathlib.Path(__file__).resolve().parents[1]
SBATCH = REPO / "launch" / "slurm.sbatch"
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_DIR = pathlib.Path(os.environ.get("JANUS_SLURM_DIR", "/tmp/janus-slurm"))
PP = "decode|rrc(32,scale=(0.35,1.0))|flip|normalize"
STEPS = 40
CPU = ["--gpus-per-node=0", "--cpus-per-task=1"]  # the docs' CPU-cluster overrides


def _cluster(env, action, timeout=120):
    return subprocess.run(
        ["bash", str(CLUSTER_SH), action], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def slurm():
    """The environment for sbatch/scontrol/scancel (SLURM_CONF of the test cluster)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JANUS_"))}
    env.update(SLURM_CONF=str(SLURM_DIR / "etc" / "slurm.conf"), JANUS_SLURM_DIR=str(SLURM_DIR))
    started = False
    if _cluster(env, "status").returncode != 0:
        missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(c)]
        if missing:
            pytest.skip(f"no SLURM here ({', '.join(missing)} missing): apt-get install slurm-wlm "
                        "munge, then bash tests/slurm/cluster.sh start")  # fmt: skip
        if os.geteuid() != 0:
            pytest.skip("the test cluster's daemons must run as root (tests/slurm/cluster.sh)")
        r = _cluster(env, "start")
        assert r.returncode == 0, f"tests/slurm/cluster.sh start failed:\n{r.stdout}{r.stderr}"
        started = True
    yield env
    if started:
        _cluster(env, "stop")


def nodes(env) -> set[str]:
    r = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N"], env=env, capture_output=True, text=True, timeout=30
    )
    return set(r.stdout.split())


def need_nodes(env, n):
    if len(nodes(env)) < n:
        pytest.skip(f"the test cluster has fewer than {n} nodes (tests/slurm/cluster.sh)")


def job_env(slurm, devices=2, **kw):
    """A user's environment at submission (sbatch exports it to the job): the venv of this python,
    CPU jax with `devices` devices, the session's XLA compilation cache."""
    env = dict(slurm, VENV=sys.prefix, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.update(kw)
    return env


def janus_args(data_dir, workdir, *extra):
    return [
        f"--config={REPO}/configs/mini.py:root={data_dir},steps={STEPS},res=32,batch=16",
        f"--workdir={workdir}", "--config.data.budget=200", f"--config.input.pp={PP}",
        "--config.log.every_steps=5", "--config.checkpoint.every_steps=5",
        "--config.checkpoint.keep=2", *extra,
    ]  # fmt: skip


class Jobs:
    """Submits jobs and waits for them, boundedly; cancels what is left at the end."""

    def __init__(self, env, cwd):
        self.env, self.cwd, self.ids = env, cwd, []

    def submit(self, *args, env=None):
        r = subprocess.run(
            ["sbatch", "--parsable", *args], cwd=self.cwd, env=env or self.env,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        job = int(r.stdout.strip().split(";")[0])
        self.ids.append(job)
        return job

    def info(self, job) -> list[dict]:
        """`scontrol show job -o` as dicts, one per job (several for an array)."""
        r = subprocess.run(
            ["scontrol", "show", "job", "-o", str(job)], env=self.env, capture_output=True,
            text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in r.stdout.splitlines() if line]

    def logs(self) -> str:
        return "\n".join(f"--- {p}\n{p.read_text()[-6000:]}" for p in self.cwd.glob("slurm-*.out"))

    def fail(self, job, what):
        subprocess.run(["scancel", str(job)], env=self.env, timeout=30)
        info = "\n".join(str(i) for i in self.info(job))
        pytest.fail(f"job {job}: {what}\n{info}\n{self.logs()}")

    def wait(self, job, until, what, timeout=300):
        """Polls until until(info of the job's first entry) holds; fails with the logs."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            infos = self.info(job)
            if until(infos[0]) if len(infos) == 1 else until(infos):
                return infos[0] if len(infos) == 1 else infos
            time.sleep(0.5)
        self.fail(job, f"not {what} after {timeout} s")

    def finish(self, job, timeout=300):
        """Waits for the end; the job's record."""
        return self.wait(job, lambda i: ended(i), "ended", timeout)

    def cancel_all(self):
        for job in self.ids:
            subprocess.run(["scancel", str(job)], env=self.env, capture_output=True, timeout=30)


def _time(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def ended(info) -> bool:
    infos = info if isinstance(info, list) else [info]
    return all(i["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for i in infos)


@pytest.fixture
def jobs(slurm, tmp_path):
    js = Jobs(job_env(slurm), tmp_path)
    yield js
    js.cancel_all()


def segments(log: str) -> list[str]:
    """The script's one line per segment of a job."""
    return re.findall(r"^slurm\.sbatch: job .*$", log, re.M)


def history(workdir) -> list[dict]:
    return [json.loads(x) for x in (workdir / "history.jsonl").read_text().splitlines()]


def _state(pid) -> str:
    """The process's state letter (T: stopped), or "" once it is gone."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def eval_json(workdir):
    [path] = (workdir / "eval").glob("*.json")
    return json.loads(path.read_text())


def wait_requeued(jobs, job, restarts, timeout=120):
    """Waits until the job is PENDING with `restarts` restarts (requeued, in SLURM's hold)."""
    requeued = lambda i: i["Restarts"] == str(restarts) and i["JobState"] == "PENDING"
    info = jobs.wait(job, lambda i: requeued(i) or ended(i), "requeued", timeout)
    if not requeued(info):
        jobs.fail(job, f"ended instead of being requeued (restart {restarts})")
    return info


def assert_ends_as_the_uninterrupted_run(workdir, ref_dir, stops):
    """Parameters, BN statistics, optimizer and evaluation bitwise the reference's; metrics.jsonl
    has a row at each stop, and the first row after a resume averages fewer steps
    (docs/launching.md): same state, different rows where the window spanned a stop."""
    assert_bitwise_equal(full_state(workdir, STEPS), full_state(ref_dir, STEPS))
    ours, ref = eval_json(workdir), eval_json(ref_dir)
    assert ours["step"] == STEPS and ours["sets"]["val"]["n"] > 0
    assert ours == ref  # every accuracy, bit for bit (same JSON floats)
    ref_steps = [r["step"] for r in metrics(ref_dir) if "loss" in r]
    assert [r["step"] for r in metrics(workdir) if "loss" in r] == sorted({*ref_steps, *stops})


@pytest.fixture(scope="module")
def reference(slurm, mini_v2, tmp_path_factory):
    """An uninterrupted run to DONE under SLURM, with the in-loop evaluation at its end."""
    d = tmp_path_factory.mktemp("slurm_ref")
    js = Jobs(job_env(slurm), d)
    try:
        job = js.submit(*CPU, str(SBATCH), *janus_args(mini_v2, d / "run", "--inloop_eval"))
        info = js.finish(job, timeout=400)
    finally:
        js.cancel_all()
    log = (d / f"slurm-janus-{job}.out").read_text()  # the script's default --output
    if info["JobState"] != "COMPLETED":
        js.fail(job, "did not complete")
    return d / "run", job, info, log


def test_a_run_ends_done_with_its_eval(reference):
    workdir, job, info, log = reference
    assert info["ExitCode"] == "0:0" and info["Restarts"] == "0"
    assert json.loads((workdir / "DONE").read_text())["step"] == STEPS
    result = json.loads((workdir / "eval" / f"{STEPS}.json").read_text())
    assert result["step"] == STEPS and set(result["sets"]) >= {"val", "sketch"}
    [line] = segments(log)
    assert line.startswith(f"slurm.sbatch: job {job}, restart 0, ")
    assert line.endswith(f"workdir {workdir}: no checkpoint")
    assert f"done at step {STEPS}" in log
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["resolved"]["num_processes"] == 1 and cfg["resolved"]["num_devices"] == 2


def test_preempted_twice_requeues_and_ends_as_the_uninterrupted_run(reference, jobs, mini_v2):
    """scancel --signal=TERM (to the steps), then scancel --batch --signal=TERM (to the batch
    shell, whose trap has SLURM signal the steps): each time janus saves and exits 0, the script
    requeues, and the job resumes from the checkpoint; the log is appended to, one line per
    segment; the end is bitwise the uninterrupted run's."""
    ref_dir = reference[0]
    workdir = jobs.cwd / "run"
    job = jobs.submit(*CPU, str(SBATCH), *janus_args(mini_v2, workdir, "--inloop_eval"))
    log = jobs.cwd / f"slurm-janus-{job}.out"
    stops = []
    for restart, scancel in enumerate([["--signal=TERM"], ["--batch", "--signal=TERM"]]):
        after = stops[-1] if stops else 0
        deadline = time.time() + 300
        while not [s for s in ckpt_lib.list_complete_steps(workdir) if s > after]:
            if time.time() > deadline or ended(jobs.info(job)[0]):
                jobs.fail(job, f"no checkpoint after step {after} in segment {restart}")
            time.sleep(0.1)
        r = subprocess.run(["scancel", *scancel, str(job)], env=jobs.env, timeout=30)
        assert r.returncode == 0
        info = wait_requeued(jobs, job, restart + 1)
        stops.append(ckpt_lib.list_complete_steps(workdir)[-1])
        assert stops[-1] < STEPS and not (workdir / "DONE").exists(), "finished before the signal"
        # SLURM's hold after a requeue: cred_expire (10 s on the test cluster) + 1 s. Not to be
        # cut short (`scontrol update JobId=N StartTime=now` got "Killing non-startable batch
        # JobId=N: Job credential revoked" here, the job FAILED): docs/launching.md.
        held = _time(info["EligibleTime"]) - _time(info["SubmitTime"])
        assert 10 <= held <= 30, info
    info = jobs.finish(job, timeout=300)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "2", jobs.logs()
    text = log.read_text()
    lines = segments(text)
    assert [re.search(r"restart (\d+)", line)[1] for line in lines] == ["0", "1", "2"], text
    assert lines[0].endswith("no checkpoint")
    assert [int(line.rsplit(" ", 1)[1]) for line in lines[1:]] == stops, lines
    assert text.count("stopped by SIGTERM") == 2 and text.count("resuming from") == 2
    assert_ends_as_the_uninterrupted_run(workdir, ref_dir, stops)


def test_time_limit_signal_requeues_and_ends_as_the_uninterrupted_run(reference, jobs, mini_v2):
    """`sbatch --time=3 launch/slurm.sbatch ...` with the script's own `#SBATCH --signal=TERM@120`:
    slurmctld's time-limit check sends SIGTERM to the step 120 s (up to 150 s) before the end,
    janus saves and exits 0, the script requeues, the job resumes and ends DONE, bitwise the
    uninterrupted run. No scancel: slurmctld's log names the warning signal, and no kill request."""
    [warn] = map(int, re.findall(r"^#SBATCH --signal=TERM@(\d+)$", SBATCH.read_text(), re.M))
    ref_dir = reference[0]
    workdir = jobs.cwd / "run"
    ctld_log = SLURM_DIR / "log" / "slurmctld.log"
    log_start = ctld_log.stat().st_size
    # 3 minutes: slurmctld checks time limits every 30 s (PERIODIC_TIMEOUT, compiled in) and sends
    # the --signal at the first check with now + warn + 30 >= EndTime (send_job_warn_signal,
    # Slurm 22.05), here 30-60 s after the start, when janus is training (its SIGTERM handler is
    # installed before the step compiles); --time=2 would signal at the first check, possibly
    # before janus has started. The end (EndTime) stays 2 minutes away.
    job = jobs.submit("--time=3", *CPU, str(SBATCH), *janus_args(mini_v2, workdir, "--inloop_eval"))
    info = jobs.wait(job, lambda i: i["JobState"] != "PENDING", "started", 120)
    end = _time(info["EndTime"])
    earliest = end - warn - 30  # the first second at which a check may signal
    deadline = time.time() + 120
    while not ckpt_lib.list_complete_steps(workdir):
        if time.time() > deadline or ended(jobs.info(job)[0]):
            jobs.fail(job, "no checkpoint in the first segment")
        time.sleep(0.1)
    # The mini run's 40 steps take seconds, the check comes up to 30 s later: stand in for a long
    # run by stopping janus (SIGSTOP) until SLURM signals it. SLURM sends SIGCONT to the step
    # before the warning signal (send_job_warn_signal), so janus goes on, gets SIGTERM and saves
    # at the end of its step. Only before the earliest check: a janus stopped after SIGTERM would
    # not save before the time limit.
    [start] = [r for r in history(workdir) if r["event"] == "start"]
    assert start["host"] == socket.gethostname()  # the test cluster's nodes are this host
    frozen = time.time() < earliest - 1
    if frozen:
        os.kill(start["pid"], signal.SIGSTOP)
    try:
        info = wait_requeued(jobs, job, 1, timeout=max(earliest + 30 - time.time(), 0) + 60)
    finally:
        if frozen and _state(start["pid"]) == "T":  # not woken by SLURM: do not leave it stopped
            os.kill(start["pid"], signal.SIGCONT)
    [stop] = ckpt_lib.list_complete_steps(workdir)[-1:]
    assert stop < STEPS and not (workdir / "DONE").exists(), "finished before the signal"
    # The next segment has the same --time and would be signalled 30-60 s after its start again,
    # maybe once its loop has ended: one time-limit stop is what this test is about.
    r = subprocess.run(
        ["scontrol", "update", f"JobId={job}", "TimeLimit=10"], env=jobs.env, timeout=30,
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = jobs.finish(job, timeout=300)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", jobs.logs()
    # Who stopped it: slurmctld's time-limit check (its debug line; SlurmctldDebug=debug in
    # tests/slurm/cluster.sh), between the earliest check and `warn` s before the end; nobody
    # asked SLURM to kill or signal the job (scancel: REQUEST_KILL_JOB, logged at info).
    ctld = ctld_log.read_bytes()[log_start:].decode(errors="replace")
    warned = re.findall(rf"^\[(\S+?)(?:\.\d+)?\] debug:  send_job_warn_signal: warning signal "
                        rf"{signal.SIGTERM.value} to JobId={job}$", ctld, re.M)  # fmt: skip
    assert len(warned) == 1, f"no warning signal to job {job} in {ctld_log} (SlurmctldDebug=debug?)"
    # (every 30 s, give or take its loop's 1 s sleep and lock waits on a busy machine)
    assert earliest <= _time(warned[0]) <= end - warn + 5, (warned, info)
    assert f"REQUEST_KILL_JOB JobId={job} " not in ctld
    text = (jobs.cwd / f"slurm-janus-{job}.out").read_text()
    lines = segments(text)
    assert [re.search(r"restart (\d+)", line)[1] for line in lines] == ["0", "1"], text
    assert lines[0].endswith("no checkpoint") and lines[1].endswith(f"newest checkpoint {stop}")
    assert text.count("stopped by SIGTERM") == 1 and text.count("resuming from") == 1, text
    assert [(r["event"], r["step"]) for r in history(workdir)] == [("start", 0), ("resume", stop)]
    assert json.loads((workdir / "DONE").read_text())["step"] == STEPS
    assert_ends_as_the_uninterrupted_run(workdir, ref_dir, [stop])


def test_a_requeued_job_whose_newest_checkpoint_is_damaged_resumes_from_the_previous(
    reference, jobs, mini_v2
):
    """Under the requeue loop, a newest checkpoint that does not restore (a data file cut to 50
    bytes while the job waits in SLURM's hold) is moved aside, the job resumes from the one before
    and reaches DONE, with the uninterrupted run's state."""
    workdir = jobs.cwd / "run"
    ckdir = workdir / "checkpoints"
    job = jobs.submit(*CPU, str(SBATCH), *janus_args(mini_v2, workdir, "--noinloop_eval"))
    deadline = time.time() + 300
    while len(ckpt_lib.list_complete_steps(workdir)) < 2:  # two, so one is left to fall back to
        if time.time() > deadline or ended(jobs.info(job)[0]):
            jobs.fail(job, "fewer than 2 checkpoints")
        time.sleep(0.1)
    assert subprocess.run(["scancel", "--signal=TERM", str(job)], env=jobs.env).returncode == 0
    wait_requeued(jobs, job, 1)
    *_, previous, newest = ckpt_lib.list_complete_steps(workdir)
    data = [p for p in (ckdir / str(newest) / "state").rglob("*") if p.parent.name == "d"]
    with open(max(data, key=lambda p: p.stat().st_size), "r+b") as f:
        f.truncate(50)
    info = jobs.finish(job, timeout=300)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", jobs.logs()
    log = (jobs.cwd / f"slurm-janus-{job}.out").read_text()
    assert f"{ckdir}/{newest} does not restore" in log
    assert f"resuming from {ckdir}/{previous}" in log
    assert (ckdir / f"{newest}.damaged" / "state").is_dir()  # moved aside, not deleted
    assert [(r["event"], r["step"]) for r in history(workdir)] == [
        ("start", 0),
        ("damaged", newest),
        ("resume", previous),
    ]
    assert json.loads((workdir / "DONE").read_text())["step"] == STEPS
    assert_bitwise_equal(full_state(workdir, STEPS), full_state(reference[0], STEPS))


def test_two_tasks_match_one_process_with_two_devices(reference, jobs, mini_v2):
    """`--nodes=2` (one task per node, the script's default): the script's JANUS_* coordinates
    make janus one 2-process job (1 CPU device each), which reaches the 1-process x 2-device loss
    (tolerance of tests/test_train.py's test_two_processes_match_one_process).
    One layout trains, not also `--ntasks-per-node=2` (about 45 s more of CI): the script and
    janus take the same path for both (SLURM_NTASKS=2: coordinator, process count, 2 processes
    over gloo), and what differs, the node each task runs on, is what
    test_two_tasks_get_the_cluster_env_from_the_script checks for both layouts. On a one-node
    test cluster (host name not resolving) the 2 tasks share the node instead of skipping."""
    layout = "--nodes=2" if len(nodes(jobs.env)) >= 2 else "--ntasks-per-node=2"
    ref_dir = reference[0]
    workdir = jobs.cwd / "two"
    env = job_env(jobs.env, devices=1)
    args = janus_args(mini_v2, workdir, "--noinloop_eval", "--config.stop_after_steps=5")
    job = jobs.submit(layout, *CPU, str(SBATCH), *args, env=env)
    # Stopped at step 5 with exit 0 and no DONE: the script requeues it, as after a time limit;
    # cancelled here during SLURM's hold.
    info = jobs.wait(job, lambda i: i["Restarts"] == "1" or ended(i), "requeued", 400)
    if info["Restarts"] != "1":
        jobs.fail(job, "ended instead of being requeued")
    subprocess.run(["scancel", str(job)], env=jobs.env, timeout=30)
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["resolved"]["num_processes"] == 2 and cfg["resolved"]["num_devices"] == 2
    ref = {r["step"]: r for r in metrics(ref_dir) if "loss" in r}
    rows = [r for r in metrics(workdir) if "loss" in r]  # process 0 only
    assert [r["step"] for r in rows] == [5]
    np.testing.assert_allclose(rows[0]["loss"], ref[5]["loss"], rtol=1e-4)
    np.testing.assert_allclose(rows[0]["param_norm"], ref[5]["param_norm"], rtol=1e-5)
    assert ckpt_lib.list_complete_steps(workdir) == [5]
    assert not (workdir / "DONE").exists()
    log = (jobs.cwd / f"slurm-janus-{job}.out").read_text()
    assert len(segments(log)) == 1 and log.count("stopped") >= 1, log


STUDY = """
import importlib.util

_spec = importlib.util.spec_from_file_location("mini", {mini!r})
_mini = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mini)


def get_config(arg=None):
    return _mini.get_config({base!r} + "," + arg)


def get_sweep():
    return ["seed=0", "seed=1"]
"""


def test_array_trains_the_sweep_and_the_sweep_sees_it_done(reference, jobs, mini_v2):
    """`sbatch --array=0-1 --output=slurm-%x-%A_%a.out launch/slurm.sbatch --sweep STUDY --root R
    -- FLAGS`: one log per task, named by array job and index; then `janus.sweep --dry_run`."""
    study = jobs.cwd / "study.py"
    base = f"root={mini_v2},steps={STEPS},res=32,batch=16"
    study.write_text(STUDY.format(mini=str(REPO / "configs" / "mini.py"), base=base))
    root = jobs.cwd / "runs"
    flags = janus_args(mini_v2, "unused", "--noinloop_eval")[2:]  # after --config and --workdir
    job = jobs.submit(
        "--array=0-1", "--output=slurm-%x-%A_%a.out", *CPU, str(SBATCH),
        "--sweep", str(study), "--root", str(root), "--", *flags,
    )  # fmt: skip
    infos = jobs.finish(job, timeout=400)
    assert sorted(i["ArrayTaskId"] for i in infos) == ["0", "1"]
    if not all(i["JobState"] == "COMPLETED" for i in infos):
        jobs.fail(job, "array tasks did not all complete")
    for i in (0, 1):
        log = (jobs.cwd / f"slurm-janus-{job}_{i}.out").read_text()
        assert f"array task {i}: python -m janus.main" in log
        assert f"(array {job}_{i})" in segments(log)[0]
        assert json.loads((root / f"seed-{i}" / "DONE").read_text())["step"] == STEPS
    # Run 0 is the reference run's config (seed 0): the same training, bit for bit.
    assert_bitwise_equal(full_state(root / "seed-0", STEPS), full_state(reference[0], STEPS))
    r = subprocess.run(
        [sys.executable, "-m", "janus.sweep", str(study), "--root", str(root), "--dry_run"],
        env=job_env(jobs.env), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    states = re.findall(r"\] (seed-\d) \((done|started|new)\)", r.stdout)
    assert sorted(states) == [("seed-0", "done"), ("seed-1", "done")], r.stdout


def test_bad_config_fails_once_without_requeue(jobs, mini_v2):
    workdir = jobs.cwd / "bad"
    job = jobs.submit(*CPU, str(SBATCH), *janus_args(mini_v2, workdir, "--config.optimizer.lrr=1"))
    info = jobs.finish(job, timeout=200)
    log = (jobs.cwd / f"slurm-janus-{job}.out").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", log
    assert info["Restarts"] == "0" and len(segments(log)) == 1
    assert "lrr" in log and "exited with exit code 2" in log.lower(), log
    assert not (workdir / "checkpoints").exists()
    time.sleep(2)  # still not requeued
    assert jobs.info(job)[0]["Restarts"] == "0"


def test_missing_venv_fails_with_one_line_naming_it(jobs, mini_v2):
    env = job_env(jobs.env, VENV="/nonexistent")
    job = jobs.submit(*CPU, str(SBATCH), *janus_args(mini_v2, jobs.cwd / "x"), env=env)
    info = jobs.finish(job, timeout=60)
    log = (jobs.cwd / f"slurm-janus-{job}.out").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", log
    assert log.count("\n") == 1 and "'/nonexistent'" in log and "venv" in log, log
    assert "No such file" not in log


FAKE_ACTIVATE = """
export PATH={bin}:$PATH
"""
# Stands in for the venv's python: writes the task's JANUS_* and SLURM_* variables.
FAKE_PYTHON = """#!/bin/sh
env | grep -E '^(JANUS|SLURM|SLURMD)_' | sort > "{out}/task.$SLURM_PROCID.env"
"""


@pytest.mark.parametrize("layout", ["--nodes=2", "--ntasks-per-node=2"])
def test_two_tasks_get_the_cluster_env_from_the_script(jobs, layout):
    """What the script computes for several tasks, under the real srun: coordinator = the first
    host of `scontrol show hostnames $SLURM_JOB_NODELIST` at 61440 + job id % 4096, the task count,
    and per task JANUS_PROCESS_ID = SLURM_PROCID; on 2 nodes, one task on each."""
    nodes = 2 if layout == "--nodes=2" else 1
    need_nodes(jobs.env, nodes)
    venv = jobs.cwd / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(FAKE_ACTIVATE.format(bin=venv / "bin"))
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON.format(out=jobs.cwd))
    python.chmod(0o755)
    env = job_env(jobs.env, VENV=str(venv))
    (jobs.cwd / "w").mkdir()
    (jobs.cwd / "w" / "DONE").write_text("{}")
    job = jobs.submit(layout, *CPU, str(SBATCH), "--workdir", "w", env=env)
    info = jobs.finish(job, timeout=60)
    assert info["JobState"] == "COMPLETED", jobs.logs()
    host = subprocess.run(
        ["scontrol", "show", "hostnames", info["NodeList"]], env=jobs.env, capture_output=True,
        text=True, timeout=30,
    ).stdout.split()  # fmt: skip
    assert len(host) == nodes
    tasks = {}
    for rank in (0, 1):
        lines = (jobs.cwd / f"task.{rank}.env").read_text().splitlines()
        tasks[rank] = dict(line.split("=", 1) for line in lines)
    for rank, task in tasks.items():
        assert task["JANUS_COORDINATOR_ADDRESS"] == f"{host[0]}:{61440 + job % 4096}"
        assert task["JANUS_NUM_PROCESSES"] == "2"
        assert task["JANUS_PROCESS_ID"] == task["SLURM_PROCID"] == str(rank)
        assert task["SLURM_CPUS_PER_TASK"] == "1" and task["SLURM_NTASKS"] == "2"
        assert task["SLURM_NODEID"] == (str(rank) if nodes == 2 else "0")
    assert {t["SLURMD_NODENAME"] for t in tasks.values()} == set(host)
