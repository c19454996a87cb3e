"""launch/tpu_vm.sh and launch/slurm.sbatch, run as a user would against fake cloud/cluster tools.

No network: fake `gcloud` (TPU VM) and `srun`/`scancel`/`scontrol`/`python` (SLURM) executables go
first on PATH in a temp dir. Each logs its argv (and the janus environment) as JSON lines and
simulates the world: the fake gcloud keeps the TPU's state in a file (queued-resource create ->
CREATING -> READY; a run can "preempt" the slice), answers `test -f <workdir>/DONE` by running it,
and plays a scripted sequence of training-run outcomes.

The fakes follow the real tools' documented behaviour, not the scripts' expectations:
- `gcloud compute tpus tpu-vm describe --format=json(networkEndpoints)` lists one endpoint per
  worker (TPU API v2 Node.networkEndpoints: "The network endpoints where TPU workers can be
  accessed", one NetworkEndpoint per worker, https://cloud.google.com/tpu/docs/reference/rest/v2/
  projects.locations.nodes).
- `srun` answers a SIGTERM by forcing the step's termination: SIGKILL to the tasks, which never get
  to save (srun(1), SIGNALS AND ESCAPE SEQUENCES; Slurm src/srun/srun_job.c job_force_termination:
  `info("forcing job termination"); /* Sends SIGKILL to tasks directly */`).
- SLURM's `--signal=TERM@120` without `B:` signals the job steps' tasks and not the batch shell;
  `B:` signals only the batch shell (sbatch(1), --signal, https://slurm.schedmd.com/sbatch.html).
- `scancel --signal=TERM JOBID` signals the job's steps; "By default, signals other than SIGKILL
  are not sent to the batch step (the shell script)" (scancel(1), --batch,
  https://slurm.schedmd.com/scancel.html).
- srun does not inherit sbatch's --cpus-per-task since Slurm 22.05 (sbatch(1) NOTE on
  --cpus-per-task; Slurm 22.05 release notes).
- `gcloud compute tpus tpu-vm ssh` runs the whole command again when ssh exits 255 (the review's
  finding; simulated by FAKE_RUNS=dropped); `queued-resources create` accepts --scopes and
  --service-account (gcloud reference, compute tpus queued-resources create); the runtime version
  per generation is the table in https://cloud.google.com/tpu/docs/runtimes.
- jax (0.10.2, the pinned version) is not faked: its own cluster detection runs against a
  simulated GCE metadata server (jax/_src/clusters/cloud_tpu_cluster.py: GCE_METADATA_IP,
  agent-worker-number, worker-network-endpoints, port 8482) and under simulated SLURM variables
  (jax/_src/clusters/slurm_cluster.py, cluster.py; distributed.py's cluster_detection_method=
  "deactivate"). JAX's multi-process guide: on Cloud TPU call jax.distributed.initialize() with no
  arguments.
- `hostname`, `pgrep`, `pkill` and `ssh-add` are faked so that the simulated TPU workers are told
  apart and the tests never signal a process of their own machine other than their own.
The SLURM tests assert what happens to the tasks (did they save, was the job requeued), not only
the commands issued. A real one-node SLURM runs the script in tests/test_slurm.py (signals,
requeue, arrays, failures, the per-task JANUS_* variables, the log); the SLURM stand-ins here stay
for what one CPU node cannot show: several nodes (a 4-node list, 4 tasks with their coordinator),
8 GPUs per node (jax's device detection), and srun's own answer to SIGTERM.
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
    if opts.get("format") == "json(networkEndpoints)":  # one endpoint per worker
        n = int(os.environ.get("FAKE_WORKERS", "4"))
        eps = [{"ipAddress": f"10.0.0.{i + 2}", "port": 8470} for i in range(n)]
        print(json.dumps({"networkEndpoints": eps}, indent=2))
        sys.exit(0)
    if state.startswith("CREATING"):  # "CREATING n": n more polls before READY
        n = int(state.split()[1])
        state_file.write_text(f"CREATING {n - 1}" if n > 1 else "READY")
        state = "CREATING"
    print(state)
elif pos[:4] == ["compute", "tpus", "queued-resources", "create"]:
    state_file.write_text(f"CREATING {os.environ.get('FAKE_CREATING_POLLS', '1')}")
    (d / "qr_state").unlink(missing_ok=True)
elif pos[:4] == ["compute", "tpus", "queued-resources", "describe"]:
    qr = d / "qr_state"
    print(qr.read_text() if qr.exists() else os.environ.get("FAKE_QR_STATE", "ACTIVE"))
elif pos[:4] == ["compute", "tpus", "queued-resources", "delete"]:
    state_file.write_text("MISSING")
    (d / "qr_state").unlink(missing_ok=True)
elif pos[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
    shutil.copy(pos[4], d / "copied.tgz")
elif pos[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
    command = opts["command"]
    if command.startswith("test -f "):
        sys.exit(subprocess.run(["bash", "-c", command]).returncode)
    def on_workers(outcome=None):  # the command, run by bash on each simulated worker
        for i in range(int(os.environ.get("FAKE_WORKERS", "4"))):
            home = d / "home" / f"w{i}"
            (home / "venv" / "bin").mkdir(parents=True, exist_ok=True)
            (home / "venv" / "bin" / "activate").write_text("")
            (home / "janus").mkdir(exist_ok=True)
            env = dict(os.environ, HOME=str(home), FAKE_HOSTNAME=f"w{i}")
            if outcome:
                env["FAKE_PY"] = outcome
            r = subprocess.run(["bash", "-c", command], env=env)
            if r.returncode:
                sys.exit(r.returncode)
    if command.startswith(": janus-start;"):
        runs = os.environ.get("FAKE_RUNS", "done").split(",")
        counter = d / "runs"
        i = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(i + 1))
        outcome = runs[min(i, len(runs) - 1)]
        if outcome == "preempt":  # the slice goes away: spot queued resources become SUSPENDED
            state_file.write_text("PREEMPTED")
            (d / "qr_state").write_text("SUSPENDED")
            sys.exit(255)  # ssh lost the connection
        on_workers(outcome)
        if outcome == "dropped":  # ssh exits 255 after the start; gcloud runs it all again
            on_workers(outcome)
    elif command.startswith(": janus-status;"):
        on_workers()
"""

# The processes on the simulated workers: `hostname` names the worker; `pgrep`/`pkill` act only on
# the fake training processes of this test (never on real janus.main processes on this machine).
FAKE_HOSTNAME = """
import os
print(os.environ.get("FAKE_HOSTNAME", "localhost"))
"""

# ssh-add -l: exit 0 when the agent holds a key (FAKE_SSH_AGENT=0 says it holds none).
FAKE_SSH_ADD = """
import os, sys
sys.exit(0 if os.environ.get("FAKE_SSH_AGENT", "1") == "1" else 1)
"""

FAKE_PKILL = """
import json, os, pathlib, signal, sys

d = pathlib.Path(os.environ["FAKE_DIR"])
name = pathlib.Path(sys.argv[0]).name
args = sys.argv[1:]
with open(d / f"{name}.log", "a") as f:
    f.write(json.dumps(args) + "\\n")
host = os.environ.get("FAKE_HOSTNAME")
pids = []
for path in d.glob(f"janus.{host}.*.pid"):
    pid = int(path.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        continue
    if open(f"/proc/{pid}/stat").read().split()[2] == "Z":
        continue
    pids.append(pid)
sig = signal.SIGTERM
for a in args:
    if a.startswith("-") and a[1:] in ("TERM", "KILL"):
        sig = getattr(signal, "SIG" + a[1:])
if name == "pkill":
    for pid in pids:
        os.kill(pid, sig)
sys.exit(0 if pids else 1)
"""

# srun: the options, then the task command; starts SLURM_NTASKS tasks with SLURM_PROCID and
# SLURM_LOCALID, and records their pids (what slurmstepd signals). On SIGTERM it does what the real
# srun does (see the module docstring): SIGKILL to every task. Exits with the worst task status.
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
procs = []
def force_termination(signum, frame):
    with open(d / "srun.log", "a") as f:
        f.write(json.dumps({"signal": signum, "action": "forcing job termination"}) + "\\n")
    for p in procs:
        p.kill()
signal.signal(signal.SIGTERM, force_termination)
for r in range(int(os.environ.get("SLURM_NTASKS", "1"))):
    env = dict(os.environ, SLURM_PROCID=str(r), SLURM_NODEID=str(r), SLURM_LOCALID="0")
    procs.append(subprocess.Popen(args[i:], env=env))
(d / "tasks.pids").write_text(" ".join(str(p.pid) for p in procs))
codes = [p.wait() for p in procs]
sys.exit(max((128 - c if c < 0 else c) for c in codes))
"""

# scancel --signal=SIG JOBID: SLURM delivers SIG to the job steps' tasks, not to the batch shell.
FAKE_SCANCEL = """
import json, os, pathlib, signal, sys

d = pathlib.Path(os.environ["FAKE_DIR"])
args = sys.argv[1:]
with open(d / "scancel.log", "a") as f:
    f.write(json.dumps(args) + "\\n")
sig = next(a.split("=", 1)[1] for a in args if a.startswith("--signal="))
assert args[-1] == os.environ["SLURM_JOB_ID"] and "--batch" not in args and "--full" not in args
for pid in (d / "tasks.pids").read_text().split():
    try:
        os.kill(int(pid), getattr(signal, "SIG" + sig))
    except ProcessLookupError:
        pass
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
host = os.environ.get("FAKE_HOSTNAME")  # on a simulated TPU worker: worker 0 is rank 0
rank = os.environ.get("SLURM_PROCID") or (host and host[1:])
def log(**kw):
    with open(d / "python.log", "a") as f:
        f.write(json.dumps(kw) + "\\n")
keys = ("JANUS_COORDINATOR_ADDRESS", "JANUS_NUM_PROCESSES", "JANUS_PROCESS_ID")
log(argv=args, env={k: os.environ.get(k) for k in keys}, rank=rank)
if args[:2] == ["-m", "janus.sweep"]:  # array mode: the real janus.sweep prints the command
    os.execv(sys.executable, [sys.executable, *args])
mode = os.environ.get("FAKE_PY", "done")
workdir = next(  # janus.main accepts --workdir=DIR and --workdir DIR
    a[len("--workdir="):] if a.startswith("--workdir=") else args[i + 1]
    for i, a in enumerate(args) if a.startswith("--workdir=") or a == "--workdir"
)
if host:
    (d / f"janus.{host}.{os.getpid()}.pid").write_text(str(os.getpid()))
    log(started=host, env_workers=os.environ.get("JANUS_TPU_WORKERS"))
if mode == "dropped":
    mode = "wait_term"
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
        ("scancel", FAKE_SCANCEL),
        ("scontrol", FAKE_SCONTROL),
        ("python", FAKE_PYTHON),
        ("hostname", FAKE_HOSTNAME),
        ("ssh-add", FAKE_SSH_ADD),
        ("pkill", FAKE_PKILL),
        ("pgrep", FAKE_PKILL),
    ]:
        _write_fake(bin_dir, name, body)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JANUS_", "TPU_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_DIR=str(tmp_path))
    yield tmp_path, env
    for path in tmp_path.glob("janus.*.pid"):  # detached fake training processes left running
        try:
            os.kill(int(path.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


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
        "--runtime-version=tpu-ubuntu2204-base", "--scopes=cloud-platform", "--spot",
        "--project=my-proj",
    ]  # fmt: skip
    describe = ["compute", "tpus", "tpu-vm", "describe", "janus-t", "--zone=us-central2-b"]
    polls = [c for c in calls if c[:6] == describe]
    assert len(polls) == 3  # CREATING, CREATING, READY
    assert all(c[6:] == ["--format=value(state)", "--project=my-proj"] for c in polls)
    # Without SPOT/PROJECT: no empty arguments.
    (d / "gcloud.log").unlink()
    _tpu(d, _tpu_env(env, d), "create")
    assert _log(d, "gcloud")[0][-2:] == [
        "--runtime-version=tpu-ubuntu2204-base", "--scopes=cloud-platform",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "accelerator,version",
    [("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
     ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")],
)  # fmt: skip
def test_tpu_runtime_version_follows_the_generation(fakes, accelerator, version):
    """Cloud TPU's runtime versions differ by generation (v4: tpu-ubuntu2204-base; v5e, v5p, v6e:
    their v2-alpha-* images); VERSION overrides; SERVICE_ACCOUNT is passed on."""
    d, env = fakes
    env = _tpu_env(env, d, ACCELERATOR=accelerator, SERVICE_ACCOUNT="sa@p.iam.gserviceaccount.com")
    del env["VERSION"]
    _tpu(d, env, "create")
    create = _log(d, "gcloud")[0]
    assert f"--runtime-version={version}" in create
    assert "--service-account=sa@p.iam.gserviceaccount.com" in create
    r = _tpu(d, dict(env, ACCELERATOR="v9-8"), "create", check=False)
    assert r.returncode != 0 and "set VERSION" in r.stderr


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
    # orbax renames a checkpoint's temporary directory: gcsfuse must allow directory renames.
    assert "gcsfuse --implicit-dirs --rename-dir-limit=200000 my-bucket /mnt/janus" in cmds[0]
    assert "apt-key add" not in cmds[0]  # a keyring instead of the deprecated apt-key
    assert "signed-by=/usr/share/keyrings/cloud.google.asc" in cmds[0]
    assert "apt-get -o DPkg::Lock::Timeout=600" in cmds[0]  # a fresh VM's unattended-upgrades
    assert cmds[1] == "mkdir -p ~/janus && tar -xzf ~/janus.tgz -C ~/janus"
    lock = (REPO / "requirements" / "lock.txt").read_text().splitlines()
    jax_version = next(line.split("==")[1] for line in lock if line.startswith("jax=="))
    assert "pip install -q -r requirements/lock.txt" in cmds[2]
    # libtpu pinned as the locked jax release requires it (jax's own package metadata).
    import importlib.metadata

    libtpu = next(
        r.split(";")[0].strip()
        for r in importlib.metadata.requires("jax")
        if r.startswith("libtpu") and 'extra == "tpu"' in r
    )
    assert f"pip install -q 'jax[tpu]=={jax_version}' '{libtpu}'" in cmds[2]
    assert "pip install -q --no-deps -e ." in cmds[2]
    with tarfile.open(d / "copied.tgz") as tar:
        names = set(tar.getnames())
    assert {"janus/main.py", "launch/tpu_vm.sh", "requirements/lock.txt"} <= names
    assert not any(n.startswith((".venv/", ".git/")) for n in names)


def _started(d):
    return [e for e in _log(d, "python") if "started" in e]


def _wait_for(predicate, what):
    deadline = time.time() + 30
    while not predicate():
        assert time.time() < deadline, what
        time.sleep(0.02)


def _alive_workers(d):
    alive = []
    for path in d.glob("janus.*.pid"):
        stat = pathlib.Path(f"/proc/{path.read_text()}/stat")
        if stat.exists() and stat.read_text().split()[2] != "Z":
            alive.append(path.name.split(".")[1])
    return sorted(alive)


def test_tpu_copy_to_several_workers_needs_the_key_in_ssh_agent(fakes):
    """`tpu-vm scp --worker=all` on a multi-host slice takes the key from ssh-agent: without one,
    `copy` stops before copying and says how to add it; a single host needs none."""
    d, env = fakes
    (d / "state").write_text("READY")
    r = _tpu(d, _tpu_env(env, d, FAKE_SSH_AGENT="0"), "copy", check=False)
    assert r.returncode == 1 and "ssh-add ~/.ssh/google_compute_engine" in r.stderr
    assert not [c for c in _log(d, "gcloud") if c[3] == "scp"]
    _tpu(d, _tpu_env(env, d, FAKE_SSH_AGENT="0", FAKE_WORKERS="1"), "copy")
    assert [c for c in _log(d, "gcloud") if c[3] == "scp"]


def test_tpu_run_starts_janus_detached_on_every_worker(fakes):
    """`run` starts the same janus.main on every worker, detached (nohup setsid), with its pid,
    log and exit status in $WORKDIR/launch/<worker>.*; JANUS_TPU_WORKERS is the slice's worker
    count, counted from the node's networkEndpoints: 4 on a v4-32, 1 on a v4-8. (On a TPU VM
    created with gcloud nothing in the environment names the slice.)"""
    d, env = fakes
    (d / "state").write_text("READY")
    args = ["--config", "configs/janus.py:loss=infonce,budget=2400000",
            "--config.data.train=/mnt/janus/data/in100*1+/mnt/janus/data/janus*1"]  # fmt: skip
    env = _tpu_env(env, d)
    _tpu(d, env, "run", *args)
    calls = _log(d, "gcloud")
    assert [
        "compute", "tpus", "tpu-vm", "describe", "janus-t", "--zone=us-central2-b",
        "--format=json(networkEndpoints)",
    ] in calls  # fmt: skip
    [command] = _ssh_commands(calls)
    assert "nohup setsid bash -c" in command and "export JANUS_TPU_WORKERS=4" in command
    launch = d / "run dir" / "launch"
    _wait_for(lambda: len(list(launch.glob("*.exit"))) == 4, "the runs did not end")
    # The space in the workdir and the globs reach janus.main unchanged, on every worker.
    tasks = [e["argv"] for e in _log(d, "python") if "argv" in e]
    assert tasks == [["-m", "janus.main", f"--workdir={env['WORKDIR']}", *args]] * 4
    assert sorted(e["started"] for e in _started(d)) == ["w0", "w1", "w2", "w3"]
    assert {e["env_workers"] for e in _started(d)} == {"4"}
    assert {p.name for p in launch.glob("*.log")} == {f"w{i}.log" for i in range(4)}
    assert [(launch / f"w{i}.exit").read_text().strip() for i in range(4)] == ["0"] * 4
    r = _tpu(d, env, "status")
    assert sorted(r.stdout.splitlines()) == [f"janus-worker w{i} exit=0" for i in range(4)]
    # A single-host TPU VM: JANUS_TPU_WORKERS=1, so janus never initialises jax.distributed.
    (d / "python.log").unlink()
    _tpu(d, dict(env, FAKE_WORKERS="1"), "run", "--config", "c.py")
    _wait_for(lambda: _started(d), "the run did not start")
    assert [e["env_workers"] for e in _started(d)] == ["1"]


def test_tpu_run_again_leaves_one_janus_per_worker(fakes):
    """gcloud runs the whole ssh command again when ssh exits 255; a start first stops any
    `python -m janus.main` left on the worker (pkill, here faked to touch only this test's
    processes), so only one trains."""
    d, env = fakes
    (d / "state").write_text("READY")
    env = _tpu_env(env, d, FAKE_RUNS="dropped")  # ssh "drops": the start command runs twice
    _tpu(d, env, "run", "--config", "c.py")
    _wait_for(lambda: len(_started(d)) == 8, "two starts on each of 4 workers")
    _wait_for(lambda: len(_alive_workers(d)) == 4, "one janus per worker")
    saved = sorted(e["sigterm"] for e in _log(d, "python") if "sigterm" in e)
    assert saved == list("0123")  # the first janus on each worker was stopped with SIGTERM
    assert _alive_workers(d) == ["w0", "w1", "w2", "w3"]
    assert any(a[:1] == ["-TERM"] for a in _log(d, "pkill"))
    r = _tpu(d, env, "status")
    assert sorted(r.stdout.splitlines()) == [f"janus-worker w{i} running" for i in range(4)]


def test_tpu_watch_recreates_after_preemption_and_restarts_until_done(fakes):
    d, env = fakes
    (d / "state").write_text("READY")
    # start 1: the spot slice is preempted (queued resource SUSPENDED, node PREEMPTED); start 2
    # (on the recreated slice): every worker stops with exit 0 (SIGTERM) and no DONE; start 3:
    # finishes and worker 0 writes DONE.
    env = _tpu_env(env, d, FAKE_RUNS="preempt,stop,done")
    args = ["--config", "configs/mini.py", "--config.optimizer.lr=0.1"]
    r = _tpu(d, env, "watch", *args)
    assert "run finished" in r.stdout and "queued resource SUSPENDED" in r.stdout
    calls = _log(d, "gcloud")
    kinds = []
    for c in calls:
        if c[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
            cmd = next(a for a in c if a.startswith("--command="))
            kinds.append(
                "start" if "janus-start" in cmd else "status" if "janus-status" in cmd
                else "done?" if "test -f" in cmd else "ssh"
            )  # fmt: skip
        elif c[2] == "queued-resources" and c[3] in ("create", "delete"):
            kinds.append(f"qr-{c[3]}")
        elif c[3] == "scp":
            kinds.append("scp")
    kinds = [k for i, k in enumerate(kinds) if k != "status" or kinds[i + 1 : i + 2] != ["status"]]
    assert kinds == [
        "start",                                                 # preempted
        "qr-delete", "qr-create", "ssh", "scp", "ssh", "ssh",    # recreate + setup (with copy)
        "start", "status", "done?",                              # stopped: not done
        "start", "status", "done?",                              # DONE
    ]  # fmt: skip
    create = next(c for c in calls if c[2:4] == ["queued-resources", "create"])
    assert "--accelerator-type=v4-32" in create and "--zone=us-central2-b" in create
    tasks = [e["argv"] for e in _log(d, "python") if "argv" in e]
    assert tasks == [["-m", "janus.main", f"--workdir={env['WORKDIR']}", *args]] * 8
    done_checks = [shlex.split(c) for c in _ssh_commands(calls, "0")]
    assert done_checks == [["test", "-f", f"{env['WORKDIR']}/DONE"]] * 2
    assert (d / "run dir" / "DONE").exists()


def test_tpu_watch_does_not_retry_a_failure_on_a_healthy_slice(fakes):
    d, env = fakes
    (d / "state").write_text("READY")
    r = _tpu(d, _tpu_env(env, d, FAKE_RUNS="fail,done"), "watch", "--config", "c.py", check=False)
    assert r.returncode == 1 and "failed with status 1 on a healthy slice" in r.stdout
    assert int((d / "runs").read_text()) == 1


class _MetadataServer:
    """The GCE metadata server a TPU VM worker sees, on 127.0.0.1 (jax reads GCE_METADATA_IP):
    /computeMetadata/v1/instance/attributes/<key>, only with `Metadata-Flavor: Google`, 404 for
    unknown keys. The keys and formats are the ones jax/_src/clusters/cloud_tpu_cluster.py reads
    (agent-worker-number; worker-network-endpoints as `name:id:ip` triples; tpu-env lines
    `KEY: 'value'`)."""

    def __init__(self, attributes):
        import http.server
        import threading

        attrs = attributes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                prefix = "/computeMetadata/v1/instance/attributes/"
                key = self.path[len(prefix) :] if self.path.startswith(prefix) else None
                if self.headers.get("Metadata-Flavor") != "Google":
                    self.send_response(403)
                    body = b""
                elif key in attrs:
                    self.send_response(200)
                    body = attrs[key].encode()
                else:
                    self.send_response(404)
                    body = b""
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tpu_vm_worker(monkeypatch):
    """Worker 2 of a v4-32 (4 workers) created with gcloud: no TPU_WORKER_HOSTNAMES, the slice
    known only to the metadata server. jax decides it runs on a Cloud TPU VM when libtpu finds
    chips (cloud_tpu_init.running_in_cloud_tpu_vm); here that flag is set by hand."""
    from jax._src.clusters import cloud_tpu_cluster, cluster

    server = _MetadataServer({
        "agent-worker-number": "2",
        "worker-network-endpoints": ",".join(f"w{i}:{i}:10.0.0.{i + 2}" for i in range(4)),
        "tpu-env": "ACCELERATOR_TYPE: 'v4-32'\nWORKER_ID: '2'\n",
    })  # fmt: skip
    for var in list(os.environ):
        if var.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE_", "JANUS_", "KUBERNETES_")):
            monkeypatch.delenv(var)
        elif var.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("GCE_METADATA_IP", server.address)
    monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
    monkeypatch.setattr(cluster, "running_in_cloud_tpu_vm", True)
    yield
    server.close()


def test_tpu_slice_is_initialised_through_jax_metadata_detection(tpu_vm_worker, monkeypatch):
    """janus initialises on the slice because the launcher said so (JANUS_TPU_WORKERS=4), and
    jax's own detection (GceTpuCluster, the metadata server) fills in the coordinator (worker 0 at
    jax's port 8482), the process count and this worker's id; no local_device_ids on TPU."""
    import jax
    from jax._src import clusters

    from janus import main

    assert main.cluster_env(dict(os.environ)) is None  # the fault: nothing in the env says slice
    calls = []

    def initialize(**kwargs):  # what jax.distributed.initialize() does first with no arguments
        calls.append(kwargs)
        return clusters.ClusterEnv.auto_detect_unset_distributed_params(
            None, None, None, None, None, 10
        )

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    assert main.initialize_distributed(dict(os.environ, JANUS_TPU_WORKERS="4")) == "tpu"
    assert calls == [{}]  # no arguments, as JAX's multi-process guide says for Cloud TPU
    found = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, None, 10
    )
    assert found == ("10.0.0.2:8482", 4, 2, None)
    # A single-host TPU VM (v4-8): never initialised.
    calls.clear()
    assert main.initialize_distributed(dict(os.environ, JANUS_TPU_WORKERS="1")) is None
    assert calls == []


# --------------------------------------------------------------------------- SLURM + jax


SLURM_8_GPUS = {  # one task per node, SLURM's gres plugin exposing the node's 8 GPUs
    "SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
    "JANUS_COORDINATOR_ADDRESS": "gpu07:62000", "JANUS_NUM_PROCESSES": "2", "JANUS_PROCESS_ID": "1",
}  # fmt: skip


def test_explicit_coordinates_switch_off_jax_slurm_detection(monkeypatch):
    """With coordinator, count and id given but no local_device_ids, jax still asks its SLURM
    detection for the local devices and gets [SLURM_LOCALID] = [0] (jax/_src/clusters/cluster.py,
    auto_detect_unset_distributed_params): one GPU of 8. janus passes
    cluster_detection_method="deactivate" (jax/_src/distributed.py skips detection then)."""
    import jax
    from jax._src import clusters

    from janus import main

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert main.initialize_distributed(dict(SLURM_8_GPUS)) == "explicit"
    assert calls == [dict(
        coordinator_address="gpu07:62000", num_processes=2, process_id=1,
        cluster_detection_method="deactivate",
    )]  # fmt: skip
    # What jax would have chosen without it, under the same environment:
    for k, v in SLURM_8_GPUS.items():
        monkeypatch.setenv(k, v)
    detected = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        "gpu07:62000", 2, 1, None, None, 10
    )
    assert detected == ("gpu07:62000", 2, 1, [0])


CHILD = """
import json, os, sys
import jax
from jax._src import xla_bridge
from janus import main
if os.environ.get("RAW"):  # the old call: jax.distributed.initialize(**cluster_env kwargs)
    jax.distributed.initialize(**main.cluster_env()[1])
else:
    main.initialize_distributed()
print(json.dumps({"visible": xla_bridge.CUDA_VISIBLE_DEVICES.value,
                  "local": jax.local_device_count(), "global": jax.device_count()}), flush=True)
jax.distributed.shutdown()
"""


@pytest.mark.parametrize("raw", [False, True], ids=["janus", "without_deactivate"])
def test_cpu_analogue_of_a_slurm_node_with_8_gpus(tmp_path, raw):
    """Two real processes under a simulated SLURM step (SLURM_LOCALID=0 on each node, 8 visible
    GPUs), 4 CPU devices each, jax.distributed.initialize for real: janus keeps every device
    visible (jax_cuda_visible_devices stays "all"); without deactivating the detection jax
    restricts each process to GPU "0". CPU devices are not restricted by it, so both see 4."""
    import socket

    (tmp_path / "child.py").write_text(CHILD)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JANUS_"))}
        env.update(SLURM_8_GPUS, SLURM_STEP_NODELIST="localhost", SLURM_PROCID=str(rank))
        env.update(JANUS_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JANUS_PROCESS_ID=str(rank))
        env.update(JANUS_NUM_CPU_DEVICES="4", JAX_PLATFORMS="cpu", RAW="1" if raw else "")
        env.update(JAX_NUM_CPU_DEVICES="4", PYTHONPATH=str(REPO))
        procs.append(subprocess.Popen(
            [sys.executable, str(tmp_path / "child.py")], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    visible = "0" if raw else "all"
    assert results == [{"visible": visible, "local": 4, "global": 8}] * 2


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


def test_slurm_header_signals_the_steps_before_the_limit_and_requeues():
    """`--signal=TERM@120` without `B:`: SLURM signals the steps' tasks (janus saves), not only the
    batch shell (sbatch(1), --signal)."""
    header = [line for line in SLURM_SH.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --signal=TERM@120" in header and "#SBATCH --requeue" in header
    assert not any("--signal=B:" in line for line in header)
    assert "#SBATCH --ntasks-per-node=1" in header
    # Every segment of a requeued job keeps its log (tests/test_slurm.py shows it on SLURM).
    assert "#SBATCH --open-mode=append" in header


def test_slurm_runs_every_task_with_the_cluster_env_and_finishes(fakes):
    d, env = fakes
    r = _sbatch(d, _slurm_env(env, d, FAKE_PY="done", SLURM_CPUS_PER_TASK="32"), *ARGS)
    assert r.returncode == 0, r.stderr
    [srun] = _log(d, "srun")
    # srun does not inherit sbatch's --cpus-per-task (Slurm >= 22.05): passed explicitly.
    assert srun["argv"][:2] == ["--kill-on-bad-exit=1", "--cpus-per-task=32"]
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


def _start_batch(d, env):
    proc = subprocess.Popen(
        ["bash", str(SLURM_SH), *ARGS], env=env, cwd=d, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 30
    while len(list(d.glob("ready.*"))) < 4:
        assert time.time() < deadline and proc.poll() is None, "tasks did not start"
        time.sleep(0.02)
    return proc


def _saved(d):
    return sorted(e["sigterm"] for e in _log(d, "python") if "sigterm" in e)


@pytest.mark.parametrize("done", [False, True], ids=["not_done", "done"])
def test_slurm_signal_to_the_steps_saves_then_requeues_unless_done(fakes, done):
    """`#SBATCH --signal=TERM@120` (no B:): SLURM sends SIGTERM to every task of the step, not to
    the batch shell or srun. The tasks save and exit 0, srun exits 0, and the batch script
    requeues the job unless <workdir>/DONE."""
    d, env = fakes
    env = _slurm_env(env, d, FAKE_PY="wait_term")
    if done:
        (d / "runs" / "x" / "DONE").write_text("{}")
    proc = _start_batch(d, env)
    for pid in (d / "tasks.pids").read_text().split():  # what slurmstepd does with --signal
        os.kill(int(pid), signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert _saved(d) == list("0123")
    assert not [e for e in _log(d, "srun") if "signal" in e]  # srun itself never signalled
    assert (["requeue", "1234567"] in _log(d, "scontrol")) == (not done)


def test_slurm_batch_shell_signalled_has_slurm_signal_the_steps(fakes):
    """A SIGTERM to the batch shell (`--signal=B:TERM@...`, `scancel --batch`): the trap must not
    pass it to srun (srun would SIGKILL the tasks) but ask SLURM to signal the steps
    (`scancel --signal=TERM $SLURM_JOB_ID`); the tasks save, and the job is requeued."""
    d, env = fakes
    proc = _start_batch(d, _slurm_env(env, d, FAKE_PY="wait_term"))
    proc.send_signal(signal.SIGTERM)  # to the batch shell only
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert _log(d, "scancel") == [["--signal=TERM", "1234567"]]
    assert _saved(d) == list("0123")
    assert not [e for e in _log(d, "srun") if "signal" in e]
    assert ["requeue", "1234567"] in _log(d, "scontrol")


def test_fake_srun_kills_its_tasks_on_sigterm_as_the_real_one_does(fakes):
    """The fault the script avoids: SIGTERM to srun (what the old trap did) SIGKILLs the tasks,
    nothing is saved, and the non-zero status means no requeue."""
    d, env = fakes
    env = _slurm_env(env, d, FAKE_PY="wait_term", SLURM_NTASKS="4")
    srun = subprocess.Popen(
        ["srun", "python", "-m", "janus.main", *ARGS], env=env, cwd=d,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + 30
    while len(list(d.glob("ready.*"))) < 4:
        assert time.time() < deadline and srun.poll() is None, "tasks did not start"
        time.sleep(0.02)
    srun.send_signal(signal.SIGTERM)
    srun.communicate(timeout=30)
    assert srun.returncode == 128 + signal.SIGKILL
    assert _saved(d) == []
    assert {"signal": int(signal.SIGTERM), "action": "forcing job termination"} in _log(d, "srun")


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
