"""Per-layer time on the CPU of janus' convolutions (`janus.models.conv`) against XLA's own.

    python benchmarks/conv_layers.py --model resnet50 --res 224 --batch 16
    python benchmarks/conv_layers.py --model clip_rn_tiny --res 64 --batch 64     # JANuS-mini's
    python benchmarks/conv_layers.py --model resnet50 --model clip_rn_tiny --min-macs 0

For each distinct convolution of a model's train-mode forward (found by tracing with flax's
`intercept_methods`: shapes only, nothing run) it times the forward, the input gradient and the
kernel gradient, each jitted alone, janus' `conv_general_dilated` against
`lax.conv_general_dilated`, the two alternating, and takes the median wall clock of `--reps` calls.
One JSON line per layer: its shapes, how many times the model has it, its multiply-adds, whether
janus takes the matrix product there (`matmul_on_cpu`), seconds per part and side, and the ratio
XLA / janus (above 1: janus is faster); then one line of totals weighted by the counts.
`--min-macs` overrides `conv.MATMUL_MIN_MACS` (0: every 1x1 convolution as a matrix product, what
the threshold was drawn from). Like every ratio here it is refused when the 1-minute load average
is above half the cores, unless `--allow-load`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import machine  # benchmarks/machine.py, beside this script
import numpy as np
from jax import lax

from janus.models import conv, create_model, init_variables

PARTS = ("forward", "input_grad", "kernel_grad")


def conv_layers(model_name: str, res: int, batch: int) -> dict:
    """{(x shape, kernel shape, strides, padding): count} over the model's train-mode forward."""
    found: dict = {}

    def record(next_fun, args, kwargs, context):
        y = next_fun(*args, **kwargs)
        module = context.module
        if isinstance(module, nn.Conv) and context.method_name == "__call__":
            x = args[0]
            kernel = (*module.kernel_size, x.shape[-1], module.features)
            padding = module.padding
            if isinstance(padding, str):  # "SAME" / "VALID", as the explicit pads XLA gets
                padding = lax.padtype_to_pads(x.shape[1:3], module.kernel_size,
                                              module.strides, padding)  # fmt: skip
            padding = tuple(tuple(int(v) for v in p) for p in padding)
            key = (tuple(x.shape), kernel, tuple(module.strides), padding)
            found[key] = found.get(key, 0) + 1
        return y

    model = create_model(model_name, "ce")
    variables = jax.eval_shape(lambda: init_variables(model, 0, res))
    images = jax.ShapeDtypeStruct((batch, res, res, 3), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
                       variables, images)  # fmt: skip
    return found


def _parts(conv_fn, strides, padding) -> dict:
    """Each part of one convolution as its own jitted function of (x, w, dy)."""

    def forward(x, w):
        return conv_fn(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    return {
        "forward": jax.jit(lambda x, w, dy: forward(x, w)),
        "input_grad": jax.jit(lambda x, w, dy: jax.vjp(lambda x_: forward(x_, w), x)[1](dy)[0]),
        "kernel_grad": jax.jit(lambda x, w, dy: jax.vjp(lambda w_: forward(x, w_), w)[1](dy)[0]),
    }


def time_layer(x_shape, w_shape, strides, padding, reps: int) -> dict:
    """{part: {"janus": s, "xla": s}}: medians of `reps` calls, the two sides alternating."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
    sides = {"janus": _parts(conv.conv_general_dilated, strides, padding),
             "xla": _parts(lax.conv_general_dilated, strides, padding)}  # fmt: skip
    dy = jnp.ones_like(sides["xla"]["forward"](x, w, None))
    times: dict = {part: {side: [] for side in sides} for part in PARTS}
    for part in PARTS:
        for side in sides.values():
            jax.block_until_ready(side[part](x, w, dy))  # compile
        for _ in range(reps):
            for name, side in sides.items():
                t = time.perf_counter()
                jax.block_until_ready(side[part](x, w, dy))
                times[part][name].append(time.perf_counter() - t)
    return {part: {s: statistics.median(v) for s, v in by_side.items()}
            for part, by_side in times.items()}  # fmt: skip


def _ratios(seconds: dict) -> dict:
    return {part: round(by_side["xla"] / by_side["janus"], 3) for part, by_side in seconds.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", action="append", help="repeatable; default resnet50")
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--min-macs", type=int, default=None, help="override conv.MATMUL_MIN_MACS")
    p.add_argument("--allow-load", action="store_true", help="measure under load (rows say so)")
    a = p.parse_args()
    facts = machine.require_quiet(a.allow_load)
    if a.min_macs is not None:
        conv.MATMUL_MIN_MACS = a.min_macs
    facts.update(jax=jax.__version__, min_macs=conv.MATMUL_MIN_MACS)
    for model_name in a.model or ["resnet50"]:
        totals = {part: {"janus": 0.0, "xla": 0.0} for part in PARTS}
        layers = conv_layers(model_name, a.res, a.batch)
        if not layers:
            raise SystemExit(f"{model_name}: no nn.Conv in its forward, nothing to time")
        for layer, count in layers.items():
            x_shape, w_shape, strides, padding = layer
            seconds = time_layer(x_shape, w_shape, strides, padding, a.reps)
            for part, by_side in seconds.items():
                for side, s in by_side.items():
                    totals[part][side] += count * s
            print(json.dumps({
                "model": model_name, "x": x_shape, "kernel": w_shape, "strides": strides,
                "count": count, "macs": conv.multiply_adds(x_shape, w_shape, strides, padding),
                "matmul_on_cpu": conv.matmul_on_cpu(x_shape, w_shape, strides, padding),
                "seconds": seconds, "ratio_xla_over_janus": _ratios(seconds),
            }), flush=True)  # fmt: skip
        print(json.dumps({
            "model": model_name, "res": a.res, "batch": a.batch, "total_seconds": totals,
            "ratio_xla_over_janus": _ratios(totals), **facts,
            "load_average_1m_after": machine.facts()["load_average_1m"],
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
