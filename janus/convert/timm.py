"""timm models -> janus: Vision Transformers (``vit_*``) and plain ResNets (VOLO:
`janus.convert.timm_volo`).

ViT mapping (timm -> janus `ViT`): ``patch_embed.proj`` -> ``patch_embed``, ``cls_token`` ->
``cls``, ``pos_embed`` -> ``pos_embed``,
``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`` ->
``encoder/block_i/{ln_1,attn/qkv,attn/out,ln_2,mlp/fc1,mlp/fc2}``, ``norm`` (or ``fc_norm`` for
``global_pool='avg'`` models) -> ``norm``, ``head`` -> the classifier head. Supported: the standard
class-token or average-pooled ViT (no register tokens, no ``norm_pre``, no layer scale; anything
else shows up as unexpected keys). Heads are not stored in a state dict: they come from the janus
registry entry matching (width, depth, patch), or from ``num_heads``.

ResNets: timm's ``resnet18/26/34/50/101/152`` share torchvision's key names
(`janus.convert.torchvision`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from janus.convert.common import Converted
from janus.convert.loading import StateDictReader, conv_kernel, dense, layer_norm
from janus.convert.torchvision import convert_resnet
from janus.models.layers import stack_blocks
from janus.models.vit import TOWER_FACTORIES as VIT_FACTORIES


def vit_registry_name(width: int, depth: int, patch: int, clip: bool) -> str | None:
    for name, factory in VIT_FACTORIES.items():
        kw = factory.keywords
        is_clip = kw.get("proj_dim") is not None
        if (kw["width"], kw["depth"], kw["patch_size"], is_clip) == (width, depth, patch, clip):
            return name
    return None


def vit_blocks(
    reader: StateDictReader, depth: int, names: dict[str, str], prefix: str, qkv_bias: bool = True
) -> dict:
    """Encoder params ``{block_i: ...}``. ``names`` maps janus sub-layer -> torch sub-layer, and
    ``qkv`` may name a Linear (timm ``attn.qkv``) or torch MHA packed weights (``attn.in_proj``).
    ``qkv_bias=False``: a Linear ``qkv`` without bias (VOLO)."""
    out = {}
    for i in range(depth):
        p = f"{prefix}{i}."
        if names["qkv"].endswith("in_proj"):  # nn.MultiheadAttention: in_proj_weight / in_proj_bias
            qkv = {
                "kernel": reader.take(p + names["qkv"] + "_weight").T,
                "bias": reader.take(p + names["qkv"] + "_bias"),
            }
        else:
            qkv = dense(reader, p + names["qkv"], bias=qkv_bias)
        out[f"block_{i}"] = {
            "ln_1": layer_norm(reader, p + names["ln_1"]),
            "attn": {"qkv": qkv, "out": dense(reader, p + names["out"])},
            "ln_2": layer_norm(reader, p + names["ln_2"]),
            "mlp": {"fc1": dense(reader, p + names["fc1"]), "fc2": dense(reader, p + names["fc2"])},
        }
    return out


TIMM_BLOCK_NAMES = dict(
    ln_1="norm1", qkv="attn.qkv", out="attn.proj", ln_2="norm2", fc1="mlp.fc1", fc2="mlp.fc2"
)


def count_blocks(state_dict: Mapping[str, np.ndarray], prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".")[0]) for k in state_dict if k.startswith(prefix)}
    if ids != set(range(len(ids))):
        raise ValueError(f"non-contiguous block indices under {prefix!r}: {sorted(ids)[:10]}")
    return len(ids)


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
    pool = "gap" if reader.has("fc_norm.weight") else "tok"
    name = vit_registry_name(width, depth, patch, clip=False)
    kwargs: dict = {}
    if name is None:
        if num_heads is None:
            raise ValueError(
                f"{source}: ViT width {width}, depth {depth}, patch {patch} is not a janus "
                "registry ViT; pass num_heads (and use the nearest registry name's kwargs)"
            )
        name = "vit_tiny"
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
    pos = reader.take("pos_embed")
    params["pos_embed"] = pos.reshape(-1, width)
    encoder = vit_blocks(reader, depth, TIMM_BLOCK_NAMES, "blocks.")
    if scan_layers:
        encoder = stack_blocks(encoder, depth)
        kwargs["scan_layers"] = True
    params["encoder"] = encoder
    params["norm"] = layer_norm(reader, "fc_norm" if pool == "gap" else "norm")
    head = dense(reader, "head") if reader.has("head.weight") else None
    reader.finish()
    grid = math.isqrt(params["pos_embed"].shape[0] - int(class_token))
    return Converted(
        name=name,
        loss="ce",
        tower={"params": params},
        tower_kwargs=kwargs,
        head=head,
        image_size=grid * patch,
    )


def convert(state_dict: Mapping[str, np.ndarray], source: str = "timm", **kwargs) -> Converted:
    """Dispatch on the keys: VOLO (outlook attention in ``network.0``; it also has a
    ``patch_embed.proj``, so it goes first), ViT (``patch_embed.proj.weight``) or ResNet
    (``layer1.0.*``)."""
    from janus.convert import timm_volo  # it reuses this module's ViT block mapping

    if timm_volo.VOLO_KEY in state_dict:
        return timm_volo.convert_volo(state_dict, source, **kwargs)
    if "patch_embed.proj.weight" in state_dict:
        return convert_vit(state_dict, source, **kwargs)
    if "layer1.0.conv1.weight" in state_dict:
        return convert_resnet(state_dict, source)
    raise ValueError(
        f"{source}: not a timm ViT, VOLO or ResNet (first keys {list(state_dict)[:5]})"
    )
