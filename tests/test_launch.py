"""launch/tpu_vm.sh and launch/slurm.sbatch, run as a user would against fake cloud/cluster tools.

No network: fake `gcloud` (TPU VM) and `srun`/`scontrol`/`python` (SLURM) executables go first on
PATH in a temp dir. Each logs its argv (and the janus environment) as JSON lines and simulates the
world: the fake gcloud keeps the TPU's state in a file (queued-resource create -> CREATING ->
READY; a run can "preempt" the slice), answers `test -f <workdir>/DONE` by running it, and plays a
scripted sequence of training-run outcomes. The fake srun starts SLURM_NTASKS tasks with their
SLURM_PROCID and forwards SIGTERM to them. The tests assert on the exact commands issued.
"""

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_SH = REPO / "launch" / "tpu_vm.sh"
SLURM_SH = REPO / "launch" / "slurm.sbatch"

FAKE_GCLOUD = """
import json, os, pathlib, shutil, subprocess, sys

d = pathlib.Path(os.environ["FAKE_DIR"])
args = sys.argv[1:]
with open(d / "gcloud.log", "a") as f:
    f.write(json.dumps(args) + "\\n")
state_file = d / "state"
state = state_file.read_text() if state_file.exists() else "MISSING"
pos = [a for a in args if not a.startswith("--")]
opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
if pos[:4] == ["compute", "tpus", "tpu-vm", "describe"]:
    if state == "MISSING":
        sys.exit("ERROR: NOT_FOUND")
    if state.startswith("CREATING"):  # "CREATING n": n more polls before READY
        n = int(state.split()[1])
        state_file.write_text(f"CREATING {n - 1}" if n > 1 else "READY")
        state = "CREATING"
    print(state)
elif pos[:4] == ["compute", "tpus", "queued-resources", "create"]:
    state_file.write_text(f"CREATING {os.environ.get('FAKE_CREATING_POLLS', '1')}")
elif pos[:4] == ["compute", "tpus", "queued-resources", "describe"]:
    print(os.environ.get("FAKE_QR_STATE", "WAITING_FOR_RESOURCES"))
elif pos[:4] == ["compute", "tpus", "queued-resources", "delete"]:
    state_file.write_text("MISSING")
elif pos[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
    shutil.copy(pos[4], d / "copied.tgz")
elif pos[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
    command = opts["command"]
    if command.startswith("test -f "):
        sys.exit(subprocess.run(["bash", "-c", command]).returncode)
    if "janus.main" in command:
        runs = os.environ.get("FAKE_RUNS", "done").split(",")
        counter = d / "runs"
        i = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(i + 1))
        outcome = runs[min(i, len(runs) - 1)]
        if outcome == "preempt":  # the slice goes away mid-run; ssh loses the connection
            state_file.write_text("PREEMPTED")
            sys.exit(255)
        if outcome == "done":
            pathlib.Path(os.environ["WORKDIR"], "DONE").write_text("{}")
        sys.exit({"done": 0, "stop": 0, "fail": 1}[outcome])
"""

# srun: the options, then the task command; starts SLURM_NTASKS tasks with SLURM_PROCID and
# forwards SIGTERM to them (as srun does); exits with the worst task status.
FAKE_SRUN = """
import json, os, pathlib, signal, subprocess, sys

d = pathlib.Path(os.environ["FAKE_DIR"])
args = sys.argv[1:]
keys = ("JANUS_COORDINATOR_ADDRESS", "JANUS_NUM_PROCESSES", "JANUS_PROCESS_ID")
with open(d / "srun.log", "a") as f:
    f.write(json.dumps({"argv": args, "env": {k: os.environ.get(k) for k in keys}}) + "\\n")
i = 0
while args[i].startswith("-"):
    i += 1
procs = [
    subprocess.Popen(args[i:], env=dict(os.environ, SLURM_PROCID=str(r), SLURM_NODEID=str(r)))
    for r in range(int(os.environ.get("SLURM_NTASKS", "1")))
]
def forward(signum, frame):
    with open(d / "srun.log", "a") as f:
        f.write(json.dumps({"signal": signum}) + "\\n")
    for p in procs:
        p.send_signal(signum)
signal.signal(signal.SIGTERM, forward)
sys.exit(max(p.wait() for p in procs))
"""

FAKE_SCONTROL = """
import json, os, pathlib, sys

d = pathlib.Path(os.environ["FAKE_DIR"])
args = sys.argv[1:]
with open(d / "scontrol.log", "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[:2] == ["show", "hostnames"]:
    assert args[2] == os.environ["SLURM_JOB_NODELIST"], args
    print("\\n".join(os.environ["FAKE_HOSTS"].split(",")))
"""

# The training process: logs argv + janus env; FAKE_PY = done | stop | fail | wait_term.
# `python -m janus.sweep ...` (array mode) runs the real one.
FAKE_PYTHON = """
import json, os, pathlib, signal, sys, time

d = pathlib.Path(os.environ["FAKE_DIR"])
args = sys.argv[1:]
rank = os.environ.get("SLURM_PROCID")
def log(**kw):
    with open(d / "python.log", "a") as f:
        f.write(json.dumps(kw) + "\\n")
keys = ("JANUS_COORDINATOR_ADDRESS", "JANUS_NUM_PROCESSES", "JANUS_PROCESS_ID")
log(argv=args, env={k: os.environ.get(k) for k in keys}, rank=rank)
if args[:2] == ["-m", "janus.sweep"]:  # array mode: the real janus.sweep prints the command
    os.execv(sys.executable, [sys.executable, *args])
mode = os.environ.get("FAKE_PY", "done")
flags = " ".join(args).replace("--workdir=", "--workdir ").split(" ")
workdir = flags[flags.index("--workdir") + 1]  # janus.main accepts --workdir=DIR and --workdir DIR
if mode == "wait_term":  # train until SIGTERM, then "save" and exit 0 (what janus.main does)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    (d / f"ready.{rank}").write_text("")
    while not stop:
        time.sleep(0.01)
    log(sigterm=rank)
    sys.exit(0)
if mode == "done" and rank == "0":
    pathlib.Path(workdir, "DONE").write_text("{}")
sys.exit({"done": 0, "stop": 0, "fail": 1}[mode])
"""


def _write_fake(bin_dir: pathlib.Path, name: str, body: str):
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)


@pytest.fixture
def fakes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in [
        ("gcloud", FAKE_GCLOUD),
        ("srun", FAKE_SRUN),
        ("scontrol", FAKE_SCONTROL),
        ("python", FAKE_PYTHON),
    ]:
        _write_fake(bin_dir, name, body)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JANUS_", "TPU_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_DIR=str(tmp_path))
    return tmp_path, env


def _log(d: pathlib.Path, name: str) -> list:
    path = d / f"{name}.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- TPU VM


def _tpu_env(env, d, **kw):
    env = dict(env, TPU_NAME="janus-t", ZONE="us-central2-b", ACCELERATOR="v4-32")
    env.update(VERSION="tpu-ubuntu2204-base", WORKDIR=str(d / "run dir"), POLL_S="0")
    env.update(RETRY_S="0", **kw)
    (d / "run dir").mkdir(exist_ok=True)
    return env


def _tpu(d, env, *args, check=True):
    r = subprocess.run(
        ["bash", str(TPU_SH), *args], env=env, cwd=d, capture_output=True, text=True, timeout=60
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _ssh_commands(calls, worker="all"):
    """The --command of every `tpu-vm ssh` call on `worker` (all asserted to use janus-t/zone)."""
    out = []
    for c in calls:
        if c[:4] == ["compute", "tpus", "tpu-vm", "ssh"] and f"--worker={worker}" in c:
            assert c[4] == "janus-t" and "--zone=us-central2-b" in c, c
            out.append(next(a for a in c if a.startswith("--command="))[len("--command=") :])
    return out


def _train_argv(command: str) -> list:
    """The argv of the training command inside a `run` ssh command, as the remote shell sees it."""
    start = command.index("python -m janus.main")
    return shlex.split(command[start : command.index("2>&1")])


def test_tpu_usage_without_a_command(fakes):
    d, env = fakes
    r = _tpu(d, env, check=False)
    assert r.returncode == 2 and "Usage" in r.stdout and "launch/tpu_vm.sh watch" in r.stdout
    assert _log(d, "gcloud") == []


def test_tpu_create_is_a_queued_resource_and_waits_for_ready(fakes):
    d, env = fakes
    _tpu(d, _tpu_env(env, d, SPOT="1", PROJECT="my-proj", FAKE_CREATING_POLLS="2"), "create")
    calls = _log(d, "gcloud")
    assert calls[0] == [
        "compute", "tpus", "queued-resources", "create", "janus-t-qr", "--node-id=janus-t",
        "--zone=us-central2-b", "--accelerator-type=v4-32",
        "--runtime-version=tpu-ubuntu2204-base", "--spot", "--project=my-proj",
    ]  # fmt: skip
    describe = ["compute", "tpus", "tpu-vm", "describe", "janus-t", "--zone=us-central2-b"]
    polls = [c for c in calls if c[:6] == describe]
    assert len(polls) == 3  # CREATING, CREATING, READY
    assert all(c[6:] == ["--format=value(state)", "--project=my-proj"] for c in polls)
    # Without SPOT/PROJECT: no empty arguments.
    (d / "gcloud.log").unlink()
    _tpu(d, _tpu_env(env, d), "create")
    assert _log(d, "gcloud")[0][-1] == "--runtime-version=tpu-ubuntu2204-base"


def test_tpu_create_failed_queued_resource_exits_nonzero(fakes):
    d, env = fakes
    env = _tpu_env(env, d, FAKE_CREATING_POLLS="99", FAKE_QR_STATE="FAILED")
    r = _tpu(d, env, "create", check=False)
    assert r.returncode == 1 and "janus-t-qr is FAILED" in r.stderr
    assert len(_log(d, "gcloud")) == 3  # create, one node poll, one queued-resource poll


def test_tpu_setup_installs_and_copies_the_checkout_to_all_workers(fakes):
    d, env = fakes
    (d / "state").write_text("READY")
    _tpu(d, _tpu_env(env, d, BUCKET="my-bucket"), "setup")
    calls = _log(d, "gcloud")
    scp = [c for c in calls if c[:4] == ["compute", "tpus", "tpu-vm", "scp"]]
    assert len(scp) == 1 and scp[0][5:] == [
        "janus-t:~/janus.tgz", "--zone=us-central2-b", "--worker=all",
    ]  # fmt: skip
    cmds = _ssh_commands(calls)
    assert len(cmds) == 3 and len(_ssh_commands(calls, "0")) == 0
    assert "python3.11 -m venv ~/venv" in cmds[0]
    assert "gcsfuse --implicit-dirs my-bucket /mnt/janus" in cmds[0]
    assert cmds[1] == "mkdir -p ~/janus && tar -xzf ~/janus.tgz -C ~/janus"
    lock = (REPO / "requirements" / "lock.txt").read_text().splitlines()
    jax_version = next(line.split("==")[1] for line in lock if line.startswith("jax=="))
    assert "pip install -q -r requirements/lock.txt" in cmds[2]
    assert f"pip install -q 'jax[tpu]=={jax_version}'" in cmds[2]
    assert "pip install -q --no-deps -e ." in cmds[2]
    with tarfile.open(d / "copied.tgz") as tar:
        names = set(tar.getnames())
    assert {"janus/main.py", "launch/tpu_vm.sh", "requirements/lock.txt"} <= names
    assert not any(n.startswith((".venv/", ".git/")) for n in names)


def test_tpu_run_issues_the_same_command_on_all_workers(fakes):
    d, env = fakes
    (d / "state").write_text("READY")
    args = ["--config", "configs/janus.py:loss=infonce,budget=2400000",
            "--config.data.train=/mnt/janus/data/in100*1+/mnt/janus/data/janus*1"]  # fmt: skip
    env = _tpu_env(env, d)
    _tpu(d, env, "run", *args)
    [command] = _ssh_commands(_log(d, "gcloud"))
    assert command.startswith("set -o pipefail; . ~/venv/bin/activate && cd ~/janus && ")
    assert command.endswith("2>&1 | tee -a ~/janus_train.log")
    # The space in the workdir and the globs reach janus.main unchanged.
    assert _train_argv(command) == [
        "python", "-m", "janus.main", f"--workdir={env['WORKDIR']}", *args,
    ]  # fmt: skip


def test_tpu_watch_recreates_after_preemption_and_reruns_until_done(fakes):
    d, env = fakes
    (d / "state").write_text("READY")
    # run 1: the slice is preempted; run 2 (on the recreated slice): stopped by SIGTERM (exit 0,
    # no DONE); run 3: finishes and writes DONE.
    env = _tpu_env(env, d, FAKE_RUNS="preempt,stop,done")
    args = ["--config", "configs/mini.py", "--config.optimizer.lr=0.1"]
    r = _tpu(d, env, "watch", *args)
    assert "run finished" in r.stdout
    calls = _log(d, "gcloud")
    kinds = []
    for c in calls:
        if c[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
            cmd = next(a for a in c if a.startswith("--command="))
            kinds.append("train" if "janus.main" in cmd else "done?" if "test -f" in cmd else "ssh")
        elif c[2] == "queued-resources" and c[3] != "describe":  # (polls while creating)
            kinds.append(f"qr-{c[3]}")
        elif c[3] == "scp":
            kinds.append("scp")
    assert kinds == [
        "train", "done?",                                   # preempted: not done
        "qr-delete", "qr-create", "ssh", "scp", "ssh", "ssh",  # recreate + setup (with copy)
        "train", "done?",                                   # stopped: not done, slice healthy
        "train", "done?",                                   # DONE
    ]  # fmt: skip
    create = next(c for c in calls if c[2:4] == ["queued-resources", "create"])
    assert "--accelerator-type=v4-32" in create and "--zone=us-central2-b" in create
    trains = [_train_argv(c) for c in _ssh_commands(calls) if "janus.main" in c]
    assert trains == [["python", "-m", "janus.main", f"--workdir={env['WORKDIR']}", *args]] * 3
    done_checks = _ssh_commands(calls, "0")
    assert [shlex.split(c) for c in done_checks] == [["test", "-f", f"{env['WORKDIR']}/DONE"]] * 3
    assert (d / "run dir" / "DONE").exists()


def test_tpu_watch_does_not_retry_a_failure_on_a_healthy_slice(fakes):
    d, env = fakes
    (d / "state").write_text("READY")
    r = _tpu(d, _tpu_env(env, d, FAKE_RUNS="fail,done"), "watch", "--config", "c.py", check=False)
    assert r.returncode == 1 and "failed with status 1 on a healthy slice" in r.stdout
    assert int((d / "runs").read_text()) == 1


# --------------------------------------------------------------------------- SLURM


def _slurm_env(env, d, ntasks=4, **kw):
    venv = d / "venv" / "bin"
    venv.mkdir(parents=True, exist_ok=True)
    (venv / "activate").write_text("")  # the real one would put the venv's python first
    env = dict(env, VENV=str(d / "venv"), SLURM_SUBMIT_DIR=str(d), SLURM_JOB_ID="1234567")
    env.update(SLURM_NTASKS=str(ntasks), SLURM_JOB_NUM_NODES=str(ntasks))
    env.update(SLURM_JOB_NODELIST="gpu[07-10]", FAKE_HOSTS="gpu07,gpu08,gpu09,gpu10", **kw)
    (d / "runs" / "x").mkdir(parents=True, exist_ok=True)
    return env


ARGS = ["--config", "configs/janus.py:loss=infonce", "--workdir", "runs/x"]


def _sbatch(d, env, *args):
    return subprocess.run(
        ["bash", str(SLURM_SH), *args], env=env, cwd=d, capture_output=True, text=True, timeout=60
    )


def test_slurm_header_requests_sigterm_before_the_limit_and_requeue():
    header = [line for line in SLURM_SH.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --signal=B:TERM@120" in header and "#SBATCH --requeue" in header
    assert "#SBATCH --ntasks-per-node=1" in header


def test_slurm_runs_every_task_with_the_cluster_env_and_finishes(fakes):
    d, env = fakes
    r = _sbatch(d, _slurm_env(env, d, FAKE_PY="done"), *ARGS)
    assert r.returncode == 0, r.stderr
    [srun] = _log(d, "srun")
    assert srun["argv"][0] == "--kill-on-bad-exit=1"
    address = f"gpu07:{61440 + 1234567 % 4096}"
    assert srun["env"] == {
        "JANUS_COORDINATOR_ADDRESS": address,
        "JANUS_NUM_PROCESSES": "4",
        "JANUS_PROCESS_ID": None,  # set by each task from its SLURM_PROCID
    }
    tasks = sorted(_log(d, "python"), key=lambda t: t["rank"])
    assert [t["argv"] for t in tasks] == [["-m", "janus.main", *ARGS]] * 4
    assert [t["env"] for t in tasks] == [
        {"JANUS_COORDINATOR_ADDRESS": address, "JANUS_NUM_PROCESSES": "4", "JANUS_PROCESS_ID": r}
        for r in "0123"
    ]
    assert _log(d, "scontrol") == [["show", "hostnames", "gpu[07-10]"]]  # DONE: no requeue


def test_slurm_single_task_sets_no_cluster_env(fakes):
    d, env = fakes
    r = _sbatch(d, _slurm_env(env, d, ntasks=1, FAKE_PY="done"), "--workdir=runs/x")
    assert r.returncode == 0, r.stderr
    [task] = _log(d, "python")
    assert task["argv"] == ["-m", "janus.main", "--workdir=runs/x"]
    assert task["env"]["JANUS_COORDINATOR_ADDRESS"] is None
    assert _log(d, "scontrol") == []


@pytest.mark.parametrize("outcome,requeued,rc", [("stop", True, 0), ("fail", False, 1)])
def test_slurm_requeues_a_stopped_run_but_not_a_failed_one(fakes, outcome, requeued, rc):
    d, env = fakes
    r = _sbatch(d, _slurm_env(env, d, FAKE_PY=outcome), *ARGS)
    assert r.returncode == rc, r.stderr
    assert (["requeue", "1234567"] in _log(d, "scontrol")) == requeued


@pytest.mark.parametrize("done", [False, True], ids=["not_done", "done"])
def test_slurm_sigterm_is_forwarded_then_requeued_unless_done(fakes, done):
    """SLURM's `--signal=B:TERM@120` signals the batch shell only: it must forward SIGTERM to srun
    (-> the tasks), wait for them to save and exit 0, then requeue unless <workdir>/DONE."""
    d, env = fakes
    env = _slurm_env(env, d, FAKE_PY="wait_term")
    if done:
        (d / "runs" / "x" / "DONE").write_text("{}")
    proc = subprocess.Popen(
        ["bash", str(SLURM_SH), *ARGS], env=env, cwd=d, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 30
    while len(list(d.glob("ready.*"))) < 4:
        assert time.time() < deadline and proc.poll() is None, "tasks did not start"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # to the batch shell only, as SLURM does
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    srun = _log(d, "srun")
    assert {"signal": int(signal.SIGTERM)} in srun
    assert sorted(e["sigterm"] for e in _log(d, "python") if "sigterm" in e) == list("0123")
    assert (["requeue", "1234567"] in _log(d, "scontrol")) == (not done)


STUDY = """
def get_sweep():
    return ["loss=ce,seed=0", "loss=infonce,seed=1", "loss=ce,seed=2"]
"""


def test_slurm_array_task_trains_the_sweeps_nth_run(fakes):
    """`sbatch --array=0-2 launch/slurm.sbatch --sweep study.py --root R -- FLAGS`: task 1 runs
    janus.sweep's second command on every node, and requeues it (same workdir) when stopped."""
    d, env = fakes
    (d / "study.py").write_text(STUDY)
    env = _slurm_env(env, d, FAKE_PY="stop", SLURM_ARRAY_TASK_ID="1")
    args = ["--root", "runs/study", "--", "--config.total_steps=5"]
    r = _sbatch(d, env, "--sweep", "study.py", *args)
    assert r.returncode == 0, r.stderr
    calls = [c for c in _log(d, "python") if c["argv"][:2] == ["-m", "janus.sweep"]]
    assert [c["argv"][2:] for c in calls] == [["study.py", "--print", "--only", "1", *args]]
    tasks = [t for t in _log(d, "python") if t["argv"][:2] == ["-m", "janus.main"]]
    assert [t["argv"][2:] for t in tasks] == [[
        "--config=study.py:loss=infonce,seed=1", "--workdir=runs/study/loss-infonce_seed-1",
        "--config.total_steps=5",
    ]] * 4  # fmt: skip
    assert sorted(t["env"]["JANUS_PROCESS_ID"] for t in tasks) == list("0123")
    assert ["requeue", "1234567"] in _log(d, "scontrol")  # stopped, no DONE: resumes later
    # The same with --sweep=FILE on one node, for the last run, which finishes: no requeue.
    (d / "runs" / "study" / "loss-ce_seed-2").mkdir(parents=True)
    for name in ("python", "scontrol", "srun"):
        (d / f"{name}.log").unlink()
    env = dict(env, FAKE_PY="done", SLURM_ARRAY_TASK_ID="2")
    r = _sbatch(d, _slurm_env(env, d, ntasks=1), "--sweep=study.py", "--root", "runs/study")
    assert r.returncode == 0, r.stderr
    [task] = [t for t in _log(d, "python") if t["argv"][:2] == ["-m", "janus.main"]]
    assert task["argv"][-1] == "--workdir=runs/study/loss-ce_seed-2"
    assert (d / "runs" / "study" / "loss-ce_seed-2" / "DONE").exists()
    assert _log(d, "scontrol") == []


def test_slurm_sweep_outside_an_array_or_out_of_range_fails_before_training(fakes):
    d, env = fakes
    (d / "study.py").write_text(STUDY)
    r = _sbatch(d, _slurm_env(env, d), "--sweep", "study.py", "--root", "runs/study")
    assert r.returncode != 0 and "sbatch --array=0-<runs - 1>" in r.stderr
    r = _sbatch(
        d, _slurm_env(env, d, SLURM_ARRAY_TASK_ID="3"), "--sweep", "study.py", "--root", "r"
    )
    assert r.returncode != 0 and "the sweep has runs 0..2" in r.stderr
    assert not [t for t in _log(d, "python") if t["argv"][:2] == ["-m", "janus.main"]]
    assert _log(d, "srun") == []
