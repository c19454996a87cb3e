"""Region decoding (janus.data.input.jpeg_region): a crop's part of a JPEG alone, with the whole
decode's pixels; and the rrc chains that use it give bitwise the pixels they give without it.

janus builds the decoder on first use with the system's C compiler and libjpeg-turbo's headers.
Where those are missing these tests skip with the reason, except in CI (JANUS_JPEG_REGION_REQUIRED
is set there), where they fail.
"""

import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from janus.data.input import jpeg, jpeg_region, preprocess

REAL_PHOTOS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "real_jpegs"


@pytest.fixture(autouse=True)
def region_decoder():
    state = jpeg_region.status()
    if state != "on":
        if os.environ.get("JANUS_JPEG_REGION_REQUIRED"):
            pytest.fail(f"JPEG region decoding is required here: {state}")
        pytest.skip(f"JPEG region decoding: {state}")


def without_region(fn, *args):
    """``fn(*args)`` with region decoding off in this process, then on again."""
    saved = dict(jpeg_region._state)
    jpeg_region._state.clear()
    jpeg_region._state["reason"] = "off for the test"
    try:
        return fn(*args)
    finally:
        jpeg_region._state.clear()
        jpeg_region._state.update(saved)


def _photo(h, w, seed=0, gray=False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, h // 6), max(2, w // 6), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    pixels = np.clip(smooth + rng.integers(-25, 26, smooth.shape), 0, 255).astype(np.uint8)
    return pixels[..., 0] if gray else pixels


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90, **options)
    return buf.getvalue()


KINDS = {  # what libjpeg's cropping and skipping must handle: every sampling, scan kind, restarts
    "444": dict(subsampling=0),
    "422": dict(subsampling=1),
    "420": dict(subsampling=2),
    "gray": dict(),
    "progressive": dict(subsampling=2, progressive=True),
    "restarts": dict(subsampling=2, restart_marker_blocks=3),
}


def _boxes(w, h, rng):
    edges = [(0, 0, 1, 1), (w - 1, h - 1, w, h), (0, 0, w, 1), (0, h - 1, w, h), (w - 1, 0, w, h)]
    edges += [(3, 5, w, h), (0, 0, w - 7, h - 2), (17, 9, 18, h)]
    draws = [preprocess.draw_rrc_box(w, h, rng, (0.02, 1.0), (0.5, 2.0)) for _ in range(12)]
    return edges + draws


@pytest.mark.parametrize("read_to_end", [True, False])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_region_equals_the_whole_decode_cropped(kind, read_to_end):
    h, w = 157, 301  # not multiples of any MCU
    data = _jpeg(_photo(h, w, gray=kind == "gray"), **KINDS[kind])
    whole = simplejpeg.decode_jpeg(data, "RGB")  # janus' whole decode (LazyJpeg.decode_array)
    for box in _boxes(w, h, np.random.default_rng(1)):
        x0, y0, x1, y1 = box
        region = jpeg_region.decode_region(data, box, read_to_end)
        assert region is not None and region.shape == (y1 - y0, x1 - x0, 3), box
        np.testing.assert_array_equal(region, whole[y0:y1, x0:x1], err_msg=f"{kind} {box}")


def _real_photos(limit=None) -> list[bytes]:
    if not REAL_PHOTOS.is_dir():
        pytest.skip(f"{REAL_PHOTOS} is not here")
    paths = sorted(p for p in REAL_PHOTOS.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    return [p.read_bytes() for p in paths[:limit]]


def test_region_equals_the_whole_decode_on_every_real_photograph():
    rng = np.random.default_rng(0)
    for i, data in enumerate(_real_photos()):
        whole = simplejpeg.decode_jpeg(data, "RGB")
        h, w = whole.shape[:2]
        for read_to_end in (True, False):
            x0, y0, x1, y1 = box = preprocess.draw_rrc_box(w, h, rng, (0.08, 1.0), (3 / 4, 4 / 3))
            region = jpeg_region.decode_region(data, box, read_to_end)
            assert region is not None, (i, box)
            np.testing.assert_array_equal(region, whole[y0:y1, x0:x1], err_msg=f"{i} {box}")


CHAINS = [
    "decode|rrc(224)|flip",  # the recipes' default: PIL's antialiased bilinear
    "decode|rrc(64)",  # JPEG draft mode where the box allows it, region decoding where not
    "decode|rrc(448, method='bicubic')",  # upsampling
    "decode|rrc(160, method='lanczos', scale=(0.02, 0.3))",
    "decode|rrc((200, 120), method='nearest')",
]


def _both_ways(spec, items, seeds=(0, 1)):
    pp = preprocess.build_pp(spec)
    for i, data in enumerate(items):
        for seed in seeds:

            def run(data=data, seed=seed, i=i):
                features = {"image/encoded": data, "key": f"k{i}"}
                return pp(features, np.random.default_rng(seed))["image"]

            yield (i, seed), run(), without_region(run)


@pytest.mark.parametrize("spec", CHAINS)
def test_rrc_gives_the_same_pixels_with_and_without_region_decoding(spec):
    for where, on, off in _both_ways(spec, _real_photos(limit=40)):
        np.testing.assert_array_equal(on, off, err_msg=f"{spec} photo, seed {where}")


def test_rrc_fast_path_gives_the_same_pixels_with_and_without_region_decoding():
    pytest.importorskip("cv2", reason="OpenCV: pip install -r requirements/lock-fast.txt")
    spec = "decode|rrc(224, antialias=False)|flip"
    for where, on, off in _both_ways(spec, _real_photos(limit=40)):
        np.testing.assert_array_equal(on, off, err_msg=f"photo, seed {where}")


@pytest.mark.parametrize("spec", CHAINS)
def test_resampling_reads_only_the_decoded_region(spec, monkeypatch):
    """The image around the region is filled with a colour no photo has there: the same output
    says the filter never read past the margin."""
    new = Image.new
    monkeypatch.setattr(preprocess.Image, "new", lambda mode, size: new(mode, size, (255, 0, 128)))
    for where, on, off in _both_ways(spec, _real_photos(limit=25), seeds=(2,)):
        np.testing.assert_array_equal(on, off, err_msg=f"{spec} photo, seed {where}")


def _damaged() -> dict[str, bytes]:
    data = _jpeg(_photo(120, 160), subsampling=2)
    middle = len(data) // 2
    return {
        "truncated_half": data[:middle],
        "truncated_near_end": data[: len(data) - 40],
        "garbage_in_scan": data[:middle] + bytes(range(256)) * 4 + data[middle + 1024 :],
        "no_end_marker": data[:-2],
    }


@pytest.mark.parametrize("name", sorted(_damaged()))
def test_damaged_jpegs_fall_back_to_the_whole_decode_and_end_the_same(name):
    """libjpeg's errors and warnings refuse the region (None, no crash); the whole decode then
    decides, as without region decoding: the same pixels or the same BadImageError."""
    data = _damaged()[name]
    assert jpeg_region.decode_region(data, (10, 10, 90, 70)) is None
    pp = preprocess.build_pp("decode|rrc(64)")

    def run():
        try:
            return pp({"image/encoded": data, "key": name}, np.random.default_rng(0))["image"]
        except preprocess.BadImageError as e:
            return str(e)

    on, off = run(), without_region(run)
    if isinstance(off, str):
        assert on == off
    else:
        np.testing.assert_array_equal(on, off)


def _damaged_below(h=160, w=160) -> bytes:
    """A baseline JPEG with noise over the scan's last quarter (its end marker kept): libjpeg warns
    at its end; PIL decodes it whole (so a build keeps it), the rows above the damage intact."""
    data = bytearray(_jpeg(_photo(h, w), subsampling=2))
    start = len(data) - 2 - (len(data) - 700) // 4
    noise = np.random.default_rng(3).integers(0, 255, len(data) - 2 - start, dtype=np.uint8)
    data[start:-2] = noise.tobytes().replace(b"\xff", b"\x00")  # no markers in the noise
    return bytes(data)


def test_stopping_after_the_crop_misses_only_damage_below_it():
    data = _damaged_below()
    whole = jpeg.open_jpeg(data).decode_array()  # the whole decode's pixels for this file
    Image.open(io.BytesIO(data)).load()  # what the builder's check accepts
    top, bottom = (20, 8, 140, 40), (20, 120, 140, 160)
    assert jpeg_region.decode_region(data, top) is None  # read to the end: the warning refuses
    region = jpeg_region.decode_region(data, top, read_to_end=False)
    np.testing.assert_array_equal(region, whole[8:40, 20:140])
    # Crops over the damage: the whole decode's (noisy) pixels too, as the build kept the file.
    region = jpeg_region.decode_region(data, bottom, read_to_end=False)
    np.testing.assert_array_equal(region, whole[120:160, 20:140])
    # Why only verified images stop early: a file cut short below the crop is not seen either.
    truncated = _jpeg(_photo(160, 160), subsampling=2)[:-600]
    assert jpeg_region.decode_region(truncated, top) is None
    assert jpeg_region.decode_region(truncated, top, read_to_end=False) is not None


def test_lazy_jpeg_stops_after_the_crop_only_when_verified(monkeypatch):
    calls = []
    monkeypatch.setattr(
        jpeg_region, "decode_region", lambda data, box, read_to_end: calls.append(read_to_end)
    )
    data = _jpeg(_photo(60, 80))
    jpeg.open_jpeg(data).decode_crop((1, 2, 30, 40))
    jpeg.open_jpeg(data, verified=True).decode_crop((1, 2, 30, 40))
    pp = preprocess.build_pp("decode|rrc(32)")
    for verified in (False, True):
        features = {"image/encoded": data, "key": "k", preprocess.IMAGE_VERIFIED: verified}
        pp(features, np.random.default_rng(0))
    assert calls == [True, False, True, False]


def test_a_box_outside_the_image_is_refused_not_read():
    data = _jpeg(_photo(40, 50))
    for box in [(0, 0, 51, 40), (0, 0, 50, 41), (-1, 0, 10, 10), (5, 5, 5, 9)]:
        assert jpeg_region.decode_region(data, box) is None, box


def test_lazy_jpeg_decodes_a_region_only_undrafted_and_smaller_than_the_image():
    data = _jpeg(_photo(120, 160))
    lazy = jpeg.open_jpeg(data)
    assert lazy.decode_crop((0, 0, 160, 120)) is None  # the whole image: decoded whole
    assert lazy.decode_crop((10, 20, 30, 40)).shape == (20, 20, 3)
    lazy.draft("RGB", (40, 30))  # DCT scaling applies: the region would be at the wrong scale
    assert lazy.decode_crop((10, 20, 30, 40)) is None


@pytest.fixture
def fresh_decoder(monkeypatch, tmp_path):
    """A process-fresh decoder state, building into an empty cache; restored afterwards."""
    monkeypatch.setattr(jpeg_region, "_state", {})
    monkeypatch.setenv("JANUS_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_the_decoder_is_built_once_into_the_cache(fresh_decoder):
    assert jpeg_region.status() == "on"
    (lib,) = fresh_decoder.glob("jpeg_region-*.so")
    built = lib.stat().st_mtime_ns
    jpeg_region._state.clear()  # a new process: loads the same build
    assert jpeg_region.status() == "on"
    assert [p.name for p in fresh_decoder.iterdir()] == [lib.name]
    assert lib.stat().st_mtime_ns == built


def test_without_a_compiler_the_reason_is_reported_and_pixels_are_unchanged(
    fresh_decoder, monkeypatch
):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert "cannot run '/nonexistent/cc'" in jpeg_region.status()
    assert list(fresh_decoder.iterdir()) == []  # no partial build left behind
    data = _jpeg(_photo(120, 160))
    assert jpeg_region.decode_region(data, (10, 20, 30, 40)) is None
    out = preprocess.build_pp("decode|rrc(96)")({"image/encoded": data}, np.random.default_rng(0))
    assert out["image"].shape == (96, 96, 3)


def test_switched_off_by_the_environment(fresh_decoder, monkeypatch):
    monkeypatch.setenv("JANUS_JPEG_REGION", "0")
    assert jpeg_region.status() == "off: JANUS_JPEG_REGION=0"
    assert list(fresh_decoder.iterdir()) == []  # nothing built


def test_processes_building_at_once_share_one_complete_build(tmp_path):
    code = "from janus.data.input import jpeg_region; print(jpeg_region.status())"
    env = dict(os.environ, JANUS_CACHE_DIR=str(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    assert [p.communicate(timeout=120)[0].strip() for p in procs] == ["on"] * 4
    assert [p.suffix for p in tmp_path.iterdir()] == [".so"]  # one build, no partial left
