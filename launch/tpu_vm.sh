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
#   export TPU_NAME=janus-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32 VERSION=tpu-ubuntu2204-base
#   export WORKDIR=/mnt/janus/runs/mix_vl     # a path every worker sees (see below)
#   export BUCKET=my-bucket                   # mounted at /mnt/janus with gcsfuse by `setup`
#   launch/tpu_vm.sh create            # queued resource (add SPOT=1 for spot capacity)
#   launch/tpu_vm.sh setup             # python venv + pinned stack + gcsfuse mount, on all workers
#   launch/tpu_vm.sh copy              # this checkout (tar + scp) to ~/janus on all workers
#   launch/tpu_vm.sh run --config configs/janus.py:loss=infonce,budget=2400000 \
#        --config.data.train=/mnt/janus/data/in100*1+/mnt/janus/data/janus*1
#   launch/tpu_vm.sh watch <same args as run>   # run until $WORKDIR/DONE; after a preemption
#                                  # recreate + setup + run again (it resumes from its checkpoint)
#   launch/tpu_vm.sh ssh "<command>"   # any command on all workers;  launch/tpu_vm.sh delete
#
# The workdir must be shared by all workers: every process writes its part of each checkpoint and
# process 0 the logs. `setup` mounts gs://$BUCKET at /mnt/janus with gcsfuse; a Filestore/NFS mount
# works the same. Data dirs are read by every worker, so they live there too.
#
# Optional: PROJECT (gcloud --project), QR_NAME (default $TPU_NAME-qr), REMOTE_DIR (default janus),
# MOUNT (default /mnt/janus), POLL_S (seconds between state polls while creating, default 30),
# RETRY_S (seconds before `watch` restarts a stopped run, default 60). `create` fails (rather than
# waiting forever) when the queued resource is FAILED or SUSPENDED. tests/test_launch.py runs this
# script against a fake `gcloud` on PATH and checks the commands it issues.
set -euo pipefail
cd "$(dirname "$0")/.."  # `copy` packs this checkout (git ls-files)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in
  create | delete | setup | copy | run | watch | ssh) ;;
  *) usage; exit 2 ;;
esac

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR=${ACCELERATOR:-v4-8}
VERSION=${VERSION:-tpu-ubuntu2204-base}
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
    --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION" ${spot:+"$spot"}
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
    sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv rsync
    python3.11 -m venv ~/venv && . ~/venv/bin/activate && pip install -q --upgrade pip
    mkdir -p ~/$REMOTE_DIR
    if [ -n '${BUCKET:-}' ] && ! mountpoint -q $MOUNT; then
      export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s)
      echo \"deb https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list
      curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
      sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
      sudo mkdir -p $MOUNT && sudo chown \$USER $MOUNT
      gcsfuse --implicit-dirs ${BUCKET:-} $MOUNT
    fi"
  copy
  # The pinned stack, then the TPU runtime for the same jax version.
  local jax_version
  jax_version=$(grep -E '^jax==' requirements/lock.txt | cut -d= -f3) \
    || { echo "no jax== pin in requirements/lock.txt" >&2; return 1; }
  on_all ". ~/venv/bin/activate && cd ~/$REMOTE_DIR && pip install -q -r requirements/lock.txt \
    && pip install -q 'jax[tpu]==$jax_version' && pip install -q --no-deps -e ."
}

copy() {
  # The checkout without venvs, data or runs, to every worker.
  local tmp
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

run() {
  : "${WORKDIR:?set WORKDIR (shared by all workers)}"
  local n
  n=$(workers) || return 1
  on_all "set -o pipefail; . ~/venv/bin/activate && cd ~/$REMOTE_DIR && \
    export JANUS_TPU_WORKERS=$n && python -m janus.main$(quote_args "--workdir=$WORKDIR" "$@") 2>&1 | tee -a ~/janus_train.log"
}

finished() {
  # janus writes <workdir>/DONE when the run has trained all its steps.
  gc compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
    --command="test -f $(printf %q "$WORKDIR/DONE")" >/dev/null 2>&1
}

watch() {
  # Run until <workdir>/DONE exists. A preempted slice (not READY) is recreated, set up and run
  # again; a run stopped by SIGTERM (exit 0 without DONE) or a lost connection (ssh status 255)
  # is started again. janus resumes from the latest complete checkpoint in $WORKDIR. A run that
  # fails on a healthy slice (e.g. NonFiniteLossError, exit 1) is not retried.
  while true; do
    if [[ "$(state)" != READY ]]; then
      echo "$(date -u) TPU state $(state): recreating"
      delete; create; setup
    fi
    local status=0
    run "$@" || status=$?
    if finished; then echo "$(date -u) run finished"; break; fi
    if [[ "$(state)" == READY ]] && ((status != 0 && status != 255)); then
      echo "$(date -u) run failed with status $status on a healthy slice; see ~/janus_train.log"
      return "$status"
    fi
    echo "$(date -u) run stopped (status $status, TPU $(state)); resuming in ${RETRY_S}s"
    sleep "$RETRY_S"
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  create) create ;;
  delete) delete ;;
  setup) setup ;;
  copy) copy ;;
  run) run "$@" ;;
  watch) watch "$@" ;;
  ssh) on_all "$*" ;;
  *) usage; exit 2 ;;
esac
