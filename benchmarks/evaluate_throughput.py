"""Evaluator throughput: `Evaluator.evaluate_variables` on a JANuS-mini split vs a plain peer.

The peer decodes and preprocesses the same images with the same pp chain, stacks them into one
array up front, and runs a jitted `model.apply` over fixed-size batches, so it has no loader, masks,
restriction or counting. The ratio shows what the evaluator's machinery costs on top of the model.
Prints one JSON line per measurement.

    python benchmarks/evaluate_throughput.py [--model resnet_tiny] [--res 64] [--per_class 40]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet_tiny")
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--per_class", type=int, default=40)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    import jax
    import numpy as np

    from janus.data import records
    from janus.data.ingest import synthetic
    from janus.data.input.pixel_scaling import scale_pixels
    from janus.data.input.preprocess import build_pp
    from janus.evaluate import runner
    from janus.evaluate.inference import eval_pp
    from janus.models import create_model, init_variables

    tmp = tempfile.mkdtemp()
    synthetic.build_mini(tmp, train_per_class=1, eval_per_class=args.per_class, train_shards=1)
    config = {
        "loss": "ce",
        "label_set": "mini10",
        "model": {"name": args.model},
        "data": {"train": tmp},
        "input": {"resolution": args.res},
    }
    model = create_model(args.model, "ce")
    variables = init_variables(model, 0, args.res)
    pp = eval_pp(config)
    n = 10 * args.per_class

    opts = runner.EvalOptions(sets=("val",), batch_size=args.batch_size)
    ev = runner.Evaluator(opts)
    ev.evaluate_variables(config, variables, step=0)  # compile
    best = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        r = ev.evaluate_variables(config, variables, step=0)
        best = min(best, time.perf_counter() - t)
    assert r["sets"]["val"]["n"] == n
    evaluator_ips = n / best
    print(
        json.dumps(
            {
                "bench": "evaluator",
                "model": args.model,
                "res": args.res,
                "n": n,
                "img_per_s": round(evaluator_ips, 1),
            }
        )
    )

    src = records.RecordsDataSource(tmp, "val")
    f = build_pp(pp)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    b = args.batch_size
    best = float("inf")
    for _ in range(args.repeat + 1):
        t = time.perf_counter()
        xs = [
            f(
                {"image/encoded": records.decode_example(src[i])["image/encoded"]},
                np.random.default_rng(0),
            )["image"]
            for i in range(n)
        ]
        x = scale_pixels(np.stack(xs + [xs[0]] * ((-n) % b)), f.scaling)  # on the host
        for s in range(0, len(x), b):
            np.asarray(apply(variables, x[s : s + b]))
        best = min(best, time.perf_counter() - t)
    peer_ips = n / best
    print(
        json.dumps(
            {
                "bench": "peer_plain_jit",
                "model": args.model,
                "res": args.res,
                "n": n,
                "img_per_s": round(peer_ips, 1),
            }
        )
    )
    print(json.dumps({"bench": "ratio", "evaluator_over_peer": round(evaluator_ips / peer_ips, 3)}))


if __name__ == "__main__":
    main()
