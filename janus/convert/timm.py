"""timm models -> janus: Vision Transformers (``vit_*``, DeiT), ConvNeXts and plain ResNets (VOLO:
`janus.convert.timm_volo`).

ViT mapping (timm -> janus `ViT`): ``patch_embed.proj`` -> ``patch_embed``, ``cls_token`` ->
``cls``, ``pos_embed`` -> ``pos_embed``,
``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`` ->
``encoder/block_i/{ln_1,attn/qkv,attn/out,ln_2,mlp/fc1,mlp/fc2}``, ``norm`` (or ``fc_norm`` for
``global_pool='avg'`` models) -> ``norm``, ``head`` -> the classifier head. Supported: the standard
class-token or average-pooled ViT (no register tokens, no ``norm_pre``, no layer scale; anything
else shows up as unexpected keys). Heads are not stored in a state dict: they come from the janus
registry entry matching (width, depth, patch), or from ``num_heads``.

DeiT: ``deit_*_patch16_224`` are timm ViTs and convert as above (to ``vit_s16``/``vit_b16``, the
same modules as ``deit_s16``/``deit_b16``). The distilled ones (``deit_*_distilled_*``) also carry
``dist_token`` -> ``dist`` and two heads; they become ``deit_*16_distilled``, whose single head
over the concatenated (class, distillation) features is ``[head; head_dist] / 2`` with bias
``(b + b_dist) / 2``: timm's inference output, the mean of the two heads' logits.

ConvNeXt mapping (timm -> janus `ConvNeXt`): ``stem.0``/``stem.1`` -> ``stem_conv``/``stem_norm``,
``stages.i.downsample.0``/``.1`` -> ``stages{i}_downsample_norm``/``_conv``,
``stages.i.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}`` -> ``stages{i}_blocks{j}/...``,
``head.norm`` -> ``head_norm``, ``head.fc`` -> the classifier head. Depths and widths are read from
the keys and must be a registry ConvNeXt's.

ResNets: timm's ``resnet18/26/34/50/101/152`` share torchvision's key names
(`janus.convert.torchvision`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from janus.convert import timm_volo
from janus.convert.common import Converted
from janus.convert.loading import (
    StateDictReader,
    conv,
    conv_kernel,
    count_blocks,
    dense,
    layer_norm,
)
from janus.convert.torchvision import convert_resnet
from janus.convert.vit_blocks import TIMM_BLOCK_NAMES, vit_blocks, vit_registry_name
from janus.models import convnext
from janus.models.layers import stack_blocks


def convert_vit(
    state_dict: Mapping[str, np.ndarray],
    source: str = "timm",
    *,
    num_heads: int | None = None,
    scan_layers: bool = False,
) -> Converted:
    if "patch_embed.proj.weight" not in state_dict:
        raise ValueError(f"{source}: not a timm ViT (no patch_embed.proj.weight)")
    reader = StateDictReader(state_dict, source)
    w = reader.take("patch_embed.proj.weight")
    width, patch = int(w.shape[0]), int(w.shape[2])
    depth = count_blocks(state_dict, "blocks.")
    class_token = reader.has("cls_token")
    distilled = reader.has("dist_token")
    pool = "gap" if reader.has("fc_norm.weight") else "tok"
    name = vit_registry_name(width, depth, patch, clip=False, dist_token=distilled)
    kwargs: dict = {}
    if name is None:
        if num_heads is None:
            raise ValueError(
                f"{source}: ViT width {width}, depth {depth}, patch {patch} is not a janus "
                "registry ViT; pass num_heads (and use the nearest registry name's kwargs)"
            )
        name = "deit_tiny" if distilled else "vit_tiny"
        kwargs.update(width=width, depth=depth, patch_size=patch)
    if num_heads is not None:
        kwargs["num_heads"] = num_heads
    if pool == "gap":
        kwargs.update(pool="gap", class_token=class_token)
    params: dict = {
        "patch_embed": {"kernel": conv_kernel(w), "bias": reader.take("patch_embed.proj.bias")}
    }
    if class_token:
        params["cls"] = reader.take("cls_token").reshape(width)
    if distilled:
        params["dist"] = reader.take("dist_token").reshape(width)
    pos = reader.take("pos_embed")
    params["pos_embed"] = pos.reshape(-1, width)
    encoder = vit_blocks(reader, depth, TIMM_BLOCK_NAMES, "blocks.")
    if scan_layers:
        encoder = stack_blocks(encoder, depth)
        kwargs["scan_layers"] = True
    params["encoder"] = encoder
    params["norm"] = layer_norm(reader, "fc_norm" if pool == "gap" else "norm")
    head = dense(reader, "head") if reader.has("head.weight") else None
    if distilled and head is not None:
        head_dist = dense(reader, "head_dist")
        head = {
            "kernel": np.concatenate([head["kernel"], head_dist["kernel"]]) / 2,
            "bias": (head["bias"] + head_dist["bias"]) / 2,
        }
    reader.finish()
    grid = math.isqrt(params["pos_embed"].shape[0] - int(class_token) - int(distilled))
    return Converted(
        name=name,
        loss="ce",
        tower={"params": params},
        tower_kwargs=kwargs,
        head=head,
        image_size=grid * patch,
    )


def convnext_arch(state_dict: Mapping[str, np.ndarray], source: str = "timm") -> str:
    """Registry name of the ConvNeXt a timm state dict holds (ValueError if none fits)."""
    stages = count_blocks(state_dict, "stages.")
    depths = tuple(count_blocks(state_dict, f"stages.{i}.blocks.") for i in range(stages))
    dims = tuple(
        int(np.shape(state_dict.get(f"stages.{i}.blocks.0.conv_dw.weight", np.zeros(0)))[0])
        for i in range(stages)
    )
    for name, factory in convnext.TOWER_FACTORIES.items():
        if (factory.keywords["depths"], factory.keywords["dims"]) == (depths, dims):
            return name
    raise ValueError(
        f"{source}: ConvNeXt with depths {depths} and widths {dims} is not a janus ConvNeXt "
        f"(known: {sorted(convnext.TOWER_FACTORIES)})"
    )


def convert_convnext(state_dict: Mapping[str, np.ndarray], source: str = "timm") -> Converted:
    name = convnext_arch(state_dict, source)
    depths = convnext.TOWER_FACTORIES[name].keywords["depths"]
    reader = StateDictReader(state_dict, source)
    params: dict = {"stem_conv": conv(reader, "stem.0"), "stem_norm": layer_norm(reader, "stem.1")}
    for i, depth in enumerate(depths):
        if i > 0:
            params[f"stages{i}_downsample_norm"] = layer_norm(reader, f"stages.{i}.downsample.0")
            params[f"stages{i}_downsample_conv"] = conv(reader, f"stages.{i}.downsample.1")
        for j in range(depth):
            p = f"stages.{i}.blocks.{j}."
            params[f"stages{i}_blocks{j}"] = {
                "conv_dw": conv(reader, p + "conv_dw"),
                "norm": layer_norm(reader, p + "norm"),
                "mlp": {"fc1": dense(reader, p + "mlp.fc1"), "fc2": dense(reader, p + "mlp.fc2")},
                "gamma": reader.take(p + "gamma"),
            }
    params["head_norm"] = layer_norm(reader, "head.norm")
    head = dense(reader, "head.fc") if reader.has("head.fc.weight") else None
    reader.finish()
    return Converted(name=name, loss="ce", tower={"params": params}, head=head)


def convert(state_dict: Mapping[str, np.ndarray], source: str = "timm", **kwargs) -> Converted:
    """Dispatch on the keys: VOLO (outlook attention in ``network.0``; it also has a
    ``patch_embed.proj``, so it goes first), ViT / DeiT (``patch_embed.proj.weight``), ConvNeXt
    (``stem.0.weight`` and ``stages.*``) or ResNet (``layer1.0.*``)."""
    if timm_volo.VOLO_KEY in state_dict:
        return timm_volo.convert_volo(state_dict, source, **kwargs)
    if "patch_embed.proj.weight" in state_dict:
        return convert_vit(state_dict, source, **kwargs)
    if "stem.0.weight" in state_dict and "stages.0.blocks.0.conv_dw.weight" in state_dict:
        return convert_convnext(state_dict, source)
    if "layer1.0.conv1.weight" in state_dict:
        return convert_resnet(state_dict, source)
    raise ValueError(
        f"{source}: not a timm ViT, VOLO, ConvNeXt or ResNet (first keys {list(state_dict)[:5]})"
    )
