"""timm VOLO (``volo_d1_224`` and the other ``volo_d*`` state dicts) -> `janus.models.volo.VOLO`.

Mapping (timm -> janus):

- ``patch_embed.conv.{0,3,6}`` / ``.{1,4,7}`` (stem convs / BNs) -> ``conv{1,2,3}`` / ``bn{1,2,3}``;
  ``patch_embed.proj`` -> ``patch_embed``;
- ``network.0.j`` (Outlookers) -> ``outlooker_j/{ln_1, attn/{v, attn, proj}, ln_2, mlp}``;
- ``network.1.proj`` (Downsample) -> ``downsample``;
- ``network.{2, 3, ...}.j`` (transformer stages) -> ``encoder/block_0..`` in order, with
  ``attn.qkv`` / ``attn.proj`` -> ``attn/qkv`` / ``attn/out`` (as for ViTs);
- ``pos_embed`` [1, gh, gw, C] -> ``pos_embed`` [gh*gw, C]; ``cls_token`` -> ``cls``;
- ``post_network.i`` -> ``class_block_i/{ln_1, attn/{q, kv, proj}, ln_2, mlp}``; ``norm``;
- ``head`` and ``aux_head`` -> the Classifier's ``head`` and ``aux_head``. A model without
  ``aux_head`` (``use_aux_head=False``) converts with ``aux_head_scale=0``.

Widths, depths and the outlooker heads are read off the shapes; the transformer heads are not in a
state dict, so they come from the registry entry with the same shapes, or from ``num_heads``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from janus.convert.common import Converted
from janus.convert.loading import (
    StateDictReader,
    batch_norm,
    conv_kernel,
    count_blocks,
    dense,
    layer_norm,
)
from janus.convert.vit_blocks import TIMM_BLOCK_NAMES, vit_blocks
from janus.models.layers import stack_blocks
from janus.models.volo import TOWER_FACTORIES

VOLO_KEY = "network.0.0.attn.attn.weight"  # the outlook attention of the first block
OUTLOOK_WEIGHTS = 81  # (3 x 3 window) x (3 x 3 window) attention weights per head
FALLBACK = "volo_tiny"  # registry entry whose kwargs a non-registry VOLO overrides
STEM_CONVS = {1: "patch_embed.conv.0", 2: "patch_embed.conv.3", 3: "patch_embed.conv.6"}
STEM_BNS = {1: "patch_embed.conv.1", 2: "patch_embed.conv.4", 3: "patch_embed.conv.7"}
STRUCTURE = (
    "stem_width",
    "patch_size",
    "outlook_depth",
    "outlook_width",
    "outlook_heads",
    "depth",
    "width",
    "mlp_ratio",
    "num_class_blocks",
)


def conv(reader: StateDictReader, prefix: str, bias: bool = True) -> dict:
    out = {"kernel": conv_kernel(reader.take(f"{prefix}.weight"))}
    if bias:
        out["bias"] = reader.take(f"{prefix}.bias")
    return out


def mlp(reader: StateDictReader, prefix: str) -> dict:
    return {"fc1": dense(reader, f"{prefix}.fc1"), "fc2": dense(reader, f"{prefix}.fc2")}


def read_structure(sd: Mapping[str, np.ndarray], source: str) -> tuple[dict, list[int]]:
    """(the VOLO kwargs a timm state dict determines: all but the transformer heads, the indices
    of its transformer stages in ``network``)."""
    stages = []
    while any(k.startswith(f"network.{len(stages) + 2}.") for k in sd):
        if f"network.{len(stages) + 2}.proj.weight" in sd:
            raise ValueError(
                f"{source}: network.{len(stages) + 2} is a second downsample; janus VOLO supports "
                "timm's outlook stage, one downsample, then transformer stages of one width"
            )
        stages.append(len(stages) + 2)
    if "network.1.proj.weight" not in sd or not stages:
        raise ValueError(f"{source}: not timm's VOLO layout (need network.1.proj and network.2)")

    def width(s: int) -> int:
        return int(sd[f"network.{s}.0.norm1.weight"].shape[0])

    widths = {width(s) for s in stages}
    ratios = {sd[f"network.{s}.0.mlp.fc1.weight"].shape[0] / width(s) for s in [0, *stages]}
    if len(widths) > 1 or len(ratios) > 1:
        raise ValueError(
            f"{source}: VOLO stages of widths {sorted(widths)} and mlp ratios {sorted(ratios)}; "
            "janus VOLO needs one transformer width and one mlp ratio"
        )
    outlook = sd[VOLO_KEY]  # [heads * 9 * 9, C]: 3x3 window -> 3x3 window weights per head
    if outlook.shape[0] % OUTLOOK_WEIGHTS:
        raise ValueError(f"{source}: {VOLO_KEY} has {outlook.shape[0]} rows, not heads * 81")
    structure = dict(
        stem_width=int(sd[STEM_CONVS[1] + ".weight"].shape[0]),
        patch_size=2 * int(sd["patch_embed.proj.weight"].shape[2]),  # after the stride-2 stem
        outlook_depth=count_blocks(sd, "network.0."),
        outlook_width=int(outlook.shape[1]),
        outlook_heads=int(outlook.shape[0]) // OUTLOOK_WEIGHTS,
        depth=sum(count_blocks(sd, f"network.{s}.") for s in stages),
        width=widths.pop(),
        mlp_ratio=ratios.pop(),
        num_class_blocks=count_blocks(sd, "post_network."),
    )
    return structure, stages


def registry_kwargs(name: str) -> dict:
    """Every VOLO field of registry entry ``name`` (its factory's keywords over the defaults)."""
    factory = TOWER_FACTORIES[name]
    fields = factory.func.__dataclass_fields__
    return {f: factory.keywords.get(f, fields[f].default) for f in (*STRUCTURE, "num_heads")}


def tower_name_and_kwargs(structure: dict, num_heads: int | None, source: str) -> tuple[str, dict]:
    for name in TOWER_FACTORIES:
        known = registry_kwargs(name)
        if all(known[f] == v for f, v in structure.items()):
            heads = {} if num_heads in (None, known["num_heads"]) else {"num_heads": num_heads}
            return name, heads
    if num_heads is None:
        raise ValueError(
            f"{source}: VOLO {structure} is not a janus registry VOLO; pass num_heads (the "
            "transformer heads are not in a state dict)"
        )
    base = registry_kwargs(FALLBACK)
    kwargs = {f: v for f, v in structure.items() if base[f] != v}
    return FALLBACK, {**kwargs, "num_heads": num_heads}


def outlooker(reader: StateDictReader, p: str) -> dict:
    return {
        "ln_1": layer_norm(reader, f"{p}.norm1"),
        "attn": {
            "v": dense(reader, f"{p}.attn.v", bias=False),
            "attn": dense(reader, f"{p}.attn.attn"),
            "proj": dense(reader, f"{p}.attn.proj"),
        },
        "ln_2": layer_norm(reader, f"{p}.norm2"),
        "mlp": mlp(reader, f"{p}.mlp"),
    }


def class_block(reader: StateDictReader, p: str) -> dict:
    return {
        "ln_1": layer_norm(reader, f"{p}.norm1"),
        "attn": {
            "q": dense(reader, f"{p}.attn.q", bias=False),
            "kv": dense(reader, f"{p}.attn.kv", bias=False),
            "proj": dense(reader, f"{p}.attn.proj"),
        },
        "ln_2": layer_norm(reader, f"{p}.norm2"),
        "mlp": mlp(reader, f"{p}.mlp"),
    }


def convert_volo(
    state_dict: Mapping[str, np.ndarray],
    source: str = "timm",
    *,
    num_heads: int | None = None,
    scan_layers: bool = False,
) -> Converted:
    if VOLO_KEY not in state_dict:
        raise ValueError(f"{source}: not a timm VOLO (no {VOLO_KEY})")
    structure, stages = read_structure(state_dict, source)
    name, kwargs = tower_name_and_kwargs(structure, num_heads, source)
    reader = StateDictReader(state_dict, source, ignore=("num_batches_tracked",))
    params: dict = {}
    stats: dict = {}
    for i in STEM_CONVS:
        params[f"conv{i}"] = conv(reader, STEM_CONVS[i], bias=False)
        params[f"bn{i}"], stats[f"bn{i}"] = batch_norm(reader, STEM_BNS[i])
    params["patch_embed"] = conv(reader, "patch_embed.proj")
    for j in range(structure["outlook_depth"]):
        params[f"outlooker_{j}"] = outlooker(reader, f"network.0.{j}")
    params["downsample"] = conv(reader, "network.1.proj")
    width = structure["width"]
    pos = reader.take("pos_embed")  # [1, gh, gw, C]
    params["pos_embed"] = pos.reshape(-1, width)
    blocks: list[dict] = []
    for s in stages:  # timm's transformer stages are consecutive blocks of one encoder here
        n = count_blocks(state_dict, f"network.{s}.")
        blocks += vit_blocks(reader, n, TIMM_BLOCK_NAMES, f"network.{s}.", qkv_bias=False).values()
    encoder = {f"block_{i}": b for i, b in enumerate(blocks)}
    if scan_layers:
        encoder = stack_blocks(encoder, len(blocks))
        kwargs["scan_layers"] = True
    params["encoder"] = encoder
    params["cls"] = reader.take("cls_token").reshape(width)
    for i in range(structure["num_class_blocks"]):
        params[f"class_block_{i}"] = class_block(reader, f"post_network.{i}")
    params["norm"] = layer_norm(reader, "norm")
    head = dense(reader, "head") if reader.has("head.weight") else None
    aux_head = dense(reader, "aux_head") if reader.has("aux_head.weight") else None
    if aux_head is None:
        kwargs["aux_head_scale"] = 0.0  # timm's use_aux_head=False: logits = head(cls)
    reader.finish()
    return Converted(
        name=name,
        loss="ce",
        tower={"params": params, "batch_stats": stats},
        tower_kwargs=kwargs,
        head=head,
        aux_head=aux_head,
        image_size=int(pos.shape[1]) * 2 * structure["patch_size"],
    )
