"""The ViT block mapping that every transformer converter shares (timm ViT/DeiT, VOLO's
transformer stages, open_clip's towers): torch sub-layer names -> janus `ViT` encoder blocks, and
the registry name of a ViT shape. Its own module so that no converter imports another."""

from __future__ import annotations

from janus.convert.loading import StateDictReader, dense, layer_norm
from janus.models.vit import TOWER_FACTORIES as VIT_FACTORIES


def vit_registry_name(
    width: int, depth: int, patch: int, clip: bool, dist_token: bool = False
) -> str | None:
    """The first registry ViT of that shape (``vit_*`` before its ``deit_*`` alias)."""
    for name, factory in VIT_FACTORIES.items():
        kw = factory.keywords
        is_clip = kw.get("proj_dim") is not None
        got = (kw["width"], kw["depth"], kw["patch_size"], is_clip, kw.get("dist_token", False))
        if got == (width, depth, patch, clip, dist_token):
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
