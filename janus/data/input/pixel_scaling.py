"""Pixel scaling (mean/std normalisation or a value range), applied on the device.

The host pipeline emits uint8 images: a quarter of float32's bytes to copy, batch and transfer.
The ``normalize`` / ``value_range`` op of a preprocessing chain only records a ``PixelScaling``
(``Preprocess.scaling``); the jitted train step and the evaluator's jitted image function apply it
with ``scale_pixels``, the one function used everywhere (it works on NumPy and jax arrays alike).

The arithmetic is the one the host ops used to do, in the same float32 order:
``(x - sub) * mul + add`` with normalise: sub = 255 mean, mul = 1 / (255 std), add = 0; value
range [lo, hi]: sub = 0, mul = (hi - lo) / 255, add = lo. So moving it changes nothing beyond float
rounding (tests/test_preprocess.py checks it against the old host formula).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Standard published normalisation constants.
NORMALIZATION = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclasses.dataclass(frozen=True)
class PixelScaling:
    """float32 image = (uint8 image - sub) * mul + add, per RGB channel (hashable: a jit static)."""

    sub: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mul: tuple[float, float, float] = (1.0, 1.0, 1.0)
    add: tuple[float, float, float] = (0.0, 0.0, 0.0)


IDENTITY = PixelScaling()  # a chain without normalize/value_range: pixel values 0..255 as floats


def _rgb(values) -> tuple[float, float, float]:
    arr = np.broadcast_to(np.asarray(values, np.float32), (3,))
    return tuple(float(v) for v in arr)  # float32-rounded, as the host ops' constants were


def normalization(name: str = "clip", mean=None, std=None) -> PixelScaling:
    """``(x / 255 - mean) / std``; ``name`` picks published constants unless mean and std given."""
    if mean is None or std is None:
        if name not in NORMALIZATION:
            raise ValueError(f"unknown normalisation {name!r}; known: {sorted(NORMALIZATION)}")
        mean, std = NORMALIZATION[name]
    std = np.asarray(std, np.float32)
    if np.any(std <= 0):
        raise ValueError(f"normalize std must be positive, got {std.tolist()}")
    return PixelScaling(
        sub=_rgb(np.asarray(mean, np.float32) * 255.0),
        mul=_rgb(1.0 / (std * 255.0)),
    )


def value_range(lo: float = -1.0, hi: float = 1.0) -> PixelScaling:
    """uint8 [0, 255] -> [lo, hi] linearly."""
    return PixelScaling(mul=_rgb((hi - lo) / 255.0), add=_rgb(lo))


def scale_pixels(images, scaling: PixelScaling | None):
    """uint8 [..., 3] -> float32 model input; ``None`` leaves ``images`` as they are (inputs that
    are already model-ready, e.g. synthetic float batches)."""
    if scaling is None:
        return images
    x = images.astype(np.float32)
    if any(scaling.sub):
        x = x - np.asarray(scaling.sub, np.float32)
    x = x * np.asarray(scaling.mul, np.float32)
    if any(scaling.add):
        x = x + np.asarray(scaling.add, np.float32)
    return x
