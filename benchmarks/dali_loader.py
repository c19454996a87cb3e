"""The DALI loader beside the grain loader: images/s per core, and how far apart their pixels are.

Both run janus' train chain (``decode|rrc(224)|flip|normalize('clip')``) on the same records
(real photographs from ``--images``, default ../shared/real_jpegs, or synthetic JPEGs) with the same
seed, so they make the same crops (janus.data.input.dali_loader). Sides alternate for ``--rounds``:

- ``grain``: ``pipeline.train_loader``, worker_count=0 (its two reading threads);
- ``dali_cpu``: the DALI loader with ``device="cpu"``, one DALI thread (libjpeg-turbo decodes only
  the crop);
- ``dali_mixed`` (``--devices cpu,mixed``, needs a GPU): nvJPEG decodes, the GPU resizes;
- ``plans``: the host's share alone, the DALI loader's stream without DALI (read, header, draws,
  batching): on a GPU node, the most ``dali_mixed`` can make per host core.

Per core = images / CPU seconds of this process (every thread, DALI's included), so for
``dali_mixed`` it is images per second of the host's CPU: what a GPU node's cores must supply,
the GPU's work aside. ``pixels``: mean and max absolute difference between the two loaders'
first batches. One JSON object per line; refuses a loaded machine unless ``--allow-load``.

    python benchmarks/dali_loader.py [--images DIR | --synthetic 600] [--batches 15] \
        [--batch-size 32] [--rounds 3] [--devices cpu] [--allow-load]

Needs NVIDIA DALI (requirements/lock-peers.txt): run it with the peers' venv's python.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

import data_pipeline  # benchmarks/data_pipeline.py, beside this script
import machine
import numpy as np

from janus.data.input import dali_loader, pipeline

CHAIN = data_pipeline.TRAIN_PP


def loaders(devices) -> dict:
    """Side name -> (loader, options) for grain and the DALI loader on each device."""
    sides = {"grain": (pipeline.train_loader, {})}
    for device in devices:
        sides[f"dali_{device}"] = (dali_loader.train_loader, {"device": device})
    return sides


def pixel_difference(records_dir, batch_size: int, batches: int = 2) -> dict:
    """Mean and max |grain - DALI (cpu)| over the first ``batches`` batches, same seed."""
    args = {"global_batch_size": batch_size, "pp": CHAIN, "seed": 0}
    args |= {"shard_index": 0, "shard_count": 1}
    grain_it, _ = pipeline.train_loader(records_dir, **args)
    dali_it, _ = dali_loader.train_loader(records_dir, **args)
    diffs = []
    for _ in range(batches):
        a, b = next(grain_it), next(dali_it)
        if not np.array_equal(a["label"], b["label"]):
            raise AssertionError("the DALI loader's labels are not the grain loader's")
        diffs.append(np.abs(a["image"].astype(np.int16) - b["image"]))
    diff = np.concatenate(diffs)
    per_image = diff.mean(axis=(1, 2, 3))
    return {
        "bench": "pixels",
        "images": len(diff),
        "mean_abs_diff": round(float(diff.mean()), 3),
        "max_image_mean_abs_diff": round(float(per_image.max()), 3),
        "max_abs_diff": int(diff.max()),
    }


def time_plans(records_dir, batches: int, batch_size: int) -> dict:
    """The DALI loader's host work alone: its plan stream, timed as data_pipeline.time_train but
    over 8x the batches (it is about 10x faster, and the CPU clock ticks in 10 ms)."""
    batches *= 8
    args = {"global_batch_size": batch_size, "pp": dali_loader.CropPlanner(CHAIN), "seed": 0}
    it, _ = pipeline.train_loader(records_dir, shard_index=0, shard_count=1, **args)
    next(it), next(it)  # warm-up, as time_train
    clock = data_pipeline.CpuClock()
    clock.start()
    for _ in range(batches):
        next(it)
    wall, cpu = clock.stop()
    it.close()
    return data_pipeline._rates(batches * batch_size, wall, cpu)


def time_sides(records_dir, devices, batches: int, batch_size: int, rounds: int, emit) -> dict:
    """Each side once per round, alternating; -> {side: [images/s per core per round]}."""
    per_core: dict[str, list[float]] = {}
    for r in range(rounds):
        for side, (loader, options) in loaders(devices).items():
            res = data_pipeline.time_train(
                records_dir, CHAIN, 0, batches, batch_size, loader=loader, **options
            )
            emit({"bench": side, "round": r, **res})
            per_core.setdefault(side, []).append(res["images_per_s_per_core"])
        res = time_plans(records_dir, batches, batch_size)
        emit({"bench": "plans", "round": r, **res})
        per_core.setdefault("plans", []).append(res["images_per_s_per_core"])
    return per_core


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=pathlib.Path,
        default=data_pipeline.REAL_PHOTOS if data_pipeline.REAL_PHOTOS.is_dir() else None,
        help="an ImageFolder tree of JPEGs (default: ../shared/real_jpegs where it exists)",
    )
    parser.add_argument("--synthetic", type=int, default=600, help="synthetic JPEGs, without DIR")
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", default="cpu", help="DALI devices: cpu, mixed (a GPU)")
    parser.add_argument(
        "--min-records",
        type=int,
        default=10_000,
        help="the records repeat the images to at least this many (as data_pipeline.py's)",
    )
    parser.add_argument("--allow-load", action="store_true", help="report under load, marked")
    args = parser.parse_args()
    quiet = machine.require_quiet(args.allow_load)
    devices = [d for d in args.devices.split(",") if d]
    import nvidia.dali

    def emit(row):
        print(json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        if args.images is not None:
            jpegs, kind = data_pipeline.photo_jpegs(args.images), str(args.images)
        else:
            jpegs, kind = data_pipeline.synthetic_jpegs(args.synthetic), "synthetic"
        repeated = data_pipeline.repeat_to_size(jpegs, args.min_records)
        data_pipeline.build_records(pathlib.Path(tmp), repeated)
        info = {"bench": "records", "images": len(jpegs), "records": len(repeated), "jpegs": kind}
        emit(info | {"pp": CHAIN} | quiet)
        emit({"bench": "versions", "dali": nvidia.dali.__version__})
        emit(pixel_difference(tmp, args.batch_size))
        per_core = time_sides(tmp, devices, args.batches, args.batch_size, args.rounds, emit)
        summary = data_pipeline.summarize(per_core, peer="grain")
        summary["load_average_1m_after"] = machine.facts()["load_average_1m"]
        emit(summary)


if __name__ == "__main__":
    main()
