"""RandAugment (Cubuk et al., 2019) with timm's semantics: ``rand_augment_transform("rand-m9-n2")``.

One job: timm's 15 RandAugment image ops (``_RAND_TRANSFORMS``), the map from a magnitude on the
0..10 scale to each op's argument, and the per-image draw of ``n`` ops. The ``randaug`` op of
``janus.data.input.preprocess`` wraps ``RandAugment`` for ``input.pp`` chains.

All randomness comes from the numpy Generator passed in, drawn in the roles and order in which
timm draws from Python's ``random`` (op choice, apply-or-not, magnitude noise, sign, resampling
filter), so a test can feed both the same draws and compare pixels (tests/test_randaugment.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_MAGNITUDE = 10.0  # timm's scale: magnitude m means a fraction m / 10 of each op's range
DEIT_FILL = (124, 116, 104)  # round(255 * ImageNet mean): what timm's create_transform passes
_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class _Geometry(NamedTuple):
    """How a geometric op fills and samples: the uncovered area's colour and the PIL filter."""

    fill: tuple[int, int, int]
    resample: Image.Resampling


def _affine(img: Image.Image, matrix, geo: _Geometry) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, geo.resample, fillcolor=geo.fill)


def _solarize_add(img: Image.Image, add: int) -> Image.Image:
    """Adds ``add`` to the channel values below 128 (saturating at 255)."""
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _posterize(img: Image.Image, bits: int) -> Image.Image:
    """Keeps the ``bits`` high bits of each channel (``ImageOps.posterize``'s table); 0 keeps none
    (black), which Pillow 13's ``posterize`` refuses though timm passes it below magnitude 2.5."""
    mask = ~(2 ** (8 - bits) - 1) & 0xFF
    return img.point([i & mask for i in range(256)] * len(img.getbands()))


def _enhance(kind) -> Callable:
    return lambda img, factor, geo: kind(img).enhance(factor)


class _Op(NamedTuple):
    """An op: ``apply(img, arg, geo)``; ``level(fraction)`` maps the magnitude fraction in [0, 1]
    to ``arg`` (None: the op has none). ``geometric`` (rotate, shear, translate): the argument's
    sign is drawn (+/- equally) and the op fills and resamples with ``geo``."""

    apply: Callable[[Image.Image, object, _Geometry], Image.Image]
    level: Callable[[float], object] | None = None
    geometric: bool = False


def _enhance_level(frac: float) -> float:
    return frac * 1.8 + 0.1  # factor in [0.1, 1.9]; 1 leaves the image unchanged


# The names and ranges are timm's (auto_augment.py, the non-"increasing" variants DeiT uses).
OPS: dict[str, _Op] = {
    "AutoContrast": _Op(lambda img, _, geo: ImageOps.autocontrast(img)),
    "Equalize": _Op(lambda img, _, geo: ImageOps.equalize(img)),
    "Invert": _Op(lambda img, _, geo: ImageOps.invert(img)),
    "Rotate": _Op(
        lambda img, deg, geo: img.rotate(deg, resample=geo.resample, fillcolor=geo.fill),
        lambda frac: frac * 30.0,  # degrees
        geometric=True,
    ),
    # bits kept, 0..4: stronger at low magnitude, as in TF's EfficientNet code that timm follows
    "Posterize": _Op(lambda img, bits, geo: _posterize(img, bits), lambda f: int(f * 4)),
    "Solarize": _Op(  # threshold 0..256: stronger at low magnitude, as Posterize
        lambda img, thresh, geo: ImageOps.solarize(img, thresh), lambda f: min(256, int(f * 256))
    ),
    "SolarizeAdd": _Op(
        lambda img, add, geo: _solarize_add(img, add), lambda f: min(128, int(f * 110))
    ),
    "Color": _Op(_enhance(ImageEnhance.Color), _enhance_level),
    "Contrast": _Op(_enhance(ImageEnhance.Contrast), _enhance_level),
    "Brightness": _Op(_enhance(ImageEnhance.Brightness), _enhance_level),
    "Sharpness": _Op(_enhance(ImageEnhance.Sharpness), _enhance_level),
    "ShearX": _Op(
        lambda img, s, geo: _affine(img, (1, s, 0, 0, 1, 0), geo), lambda f: f * 0.3, geometric=True
    ),
    "ShearY": _Op(
        lambda img, s, geo: _affine(img, (1, 0, 0, s, 1, 0), geo), lambda f: f * 0.3, geometric=True
    ),
    "TranslateXRel": _Op(  # a fraction of the width, up to 0.45 (timm's translate_pct)
        lambda img, t, geo: _affine(img, (1, 0, t * img.size[0], 0, 1, 0), geo),
        lambda f: f * 0.45,
        geometric=True,
    ),
    "TranslateYRel": _Op(
        lambda img, t, geo: _affine(img, (1, 0, 0, 0, 1, t * img.size[1]), geo),
        lambda f: f * 0.45,
        geometric=True,
    ),
}


def level_arg(name: str, magnitude: float, negate: bool = False):
    """The argument that op ``name`` gets at ``magnitude`` (0..10); None for ops without one."""
    op = OPS[name]
    if op.level is None:
        return None
    arg = op.level(magnitude / MAX_MAGNITUDE)
    return -arg if op.geometric and negate else arg


def apply_op(name: str, img: Image.Image, arg, *, fill=DEIT_FILL, method="bicubic") -> Image.Image:
    """Op ``name`` with its argument ``arg`` (as ``level_arg`` gives it) on an RGB image."""
    return OPS[name].apply(img, arg, _Geometry(tuple(fill), _FILTERS[method]))


def _fill(value) -> tuple[int, int, int]:
    rgb = (value,) * 3 if np.isscalar(value) else tuple(value)
    if len(rgb) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in rgb):
        raise ValueError(f"randaug fill={value!r}: must be an int or 3 ints in 0..255")
    return rgb


class RandAugment:
    """Per image: ``n`` ops drawn uniformly with replacement; each applies with probability ``p``
    at magnitude ``m`` (0..10), or, with ``mstd > 0``, at a magnitude drawn from N(m, mstd)
    (``mstd > 100``: uniform in [0, m]), clamped to [0, 10]. Signed ops (rotate, shear,
    translate) take either sign equally. Geometric ops fill with ``fill`` and resample with
    ``method`` ("random": bilinear or bicubic per op, timm's default when none is given)."""

    def __init__(
        self,
        n: int,
        m: float,
        *,
        p: float,
        mstd: float,
        ops: Sequence[str] | None,
        fill,
        method: str,
    ):  # the defaults are the randaug op's (janus.data.input.preprocess)
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"randaug n={n!r}: the number of ops per image must be an int >= 0")
        if not (isinstance(m, (int, float)) and 0 <= m <= MAX_MAGNITUDE):
            raise ValueError(f"randaug m={m!r}: the magnitude must be in [0, 10] (timm's scale)")
        if not (isinstance(p, (int, float)) and 0 <= p <= 1):
            raise ValueError(f"randaug p={p!r}: the probability of each op must be in [0, 1]")
        if not (isinstance(mstd, (int, float)) and mstd >= 0):
            raise ValueError(f"randaug mstd={mstd!r}: the magnitude std must be >= 0")
        ops = list(OPS) if ops is None else list(ops)
        unknown = [name for name in ops if name not in OPS]
        if unknown or not ops:
            raise ValueError(
                f"randaug ops: unknown op(s) {unknown or 'none given'}; known: {', '.join(OPS)}"
            )
        if method not in _FILTERS and method != "random":
            raise ValueError(f"randaug method={method!r}: known: {', '.join(_FILTERS)}, random")
        self.n, self.m, self.p, self.ops = n, float(m), float(p), ops
        self.mstd = math.inf if mstd > 100 else float(mstd)  # timm: mstd > 100 means uniform
        self.fill, self.method = _fill(fill), method

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        for i in rng.integers(len(self.ops), size=self.n):
            img = self._maybe_apply(self.ops[i], img, rng)
        return img

    def _maybe_apply(self, name: str, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        if self.p < 1 and rng.random() > self.p:
            return img
        magnitude = self.m
        if self.mstd == math.inf:
            magnitude = rng.uniform(0, magnitude)
        elif self.mstd > 0:
            magnitude = rng.normal(magnitude, self.mstd)
        magnitude = min(max(magnitude, 0.0), MAX_MAGNITUDE)
        geometric = OPS[name].geometric
        arg = level_arg(name, magnitude, negate=geometric and rng.random() > 0.5)
        method = self.method
        if method == "random":  # timm draws a filter for the geometric ops only
            method = ("bilinear", "bicubic")[rng.integers(2)] if geometric else "bilinear"
        return apply_op(name, img, arg, fill=self.fill, method=method)
