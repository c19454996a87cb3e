"""Exact contrastive accumulation (`optimizer.contrastive_accum`): memory and time against k=1.

    python benchmarks/contrastive_accum.py [--model clip_rn_tiny] [--res 64] [--batch 64]
        [--ks 1,2,4,8] [--modes global,local] [--loss infonce] [--rounds 8]

The train step of janus.train_step on one global batch, for k = grad_accum_steps microbatches, on
the mini config's CLIP (`configs/mini.py:loss=infonce`: the tower `--model` and a 64-wide, 2-layer
text tower). Per (k, mode) it compiles the step and reads XLA's `compiled.memory_analysis()`
(temp, argument, output and aliased bytes; peak = temp + argument + output - alias, the compiled
program's device memory), then times the steps: the compiled steps run in turns, one step each per
round, so the shared machine's load falls on all of them alike; the median over rounds is taken, in
wall-clock seconds and in the process's CPU seconds (`time.process_time`, less sensitive to other
jobs), per image and as a ratio to k=1.

Prints JSON lines: first the machine (processor, cores, load average before), versions and
settings; then one line per (k, mode); last the load average after.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import machine  # benchmarks/machine.py, beside this script
import step_state  # benchmarks/step_state.py


def memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if isinstance(m, list | tuple):
        m = m[0] if m else None
    if m is None:
        return {}
    out = {
        k: int(getattr(m, f"{k}_size_in_bytes", 0))
        for k in ("temp", "argument", "output", "alias", "generated_code")
    }
    out["peak"] = out["temp"] + out["argument"] + out["output"] - out["alias"]
    return out


def build(args, k: int, mode: str):
    """-> (compiled step, state, batch, compile seconds)."""
    import numpy as np

    from janus import config as config_lib
    from janus import sharding, train_step

    c = config_lib.paper_config()
    c.loss, c.label_set = args.loss, "mini25"
    c.model.name, c.model.text = args.model, dict(width=64, layers=2, heads=2)
    c.input.resolution, c.input.batch_size = args.res, args.batch
    model, tx, schedule, mesh, state, shardings = step_state.make_state(c)
    rng = np.random.default_rng(0)
    batch = sharding.shard_batch(
        {
            "image": rng.normal(size=(args.batch, args.res, args.res, 3)).astype(np.float32),
            "tokens": rng.integers(1, 1000, size=(args.batch, 77)).astype(np.int32),
        },
        mesh,
    )
    step = train_step.make_train_step(
        model, tx, schedule, loss=args.loss, seed=0, grad_accum_steps=k, contrastive_accum=mode
    )
    t = time.perf_counter()
    compiled, _ = train_step.compile_train_step(step, state, batch, shardings, mesh)
    return compiled, state, batch, time.perf_counter() - t, mesh


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="clip_rn_tiny")
    p.add_argument("--loss", default="infonce", choices=("infonce", "siglip"))
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--batch", type=int, default=64, help="the global batch")
    p.add_argument("--ks", default="1,2,4,8")
    p.add_argument("--modes", default="global,local", help="for k > 1 (k=1 has one mode)")
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args(argv)

    import flax
    import jax
    import optax

    print(json.dumps({
        "machine": {**machine.facts(), "platform": platform.platform(),
                    "devices": [str(d) for d in jax.devices()]},
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
                     "flax": flax.__version__, "optax": optax.__version__},
        "settings": vars(args),
    }), flush=True)  # fmt: skip

    runs = []
    for k in (int(x) for x in args.ks.split(",")):
        for mode in args.modes.split(",") if k > 1 else ("global",):
            compiled, state, batch, compile_s, mesh = build(args, k, mode)
            runs.append({"k": k, "mode": mode, "compiled": compiled, "box": [state],
                         "batch": batch, "mesh": mesh, "compile_s": compile_s,
                         "memory": memory(compiled), "wall": [], "cpu": []})  # fmt: skip

    def one_step(r):
        with jax.set_mesh(r["mesh"]):
            r["box"][0], metrics = r["compiled"](r["box"][0], r["batch"])
        jax.block_until_ready(metrics)
        return metrics

    for r in runs:  # warm-up, and the step-1 loss of the global batch or of the microbatches
        r["loss"] = float(one_step(r)["loss"])
    for _ in range(args.rounds):
        for r in runs:
            t, c = time.perf_counter(), time.process_time()
            one_step(r)
            r["wall"].append(time.perf_counter() - t)
            r["cpu"].append(time.process_time() - c)

    base = runs[0]
    base_wall, base_cpu = statistics.median(base["wall"]), statistics.median(base["cpu"])
    for r in runs:
        wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
        mem = r["memory"]
        print(json.dumps({
            "k": r["k"], "mode": r["mode"], "model": args.model, "loss": args.loss,
            "global_batch": args.batch, "microbatch": args.batch // r["k"], "res": args.res,
            "memory_bytes": mem,
            "peak_vs_k1": mem["peak"] / base["memory"]["peak"] if mem else None,
            "wall_s_per_image": wall / args.batch, "cpu_s_per_image": cpu / args.batch,
            "wall_vs_k1": wall / base_wall, "cpu_vs_k1": cpu / base_cpu,
            "compile_s": round(r["compile_s"], 1), "first_step_loss": r["loss"],
        }), flush=True)  # fmt: skip
    print(json.dumps({"load_avg_after": os.getloadavg()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
