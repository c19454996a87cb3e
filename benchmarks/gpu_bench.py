"""Accelerator benchmark: training and evaluator throughput, with MFU, as JSON lines.

    bash benchmarks/gpu.sh            # one GPU; sized to finish within 5 minutes on an H200
    bash benchmarks/gpu.sh --smoke    # the same code paths on the CPU with tiny sizes (seconds)

Every run builds its configs with the accelerator preset (`preset=gpu`: bf16 compute, float32
parameters, the train state donated, data workers = host cores - 1) and uses janus's own model
registry, train step (`janus.train_step`), input pipeline (`janus.data.input.pipeline.train_loader`)
and evaluator (`janus.evaluate.runner.Evaluator`). One JSON object per line, told apart by "bench":

- "train_synthetic", one per model: ResNet-50 (CE), ViT-B/16 (CE), CLIP-RN50 (InfoNCE, with its
  text tower) at global batch 256, 224 px, on a synthetic batch made on the devices.
  `images_per_s_per_device`, `flops_per_step_per_device` (XLA's cost analysis of the compiled step)
  and `mfu` = flops / step time / the device kind's dense bf16 peak
  (`janus.metric_window.PEAK_FLOPS`; null where the kind is unknown, e.g. a CPU).
  `target_images_per_s_per_device` and `ratio` compare with the H200 targets of issue 11
  (ResNet-50 3,000, ViT-B/16 1,600 img/s; MFU 0.45).
- "train_pipeline": the same ResNet-50 step fed by `train_loader` from records of 256-500 px JPEGs
  (the SimCLR chain, config.input.pp) through janus.train's device prefetch, with the host's
  cores as workers; the peer is "train_synthetic" ResNet-50.
- "evaluator": `Evaluator.evaluate_variables` on a JANuS-mini val split with the ResNet-50 weights
  just trained; the peer is the training rate (a forward pass costs about a third of a train step).
- "input_per_core": the host's images/s per core making `decode|rrc(224)|flip` batches from
  those records: the grain loader, and janus' DALI loader (janus.data.input.dali_loader) on the
  CPU and, on a GPU, "mixed" (nvJPEG), each where DALI is installed (run gpu.sh with a python that
  has requirements/lock-peers.txt; else `dali` says why not), and "plans", the DALI loader's host
  share alone (what "mixed" leaves to the host); `cores_per_device`: for each model,
  its "train_synthetic" images/s per device over each loader's rate per core, the host cores one
  device needs (docs/data.md, "Input on GPU nodes").

`--smoke` runs tiny models (resnet_tiny, vit_tiny, clip_rn_tiny with a one-layer text tower) at
batch 8 and 32 px: sizes are all that differ (tests/test_benchmarks.py runs it).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time

# Per mode: (model, loss, H200 target images/s per device or None), sizes, step counts.
FULL = {
    "models": [("resnet50", "ce", 3000.0), ("vit_b16", "ce", 1600.0),
               ("clip_rn50", "infonce", None)],
    "batch": 256, "res": 224, "warmup": 3, "steps": 20, "text": None, "context_length": 77,
    "pipeline_images": 1024, "pipeline_steps": 8, "eval_per_class": 100, "eval_size": 256,
    "input_batch": 32, "input_batches": 8, "input_rounds": 3,
}  # fmt: skip
SMOKE = {
    "models": [("resnet_tiny", "ce", 3000.0), ("vit_tiny", "ce", 1600.0),
               ("clip_rn_tiny", "infonce", None)],
    "batch": 8, "res": 32, "warmup": 1, "steps": 2, "text": {"width": 32, "layers": 1, "heads": 2},
    "context_length": 16, "pipeline_images": 16, "pipeline_steps": 2, "eval_per_class": 2,
    "eval_size": 40, "input_batch": 8, "input_batches": 2, "input_rounds": 1,
}  # fmt: skip
TARGET_MFU = 0.45


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def bench_config(model: str, loss: str, sizes: dict):
    """The paper's recipe with the accelerator preset, at the benchmark's batch and resolution."""
    from janus import config as config_lib

    c = config_lib.paper_config()
    sweep = {"preset": "gpu", "model": model, "loss": loss, "batch": sizes["batch"]}
    config_lib.apply_sweep(c, dict(sweep, res=sizes["res"], steps=1000))
    c.restrict_to_label_set = False  # synthetic labels cover all 1000 classes
    c.input.context_length = sizes["context_length"]
    if sizes["text"] is not None:
        c.model.text = dict(sizes["text"], context_length=sizes["context_length"])
    return c


class TrainBench:
    """One model's state and compiled step on a data-parallel mesh over every device."""

    def __init__(self, config):
        import jax

        from janus import config as config_lib
        from janus import optim, sharding
        from janus import train_step as step_lib
        from janus.data.input.preprocess import build_pp

        self.config = config
        self.model = step_lib.build_model(config)
        tx, schedule = optim.make_optimizer(config.optimizer, 1000, 10)
        init_fn = step_lib.make_init_fn(self.model, tx, config)
        self.mesh = sharding.make_mesh(config_lib.mesh_axes(config))
        self.shardings = sharding.param_shardings(jax.eval_shape(init_fn), self.mesh)
        self.state = jax.jit(init_fn, out_shardings=self.shardings)()
        self.step_fn = step_lib.make_train_step(
            self.model, tx, schedule, loss=config.loss, seed=config.seed,
            pixel_scaling=build_pp(config.input.pp).scaling,  # uint8 images, as the trainer's
        )  # fmt: skip
        self.compiled = self.flops = self.batch_spec = None

    def compile(self, batch) -> float:
        from janus import train_step as step_lib

        t = time.perf_counter()
        self.compiled, self.flops = step_lib.compile_train_step(
            self.step_fn, self.state, batch, self.shardings, self.mesh
        )
        self.batch_spec = spec_of(batch)
        return time.perf_counter() - t

    def run(self, batches, steps: int) -> float:
        """Seconds per step over `steps` steps; one host sync at the end (none per step)."""
        import jax

        metrics = None
        start = time.perf_counter()
        for _ in range(steps):
            batch = next(batches)
            if spec_of(batch) != self.batch_spec:
                raise ValueError(f"batch {spec_of(batch)} != compiled for {self.batch_spec}")
            with jax.set_mesh(self.mesh):
                self.state, metrics = self.compiled(self.state, batch)
        jax.block_until_ready(metrics)
        return (time.perf_counter() - start) / steps


def spec_of(batch) -> dict:
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in sorted(batch.items())}


def synthetic_batch(config, mesh):
    """A random batch shaped like the input pipeline's (uint8 images), made on the devices."""
    import jax
    import jax.numpy as jnp

    from janus import config as config_lib
    from janus import sharding

    b, r = config.input.batch_size, config.input.resolution

    def make(key):
        k1, k2, k3 = jax.random.split(key, 3)
        batch = {
            "image": jax.random.randint(k1, (b, r, r, 3), 0, 256, jnp.int32).astype(jnp.uint8),
            "label": jax.random.randint(k2, (b,), 0, 1000, jnp.int32),
        }
        if config_lib.is_vl(config.loss):
            n = config.input.context_length
            batch["tokens"] = jax.random.randint(k3, (b, n), 1, 49408, jnp.int32)
        return batch

    out = jax.eval_shape(make, jax.random.key(0))
    shardings = jax.tree.map(lambda _: sharding.batch_sharding(mesh), out)
    return jax.jit(make, out_shardings=shardings)(jax.random.key(0))


def train_row(bench: TrainBench, step_s: float, compile_s: float, target, peak, n_dev) -> dict:
    c = bench.config
    ips = c.input.batch_size / step_s / n_dev
    mfu = bench.flops / step_s / peak if (bench.flops and peak) else None
    return {
        "model": c.model.name, "loss": c.loss, "dtype": c.model.dtype,
        "global_batch": c.input.batch_size, "res": c.input.resolution, "devices": n_dev,
        "step_s": round(step_s, 5), "images_per_s_per_device": round(ips, 2),
        "flops_per_step_per_device": bench.flops, "mfu": None if mfu is None else round(mfu, 4),
        "compile_s": round(compile_s, 1), "target_images_per_s_per_device": target,
        "ratio": round(ips / target, 3) if target else None, "target_mfu": TARGET_MFU,
    }  # fmt: skip


def bench_pipeline(bench: TrainBench, sizes: dict, tmp: str, synthetic_ips: float) -> dict:
    """ResNet-50 fed by train_loader from JPEG records, workers = the preset's (host cores - 1)."""
    import pathlib

    import jax

    from janus import sharding
    from janus.data.input import pipeline
    from janus.data.input.prefetch import DevicePrefetch
    from janus.train import PREFETCH_BATCHES

    # data_pipeline imports its siblings (machine.py) as a script beside them does.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import data_pipeline

    c = bench.config
    out = pathlib.Path(tmp, "jpeg_records")
    out.mkdir()
    t = time.perf_counter()
    jpegs = data_pipeline.synthetic_jpegs(sizes["pipeline_images"])
    data_pipeline.build_records(out, jpegs)
    n, mean_bytes = len(jpegs), sum(map(len, jpegs)) / len(jpegs)
    build_s = time.perf_counter() - t
    it, _ = pipeline.train_loader(
        str(out), global_batch_size=c.input.batch_size, pp=c.input.pp, seed=0,
        worker_count=c.data.worker_count, shard_index=jax.process_index(),
        shard_count=jax.process_count(),
    )  # fmt: skip
    # As janus.train feeds its step: batches put on the devices ahead of the step that takes them.
    put = functools.partial(sharding.shard_batch, mesh=bench.mesh)
    batches = DevicePrefetch(it, put, depth=PREFETCH_BATCHES)
    try:
        bench.run(batches, 2)  # worker start-up and first reads
        step_s = bench.run(batches, sizes["pipeline_steps"])
    finally:
        batches.close()
    ips = c.input.batch_size / step_s / jax.device_count()
    return {
        "model": c.model.name, "workers": c.data.worker_count, "host_cores": os.cpu_count(),
        "jpegs": n, "mean_jpeg_bytes": round(mean_bytes), "records_build_s": round(build_s, 1),
        "images_per_s_per_device": round(ips, 2), "peer": "train_synthetic " + c.model.name,
        "peer_images_per_s_per_device": round(synthetic_ips, 2),
        "ratio": round(ips / synthetic_ips, 3),
    }  # fmt: skip


def bench_input_per_core(sizes: dict, records_dir: str, train_ips: dict) -> dict:
    """Images/s per host core of the grain and DALI loaders on ``records_dir``; the cores per
    device each needs for each model's training rate (``train_ips``: model -> images/s)."""
    import statistics

    import jax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import input_peers

    skipped = input_peers.missing("dali")
    devices = [] if skipped else ["cpu"] + (["mixed"] if jax.devices()[0].platform == "gpu" else [])
    import dali_loader  # benchmarks/dali_loader.py (imports DALI only when a side runs)

    per_core = dali_loader.time_sides(
        records_dir, devices, sizes["input_batches"], sizes["input_batch"],
        sizes["input_rounds"], emit=lambda row: None,
    )  # fmt: skip
    rates = {side: statistics.median(r) for side, r in per_core.items()}
    cores = {
        model: {side: round(ips / rate, 1) for side, rate in rates.items()}
        for model, ips in train_ips.items()
    }
    return {
        "pp": dali_loader.CHAIN, "images_per_s_per_core": rates, "cores_per_device": cores,
        "dali": skipped or input_peers.version("dali"), "rounds": sizes["input_rounds"],
    }  # fmt: skip


def bench_evaluator(bench: TrainBench, sizes: dict, tmp: str, train_ips: float) -> dict:
    import jax

    from janus.data.ingest import synthetic
    from janus.evaluate import runner

    c = bench.config
    data = os.path.join(tmp, "mini")
    synthetic.build_mini(
        data, train_per_class=1, eval_per_class=sizes["eval_per_class"],
        size=sizes["eval_size"], train_shards=1, splits=("train", "val"),
    )  # fmt: skip
    config = {
        "loss": c.loss, "label_set": "mini10", "data": {"train": data},
        "model": {"name": c.model.name, "dtype": c.model.dtype},
        "input": {"resolution": c.input.resolution},
    }  # fmt: skip
    variables = {"params": bench.state["params"], "batch_stats": bench.state["batch_stats"]}
    ev = runner.Evaluator(runner.EvalOptions(sets=("val",), batch_size=c.input.batch_size))
    ev.evaluate_variables(config, variables, step=0)  # compiles
    t = time.perf_counter()
    result = ev.evaluate_variables(config, variables, step=0)
    seconds = time.perf_counter() - t
    n = result["sets"]["val"]["n"]
    ips = n / seconds / jax.device_count()
    return {
        "model": c.model.name, "dtype": c.model.dtype, "images": n, "seconds": round(seconds, 2),
        "images_per_s_per_device": round(ips, 2), "peer": "train_synthetic " + c.model.name,
        "peer_images_per_s_per_device": round(train_ips, 2), "ratio": round(ips / train_ips, 3),
    }  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, in seconds")
    a = p.parse_args(argv)
    sizes = SMOKE if a.smoke else FULL

    import itertools

    import jax

    from janus.metric_window import peak_flops_per_device

    kind = jax.devices()[0].device_kind
    peak = peak_flops_per_device(kind)
    emit({"bench": "device", "smoke": a.smoke, "platform": jax.devices()[0].platform,
          "device_kind": kind, "devices": jax.device_count(), "peak_flops_per_device": peak,
          "host_cores": os.cpu_count(), "jax": jax.__version__})  # fmt: skip
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="janus_gpu_bench_") as tmp:
        first, train_ips = None, {}
        for model, loss, target in sizes["models"]:
            bench = TrainBench(bench_config(model, loss, sizes))
            batch = synthetic_batch(bench.config, bench.mesh)
            compile_s = bench.compile(batch)
            bench.run(itertools.repeat(batch), sizes["warmup"])
            step_s = bench.run(itertools.repeat(batch), sizes["steps"])
            row = train_row(bench, step_s, compile_s, target, peak, jax.device_count())
            emit({"bench": "train_synthetic", **row})
            train_ips[model] = row["images_per_s_per_device"]
            if first is None:
                first, first_ips = bench, row["images_per_s_per_device"]
            else:
                del bench  # frees the device memory of all but the ResNet-50
        emit({"bench": "train_pipeline", **bench_pipeline(first, sizes, tmp, first_ips)})
        emit({"bench": "evaluator", **bench_evaluator(first, sizes, tmp, first_ips)})
        records_dir = os.path.join(tmp, "jpeg_records")  # bench_pipeline's records
        emit({"bench": "input_per_core", **bench_input_per_core(sizes, records_dir, train_ips)})
    emit({"bench": "total", "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
