"""Vision Transformer image towers (Ti/S/B/L, patch 16/32) in two layouts.

- timm layout (the registry's ``vit_*`` names): patch conv with bias, class token + learned position
  embedding over ``1 + N`` tokens, pre-LN blocks with LayerNorm eps 1e-6, final LayerNorm. Features
  are the final-norm'd class token (``pool="tok"``) or the mean of the patch tokens followed by the
  final norm (``pool="gap"``, timm's ``fc_norm`` placement).
- CLIP layout (``clip_vit_b32``/``clip_vit_b16``, open_clip's ``VisionTransformer``): patch conv
  without bias, an extra ``ln_pre`` before the blocks, LayerNorm eps 1e-5, QuickGELU for OpenAI
  weights, and a bias-free projection ``proj`` to the joint embedding width after ``ln_post``.
  Features are the *projected* class token, width ``proj_dim``.
- DeiT (Touvron et al. 2021) is the timm layout: ``deit_s16``/``deit_b16`` are ``vit_s16``/
  ``vit_b16`` under DeiT's names (the same module; DeiT differs in its training recipe and
  weights). The distilled variants (``deit_s16_distilled``, ``deit_b16_distilled``;
  ``dist_token=True``) add timm's distillation token after the class token (``1 + 1 + N``
  position rows). Their features are the final-norm'd class and distillation tokens
  concatenated (``feature_dim = 2 * width``), so one linear head over them equals timm's
  inference output, the mean of ``head(cls)`` and ``head_dist(dist)`` (`janus.convert.timm`
  stacks the two heads, halved).

Call: ``tower.apply(variables, images [B, H, W, 3], train) -> features [B, feature_dim]``. The
position embedding has one row per patch of the image size seen at init (``(H/p) * (W/p)`` plus the
class token), so init at the resolution you train/evaluate at, or move weights to another one with
`janus.models.posemb.resize_posembs`. ``scan_layers`` and ``remat`` trade
compile time and memory (see `janus.models.layers.Encoder`). ``drop_path_rate`` (``model.
drop_path_rate``; DeiT's recipe uses 0.1) is timm's stochastic depth, rising linearly over the
blocks from 0 to that rate, in training only (`janus.models.layers.DropPath`); 0 by default.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus.models.layers import Encoder, drop_path_rates, layer_norm

Dtype = Any


class ViT(nn.Module):
    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    pool: str = "tok"  # "tok" (class token) | "gap" (mean of patch tokens)
    class_token: bool = True
    dist_token: bool = False  # DeiT's distillation token (see the module docstring)
    ln_pre: bool = False
    patch_bias: bool = True
    proj_dim: int | None = None
    act: str = "gelu"
    ln_eps: float = 1e-6
    scan_layers: bool = False
    remat: bool = False
    drop_path_rate: float = 0.0  # stochastic depth of the last block (timm's schedule)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.proj_dim or (2 * self.width if self.dist_token else self.width)

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        if self.pool not in ("tok", "gap"):
            raise ValueError(f"ViT pool must be 'tok' or 'gap', got {self.pool!r}")
        if self.pool == "tok" and not self.class_token:
            raise ValueError("ViT pool='tok' needs class_token=True")
        if self.dist_token and (self.pool != "tok" or self.proj_dim is not None):
            raise ValueError("ViT dist_token=True needs pool='tok' and no proj_dim (DeiT's layout)")
        b, h, w, _ = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        x = nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=self.patch_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.lecun_normal(),
            name="patch_embed",
        )(images.astype(self.dtype))
        x = x.reshape(b, -1, self.width)
        if self.class_token:
            cls = self.param("cls", nn.initializers.normal(1e-6), (self.width,), self.param_dtype)
            prefix = [cls]
            if self.dist_token:
                init = nn.initializers.truncated_normal(0.02)  # timm's
                prefix.append(self.param("dist", init, (self.width,), self.param_dtype))
            prefix = jnp.broadcast_to(
                jnp.stack(prefix).astype(x.dtype), (b, len(prefix), self.width)
            )
            x = jnp.concatenate([prefix, x], 1)
        pos = self.param(
            "pos_embed", nn.initializers.normal(0.02), (x.shape[1], self.width), self.param_dtype
        )
        x = x + pos.astype(x.dtype)
        norm = functools.partial(layer_norm, self.ln_eps, self.dtype, self.param_dtype)
        if self.ln_pre:
            x = norm("ln_pre")(x)
        x = Encoder(
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            act=self.act,
            ln_eps=self.ln_eps,
            scan_layers=self.scan_layers,
            remat=self.remat,
            drop_path_rates=drop_path_rates(self.drop_path_rate, self.depth),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="encoder",
        )(x, train=train)
        if self.dist_token:
            x = norm("norm")(x)[:, :2].reshape(b, 2 * self.width)
        elif self.pool == "tok":
            x = norm("norm")(x)[:, 0]
        else:
            x = norm("norm")(x[:, int(self.class_token) :].mean(axis=1))
        if self.proj_dim is not None:
            x = nn.Dense(
                self.proj_dim,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=nn.initializers.normal(self.width**-0.5),
                name="proj",
            )(x)
        return x


# (width, depth, heads) of the standard sizes (Dosovitskiy et al.; Touvron et al. for Ti/S).
VIT_SIZES = {
    "ti": (192, 12, 3),
    "s": (384, 12, 6),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
}


def vit(size: str, patch_size: int, **kwargs) -> functools.partial:
    width, depth, heads = VIT_SIZES[size]
    return functools.partial(
        ViT, patch_size=patch_size, width=width, depth=depth, num_heads=heads, **kwargs
    )


# Keyword arguments that turn the timm layout into open_clip's visual transformer layout.
CLIP_VIT_LAYOUT = dict(ln_pre=True, patch_bias=False, ln_eps=1e-5, act="quick_gelu")

TOWER_FACTORIES = {
    "vit_ti16": vit("ti", 16),
    "vit_s16": vit("s", 16),
    "vit_s32": vit("s", 32),
    "vit_b16": vit("b", 16),
    "vit_b32": vit("b", 32),
    "vit_l16": vit("l", 16),
    # DeiT: the same modules (see the module docstring); the distilled ones with their extra token.
    "deit_s16": vit("s", 16),
    "deit_b16": vit("b", 16),
    "deit_s16_distilled": vit("s", 16, dist_token=True),
    "deit_b16_distilled": vit("b", 16, dist_token=True),
    # Test / JANuS-mini size: 2 blocks of width 64 on 8x8 patches (64 px -> 64 tokens).
    "vit_tiny": functools.partial(ViT, patch_size=8, width=64, depth=2, num_heads=2),
    "deit_tiny": functools.partial(
        ViT, patch_size=8, width=64, depth=2, num_heads=2, dist_token=True
    ),
    # open_clip ViT-B-32 / ViT-B-16 (OpenAI layout, 512-d joint embedding).
    "clip_vit_b32": vit("b", 32, proj_dim=512, **CLIP_VIT_LAYOUT),
    "clip_vit_b16": vit("b", 16, proj_dim=512, **CLIP_VIT_LAYOUT),
}
