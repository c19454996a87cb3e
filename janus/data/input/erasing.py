"""Random erasing (Zhong et al., 2017) with timm's semantics (``timm.data.RandomErasing``).

One job: draw a box and erase it. The ``erase`` op of ``janus.data.input.preprocess`` wraps
``RandomErasing`` for ``input.pp`` chains.

Where it runs: timm erases the normalised float tensor, filling the box with N(0, 1) noise per
pixel ('pixel'), one N(0, 1) colour ('rand') or zeros ('const'). janus normalises on the device
(``janus.data.input.pixel_scaling``), so the host chain still holds uint8 pixels here. Overwriting
a box commutes with a per-pixel affine normalisation, so janus erases the uint8 image and writes,
for each drawn value z, the pixel that the chain's normalisation maps to z (255 (mean + std z)),
rounded and clipped to 0..255. That is timm's output within half a uint8 step (0.5 / (255 std) in
normalised units) where z lies inside what uint8 can hold, and the nearest bound where it does not
(|z| > 2.1 or so). So the op needs the chain's normalisation, named as ``normalize`` names it;
``build_pp`` refuses a chain whose scaling maps pixels otherwise (``same_scaling``).

Randomness comes from the numpy Generator passed in, drawn in the order timm draws from Python's
``random`` and torch (apply-or-not, area, log-aspect, top, left, then the fill), one box per image.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from janus.data.input.pixel_scaling import PixelScaling, scale_pixels

MODES = ("pixel", "rand", "const")


def _range(name: str, value, upper: float | None) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (0 < lo <= hi and (upper is None or hi <= upper)):
        bound = f"0 < lo <= hi <= {upper:g}" if upper is not None else "0 < lo <= hi"
        raise ValueError(f"erase {name}={value!r}: must be (lo, hi) with {bound}")
    return lo, hi


def same_scaling(a: PixelScaling, b: PixelScaling) -> bool:
    """Whether both map uint8 pixels to the same values (as normalize(mean=0.5, std=0.5) and
    value_range(-1, 1) do), to float32 rounding."""
    ends = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    return np.allclose(scale_pixels(ends, a), scale_pixels(ends, b), rtol=0, atol=1e-5)


class RandomErasing:
    """With probability ``p``, erases one box of ``area`` (fraction of the image, uniform) and
    aspect ``h / w`` (log-uniform in ``aspect``), placed uniformly; 10 tries, else no box."""

    def __init__(
        self,
        scaling: PixelScaling,
        p: float,
        mode: str,
        area,
        aspect,
    ):  # the defaults are the erase op's (janus.data.input.preprocess)
        if not (isinstance(p, (int, float)) and 0 <= p <= 1):
            raise ValueError(f"erase p={p!r}: the probability must be in [0, 1]")
        if mode not in MODES:
            raise ValueError(f"erase mode={mode!r}: known: {', '.join(MODES)}")
        self.p, self.mode = float(p), mode
        self.area = _range("area", area, 1.0)
        lo, hi = _range("aspect", aspect, None)
        self.log_aspect = (math.log(lo), math.log(hi))
        self.scaling = scaling

    def box(self, height: int, width: int, rng: np.random.Generator):
        """(top, left, h, w) of the box to erase, or None."""
        for _ in range(10):
            target = rng.uniform(*self.area) * height * width
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        return None

    def fill(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """uint8 [h, w, 3]: the pixels that the scaling maps to timm's normalised fill."""
        if self.mode == "pixel":
            z = rng.standard_normal((h, w, 3))
        elif self.mode == "rand":
            z = rng.standard_normal(3)
        else:
            z = np.zeros(3)
        s = self.scaling
        pixels = (z - np.asarray(s.add)) / np.asarray(s.mul) + np.asarray(s.sub)
        return np.broadcast_to(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), (h, w, 3))

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        if rng.random() > self.p:
            return img
        width, height = img.size
        box = self.box(height, width, rng)
        if box is None:
            return img
        top, left, h, w = box
        pixels = np.array(img)
        pixels[top : top + h, left : left + w] = self.fill(h, w, rng)
        return Image.fromarray(pixels)
