"""open_clip CLIP models (OpenAI layouts: RN50, RN101, RN50x4, ViT-B/32, ViT-B/16) -> janus CLIP.

Image tower: ``visual.*`` of a ``ModifiedResNet`` -> `janus.models.clip_resnet.ClipResNet`
(``downsample.0/1`` -> ``downsample_conv/bn``, ``attnpool.positional_embedding`` ->
``attnpool/pos_embed``), or of a ``VisionTransformer`` -> `janus.models.vit.ViT` in the CLIP layout
(``conv1`` -> ``patch_embed``, ``class_embedding`` -> ``cls``, ``positional_embedding`` ->
``pos_embed``, ``ln_pre``, ``transformer.resblocks.i.*`` -> ``encoder/block_i``, ``ln_post`` ->
``norm``, ``proj`` -> ``proj/kernel``). Text tower via `janus.convert.open_clip_text`;
``logit_scale`` is kept as stored (log scale).

``activation`` must match how the weights were trained: OpenAI's (and ``*-quickgelu``) use
QuickGELU, the default here; open_clip's plain ``ViT-B-32`` config with LAION weights uses exact
GELU. It applies to the ViT image tower and to the text tower (ResNet image towers have no GELU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from janus.convert.common import Converted
from janus.convert.loading import (
    KeyMismatchError,
    StateDictReader,
    batch_norm,
    conv_kernel,
    count_blocks,
    dense,
    layer_norm,
)
from janus.convert.open_clip_text import convert_text
from janus.convert.torchvision import convert_blocks
from janus.convert.vit_blocks import vit_blocks, vit_registry_name
from janus.models.clip_resnet import TOWER_FACTORIES as CLIP_RN_FACTORIES
from janus.models.layers import stack_blocks

OPEN_CLIP_BLOCK_NAMES = dict(
    ln_1="ln_1",
    qkv="attn.in_proj",
    out="attn.out_proj",
    ln_2="ln_2",
    fc1="mlp.c_fc",
    fc2="mlp.c_proj",
)


def _clip_rn_name(stages: tuple, width: int, output_dim: int, source: str) -> str:
    for name, factory in CLIP_RN_FACTORIES.items():
        kw = factory.keywords
        if (kw["stage_sizes"], kw["width"], kw["output_dim"]) == (stages, width, output_dim):
            return name
    raise ValueError(
        f"{source}: CLIP ResNet with blocks {list(stages)}, width {width}, output {output_dim} "
        f"is not a janus tower (known: {sorted(CLIP_RN_FACTORIES)})"
    )


def convert_clip_resnet_visual(reader: StateDictReader, sd: Mapping, source: str):
    """-> (registry name, tower variables, image size), reading ``visual.*`` keys."""
    blocks: dict[int, set[int]] = {}
    for key in sd:
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "visual" and parts[1].startswith("layer"):
            blocks.setdefault(int(parts[1][5:]), set()).add(int(parts[2]))
    stages = tuple(len(blocks.get(s, ())) for s in (1, 2, 3, 4))
    width = int(sd["visual.conv3.weight"].shape[0])
    output_dim = int(sd["visual.attnpool.c_proj.weight"].shape[0])
    name = _clip_rn_name(stages, width, output_dim, source)
    params: dict = {}
    stats: dict = {}
    for i in (1, 2, 3):
        params[f"conv{i}"] = {"kernel": conv_kernel(reader.take(f"visual.conv{i}.weight"))}
        params[f"bn{i}"], stats[f"bn{i}"] = batch_norm(reader, f"visual.bn{i}")
    convert_blocks(reader, "visual.", stages, 3, params, stats)
    pos = reader.take("visual.attnpool.positional_embedding")
    params["attnpool"] = {"pos_embed": pos}
    for proj in ("q_proj", "k_proj", "v_proj", "c_proj"):
        params["attnpool"][proj] = dense(reader, f"visual.attnpool.{proj}")
    image_size = math.isqrt(pos.shape[0] - 1) * 32
    return name, {"params": params, "batch_stats": stats}, image_size


def convert_clip_vit_visual(reader: StateDictReader, sd: Mapping, source: str, scan_layers: bool):
    """-> (registry name, tower variables, image size, extra tower kwargs), reading ``visual.*``."""
    w = reader.take("visual.conv1.weight")
    width, patch = int(w.shape[0]), int(w.shape[2])
    depth = count_blocks(sd, "visual.transformer.resblocks.")
    proj = reader.take("visual.proj")
    name = vit_registry_name(width, depth, patch, clip=True)
    kwargs: dict = {}
    if name is None:
        # Not a registry size: the clip_vit_b32 layout with its sizes overridden (kwargs are
        # recorded
        # in the checkpoint config, so the evaluator rebuilds the same module). open_clip uses
        # 64-wide heads (vision_cfg.head_width).
        name = "clip_vit_b32"
        kwargs.update(width=width, depth=depth, patch_size=patch, num_heads=max(1, width // 64))
    if int(proj.shape[1]) != 512:
        kwargs["proj_dim"] = int(proj.shape[1])
    params: dict = {
        "patch_embed": {"kernel": conv_kernel(w)},
        "cls": reader.take("visual.class_embedding"),
        "pos_embed": reader.take("visual.positional_embedding"),
        "ln_pre": layer_norm(reader, "visual.ln_pre"),
    }
    encoder = vit_blocks(reader, depth, OPEN_CLIP_BLOCK_NAMES, "visual.transformer.resblocks.")
    if scan_layers:
        encoder = stack_blocks(encoder, depth)
        kwargs["scan_layers"] = True
    params["encoder"] = encoder
    params["norm"] = layer_norm(reader, "visual.ln_post")
    params["proj"] = {"kernel": proj}
    image_size = math.isqrt(params["pos_embed"].shape[0] - 1) * patch
    return name, {"params": params}, image_size, kwargs


def convert(
    state_dict: Mapping[str, np.ndarray],
    source: str = "open_clip",
    *,
    activation: str = "quick_gelu",
    scan_layers: bool = False,
) -> Converted:
    """A full open_clip CLIP state dict (``visual.*``, text, ``logit_scale``) -> janus CLIP."""
    if (
        "visual.attnpool.c_proj.weight" not in state_dict
        and "visual.conv1.weight" not in state_dict
    ):
        raise ValueError(
            f"{source}: not an open_clip CLIP state dict (no visual.conv1 / visual.attnpool keys; "
            f"first keys {list(state_dict)[:5]})"
        )
    required = ["token_embedding.weight", "positional_embedding", "text_projection", "logit_scale"]
    required += ["visual.conv3.weight"] if "visual.attnpool.c_proj.weight" in state_dict else []
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise KeyMismatchError(source, missing, [])
    reader = StateDictReader(state_dict, source, ignore=("num_batches_tracked",))
    if "visual.attnpool.c_proj.weight" in state_dict:
        name, tower, image_size = convert_clip_resnet_visual(reader, state_dict, source)
        tower_kwargs: dict = {}
    else:
        name, tower, image_size, tower_kwargs = convert_clip_vit_visual(
            reader, state_dict, source, scan_layers
        )
        if activation != "quick_gelu":
            tower_kwargs["act"] = activation
    text, text_kwargs = convert_text(reader, state_dict, activation)
    logit_scale = float(reader.take("logit_scale").reshape(-1)[0])
    reader.finish()
    return Converted(
        name=name,
        loss="infonce",
        tower=tower,
        tower_kwargs=tower_kwargs,
        clip={"text": text, "text_kwargs": text_kwargs, "logit_scale": logit_scale},
        image_size=image_size,
    )
