#!/usr/bin/env bash
# A SLURM cluster on this machine for tests/test_slurm.py (Debian 12: slurm-wlm 22.05, munge):
# one host, two nodes (two slurmd). Run as root, no systemd needed:
#
#   apt-get install -y slurm-wlm munge && bash tests/slurm/cluster.sh start
#   export SLURM_CONF=/tmp/janus-slurm/etc/slurm.conf     # what `start` prints; the tests set it
#   bash tests/slurm/cluster.sh status | stop
#
# Everything lives under $JANUS_SLURM_DIR (default /tmp/janus-slurm): slurm.conf, munge key and
# socket, state, spool, logs and pid files. /etc/slurm and /etc/munge are not touched, and the
# system's munged (if any) is not used: this cluster runs its own munged on its own socket
# (AuthInfo=socket=...) and its own ports. `stop` ends only the daemons `start` started, by the
# pids in their pid files.
#
# slurm.conf: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, SelectType=select/cons_tres
# (CR_CPU: one CPU per task, so two 1-CPU jobs run side by side), the node line from `slurmd -C`,
# no accounting. Nodes: JANUS_SLURM_NODES (default 2) nodes named <host>, <host>-2, ..., each with
# the node line's resources (SlurmdParameters=config_overrides: they share this host's CPUs), one
# slurmd each (`slurmd -N NAME`, own port, spool, log and pid file). Debian's slurmd is built with
# --enable-multiple-slurmd (`scontrol show config`: MULTIPLE_SLURMD = Yes). So `sbatch --nodes=2`
# gets a real two-node allocation; the first node's name is this host's, so a job's coordinator
# address (`scontrol show hostnames`, first node) resolves; where the host name does not resolve,
# the cluster has one node (the 2-node tests skip). (NodeName=localhost is no way out: SLURM
# replaces it by the host name.) Short timeouts for tests: a requeued job waits AuthInfo's cred_expire before it
# may start again (slurm.conf(5): "This also controls how long a requeued job must wait before
# starting again. The default value is 120 seconds."); here 10 s. The scheduler runs every 2 s.
# MinJobAge=600 keeps a finished job in `scontrol show job` for 10 minutes (no accounting: no
# sacct). SlurmctldDebug=debug: slurmctld logs the time-limit warning signal (`--signal`) only at
# debug ("send_job_warn_signal: warning signal 15 to JobId=N"), which the time-limit test reads.
# Time limits are checked every 30 s (PERIODIC_TIMEOUT, compiled in, not a slurm.conf setting);
# OverTimeLimit=0 (default): a job still running at its EndTime is killed at the next check,
# SIGTERM then SIGKILL KillWait (10 s) later.
set -euo pipefail

dir=${JANUS_SLURM_DIR:-/tmp/janus-slurm}
conf=$dir/etc/slurm.conf
export SLURM_CONF=$conf
ctld_port=${JANUS_SLURM_PORT:-16817}
nodes=${JANUS_SLURM_NODES:-2}

die() { echo "cluster.sh: $*" >&2; exit 1; }

alive() {  # alive NAME: the daemon whose pid file is $dir/run/NAME.pid runs
  local pid
  [[ -f $dir/run/$1.pid ]] && pid=$(<"$dir/run/$1.pid") && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

names() {  # the node names: <host>, <host>-2, ...
  local host i
  host=$(hostname -s)
  echo "$host"
  for ((i = 2; i <= nodes; i++)); do echo "$host-$i"; done
}

# A job's coordinator is its first node's name; with one that does not resolve, one node only.
if ((nodes > 1)) && ! getent hosts "$(hostname -s)" >/dev/null; then
  echo "cluster.sh: host name $(hostname -s) does not resolve: one node only" >&2
  nodes=1
fi

write_conf() {
  local node host name i=0 lines=""
  host=$(hostname -s)
  node=$(slurmd -C | head -1)  # NodeName=<host> CPUs=... RealMemory=...
  [[ $node == NodeName=* ]] || die "slurmd -C printed no node line: $node"
  for name in $(names); do
    lines+="NodeName=$name NodeHostname=$name NodeAddr=127.0.0.1 Port=$((ctld_port + 2 + i))"
    lines+=" ${node#NodeName=* }"$'\n'
    mkdir -p "$dir/spool/slurmd-$name"
    i=$((i + 1))
  done
  mkdir -p "$dir"/{etc,state,spool,log,run,munge}
  cat >"$conf" <<CONF
# Written by tests/slurm/cluster.sh: a one-node test cluster.
ClusterName=janus-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmdParameters=config_overrides
SlurmctldDebug=debug
SlurmdDebug=info
PlugStackConfig=$dir/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
$lines
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  : >"$dir/etc/plugstack.conf"
}

start() {
  [[ $(id -u) == 0 ]] || die "must run as root (slurmd runs jobs as their users)"
  for cmd in munged slurmctld slurmd sinfo; do
    command -v "$cmd" >/dev/null || die "$cmd not found: apt-get install -y slurm-wlm munge"
  done
  if [[ -f $conf ]] && status >/dev/null 2>&1; then
    echo "cluster.sh: already running; export SLURM_CONF=$conf"
    return
  fi
  stop quiet
  rm -rf "$dir/state" "$dir/spool"  # no jobs of an earlier cluster come back
  write_conf
  # munge: its own key (created if missing), socket, pid, log and seed files under $dir/munge.
  local key=$dir/munge/munge.key
  if [[ ! -s $key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key" >/dev/null
    else dd if=/dev/urandom of="$key" bs=1024 count=1 status=none; fi
  fi
  chmod 711 "$dir/munge" && chmod 400 "$key"
  munged --force --socket="$dir/munge/munge.socket" --key-file="$key" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed" || die "munged did not start: $(tail -3 "$dir/log/munged.log")"
  slurmctld -f "$conf" || die "slurmctld did not start: $(tail -5 "$dir/log/slurmctld.log")"
  for name in $(names); do
    slurmd -f "$conf" -N "$name" || die "slurmd $name did not start: $(tail -5 "$dir/log/slurmd-$name.log")"
  done
  # Bounded wait until the node is idle.
  local state="" deadline=$((SECONDS + ${JANUS_SLURM_WAIT_S:-60}))
  while ((SECONDS < deadline)); do
    state=$(sinfo -h -N -o %T 2>/dev/null | sort | uniq -c | xargs || true)
    if [[ $state == "$nodes idle" ]]; then
      echo "cluster.sh: $nodes nodes idle; export SLURM_CONF=$conf"
      return
    fi
    sleep 1
  done
  echo "cluster.sh: nodes not idle after ${JANUS_SLURM_WAIT_S:-60} s (state: '${state:-none}')" >&2
  tail -5 "$dir"/log/slurm*.log >&2 || true
  exit 1
}

stop() {
  local name pid
  for name in $(cd "$dir/run" 2>/dev/null && ls slurmd-*.pid 2>/dev/null | sed 's/\.pid$//') \
    slurmctld munged; do
    alive "$name" || continue
    pid=$(<"$dir/run/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$dir/run/$name.pid"
  done
  [[ ${1:-} == quiet ]] || echo "cluster.sh: stopped"
}

status() {
  local name ok=0
  for name in munged slurmctld $(names | sed 's/^/slurmd-/'); do
    if alive "$name"; then echo "$name: running (pid $(<"$dir/run/$name.pid"))"
    else echo "$name: not running"; ok=1; fi
  done
  ((ok == 0)) && sinfo -N
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
