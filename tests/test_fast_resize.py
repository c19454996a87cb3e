"""The fast resize path (`rrc`/`resize` with antialias=False, janus.data.input.fast_resize).

Its pixels are checked against a bilinear written here from the definition (half-pixel centres,
2x2 kernel, edge clamped), against tf.image.resize(antialias=False) where TensorFlow is installed
(the peers' venv in CI), and the crops against the default path's: the same rng draws give the
same box. Tolerance: one grey level (OpenCV rounds 11-bit fixed-point weights; the float
references round once).
"""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from janus.data.input import preprocess

pytest.importorskip("cv2", reason="OpenCV: pip install -r requirements/lock-fast.txt")

from janus.data.input import fast_resize  # noqa: E402


def reference_bilinear(pixels: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Bilinear at half-pixel centres without antialias, in float64, rounded once."""
    h, w = pixels.shape[:2]

    def taps(n_out, n_in):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    y0, y1, wy = taps(out_h, h)
    x0, x1, wx = taps(out_w, w)
    p = pixels.astype(np.float64)
    top = p[y0][:, x0] * (1 - wx)[None, :, None] + p[y0][:, x1] * wx[None, :, None]
    bottom = p[y1][:, x0] * (1 - wx)[None, :, None] + p[y1][:, x1] * wx[None, :, None]
    out = top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _photo(h=173, w=231, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    return np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(224, 224), (96, 160), (300, 250)])  # shrink, mixed, enlarge
def test_bilinear_equals_the_definition_within_one_level(size):
    src = _photo()
    out_h, out_w = size
    ours = fast_resize.bilinear(src, out_w, out_h)
    assert ours.shape == (out_h, out_w, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - reference_bilinear(src, out_w, out_h))
    assert diff.max() <= 1, diff.max()


def test_bilinear_equals_tf_image_resize_without_antialias_within_one_level():
    if os.environ.get("JANUS_PEERS_REQUIRED"):  # CI's peers venv: never skipped there
        import tensorflow as tf
    else:
        tf = pytest.importorskip("tensorflow", reason="requirements/lock-peers.txt")
    src = _photo(260, 200)
    ref = tf.image.resize(src, (224, 224), method="bilinear", antialias=False).numpy()
    ref = np.clip(np.round(ref), 0, 255).astype(np.uint8)
    diff = np.abs(fast_resize.bilinear(src, 224, 224).astype(int) - ref)
    assert diff.max() <= 1, diff.max()


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_rrc_fast_path_takes_the_default_paths_crop_and_resizes_it_without_antialias():
    src = _photo(240, 320)
    data = _jpeg(src)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    boxes = []
    for seed in range(5):
        fast = preprocess.build_pp("decode|rrc(64, antialias=False)|flip(p=0)")
        out = fast({"image/encoded": data, "key": "k"}, np.random.default_rng(seed))["image"]
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        # The default path's box for the same draws (rrc and the DALI loader share this draw).
        x0, y0, x1, y1 = preprocess.draw_rrc_box(320, 240, np.random.default_rng(seed),
                                                 (0.08, 1.0), (3 / 4, 4 / 3))  # fmt: skip
        boxes.append((x0, y0, x1, y1))
        expected = reference_bilinear(decoded[y0:y1, x0:x1], 64, 64)
        assert np.abs(out.astype(int) - expected).max() <= 1
    assert len(set(boxes)) == 5  # five different crops were checked


def test_flip_on_the_fast_paths_array_mirrors_it():
    data = _jpeg(_photo(100, 120))
    kept = preprocess.build_pp("decode|resize(50, antialias=False)|flip(p=0)")
    flipped = preprocess.build_pp("decode|resize(50, antialias=False)|flip(p=1)")
    a = kept({"image/encoded": data, "key": "k"}, np.random.default_rng(0))["image"]
    b = flipped({"image/encoded": data, "key": "k"}, np.random.default_rng(0))["image"]
    np.testing.assert_array_equal(a[:, ::-1], b)
    assert b.flags.c_contiguous  # a reversed view would cost 12x as much to stack into a batch


def test_other_methods_without_antialias_are_refused_at_construction():
    with pytest.raises(ValueError, match="antialias=False is bilinear only; got method='bicubic'"):
        preprocess.build_pp("decode|rrc(224, method='bicubic', antialias=False)")


def test_without_opencv_the_fast_path_is_one_line_naming_the_install():
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "from janus.data.input import preprocess\n"
        "preprocess.build_pp('decode|rrc(224)|flip')  # the default needs no OpenCV\n"
        "try:\n"
        "    preprocess.build_pp('decode|rrc(224, antialias=False)')\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "requirements/lock-fast.txt" in out.stdout and "OpenCV" in out.stdout, out.stdout
