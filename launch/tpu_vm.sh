#!/usr/bin/env bash
# Train janus on a Cloud TPU VM (single host or a pod slice): create, install, copy, run, and keep
# the run going through preemptions. The same `python -m janus.main` command runs on every worker.
# `run` tells janus how many workers the slice has (JANUS_TPU_WORKERS, counted from the node's
# networkEndpoints, one per worker): with more than one, janus.main calls
# jax.distributed.initialize() with no arguments and jax finds the slice through the TPU VM's
# metadata server. (TPU_WORKER_HOSTNAMES, which jax also reads, is set only on GKE, not on a TPU VM
# created with gcloud.) A single-host TPU VM never initialises the distributed runtime.
#
# Usage (from the repository root):
#   export TPU_NAME=janus-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32
#   export WORKDIR=/mnt/janus/runs/mix_vl     # a path every worker sees (see below)
#   export BUCKET=my-bucket                   # mounted at /mnt/janus with gcsfuse by `setup`
#   launch/tpu_vm.sh create            # queued resource (add SPOT=1 for spot capacity)
#   launch/tpu_vm.sh setup             # python venv + pinned stack + gcsfuse mount, on all workers
#   launch/tpu_vm.sh copy              # this checkout (tar + scp) to ~/janus on all workers
#   launch/tpu_vm.sh run --config configs/janus.py:loss=infonce,budget=2400000 \
#        --config.data.train=/mnt/janus/data/in100*1+/mnt/janus/data/janus*1
#                                  # starts janus.main detached on every worker (after stopping
#                                  # any janus.main left there); pid, log and exit status in
#                                  # $WORKDIR/launch/<worker hostname>.{pid,log,exit}
#   launch/tpu_vm.sh status            # per worker: running | exit=<status> | absent
#   launch/tpu_vm.sh watch <same args as run>   # start, then poll the queued resource, the node
#                                  # and the workers until $WORKDIR/DONE; preempted (SUSPENDED/
#                                  # PREEMPTED): delete, recreate, setup, start (it resumes)
#   launch/tpu_vm.sh ssh "<command>"   # any command on all workers;  launch/tpu_vm.sh delete
#
# The workdir must be shared by all workers: every process writes its part of each checkpoint and
# process 0 the logs. `setup` mounts gs://$BUCKET at /mnt/janus with gcsfuse, with
# --rename-dir-limit (RENAME_DIR_LIMIT, default 200000) because orbax finalises each checkpoint by
# renaming its temporary directory and gcsfuse refuses directory renames on a flat bucket otherwise;
# on a flat bucket that rename copies object by object (not atomic). Prefer a bucket with
# hierarchical namespace (native, atomic folder renames), or a Filestore/NFS mount (POSIX renames);
# local SSD plus a periodic sync to a bucket is not enough here, as every worker must see the
# same checkpoint directory. Data dirs are read by every worker, so they live there too.
#
# Optional: VERSION (runtime version; default chosen from ACCELERATOR: v2/v3/v4
# tpu-ubuntu2204-base, v5litepod/v5e v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e),
# SCOPES (default cloud-platform, so the bucket is writable), SERVICE_ACCOUNT, LIBTPU_PIN,
# PROJECT (gcloud --project), QR_NAME (default $TPU_NAME-qr), REMOTE_DIR (default janus),
# MOUNT (default /mnt/janus), POLL_S (seconds between state polls, default 30),
# RETRY_S (seconds before `watch` restarts a stopped run, default 60). `create` fails (rather than
# waiting forever) when the queued resource is FAILED or SUSPENDED. tests/test_launch.py runs this
# script against a fake `gcloud` on PATH that runs the start/status commands on simulated workers.
set -euo pipefail
cd "$(dirname "$0")/.."  # `copy` packs this checkout (git ls-files)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in
  create | delete | setup | copy | run | status | watch | ssh) ;;
  *) usage; exit 2 ;;
esac

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR=${ACCELERATOR:-v4-8}
# The TPU VM runtime (software version) differs by generation (Cloud TPU "TPU software versions").
case "$ACCELERATOR" in
  v2-* | v3-* | v4-*) default_version=tpu-ubuntu2204-base ;;
  v5litepod-* | v5e-*) default_version=v2-alpha-tpuv5-lite ;;
  v5p-*) default_version=v2-alpha-tpuv5 ;;
  v6e-*) default_version=v2-alpha-tpuv6e ;;
  *) default_version="" ;;
esac
VERSION=${VERSION:-$default_version}
: "${VERSION:?set VERSION: no default runtime version known for ACCELERATOR=$ACCELERATOR}"
# The VM's service account needs write access to the bucket: full cloud-platform scope by default
# (access then follows the account's IAM roles); SERVICE_ACCOUNT picks another account.
SCOPES=${SCOPES:-cloud-platform}
# gcsfuse: orbax finalises a checkpoint by renaming its temporary directory (a local-looking path
# gets AtomicRenameTemporaryPath), and gcsfuse refuses directory renames on a flat bucket unless
# --rename-dir-limit allows them (then it copies and deletes each object: not atomic).
RENAME_DIR_LIMIT=${RENAME_DIR_LIMIT:-200000}
LIBTPU_PIN=${LIBTPU_PIN:-libtpu==0.0.42.*}  # what jax[tpu]==0.10.2 requires
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REMOTE_DIR=${REMOTE_DIR:-janus}
MOUNT=${MOUNT:-/mnt/janus}
QR_NAME=${QR_NAME:-$TPU_NAME-qr}
POLL_S=${POLL_S:-30}
RETRY_S=${RETRY_S:-60}

gc() { gcloud "$@" ${PROJECT_FLAG:-}; }
on_all() { gc compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"; }

state() {
  gc compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" --format='value(state)' 2>/dev/null \
    || echo MISSING
}

create() {
  local spot="" qr
  [[ "${SPOT:-0}" == 1 ]] && spot=--spot
  # ${spot:+...}: no empty argument, and no empty-array expansion (an error under `set -u` in
  # the bash 3.2 of macOS, where this script usually runs).
  gc compute tpus queued-resources create "$QR_NAME" --node-id="$TPU_NAME" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION" --scopes="$SCOPES" \
    ${SERVICE_ACCOUNT:+"--service-account=$SERVICE_ACCOUNT"} ${spot:+"$spot"}
  echo "waiting for $TPU_NAME to become READY..."
  until [[ "$(state)" == READY ]]; do
    qr=$(gc compute tpus queued-resources describe "$QR_NAME" --zone="$ZONE" \
      --format='value(state.state)' 2>/dev/null || echo UNKNOWN)
    case "$qr" in
      FAILED | SUSPENDED)
        echo "queued resource $QR_NAME is $qr; see: gcloud compute tpus queued-resources" \
          "describe $QR_NAME --zone=$ZONE" >&2
        return 1
        ;;
    esac
    sleep "$POLL_S"
  done
}

delete() {
  gc compute tpus queued-resources delete "$QR_NAME" --zone="$ZONE" --force --quiet || true
}

setup() {
  on_all "set -e
    # A fresh VM runs unattended-upgrades: wait up to 10 min for the dpkg lock instead of failing.
    apt() { sudo apt-get -o DPkg::Lock::Timeout=600 \"\$@\"; }
    apt update -qq && apt install -y -qq python3.11 python3.11-venv rsync
    python3.11 -m venv ~/venv && . ~/venv/bin/activate && pip install -q --upgrade pip
    mkdir -p ~/$REMOTE_DIR
    if [ -n '${BUCKET:-}' ] && ! mountpoint -q $MOUNT; then
      export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s)
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
        | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
      echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" \
        | sudo tee /etc/apt/sources.list.d/gcsfuse.list
      apt update -qq && apt install -y -qq gcsfuse
      sudo mkdir -p $MOUNT && sudo chown \$USER $MOUNT
      gcsfuse --implicit-dirs --rename-dir-limit=$RENAME_DIR_LIMIT ${BUCKET:-} $MOUNT
    fi"
  copy
  # The pinned stack, then the TPU runtime for the same jax version, with libtpu pinned as that jax
  # release declares it (LIBTPU_PIN; tests/test_launch.py checks it against jax's metadata).
  local jax_version
  jax_version=$(grep -E '^jax==' requirements/lock.txt | cut -d= -f3) \
    || { echo "no jax== pin in requirements/lock.txt" >&2; return 1; }
  on_all ". ~/venv/bin/activate && cd ~/$REMOTE_DIR && pip install -q -r requirements/lock.txt \
    && pip install -q 'jax[tpu]==$jax_version' '$LIBTPU_PIN' && pip install -q --no-deps -e ."
}

copy() {
  # The checkout without venvs, data or runs, to every worker.
  local tmp n
  n=$(workers) || return 1
  if ((n > 1)) && ! ssh-add -l >/dev/null 2>&1; then
    # `tpu-vm scp --worker=all` on a multi-host slice uses the key from ssh-agent.
    echo "copying to $n workers needs gcloud's ssh key in ssh-agent; run:" >&2
    echo "  eval \"\$(ssh-agent -s)\" && ssh-add ~/.ssh/google_compute_engine" >&2
    return 1
  fi
  tmp=$(mktemp -d)  # not `mktemp --suffix`: GNU only
  git ls-files -z --cached --others --exclude-standard | tar --null -czf "$tmp/janus.tgz" -T -
  gc compute tpus tpu-vm scp "$tmp/janus.tgz" "$TPU_NAME:~/janus.tgz" --zone="$ZONE" --worker=all
  on_all "mkdir -p ~/$REMOTE_DIR && tar -xzf ~/janus.tgz -C ~/$REMOTE_DIR"
  rm -rf "$tmp"
}

quote_args() { printf ' %q' "$@"; }

workers() {
  # Workers in the slice: the TPU API's Node has one networkEndpoints entry per worker.
  local n
  n=$(gc compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" --format='json(networkEndpoints)' \
    | grep -o '"ipAddress"' | wc -l | tr -d ' ')
  ((n >= 1)) || { echo "no network endpoints for $TPU_NAME (is it READY?)" >&2; return 1; }
  echo "$n"
}

# Training runs detached on every worker (nohup + setsid), so a dropped ssh connection cannot stop
# it, and `gcloud ... ssh`, which runs the whole command again when ssh exits 255, cannot start a
# second janus.main beside the first: every start first stops (SIGTERM, then SIGKILL after 60 s) any
# janus.main of this user left on the worker. A pidfile from an earlier VM is never trusted.
# Per worker (named by `hostname`) in $WORKDIR/launch/: <host>.pid (the python process),
# <host>.log (stdout+stderr; on a gcsfuse mount it is uploaded when the file is closed), and
# <host>.exit (its exit status, once it has ended).
JANUS_PATTERN='^[^ ]*python[^ ]* -m janus[.]main'  # the process itself, not a shell quoting it

run() {
  : "${WORKDIR:?set WORKDIR (shared by all workers)}"
  local n d
  n=$(workers) || return 1
  d=$(printf %q "$WORKDIR/launch")
  on_all ": janus-start; set -e; . ~/venv/bin/activate; cd ~/$REMOTE_DIR
    d=$d; w=\$(hostname); mkdir -p \"\$d\"
    pkill -TERM -u \"\$(id -u)\" -f '$JANUS_PATTERN' || true
    for i in \$(seq 60); do pgrep -u \"\$(id -u)\" -f '$JANUS_PATTERN' >/dev/null || break; sleep 1; done
    pkill -KILL -u \"\$(id -u)\" -f '$JANUS_PATTERN' || true
    rm -f \"\$d/\$w.exit\" \"\$d/\$w.pid\"
    export JANUS_TPU_WORKERS=$n
    # The exit status is written only while the pidfile still names this run (not after a restart),
    # and renamed into place, so a reader never finds the file empty.
    nohup setsid bash -c 'p=\$1 x=\$2; shift 2; \"\$@\" & c=\$!; echo \$c > \"\$p\"; wait \$c; s=\$?
      if [ \"\$(cat \"\$p\" 2>/dev/null)\" = \$c ]; then echo \$s > \"\$x.part\" && mv -f \"\$x.part\" \"\$x\"; fi' \
      janus \"\$d/\$w.pid\" \"\$d/\$w.exit\" python -m janus.main$(quote_args "--workdir=$WORKDIR" "$@") \
      >> \"\$d/\$w.log\" 2>&1 < /dev/null &
    echo \"janus-worker \$w started\""
}

status() {
  # One line per worker: `janus-worker <host> running|exit=<status>|absent`.
  : "${WORKDIR:?set WORKDIR (shared by all workers)}"
  on_all ": janus-status; d=$(printf %q "$WORKDIR/launch"); w=\$(hostname)
    if [ -f \"\$d/\$w.pid\" ] && ps -ww -o args= -p \"\$(cat \"\$d/\$w.pid\")\" | grep -q 'janus[.]main'; then
      echo \"janus-worker \$w running\"
    elif [ -f \"\$d/\$w.exit\" ]; then echo \"janus-worker \$w exit=\$(cat \"\$d/\$w.exit\")\"
    else echo \"janus-worker \$w absent\"; fi"
}

finished() {
  # janus writes <workdir>/DONE when the run has trained all its steps.
  gc compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
    --command="test -f $(printf %q "$WORKDIR/DONE")" >/dev/null 2>&1
}

qr_state() {
  gc compute tpus queued-resources describe "$QR_NAME" --zone="$ZONE" \
    --format='value(state.state)' 2>/dev/null || echo UNKNOWN
}

watch() {
  # Start the run, then poll the queued resource, the node and every worker until <workdir>/DONE
  # exists. Preempted (queued resource SUSPENDED, or node PREEMPTED/missing): delete, recreate,
  # set up and start again. Every worker ended with status 0 but no DONE (stopped by SIGTERM): start
  # again. janus resumes from the latest complete checkpoint in $WORKDIR. A run that ends non-zero
  # on a healthy slice (e.g. NonFiniteLossError, exit 1) is not retried.
  : "${WORKDIR:?set WORKDIR (shared by all workers)}"
  local qr node st n bad
  run "$@" || echo "$(date -u) start did not complete; polling"
  while true; do
    sleep "$POLL_S"
    qr=$(qr_state)
    node=$(state)
    case "$qr/$node" in
      SUSPENDED/* | PREEMPTED/* | FAILED/* | */PREEMPTED | */MISSING | */TERMINATED)
        echo "$(date -u) queued resource $qr, TPU $node: recreating"
        delete; create; setup
        run "$@" || echo "$(date -u) start did not complete; polling"
        continue
        ;;
    esac
    [[ "$node" == READY ]] || continue
    st=$(status 2>/dev/null | grep '^janus-worker ') || continue
    n=$(workers) || continue
    (($(wc -l <<<"$st") == n)) || continue  # a worker did not answer: ask again
    grep -q ' running$' <<<"$st" && continue
    if finished; then echo "$(date -u) run finished"; return 0; fi
    bad=$(grep -o 'exit=[0-9]*' <<<"$st" | grep -v '^exit=0$' | head -n 1 || true)
    if [[ -n "$bad" ]]; then
      echo "$(date -u) run failed with status ${bad#exit=} on a healthy slice; see" \
        "$WORKDIR/launch/<worker>.log"
      return "${bad#exit=}"
    fi
    echo "$(date -u) run stopped without DONE; starting again in ${RETRY_S}s"
    sleep "$RETRY_S"
    run "$@" || echo "$(date -u) start did not complete; polling"
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  create) create ;;
  delete) delete ;;
  setup) setup ;;
  copy) copy ;;
  run) run "$@" ;;
  status) status ;;
  watch) watch "$@" ;;
  ssh) on_all "$*" ;;
  *) usage; exit 2 ;;
esac
