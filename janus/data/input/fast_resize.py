"""The fast resize path: bilinear without antialiasing, as big_vision's tf.data pipelines resize.

``rrc(224, antialias=False)`` and ``resize(224, antialias=False)`` use it. OpenCV's ``INTER_LINEAR``
samples the source at half-pixel centres with a 2x2 kernel whatever the scale, which is what
``tf.image.resize(..., antialias=False)`` does; it agrees with it within one grey level
(tests/test_fast_resize.py). PIL's bilinear widens its kernel when it shrinks (antialiasing), which
is janus' default and pixel-exact to torchvision; shrinking without it aliases fine detail, so
the fast path is an option a recipe chooses, never the default.

Why OpenCV: on the 2-core VM it resizes a 200x260 crop to 224x224 in 0.09 ms against PIL's
antialiased 0.8 ms (benchmarks/RESULTS.md); no other package on the index does this without
TensorFlow. It is an extra (``pip install 'janus[fast]'``, pinned in requirements/lock-fast.txt).
"""

from __future__ import annotations

import numpy as np

INSTALL = "pip install -r requirements/lock-fast.txt (or janus[fast])"


def require_cv2():
    """Imports OpenCV on first use; its absence is one line naming the install."""
    try:
        import cv2
    except ImportError:
        msg = f"antialias=False resizes with OpenCV, which is not installed: {INSTALL}"
        raise ValueError(msg) from None
    # One thread: the input pipeline already runs one image per core (grain workers); OpenCV's
    # own pool would only contend with them on a 224 px image.
    cv2.setNumThreads(1)
    return cv2


def bilinear(pixels: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """uint8 [h, w, c] -> uint8 [out_h, out_w, c], bilinear at half-pixel centres, no antialias."""
    cv2 = require_cv2()
    out = cv2.resize(np.ascontiguousarray(pixels), (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    return _with_channel_axis(out)


def flip(pixels: np.ndarray) -> np.ndarray:
    """uint8 [h, w, c] mirrored left-right, contiguous: stacking numpy's reversed view into a batch
    costs 350 us an image at 224 px against 28 us for OpenCV's copy and the stack (this VM)."""
    return _with_channel_axis(require_cv2().flip(np.ascontiguousarray(pixels), 1))


def _with_channel_axis(out: np.ndarray) -> np.ndarray:
    return out if out.ndim == 3 else out[..., None]  # OpenCV drops a single channel's axis
