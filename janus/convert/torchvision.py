"""torchvision classifiers -> janus: ResNets (``resnet*`` -> `janus.models.resnet.ResNet`) and VGGs
with BatchNorm (``vgg16_bn`` -> `janus.models.vgg.VGG`); `convert` picks by the keys.

timm's plain ResNets (``resnet18/26/34/50/101/152``, not the ``d``/``s`` stem variants) use the same
key names, so `janus.convert.timm` reuses this mapping. The architecture is read off the keys
(blocks per stage, Basic vs Bottleneck, base width) and must be one of the registry's ResNets.

VGG mapping: ``features.{i}`` (Conv2d) and ``features.{i+1}`` (BatchNorm2d) -> ``features_{i}``,
``features_{i+1}``; ``classifier.0``/``.3`` -> ``classifier_0``/``_3`` (the rows of
``classifier.0`` permuted from torch's (C, H, W) flattening to flax's (H, W, C)); ``classifier.6``
-> the head. The convolution widths and positions must be a registry VGG's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from janus.convert.common import Converted
from janus.convert.loading import StateDictReader, batch_norm, conv, conv_kernel, dense
from janus.models import vgg
from janus.models.resnet import TOWER_FACTORIES


def resnet_arch(state_dict: Mapping[str, np.ndarray], source: str = "state dict") -> str:
    """Registry name of the ResNet a torchvision/timm state dict holds (ValueError if none fits)."""
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        m = re.match(r"layer(\d)\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if sorted(blocks) != [1, 2, 3, 4] or "conv1.weight" not in state_dict:
        raise ValueError(
            f"{source}: not a torchvision-layout ResNet (need conv1 and layer1..4; "
            f"first keys {list(state_dict)[:5]})"
        )
    stages = tuple(len(blocks[s]) for s in (1, 2, 3, 4))
    block = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    width = int(state_dict["conv1.weight"].shape[0])
    for name, factory in TOWER_FACTORIES.items():
        kw = factory.keywords
        if (kw["stage_sizes"], kw["block"], kw.get("width", 64)) == (stages, block, width):
            return name
    raise ValueError(
        f"{source}: ResNet with {block} blocks {list(stages)}, width {width} is not a janus ResNet "
        f"(known: {sorted(TOWER_FACTORIES)})"
    )


def convert_blocks(
    reader: StateDictReader, prefix: str, stage_sizes, n_convs: int, params: dict, stats: dict
) -> None:
    """``{prefix}layer{s}.{b}.{conv,bn}{i}`` and ``.downsample.{0,1}`` -> ``layer{s}_{b}/...``
    into ``params`` / ``stats`` (torchvision, timm and open_clip ResNets share these names)."""
    for s, n_blocks in enumerate(stage_sizes, start=1):
        for b in range(n_blocks):
            src, dst = f"{prefix}layer{s}.{b}", f"layer{s}_{b}"
            p: dict = {}
            st: dict = {}
            for i in range(1, n_convs + 1):
                p[f"conv{i}"] = {"kernel": conv_kernel(reader.take(f"{src}.conv{i}.weight"))}
                p[f"bn{i}"], st[f"bn{i}"] = batch_norm(reader, f"{src}.bn{i}")
            if reader.has(f"{src}.downsample.0.weight"):
                p["downsample_conv"] = {
                    "kernel": conv_kernel(reader.take(f"{src}.downsample.0.weight"))
                }
                p["downsample_bn"], st["downsample_bn"] = batch_norm(reader, f"{src}.downsample.1")
            params[dst], stats[dst] = p, st


def convert_resnet_tower(reader: StateDictReader, name: str) -> dict:
    """Tower variables {"params", "batch_stats"} read from ``reader`` (keys without a prefix)."""
    kw = TOWER_FACTORIES[name].keywords
    params: dict = {"conv1": {"kernel": conv_kernel(reader.take("conv1.weight"))}}
    stats: dict = {}
    params["bn1"], stats["bn1"] = batch_norm(reader, "bn1")
    n_convs = 3 if kw["block"] == "bottleneck" else 2
    convert_blocks(reader, "", kw["stage_sizes"], n_convs, params, stats)
    return {"params": params, "batch_stats": stats}


def convert_resnet(
    state_dict: Mapping[str, np.ndarray], source: str = "torchvision", name: str | None = None
) -> Converted:
    """A torchvision/timm ResNet classifier (with its 1000-way ``fc``) -> a janus CE model."""
    name = name or resnet_arch(state_dict, source)
    reader = StateDictReader(state_dict, source, ignore=("num_batches_tracked",))
    tower = convert_resnet_tower(reader, name)
    head = dense(reader, "fc") if reader.has("fc.weight") else None
    reader.finish()
    return Converted(name=name, loss="ce", tower=tower, head=head)


def vgg_arch(state_dict: Mapping[str, np.ndarray], source: str = "state dict") -> str:
    """Registry name of the VGG a torchvision state dict holds: the ``features`` indices and
    widths of its convolutions and the width of ``classifier.0`` (ValueError if none fits)."""
    convs = sorted(
        (int(m.group(1)), int(state_dict[k].shape[0]))
        for k in state_dict
        if (m := re.fullmatch(r"features\.(\d+)\.weight", k)) and np.ndim(state_dict[k]) == 4
    )
    fc_width = int(np.shape(state_dict.get("classifier.0.weight", np.zeros(0)))[0])
    for name, factory in vgg.TOWER_FACTORIES.items():
        layers = factory.keywords["layers"]
        want = [(i, v) for v, i in zip(layers, vgg.feature_indices(layers)) if v != vgg.POOL]
        if want == convs and factory.keywords.get("fc_width", 4096) == fc_width:
            return name
    raise ValueError(
        f"{source}: VGG with convolutions (features index, width) {convs} and fc width "
        f"{fc_width} is not a janus VGG (known: {sorted(vgg.TOWER_FACTORIES)}); torchvision's "
        "VGGs without BatchNorm are not supported"
    )


def torch_flatten_to_flax(w: np.ndarray, channels: int) -> np.ndarray:
    """Linear weight ``[O, C*H*W]`` over a (C, H, W)-flattened map -> flax Dense kernel
    ``[H*W*C, O]`` over the (H, W, C)-flattened one."""
    out, n = w.shape
    side = int(round((n // channels) ** 0.5))
    return w.reshape(out, channels, side, side).transpose(0, 2, 3, 1).reshape(out, n).T


def convert_vgg(
    state_dict: Mapping[str, np.ndarray], source: str = "torchvision", name: str | None = None
) -> Converted:
    """A torchvision VGG-BN classifier (``features``, ``classifier.0/3/6``) -> a janus CE model."""
    name = name or vgg_arch(state_dict, source)
    layers = vgg.TOWER_FACTORIES[name].keywords["layers"]
    reader = StateDictReader(state_dict, source, ignore=("num_batches_tracked",))
    params: dict = {}
    stats: dict = {}
    for v, i in zip(layers, vgg.feature_indices(layers)):
        if v == vgg.POOL:
            continue
        params[f"features_{i}"] = conv(reader, f"features.{i}")
        bn = f"features_{i + 1}"
        params[bn], stats[bn] = batch_norm(reader, f"features.{i + 1}")
    last_width = [v for v in layers if v != vgg.POOL][-1]
    fc6 = dense(reader, "classifier.0")
    fc6["kernel"] = torch_flatten_to_flax(fc6["kernel"].T, last_width)
    params["classifier_0"] = fc6
    params["classifier_3"] = dense(reader, "classifier.3")
    head = dense(reader, "classifier.6") if reader.has("classifier.6.weight") else None
    reader.finish()
    tower = {"params": params, "batch_stats": stats}
    return Converted(name=name, loss="ce", tower=tower, head=head)


def convert(state_dict: Mapping[str, np.ndarray], source: str = "torchvision") -> Converted:
    """Dispatch on the keys: VGG (``features.0.weight``) or ResNet."""
    if "features.0.weight" in state_dict:
        return convert_vgg(state_dict, source)
    return convert_resnet(state_dict, source)
