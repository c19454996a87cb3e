"""ResNet image towers in the torchvision "v1.5" layout (stride on the 3x3 convolution).

ResNet-18/34 use BasicBlocks, ResNet-50/101/152 Bottlenecks, exactly as torchvision. ResNet-26 is
not in torchvision: here it is Bottleneck blocks ``[2, 2, 2, 2]``, timm's ``resnet26`` layout (so
timm resnet26 weights import). ``resnet_tiny`` (BasicBlocks [1, 1, 1, 1], base width 8, 64-d
features) is for tests and 64 px JANuS-mini runs on a CPU.

Call: ``tower.apply(variables, images [B, H, W, 3], train, mutable=["batch_stats"] if train)`` ->
global-average-pooled features ``[B, feature_dim]`` (512 x width/64 for BasicBlocks, 2048 x width/64
for Bottlenecks), the input of torchvision's ``fc``.

BatchNorm matches torch: eps 1e-5, flax momentum 0.9 (= torch momentum 0.1). In train mode it
normalises with the statistics of the batch it is given; under ``jit`` with a batch sharded over a
mesh that is the GLOBAL batch (XLA inserts the cross-device reductions), so no ``axis_name`` is
needed. One difference from torch: torch updates ``running_var`` with the unbiased batch variance,
flax with the biased one (a factor n/(n-1), negligible at real batch sizes). ``zero_init_last_bn``
zero-initialises the last BatchNorm scale of every block (torchvision's ``zero_init_residual``;
Goyal et al. 2017).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus.models.layers import torch_padding

Dtype = Any

# torchvision initialises convolutions with kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, dtype: Dtype, name: str, zero_init: bool = False) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        name=name,
    )


def conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=torch_padding(kernel),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=conv_init,
        name=name,
    )


class BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    zero_init_last_bn: bool = False
    dtype: Dtype = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_ch = self.planes * self.expansion
        y = conv(self.planes, 3, self.stride, self.dtype, "conv1")(x)
        y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
        y = conv(self.planes, 3, 1, self.dtype, "conv2")(y)
        y = batch_norm(train, self.dtype, "bn2", self.zero_init_last_bn)(y)
        if self.stride != 1 or x.shape[-1] != out_ch:
            x = conv(out_ch, 1, self.stride, self.dtype, "downsample_conv")(x)
            x = batch_norm(train, self.dtype, "downsample_bn")(x)
        return nn.relu(x + y)


class Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    zero_init_last_bn: bool = False
    dtype: Dtype = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_ch = self.planes * self.expansion
        y = conv(self.planes, 1, 1, self.dtype, "conv1")(x)
        y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
        y = conv(self.planes, 3, self.stride, self.dtype, "conv2")(y)  # v1.5: stride here
        y = nn.relu(batch_norm(train, self.dtype, "bn2")(y))
        y = conv(out_ch, 1, 1, self.dtype, "conv3")(y)
        y = batch_norm(train, self.dtype, "bn3", self.zero_init_last_bn)(y)
        if self.stride != 1 or x.shape[-1] != out_ch:
            x = conv(out_ch, 1, self.stride, self.dtype, "downsample_conv")(x)
            x = batch_norm(train, self.dtype, "downsample_bn")(x)
        return nn.relu(x + y)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """Params: ``conv1``, ``bn1``, then ``layer{s}_{b}`` (stage s = 1..4, block b from 0), each with
    ``conv1..3``/``bn1..3`` and, where the shape changes, ``downsample_conv``/``downsample_bn`` —
    the torchvision names with dots replaced, so import is a rename."""

    stage_sizes: Sequence[int]
    block: str = "bottleneck"
    width: int = 64
    zero_init_last_bn: bool = False
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.width * 8 * BLOCKS[self.block].expansion

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        if self.block not in BLOCKS:
            raise ValueError(f"unknown block {self.block!r}; known: {sorted(BLOCKS)}")
        block_cls = BLOCKS[self.block]
        x = conv(self.width, 7, 2, self.dtype, "conv1")(images.astype(self.dtype))
        x = nn.relu(batch_norm(train, self.dtype, "bn1")(x))
        # max_pool pads with -inf, like torch's MaxPool2d(3, 2, padding=1).
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, n_blocks in enumerate(self.stage_sizes):
            for b in range(n_blocks):
                x = block_cls(
                    planes=self.width * 2**s,
                    stride=2 if s > 0 and b == 0 else 1,
                    zero_init_last_bn=self.zero_init_last_bn,
                    dtype=self.dtype,
                    name=f"layer{s + 1}_{b}",
                )(x, train)
        return x.mean(axis=(1, 2))


def resnet(stage_sizes: Sequence[int], block: str, **kwargs) -> functools.partial:
    return functools.partial(ResNet, stage_sizes=tuple(stage_sizes), block=block, **kwargs)


TOWER_FACTORIES = {
    "resnet18": resnet([2, 2, 2, 2], "basic"),
    "resnet26": resnet([2, 2, 2, 2], "bottleneck"),  # timm's resnet26; not in torchvision
    "resnet34": resnet([3, 4, 6, 3], "basic"),
    "resnet50": resnet([3, 4, 6, 3], "bottleneck"),
    "resnet101": resnet([3, 4, 23, 3], "bottleneck"),
    "resnet152": resnet([3, 8, 36, 3], "bottleneck"),
    "resnet_tiny": resnet([1, 1, 1, 1], "basic", width=8),
}
