#!/usr/bin/env python3
"""Start N janus processes on this machine, as a multi-host cluster would (CPU by default).

    python launch/local.py --nproc 2 [--devices-per-process 4] -- \
        python -m janus.main --config configs/mini.py --workdir runs/mini_2proc

Each child gets JANUS_COORDINATOR_ADDRESS=127.0.0.1:<free port>, JANUS_NUM_PROCESSES=N,
JANUS_PROCESS_ID=i and JANUS_NUM_CPU_DEVICES (janus.main then calls jax.distributed.initialize and
sets jax_num_cpu_devices), so the multi-host code paths (global batch assembled from per-process
data, every process writing its part of a checkpoint, process-0-only logs) run on one machine.
A forced host device count in XLA_FLAGS is removed from the children (JANUS_NUM_CPU_DEVICES rules).
SIGINT/SIGTERM (and SIGUSR1: every child prints its threads' stacks) are forwarded to every
child; if one child fails the others are stopped. The exit
status is the first non-zero child status (0 when all succeed).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(base: dict, *, process_id: int, nproc: int, port: int, devices: int, platform):
    env = dict(base)
    env["JANUS_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
    env["JANUS_NUM_PROCESSES"] = str(nproc)
    env["JANUS_PROCESS_ID"] = str(process_id)
    env["JANUS_NUM_CPU_DEVICES"] = str(devices)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = flags.strip()
    if platform:
        env["JAX_PLATFORMS"] = platform
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nproc", type=int, default=2, help="processes to start")
    p.add_argument("--devices-per-process", type=int, default=4, help="CPU devices per process")
    p.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
    p.add_argument("--platform", default="cpu", help="JAX_PLATFORMS for the children ('' = keep)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command after --")
    port = args.port or free_port()
    children = []
    for i in range(args.nproc):
        env = child_env(
            os.environ,
            process_id=i,
            nproc=args.nproc,
            port=port,
            devices=args.devices_per_process,
            platform=args.platform,
        )
        children.append(subprocess.Popen(command, env=env))

    def forward(signum, frame):
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):  # USR1: children dump stacks
        signal.signal(signum, forward)
    status, kill_at = 0, None
    while any(c.poll() is None for c in children):
        for c in children:
            rc = c.poll()
            if rc not in (None, 0) and status == 0:
                status = rc
                print(
                    f"[launch/local] a process exited with {rc}; stopping the others",
                    file=sys.stderr,
                )
                for other in children:
                    if other.poll() is None:
                        other.terminate()
                kill_at = time.time() + 10  # a peer stuck in a collective never exits by itself
        if kill_at and time.time() > kill_at:
            for c in children:
                if c.poll() is None:
                    c.kill()
        time.sleep(0.2)
    for c in children:
        if c.returncode and status == 0:
            status = c.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
