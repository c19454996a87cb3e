"""VGG image towers with BatchNorm in the torchvision layout (``torchvision.models.vgg16_bn``).

``vgg16_bn`` is configuration "D" of Simonyan & Zisserman (13 3x3 convolutions, each followed by
BatchNorm and ReLU, five 2x2 max pools), torch's ``AdaptiveAvgPool2d(7)``, then the first two
layers of torchvision's classifier (``fc6``/``fc7``: Linear 25088 -> 4096 -> 4096, each with ReLU
and dropout 0.5). Features are the 4096-d output of ``fc7``, the input of torchvision's last
``classifier.6``, which becomes the janus head. ``vgg_tiny`` (three convolutions of 8-32 channels,
2x2 pool, 64-d fully connected layers) is for tests and 64 px JANuS-mini runs on a CPU.

Parameter names are torchvision's with dots replaced, so weight import is a rename:
``features_{i}`` (convolution ``i`` and its BatchNorm ``i + 1``), ``classifier_0`` (fc6) and
``classifier_3`` (fc7). One layout difference: flax flattens the pooled map in (H, W, C) order,
torch in (C, H, W), so `janus.convert.torchvision` permutes the rows of ``classifier_0``.

Call: ``tower.apply(variables, images [B, H, W, 3], train, mutable=["batch_stats"] if train,
rngs={"dropout": key} if train)`` -> ``[B, feature_dim]``. Any input size of at least 32 px
works (the adaptive pool always gives 7x7; at 224 px it is the identity). BatchNorm follows
`janus.models.resnet` (torch's eps and momentum).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus.models.layers import adaptive_avg_pool, torch_padding
from janus.models.resnet import batch_norm, conv_init

Dtype = Any
POOL = "M"  # a 2x2 max pool in the layer list, as in torchvision's `cfgs`

# torchvision.models.vgg `cfgs["D"]`.
VGG16 = (
    64,
    64,
    POOL,
    128,
    128,
    POOL,
    256,
    256,
    256,
    POOL,
    512,
    512,
    512,
    POOL,
    512,
    512,
    512,
    POOL,
)


def feature_indices(layers: Sequence[int | str]) -> list[int | None]:
    """torchvision's ``features`` index of each entry of ``layers`` (convolution or pool): a
    convolution takes three modules (Conv2d, BatchNorm2d, ReLU), a pool one."""
    out, i = [], 0
    for v in layers:
        out.append(i)
        i += 1 if v == POOL else 3
    return out


class VGG(nn.Module):
    layers: Sequence[int | str] = VGG16
    fc_width: int = 4096
    pool_size: int = 7
    dropout: float = 0.5
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.fc_width

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        x = images.astype(self.dtype)
        for v, i in zip(self.layers, feature_indices(self.layers)):
            if v == POOL:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            x = nn.Conv(
                v,
                (3, 3),
                padding=torch_padding(3),
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=conv_init,
                name=f"features_{i}",
            )(x)
            x = nn.relu(batch_norm(train, self.dtype, f"features_{i + 1}")(x))
        x = adaptive_avg_pool(x, self.pool_size)
        x = x.reshape(x.shape[0], -1)
        # torchvision initialises its Linear layers with N(0, 0.01) and zero bias.
        dense = functools.partial(
            nn.Dense,
            self.fc_width,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(0.01),
        )
        for name in ("classifier_0", "classifier_3"):
            x = nn.relu(dense(name=name)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


TOWER_FACTORIES = {
    "vgg16_bn": functools.partial(VGG, layers=VGG16),
    # Test / JANuS-mini size: 64 px -> 8x8 after three pools -> 2x2 pool -> 64-d features.
    "vgg_tiny": functools.partial(
        VGG, layers=(8, POOL, 16, POOL, 32, POOL), fc_width=64, pool_size=2
    ),
}
