"""Image-tower benchmark: janus (XLA) inference throughput against the PyTorch reference with the
same converted weights, plus compile time of a scanned vs unscanned ViT.

Prints JSON lines. ``ratio`` = janus img/s / torch img/s in the same process (a peer comparison, so
machine load affects both). Run from the repo root with the torch extra installed:

    python benchmarks/models_towers.py [--batch 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp


def best_time(fn, repeat: int) -> float:
    fn()  # warm up (compile / allocator)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def throughput(name, torch_model, family, size, batch, repeat, dtype="float32"):
    import torch

    from janus.convert import convert_state_dict
    from janus.convert.assemble import build_checked

    torch_model.eval()
    sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    t = time.perf_counter()
    converted = convert_state_dict(family, sd)
    model, variables = build_checked(converted, dtype=dtype)
    convert_s = time.perf_counter() - t
    x = torch.randn(batch, 3, size, size)
    xj = jnp.asarray(x.permute(0, 2, 3, 1).numpy())
    if converted.loss == "ce":
        fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
    else:
        fwd = jax.jit(lambda v, x: model.apply(v, x, method="encode_image"))
    t = time.perf_counter()
    fwd(variables, xj).block_until_ready()
    compile_s = time.perf_counter() - t
    janus_s = best_time(lambda: fwd(variables, xj).block_until_ready(), repeat)
    visual = torch_model.visual if hasattr(torch_model, "visual") else torch_model
    with torch.no_grad():
        torch_s = best_time(lambda: visual(x), repeat)
    return {
        "bench": "tower_inference",
        "model": name,
        "dtype": dtype,
        "image_size": size,
        "batch": batch,
        "janus_img_s": round(batch / janus_s, 2),
        "torch_img_s": round(batch / torch_s, 2),
        "ratio": round(torch_s / janus_s, 3),
        "janus_compile_s": round(compile_s, 1),
        "convert_s": round(convert_s, 1),
    }


def vit_compile(scan: bool, remat: bool, name: str = "vit_b16") -> dict:
    from janus.models import TOWERS

    tower = TOWERS[name](scan_layers=scan, remat=remat)
    x = jax.ShapeDtypeStruct((8, 224, 224, 3), jnp.float32)
    v = jax.eval_shape(lambda: tower.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))

    def loss(v, x):
        return jnp.mean(tower.apply(v, x) ** 2)

    t = time.perf_counter()
    jax.jit(jax.grad(loss)).lower(v, x).compile()
    return {
        "bench": "vit_train_step_compile",
        "model": name,
        "scan_layers": scan,
        "remat": remat,
        "compile_s": round(time.perf_counter() - t, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    import open_clip
    import timm
    import torch
    import torchvision

    torch.manual_seed(0)
    cases = [
        ("resnet50", torchvision.models.resnet50(), "torchvision", 224),
        ("vit_s16", timm.create_model("vit_small_patch16_224", pretrained=False), "timm", 224),
        ("clip_rn50", open_clip.create_model("RN50-quickgelu", pretrained=None), "open_clip", 224),
    ]
    for name, m, family, size in cases:
        print(json.dumps(throughput(name, m, family, size, args.batch, args.repeat)), flush=True)
    print(
        json.dumps(
            throughput(
                "resnet50",
                cases[0][1],
                "torchvision",
                224,
                args.batch,
                args.repeat,
                dtype="bfloat16",
            )
        ),  # fmt: skip
        flush=True,
    )
    for scan in (False, True):
        print(json.dumps(vit_compile(scan, remat=False)), flush=True)
    print(json.dumps(vit_compile(True, remat=True)), flush=True)


if __name__ == "__main__":
    main()
