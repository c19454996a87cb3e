"""ConvNeXt image towers in the timm layout (``timm.models.convnext``; Liu et al., CVPR 2022).

ConvNeXt-T/S/B (``convnext_t/s/b``): a 4x4 stride-4 "patchify" stem convolution and LayerNorm,
then four stages of (3, 3, 9, 3) or (3, 3, 27, 3) blocks at widths (96, 192, 384, 768) or
(128, 256, 512, 1024); stages 2-4 start with LayerNorm + a 2x2 stride-2 convolution. A block is a
7x7 depthwise convolution, LayerNorm, an MLP (4x wider, exact GELU) and a learned per-channel
layer scale ``gamma`` (init 1e-6), added to its input. LayerNorms use eps 1e-6. Features are the
global average pool followed by a LayerNorm (timm's ``head.norm``, the default
``head_norm_first=False`` order), the input of timm's ``head.fc``, which becomes the janus head.
``convnext_tiny`` (one block per stage, widths 16-128) is the test / JANuS-mini size, as
``vit_tiny`` is for ViTs: ConvNeXt-T is ``convnext_t``, not timm's ``convnext_tiny`` name.

Parameter names follow timm with dots replaced: ``stem_conv``/``stem_norm`` (``stem.0``/``.1``),
``stages{i}_downsample_norm``/``_conv`` (``stages.i.downsample.0``/``.1``), ``stages{i}_blocks{j}``
with ``conv_dw``, ``norm``, ``mlp/fc1``, ``mlp/fc2``, ``gamma``, and ``head_norm``.
``drop_path_rate`` (``model.drop_path_rate``; 0 by default, as timm's) is timm's stochastic depth on
each block's branch after ``gamma``, rising linearly from 0 over all the blocks of all stages, in
training only. Not implemented: ConvNeXt-V2's GRN.

Call: ``tower.apply(variables, images [B, H, W, 3], train) -> [B, feature_dim]`` (inputs of at
least 32 px; no batch statistics; ``train`` switches drop-path on).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus.models.layers import DropPath, Mlp, drop_path_rates, layer_norm, torch_padding

Dtype = Any
LN_EPS = 1e-6
# timm's _init_weights: truncated normal (std .02) for convolutions and Linear layers, zero biases.
weight_init = nn.initializers.truncated_normal(0.02)


class ConvNeXtBlock(nn.Module):
    ls_init_value: float = 1e-6
    dtype: Dtype = jnp.float32
    drop_rate: float = 0.0  # drop-path rate of this block

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = x.shape[-1]
        y = nn.Conv(
            width,
            (7, 7),
            padding=torch_padding(7),
            feature_group_count=width,  # depthwise
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=weight_init,
            name="conv_dw",
        )(x)
        y = layer_norm(LN_EPS, self.dtype, jnp.float32, "norm")(y)
        y = Mlp(
            4 * width,
            "gelu",
            self.dtype,
            kernel_init=weight_init,
            bias_init=nn.initializers.zeros,
            name="mlp",
        )(y)
        gamma = self.param("gamma", nn.initializers.constant(self.ls_init_value), (width,))
        return x + DropPath()(y * gamma.astype(y.dtype), self.drop_rate, not train)


class ConvNeXt(nn.Module):
    depths: Sequence[int]
    dims: Sequence[int]
    ls_init_value: float = 1e-6
    drop_path_rate: float = 0.0  # stochastic depth of the last block (timm's schedule)
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.dims[-1]

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        if len(self.depths) != len(self.dims):
            raise ValueError(f"ConvNeXt depths {self.depths} and dims {self.dims} differ in length")
        conv = functools.partial(
            nn.Conv, padding="VALID", dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=weight_init,
        )  # fmt: skip
        norm = functools.partial(layer_norm, LN_EPS, self.dtype, jnp.float32)
        x = conv(self.dims[0], (4, 4), strides=(4, 4), name="stem_conv")(images.astype(self.dtype))
        x = norm("stem_norm")(x)
        rates = iter(drop_path_rates(self.drop_path_rate, sum(self.depths)))
        for i, (depth, dim) in enumerate(zip(self.depths, self.dims)):
            if i > 0:
                x = norm(f"stages{i}_downsample_norm")(x)
                x = conv(dim, (2, 2), strides=(2, 2), name=f"stages{i}_downsample_conv")(x)
            for j in range(depth):
                block = ConvNeXtBlock(
                    self.ls_init_value, self.dtype, next(rates), name=f"stages{i}_blocks{j}"
                )
                x = block(x, train)
        return norm("head_norm")(x.mean(axis=(1, 2)))


def convnext(depths: Sequence[int], dims: Sequence[int]) -> functools.partial:
    return functools.partial(ConvNeXt, depths=tuple(depths), dims=tuple(dims))


TOWER_FACTORIES = {
    "convnext_t": convnext((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_s": convnext((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_b": convnext((3, 3, 27, 3), (128, 256, 512, 1024)),
    # Test / JANuS-mini size: 64 px -> 16, 8, 4, 2 px maps, 128-d features.
    "convnext_tiny": convnext((1, 1, 1, 1), (16, 32, 64, 128)),
}
