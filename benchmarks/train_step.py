"""Train-step throughput of janus.train's sharded step on host CPU devices: 1 device vs N.

    python benchmarks/train_step.py [--model resnet_tiny] [--res 32] [--batch 64] [--steps 20]
    python benchmarks/train_step.py --flops clip_rn50:ce clip_rn50:infonce vit_s16:ce
    python benchmarks/train_step.py --peer torch --model resnet50 --res 224 --batch 16 --steps 5

The second form prints, per model:loss, the parameter count and the training FLOPs per image at
224 px from XLA's cost analysis of the lowered step (no compiling, no running; what the configs'
step-time estimates use).

Runs the same jitted step (synthetic batch, no input pipeline) in a fresh process per device count
(the count is fixed when jax starts) and prints one JSON line per run plus the peer ratio
(images/s with N devices over 1 device).

`--peer torch` (needs the torch extra) compares instead with PyTorch in the same process on 1
device: torchvision's resnet50 or timm's vit_small_patch16_224 (for janus resnet50 / vit_s16), CE,
AdamW, the same batch and resolution, steps alternating between the two so that the shared
machine's load falls on both. Per side it prints wall-clock images/s and CPU seconds per step
(`time.process_time`, less sensitive to other jobs), the ratios janus / torch, janus' compile
time, the processor and the load average before and after (after includes the benchmark's own).
It refuses to run when the 1-minute load average before it is above half the cores (`--allow-load`
runs anyway, and the row says under_load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import machine  # benchmarks/machine.py, beside this script
import step_state  # benchmarks/step_state.py

from janus import host_memory


def janus_step(model_name: str, res: int, batch: int):
    """-> (run one step and wait for it, compile seconds, FLOPs per step): janus.train's step."""
    import jax
    import numpy as np

    from janus import config as config_lib
    from janus import sharding, train_step

    c = config_lib.paper_config()
    c.model.name, c.label_set, c.input.resolution, c.input.batch_size = (
        model_name,
        "mini10",
        res,
        batch,
    )
    model, tx, schedule, mesh, state, shardings = step_state.make_state(c)
    rng = np.random.default_rng(0)
    batch_np = {
        "image": rng.normal(size=(batch, res, res, 3)).astype(np.float32),
        "label": rng.integers(0, 10, size=(batch,)).astype(np.int32),
    }
    gb = sharding.shard_batch(batch_np, mesh)
    step_fn = train_step.make_train_step(model, tx, schedule, loss="ce", seed=0)
    t = time.time()
    compiled, flops = train_step.compile_train_step(step_fn, state, gb, shardings, mesh)
    compile_s = time.time() - t
    box = [state]

    def run():
        box[0], m = compiled(box[0], gb)
        jax.block_until_ready(m)

    return run, compile_s, flops


def measure(model_name: str, res: int, batch: int, steps: int) -> dict:
    import jax

    run, compile_s, flops = janus_step(model_name, res, batch)
    for _ in range(3):  # warm-up
        run()
    t = time.time()
    for _ in range(steps):
        run()
    dt = (time.time() - t) / steps
    return {
        "model": model_name, "res": res, "batch": batch, "devices": jax.device_count(),
        "step_s": dt, "images_per_s": batch / dt, "compile_s": compile_s, "flops_per_step": flops,
    }  # fmt: skip


TORCH_PEERS = {"resnet50": "torchvision resnet50", "vit_s16": "timm vit_small_patch16_224"}


def torch_step(model_name: str, res: int, batch: int):
    """-> run one PyTorch training step (CE, AdamW with the paper's settings) on the same sizes."""
    import torch

    torch.manual_seed(0)
    if model_name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50()
    elif model_name == "vit_s16":
        import timm

        model = timm.create_model("vit_small_patch16_224", img_size=res)
    else:
        raise ValueError(f"no torch peer for {model_name!r}; known: {sorted(TORCH_PEERS)}")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.2)  # fmt: skip
    x = torch.randn(batch, 3, res, res)
    y = torch.randint(0, 1000, (batch,))

    def run():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return run


def measure_vs_torch(model_name: str, res: int, batch: int, steps: int) -> dict:
    import jax
    import torch

    janus_run, compile_s, _ = janus_step(model_name, res, batch)
    sides = {"janus": janus_run, "torch": torch_step(model_name, res, batch)}
    for run in sides.values():  # warm-up
        run()
    wall = dict.fromkeys(sides, 0.0)
    cpu = dict.fromkeys(sides, 0.0)
    for _ in range(steps):
        for name, run in sides.items():
            t, c = time.perf_counter(), time.process_time()
            run()
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
    return {
        "model": model_name, "peer": TORCH_PEERS[model_name], "res": res, "batch": batch,
        "steps": steps, "devices": jax.device_count(), "torch_threads": torch.get_num_threads(),
        "janus_images_per_s": round(batch * steps / wall["janus"], 2),
        "torch_images_per_s": round(batch * steps / wall["torch"], 2),
        "ratio_images_per_s": round(wall["torch"] / wall["janus"], 3),
        "janus_cpu_s_per_step": round(cpu["janus"] / steps, 2),
        "torch_cpu_s_per_step": round(cpu["torch"] / steps, 2),
        "ratio_cpu_s": round(cpu["torch"] / cpu["janus"], 3),
        "janus_compile_s": round(compile_s, 1),
    }  # fmt: skip


def training_flops(model_name: str, loss: str, res: int = 224, batch: int = 8) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from janus import config as config_lib
    from janus import optim, train_step

    c = config_lib.paper_config()
    c.model.name, c.loss = model_name, loss
    model = train_step.build_model(c)
    tx, schedule = optim.make_optimizer(c.optimizer, 1000, 10)
    state = jax.eval_shape(train_step.make_init_fn(model, tx, c))
    step_fn = train_step.make_train_step(model, tx, schedule, loss=loss, seed=0)
    batch_spec = {
        "image": jax.ShapeDtypeStruct((batch, res, res, 3), jnp.float32),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32),
    }
    if config_lib.is_vl(loss):
        batch_spec["tokens"] = jax.ShapeDtypeStruct((batch, c.input.context_length), jnp.int32)
    cost = jax.jit(step_fn).lower(state, batch_spec).cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
    return {"model": model_name, "loss": loss, "res": res, "params": params,
            "train_gflop_per_image": cost["flops"] / batch / 1e9}  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet_tiny")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--devices", type=int, default=2, help="the peer: N host devices")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--flops", nargs="+", metavar="MODEL:LOSS", help="FLOPs per image instead")
    p.add_argument("--peer", choices=["devices", "torch"], default="devices")
    p.add_argument(
        "--allow-load", action="store_true", help="report a ratio under load (the row says so)"
    )
    a = p.parse_args()
    scratch = {"scratch_kept": host_memory.keep_scratch_memory()}
    if a.peer == "torch":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        before = machine.require_quiet(a.allow_load)
        row = measure_vs_torch(a.model, a.res, a.batch, a.steps)
        # The load after includes this benchmark's own (both sides use every core): recorded only.
        after = machine.facts()["load_average_1m"]
        row.update(before, load_average_1m=[before["load_average_1m"], after], **scratch)
        print(json.dumps(row), flush=True)
        return
    if a.flops:
        for spec in a.flops:
            print(json.dumps(training_flops(*spec.split(":"))), flush=True)
        return
    if a.child:
        print(json.dumps(dict(measure(a.model, a.res, a.batch, a.steps), **scratch)), flush=True)
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
