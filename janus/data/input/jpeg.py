"""JPEG decoding with simplejpeg (libjpeg-turbo into NumPy) where it can, PIL everywhere else.

``open_jpeg(data)`` -> a ``LazyJpeg`` (or None: let PIL open it). It reads the header only; like
a lazily opened PIL JPEG it has ``size``, ``format`` and ``draft(mode, size)`` (DCT scaling to
1/2, 1/4 or 1/8, with PIL's rule and return value), ``decode()`` gives the RGB PIL image, and
``decode_crop(box)`` only a region's pixels (``janus.data.input.jpeg_region``), where it can;
``verified=True`` (the image is known to decode whole) lets that stop after the region.

Why: on this project's 2-core VM simplejpeg decodes the benchmark's JPEGs in 0.51 ms against PIL's
0.67 ms, with identical pixels (both are libjpeg-turbo with the same IDCT and upsampling;
tests/test_preprocess.py checks it at full and drafted scales). Anything simplejpeg will not take
(CMYK, YCCK, a header it cannot read, a decoding error) goes to PIL, which decides as before:
a file PIL cannot decode is still a ``BadImageError`` upstream, never a grey-filled image.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from janus.data.input import jpeg_region

try:
    import simplejpeg
except ImportError:  # an optional speed-up (in requirements/lock.txt); PIL decodes the same pixels
    simplejpeg = None

_COLORSPACES = {"YCbCr", "Gray", "RGB"}  # what libjpeg-turbo turns into RGB like PIL does


class LazyJpeg:
    format = "JPEG"

    def __init__(self, data: bytes, size: tuple[int, int], verified: bool = False):
        self.data = data
        self.size = size
        self.verified = verified
        self._request: tuple[int, int] | None = None
        self._scale = 1

    def draft(self, mode: str, request: tuple[int, int]):
        """PIL's JpegImageFile.draft rule: the largest scale s in 8, 4, 2, 1 with
        s <= min(width // request_w, height // request_h). -> (mode, the original image's box
        in the decoded image's coordinates)."""
        w, h = self.size
        fits = min(w // request[0], h // request[1])
        scale = next((s for s in (8, 4, 2, 1) if fits >= s), 1)  # fits 0: upsampling
        self._request, self._scale = request, scale
        self.size = (-(-w // scale), -(-h // scale))
        return mode, (0, 0, w / scale, h / scale)

    def decode(self) -> Image.Image:
        """The RGB image at the drafted scale. PIL's errors (OSError, ValueError, ...) pass."""
        pixels = self._simplejpeg()
        return Image.fromarray(pixels) if pixels is not None else self._pil()

    def decode_array(self) -> np.ndarray:
        """`decode`'s pixels as uint8 [h, w, 3], without a PIL image (the fast resize path)."""
        pixels = self._simplejpeg()
        return pixels if pixels is not None else np.asarray(self._pil())

    def decode_crop(self, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """``decode_array()[y0:y1, x0:x1]``'s pixels, decoding only that region (``jpeg_region``),
        or None where it does not apply (drafted, the whole image, not built, refused data): then
        decode the whole image, which decides as before."""
        if self._scale != 1 or tuple(box) == (0, 0, *self.size):
            return None
        return jpeg_region.decode_region(self.data, box, read_to_end=not self.verified)

    def _simplejpeg(self) -> np.ndarray | None:
        w, h = self.size
        try:
            pixels = simplejpeg.decode_jpeg(self.data, "RGB", min_height=h, min_width=w)
        except ValueError:
            return None
        return pixels if pixels.shape[:2] == (h, w) else None

    def _pil(self) -> Image.Image:
        img = Image.open(io.BytesIO(self.data))  # PIL decides: same pixels or the same error
        if self._request is not None:
            img.draft("RGB", self._request)
        img.load()
        return img if img.mode == "RGB" else img.convert("RGB")


def open_jpeg(data: bytes, verified: bool = False) -> LazyJpeg | None:
    """A LazyJpeg for JPEG bytes simplejpeg can decode to RGB; None for anything else.
    ``verified``: the bytes are known to decode whole (checked when the records were built)."""
    if simplejpeg is None or data[:2] != b"\xff\xd8":
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in _COLORSPACES or w < 1 or h < 1 or w * h > Image.MAX_IMAGE_PIXELS:
        return None  # PIL's checks apply (decompression bombs among them)
    return LazyJpeg(data, (w, h), verified)
