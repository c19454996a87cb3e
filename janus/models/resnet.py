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

from janus.models import conv as conv_lib
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
        conv_general_dilated=conv_lib.conv_general_dilated,
        name=name,
    )


def avg_pool(x: jax.Array, stride: int) -> jax.Array:
    return nn.avg_pool(x, (stride, stride), strides=(stride, stride)) if stride > 1 else x


def conv_bn(
    x: jax.Array, features: int, kernel: int, stride: int, train: bool, dtype: Dtype, index: int,
    zero_init: bool = False,
) -> jax.Array:  # fmt: skip
    """``conv{index}`` then ``bn{index}`` (call inside a compact method: they become its
    submodules)."""
    x = conv(features, kernel, stride, dtype, f"conv{index}")(x)
    return batch_norm(train, dtype, f"bn{index}", zero_init)(x)


def shortcut(
    x: jax.Array, features: int, stride: int, train: bool, dtype: Dtype, anti_alias: bool
) -> jax.Array:
    """Identity, or where the block changes shape ``downsample_conv`` (1x1) + ``downsample_bn``:
    torchvision strides the 1x1 conv; CLIP (``anti_alias``) average-pools before it."""
    if stride == 1 and x.shape[-1] == features:
        return x
    if anti_alias:
        x, stride = avg_pool(x, stride), 1
    x = conv(features, 1, stride, dtype, "downsample_conv")(x)
    return batch_norm(train, dtype, "downsample_bn")(x)


class BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    zero_init_last_bn: bool = False
    dtype: Dtype = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.relu(conv_bn(x, self.planes, 3, self.stride, train, self.dtype, 1))
        y = conv_bn(y, self.planes, 3, 1, train, self.dtype, 2, self.zero_init_last_bn)
        return nn.relu(shortcut(x, self.planes, self.stride, train, self.dtype, False) + y)


class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck (stride on the 3x3 conv), or with ``anti_alias`` CLIP's: the
    3x3 conv at stride 1 followed by a ``stride`` average pool, and a pooled shortcut."""

    planes: int
    stride: int = 1
    zero_init_last_bn: bool = False
    anti_alias: bool = False
    dtype: Dtype = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_ch = self.planes * self.expansion
        conv_stride = 1 if self.anti_alias else self.stride
        y = nn.relu(conv_bn(x, self.planes, 1, 1, train, self.dtype, 1))
        y = nn.relu(conv_bn(y, self.planes, 3, conv_stride, train, self.dtype, 2))
        if self.anti_alias:
            y = avg_pool(y, self.stride)
        y = conv_bn(y, out_ch, 1, 1, train, self.dtype, 3, self.zero_init_last_bn)
        return nn.relu(shortcut(x, out_ch, self.stride, train, self.dtype, self.anti_alias) + y)


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
        x = nn.relu(conv_bn(images.astype(self.dtype), self.width, 7, 2, train, self.dtype, 1))
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
