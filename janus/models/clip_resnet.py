"""CLIP's "modified ResNet" image tower (Radford et al. 2021; open_clip ``ModifiedResNet``).

The tower the JANuS paper used for both its CE and its vision-language runs. Differences from
torchvision: a 3-convolution stem (3x3 s2 -> 3x3 -> 3x3) followed by a 2x2 average pool instead of a
max pool; anti-aliased downsampling (strided blocks run their 3x3 conv at stride 1 and then
average-pool, and the shortcut average-pools before its 1x1 conv); and QKV attention pooling instead
of global average pooling.

Call: ``tower.apply(variables, images, train, mutable=["batch_stats"] if train)`` -> the
attention-pool output ``[B, output_dim]`` (``feature_dim == output_dim``; for CLIP this is already
the joint embedding width: 1024 RN50, 512 RN101, 640 RN50x4). The attention pool's position
embedding has ``(H/32)*(W/32) + 1`` rows for the image size seen at init (50 at 224 px, 5 at 64 px;
`janus.models.posemb.resize_posembs` moves it to another size).

The blocks are `janus.models.resnet.Bottleneck` with ``anti_alias=True``. BatchNorm as in
`janus.models.resnet` (eps 1e-5, torch momentum 0.1, global-batch statistics under a
sharded ``jit``). ``zero_init_last_bn`` defaults to True, as open_clip initialises ``bn3`` to zero.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus.models.layers import attention
from janus.models.resnet import Bottleneck, avg_pool, conv_bn

Dtype = Any


class AttentionPool(nn.Module):
    """QKV attention of the mean token (plus position embedding) over all spatial tokens.

    open_clip attends with every token as a query and keeps token 0; only token 0's query matters,
    so only it is computed. Params: ``pos_embed [HW+1, C]``, Dense ``q_proj``, ``k_proj``,
    ``v_proj``, ``c_proj``."""

    num_heads: int
    output_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"attention pool width {c} is not divisible by {self.num_heads} heads")
        x = x.reshape(b, h * w, c)
        x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
        pos = self.param("pos_embed", nn.initializers.normal(c**-0.5), (h * w + 1, c), jnp.float32)
        x = x + pos.astype(x.dtype)
        dense = functools.partial(
            nn.Dense,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(c**-0.5),
        )
        heads = (self.num_heads, c // self.num_heads)
        q = dense(c, name="q_proj")(x[:, :1]).reshape(b, 1, *heads)
        k = dense(c, name="k_proj")(x).reshape(b, h * w + 1, *heads)
        v = dense(c, name="v_proj")(x).reshape(b, h * w + 1, *heads)
        out = attention(q, k, v).reshape(b, c)
        return dense(self.output_dim, name="c_proj")(out)


class ClipResNet(nn.Module):
    """Params: stem ``conv1..3``/``bn1..3``, ``layer{s}_{b}`` blocks
    (``downsample_conv``/``downsample_bn`` for open_clip's ``downsample.0``/``.1``), ``attnpool``.
    """

    stage_sizes: Sequence[int]
    output_dim: int
    num_heads: int
    width: int = 64
    zero_init_last_bn: bool = True
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.output_dim

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        x = images.astype(self.dtype)
        stem = [(self.width // 2, 2), (self.width // 2, 1), (self.width, 1)]
        for i, (ch, stride) in enumerate(stem, start=1):
            x = nn.relu(conv_bn(x, ch, 3, stride, train, self.dtype, i))
        x = avg_pool(x, 2)
        for s, n_blocks in enumerate(self.stage_sizes):
            for b in range(n_blocks):
                x = Bottleneck(
                    planes=self.width * 2**s,
                    stride=2 if s > 0 and b == 0 else 1,
                    zero_init_last_bn=self.zero_init_last_bn,
                    anti_alias=True,
                    dtype=self.dtype,
                    name=f"layer{s + 1}_{b}",
                )(x, train)
        return AttentionPool(self.num_heads, self.output_dim, self.dtype, name="attnpool")(x)


def clip_resnet(stage_sizes: Sequence[int], output_dim: int, width: int = 64, head_width: int = 64):
    # open_clip: heads = width * 32 // head_width (64-d heads over the 32x-width final feature map).
    return functools.partial(
        ClipResNet,
        stage_sizes=tuple(stage_sizes),
        output_dim=output_dim,
        num_heads=width * 32 // head_width,
        width=width,
    )


TOWER_FACTORIES = {
    "clip_rn50": clip_resnet([3, 4, 6, 3], 1024),
    "clip_rn101": clip_resnet([3, 4, 23, 3], 512),
    "clip_rn50x4": clip_resnet([4, 6, 10, 6], 640, width=80),
    # Tests / JANuS-mini: one block per stage, base width 8 (256-d map, 4 heads of 64), 64-d output.
    "clip_rn_tiny": clip_resnet([1, 1, 1, 1], 64, width=8),
}
