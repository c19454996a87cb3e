"""VOLO image towers in timm's layout (Yuan et al. 2021, "VOLO: Vision Outlooker for Visual
Recognition").

The paper's robust architecture. timm's ``VOLO`` (``volo_d1_224``), piece by piece:

- stem: conv 7x7/2 + BN + ReLU, then two conv 3x3 + BN + ReLU (``stem_width`` channels), then a
  ``patch_size/2`` patch conv to ``outlook_width``: a 224 px image becomes a 28x28 map;
- ``outlook_depth`` Outlooker blocks (outlook attention: every 3x3 window of values is re-weighted
  by attention weights predicted from the 2x2-pooled centre, then folded back, overlapping windows
  summed; `unfold` / `fold`);
- a 2x2/2 ``downsample`` conv to ``width`` (14x14), the learned ``pos_embed`` added there;
- ``depth`` pre-LN transformer blocks without qkv bias (timm's stages 2-4 are identical blocks, so
  they are one `janus.models.layers.Encoder`: ``scan_layers`` / ``remat`` work as for ViTs);
- ``num_class_blocks`` class-attention blocks (CaiT's: only the class token attends, to every
  token), then the final LayerNorm over all tokens.

Features (``__call__``) are the normalised class token, ``width`` wide: the input of timm's
``head``, and of the CLIP projection. `tokens` also returns the normalised patch tokens, for the
token-labelling ``aux_head`` that `janus.models.clip.Classifier` adds when ``aux_head_scale`` is
non-zero: timm's forward (train and eval) returns ``head(cls) + 0.5 * max_tokens aux_head(tokens)``,
so the default 0.5 reproduces it (0 drops the aux head). timm's MixToken training variant
(``forward_train``) is not reproduced.

``drop_path_rate`` (``model.drop_path_rate``; 0 by default, as timm's) is timm's stochastic depth
on both branches of the outlookers and transformer blocks, rising linearly from 0 over them (timm's
``block_dpr``), in training only; the class-attention blocks have none, as in timm.

LayerNorm eps is torch's 1e-5; BatchNorm as `janus.models.resnet` (flax momentum 0.9, eps 1e-5).
Dense layers use janus's ViT initialisers (xavier uniform), not timm's trunc-normal(0.02).
Images must be a multiple of ``2 * patch_size`` (16) px; the position embedding has one row per
cell of the 1/16 grid of the image size seen at init (`janus.models.posemb` moves it to another).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus.models.layers import DropPath, Encoder, Mlp, attention, drop_path_rates, layer_norm
from janus.models.resnet import conv_bn

Dtype = Any


def unfold(x: jax.Array, kernel: int, padding: int, stride: int) -> jax.Array:
    """Sliding ``kernel x kernel`` windows of ``x`` [B, H, W, C] -> [B, h, w, kernel**2, C].

    Window positions are row-major inside a window (torch's ``nn.Unfold`` order); zero padding
    ``padding``; ``h = (H + 2 padding - kernel) // stride + 1``."""
    _, height, width, _ = x.shape
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h = (height + 2 * padding - kernel) // stride + 1
    w = (width + 2 * padding - kernel) // stride + 1
    windows = [
        x[:, i : i + stride * (h - 1) + 1 : stride, j : j + stride * (w - 1) + 1 : stride]
        for i in range(kernel)
        for j in range(kernel)
    ]
    return jnp.stack(windows, axis=3)


def fold(
    windows: jax.Array, size: tuple[int, int], kernel: int, padding: int, stride: int
) -> jax.Array:
    """The adjoint of `unfold` (torch's ``F.fold``): [B, h, w, kernel**2, C] -> [B, H, W, C], every
    window added back at its place, overlaps summed. Each window position is spread out to its
    strided places by an interior-padded ``lax.pad`` (no scatter)."""
    _, h, w, _, _ = windows.shape
    height, width = size[0] + 2 * padding, size[1] + 2 * padding
    zero = jnp.zeros((), windows.dtype)
    out = None
    for i in range(kernel):
        for j in range(kernel):
            # Place window entry (i, j) of cell (a, b) at padded pixel (i + stride a, j + stride b).
            pad = [
                (0, 0, 0),
                (i, height - i - stride * (h - 1) - 1, stride - 1),
                (j, width - j - stride * (w - 1) - 1, stride - 1),
                (0, 0, 0),
            ]
            placed = jax.lax.pad(windows[:, :, :, i * kernel + j], zero, pad)
            out = placed if out is None else out + placed
    return out[:, padding : padding + size[0], padding : padding + size[1]]


def dense(features: int, dtype: Dtype, param_dtype: Dtype, name: str, use_bias: bool = True):
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        name=name,
    )


class OutlookAttention(nn.Module):
    """timm's ``OutlookAttention`` on [B, H, W, C]: ``v`` (no bias), ``attn`` (the pooled input ->
    ``heads * k**4`` window-to-window weights), ``proj``."""

    num_heads: int
    kernel_size: int = 3
    padding: int = 1
    stride: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, height, width, c = x.shape
        k, s, heads = self.kernel_size, self.stride, self.num_heads
        if height % s or width % s:
            raise ValueError(f"outlook attention needs a {height}x{width} map divisible by {s}")
        kk, head_dim = k * k, c // heads
        v = dense(c, self.dtype, self.param_dtype, "v", use_bias=False)(x)
        v = unfold(v, k, self.padding, s)  # [B, h, w, kk, C]
        _, h, w, _, _ = v.shape
        v = v.reshape(b, h, w, kk, heads, head_dim)
        pooled = nn.avg_pool(x, (s, s), strides=(s, s))  # [B, h, w, C]
        logits = dense(heads * kk * kk, self.dtype, self.param_dtype, "attn")(pooled)
        logits = logits.reshape(b, h, w, heads, kk, kk).astype(jnp.float32) * head_dim**-0.5
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bxyhqk,bxykhd->bxyqhd", weights, v).reshape(b, h, w, kk, c)
        out = fold(out, (height, width), k, self.padding, s)
        return dense(c, self.dtype, self.param_dtype, "proj")(out)


class Outlooker(nn.Module):
    """Pre-LN block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))`` (timm's ``Outlooker``),
    each branch with drop-path at `drop_rate` in training."""

    num_heads: int
    mlp_ratio: float = 3.0
    drop_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = functools.partial(layer_norm, 1e-5, self.dtype, self.param_dtype)
        attn = OutlookAttention(
            self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype, name="attn"
        )
        x = x + DropPath()(attn(norm("ln_1")(x)), self.drop_rate, not train)
        hidden = int(x.shape[-1] * self.mlp_ratio)
        y = Mlp(hidden, "gelu", self.dtype, self.param_dtype, name="mlp")(norm("ln_2")(x))
        return x + DropPath()(y, self.drop_rate, not train)


class ClassAttention(nn.Module):
    """timm's ``ClassAttention``: the class token (row 0) queries every token; ``q`` and ``kv``
    without bias, ``proj`` with. [B, N, C] -> [B, 1, C]."""

    num_heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        heads = self.num_heads
        kv = dense(2 * c, self.dtype, self.param_dtype, "kv", use_bias=False)(x)
        k, v = jnp.split(kv.reshape(b, n, 2, heads, c // heads), 2, axis=2)
        q = dense(c, self.dtype, self.param_dtype, "q", use_bias=False)(x[:, :1])
        out = attention(q.reshape(b, 1, heads, c // heads), k[:, :, 0], v[:, :, 0])
        return dense(c, self.dtype, self.param_dtype, "proj")(out.reshape(b, 1, c))


class ClassBlock(nn.Module):
    """timm's ``ClassBlock``: updates only the class token (row 0) of [B, N, C]."""

    num_heads: int
    mlp_ratio: float = 3.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        norm = functools.partial(layer_norm, 1e-5, self.dtype, self.param_dtype)
        attn = ClassAttention(self.num_heads, self.dtype, self.param_dtype, name="attn")
        cls = x[:, :1] + attn(norm("ln_1")(x))
        hidden = int(x.shape[-1] * self.mlp_ratio)
        cls = cls + Mlp(hidden, "gelu", self.dtype, self.param_dtype, name="mlp")(norm("ln_2")(cls))
        return jnp.concatenate([cls, x[:, 1:]], axis=1)


class VOLO(nn.Module):
    """images [B, H, W, 3] -> the normalised class token [B, width] (see the module docstring)."""

    outlook_depth: int
    outlook_width: int
    outlook_heads: int
    depth: int
    width: int
    num_heads: int
    stem_width: int = 64
    patch_size: int = 8
    mlp_ratio: float = 3.0
    num_class_blocks: int = 2
    aux_head_scale: float = 0.5  # read by Classifier: weight of the token-labelling aux head
    scan_layers: bool = False
    remat: bool = False
    drop_path_rate: float = 0.0  # stochastic depth of the last transformer block
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.width

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        return self.tokens(images, train)[0]

    @nn.compact
    def tokens(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """-> (class token [B, width], patch tokens [B, (H/16) * (W/16), width]), both after the
        final LayerNorm."""
        b, height, width, _ = images.shape
        cell = 2 * self.patch_size
        if height % cell or width % cell:
            raise ValueError(f"VOLO needs an image size divisible by {cell}, got {height}x{width}")
        x = images.astype(self.dtype)
        # Stem (timm's patch_embed.conv): strided 7x7 then two 3x3 convolutions, BN + ReLU each.
        for i, (kernel, stride) in enumerate([(7, 2), (3, 1), (3, 1)], start=1):
            x = nn.relu(conv_bn(x, self.stem_width, kernel, stride, train, self.dtype, i))
        patch = self.patch_size // 2
        conv = functools.partial(
            nn.Conv, padding="VALID", dtype=self.dtype, param_dtype=self.param_dtype
        )
        x = conv(self.outlook_width, (patch, patch), strides=patch, name="patch_embed")(x)
        rates = drop_path_rates(self.drop_path_rate, self.outlook_depth + self.depth)
        for i in range(self.outlook_depth):
            x = Outlooker(
                self.outlook_heads,
                self.mlp_ratio,
                rates[i],
                self.dtype,
                self.param_dtype,
                name=f"outlooker_{i}",
            )(x, train)
        x = conv(self.width, (2, 2), strides=2, name="downsample")(x)
        x = x.reshape(b, -1, self.width)
        pos = self.param(
            "pos_embed", nn.initializers.normal(0.02), (x.shape[1], self.width), self.param_dtype
        )
        x = Encoder(
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            ln_eps=1e-5,
            qkv_bias=False,
            scan_layers=self.scan_layers,
            remat=self.remat,
            drop_path_rates=rates[self.outlook_depth :],
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="encoder",
        )(x + pos.astype(x.dtype), train=train)
        cls = self.param("cls", nn.initializers.normal(0.02), (self.width,), self.param_dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.width)), x], 1)
        for i in range(self.num_class_blocks):
            x = ClassBlock(
                self.num_heads,
                self.mlp_ratio,
                self.dtype,
                self.param_dtype,
                name=f"class_block_{i}",
            )(x)
        x = layer_norm(1e-5, self.dtype, self.param_dtype, "norm")(x)
        return x[:, 0], x[:, 1:]


TOWER_FACTORIES = {
    # timm volo_d1_224: layers (4, 4, 8, 2), embed_dims (192, 384, 384, 384), heads (6, 12, 12, 12).
    "volo_d1": functools.partial(
        VOLO, outlook_depth=4, outlook_width=192, outlook_heads=6, depth=14, width=384, num_heads=12
    ),
    # Test / JANuS-mini size: one outlooker of width 32, two transformer blocks of width 64.
    "volo_tiny": functools.partial(
        VOLO,
        outlook_depth=1,
        outlook_width=32,
        outlook_heads=2,
        depth=2,
        width=64,
        num_heads=2,
        stem_width=16,
    ),
}
