"""Train-step throughput of janus.train's sharded step on host CPU devices: 1 device vs N.

    python benchmarks/train_step.py [--model resnet_tiny] [--res 32] [--batch 64] [--steps 20]

Runs the same jitted step (synthetic batch, no input pipeline) in a fresh process per device count
(the count is fixed when jax starts) and prints one JSON line per run plus the peer ratio
(images/s with N devices over 1 device).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(model_name: str, res: int, batch: int, steps: int) -> dict:
    import jax
    import numpy as np

    from janus import config as config_lib
    from janus import optim, sharding, train

    c = config_lib.paper_config()
    c.model.name, c.label_set, c.input.resolution, c.input.batch_size = (
        model_name,
        "mini10",
        res,
        batch,
    )
    tx, schedule = optim.make_optimizer(c.optimizer, 1000, 10)
    model = train.build_model(c)
    init_fn = train.make_init_fn(model, tx, c)
    mesh = sharding.make_mesh([("data", -1)])
    shardings = sharding.param_shardings(jax.eval_shape(init_fn), mesh)
    state = jax.jit(init_fn, out_shardings=shardings)()
    rng = np.random.default_rng(0)
    batch_np = {
        "image": rng.normal(size=(batch, res, res, 3)).astype(np.float32),
        "label": rng.integers(0, 10, size=(batch,)).astype(np.int32),
    }
    gb = sharding.shard_batch(batch_np, mesh)
    step_fn = train.make_train_step(model, tx, schedule, loss="ce", seed=0)
    t = time.time()
    compiled, flops = train.compile_train_step(step_fn, state, gb, shardings, mesh)
    compile_s = time.time() - t
    for _ in range(3):  # warm-up
        state, m = compiled(state, gb)
    jax.block_until_ready(m)
    t = time.time()
    for _ in range(steps):
        state, m = compiled(state, gb)
    jax.block_until_ready(m)
    dt = (time.time() - t) / steps
    return {
        "model": model_name, "res": res, "batch": batch, "devices": jax.device_count(),
        "step_s": dt, "images_per_s": batch / dt, "compile_s": compile_s, "flops_per_step": flops,
    }  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet_tiny")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--devices", type=int, default=2, help="the peer: N host devices")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a.model, a.res, a.batch, a.steps)), flush=True)
        return
    results = []
    for n in (1, a.devices):
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
        args = [sys.executable, __file__, "--child", "--model", a.model, "--res", str(a.res),
                "--batch", str(a.batch), "--steps", str(a.steps)]  # fmt: skip
        out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        results.append(row)
    ratio = results[1]["images_per_s"] / results[0]["images_per_s"]
    print(json.dumps({"ratio_images_per_s": ratio, "peer": f"{a.devices} devices vs 1"}))


if __name__ == "__main__":
    main()
