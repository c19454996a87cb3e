"""Preprocessing op registry: parsing, each op's effect, bad images, determinism in the rng."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from janus.data.input import pixel_scaling, preprocess
from janus.data.input.pixel_scaling import scale_pixels
from janus.data.input.preprocess import BadImageError, EmptyCaptionError, build_pp, parse_op


def _jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _smooth(h: int, w: int) -> np.ndarray:
    """A smooth gradient image (JPEG-friendly, so draft decoding is close to full decoding)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], -1).astype(np.uint8)


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_parse_op_literals_only():
    assert parse_op("flip") == ("flip", (), {})
    assert parse_op("rrc(224, scale=(0.08, 1.0))") == ("rrc", (224,), {"scale": (0.08, 1.0)})
    with pytest.raises(ValueError, match="literals"):
        parse_op("rrc(__import__('os').getcwd())")
    with pytest.raises(ValueError, match="cannot parse"):
        parse_op("rrc(224")
    with pytest.raises(ValueError, match="name or name"):
        parse_op("a.b(1)")


def test_unknown_op_lists_known_ops():
    with pytest.raises(ValueError, match=r"unknown preprocessing op 'nope'.*known ops: .*rrc"):
        build_pp("decode|nope(3)")


def test_bad_arguments_name_the_op():
    with pytest.raises(ValueError, match=r"flip\(1, 2, 3\)"):
        build_pp("decode|flip(1, 2, 3)")
    with pytest.raises(ValueError, match="unknown normalisation"):
        build_pp("decode|normalize('foo')")


def test_chain_split_respects_brackets_and_quotes():
    pp = build_pp("decode | rrc(8, scale=(0.5, 1.0)) | normalize('imagenet')|")
    assert pp.names == ["decode", "rrc", "normalize"]
    assert preprocess.split_chain("a(1)|b('x|y')|c((1,2))") == ["a(1)", "b('x|y')", "c((1,2))"]


def test_chains_emit_uint8_and_record_the_scaling_the_device_applies():
    img = np.full((48, 64, 3), 255, np.uint8)
    pp = build_pp("decode|resize_small(32)|center_crop(24)|normalize('clip')")
    out = pp({"image/encoded": _png(img)}, _rng())
    assert out["image"].shape == (24, 24, 3) and out["image"].dtype == np.uint8
    mean, std = pixel_scaling.NORMALIZATION["clip"]
    x = scale_pixels(out["image"], pp.scaling)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], (1 - np.array(mean)) / np.array(std), rtol=1e-5)
    plain = build_pp("decode|resize(10)")
    assert plain.scaling == pixel_scaling.IDENTITY
    assert plain({"image/encoded": _png(img)}, _rng())["image"].shape == (10, 10, 3)
    assert build_pp("decode|value_range(0, 1)|tokenize(8)").names[-1] == "tokenize"
    with pytest.raises(ValueError, match="must be the last image op"):
        build_pp("decode|normalize|flip")


def _host_normalize(x: np.ndarray, mean, std) -> np.ndarray:
    """The host op as it was before the scaling moved to the device (the reference)."""
    inv_scale = 1.0 / (np.asarray(std, np.float32) * 255.0)
    offset = np.asarray(mean, np.float32) * 255.0
    x = np.array(x, dtype=np.float32)
    x -= offset
    x *= inv_scale
    return x


@pytest.mark.parametrize("op", ["normalize('clip')", "normalize('imagenet')", "value_range(-1, 1)"])
def test_device_scaling_equals_the_old_host_scaling_to_float_rounding(op):
    import jax

    pixels = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3) % 256
    pixels = pixels.astype(np.uint8)
    if op.startswith("normalize"):
        name = op.split("'")[1]
        ref = _host_normalize(pixels, *pixel_scaling.NORMALIZATION[name])
    else:
        ref = pixels.astype(np.float32) * (2.0 / 255.0) - 1.0
    scaling = build_pp(f"decode|{op}").scaling
    on_device = np.asarray(jax.jit(lambda x: scale_pixels(x, scaling))(pixels))
    on_host = scale_pixels(pixels, scaling)
    assert on_device.dtype == on_host.dtype == np.float32
    np.testing.assert_array_equal(on_host, ref)  # same float32 operations, same order
    np.testing.assert_allclose(on_device, ref, rtol=1e-6, atol=1e-6)  # XLA: float rounding only


def test_resize_small_keeps_aspect_and_center_crop_refuses_small_images():
    img = _smooth(40, 80)
    out = build_pp("decode|resize_small(20)")({"image/encoded": _png(img)}, _rng())["image"]
    assert out.shape == (20, 40, 3)
    with pytest.raises(ValueError, match="center_crop"):
        build_pp("decode|center_crop(50)")({"image/encoded": _png(img), "key": "k"}, _rng())


def test_rrc_shape_determinism_and_full_scale():
    data = {"image/encoded": _png(_smooth(60, 90))}
    pp = build_pp("decode|rrc(16, scale=(0.1, 0.5))")
    a, b, c = (pp(data, _rng(s))["image"] for s in (1, 1, 2))
    assert a.shape == (16, 16, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # scale=(1,1) with a ratio range holding the image's aspect: the whole image, resized.
    full = build_pp("decode|rrc((20, 30), scale=(1, 1), ratio=(1.5, 1.5))")(data, _rng())["image"]
    ref = np.asarray(Image.fromarray(_smooth(60, 90)).resize((30, 20), Image.Resampling.BILINEAR))
    assert np.abs(full.astype(int) - ref.astype(int)).max() <= 1


def test_jpeg_draft_mode_is_close_to_full_decode():
    img = _smooth(512, 640)
    data = {"image/encoded": _jpeg(img)}
    fast = build_pp("decode|resize_small(64)")(data, _rng())["image"]
    full = np.asarray(Image.fromarray(img).resize((80, 64), Image.Resampling.BILINEAR))
    assert fast.shape == (64, 80, 3)
    assert np.abs(fast.astype(float) - full.astype(float)).mean() < 3.0


@pytest.mark.parametrize("chain", ["rrc(96, scale=(0.5, 1.0))", "resize_small(100)"])
def test_draft_decoding_is_close_to_the_full_decode_path(chain):
    """The JPEG is drafted (decoded at 1/2 or 1/4 by DCT scaling); the reference runs the same
    chain with the same rng (so the same crop box) on a PNG of the fully decoded JPEG, which
    cannot be drafted. They differ by DCT scaling standing in for part of PIL's antialiasing:
    a mean of about 1 level of 255 on photo-like content, where the full-decode path shifted by
    one pixel differs by about 4. The size (643 x 485) is not a multiple of 8, so the draft's
    rounded-up size must not be mistaken for the scale (that misplaced the box: mean 2.6-6.9)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(coarse).resize((643, 485), Image.Resampling.BICUBIC))
    photo = np.clip(photo + rng.integers(-12, 13, photo.shape), 0, 255).astype(np.uint8)
    jpeg = _jpeg(photo, quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    lazy = build_pp("decode")._ops[0]({"image/encoded": jpeg}, _rng())
    box = preprocess._draft(lazy, (1, 2, 643, 485), 96, 96)  # 1/4 still covers 96 x 96
    assert lazy["image"].size == (161, 122) and box == (0.25, 0.5, 160.75, 121.25)
    pp = build_pp(f"decode|{chain}")  # every box here allows 1/2 at least
    for seed in range(8):
        fast = pp({"image/encoded": jpeg}, _rng(seed))["image"]
        full = pp({"image/encoded": _png(decoded)}, _rng(seed))["image"]
        assert fast.shape == full.shape
        assert np.abs(fast.astype(float) - full.astype(float)).mean() < 1.5, seed


def test_flip_grayscale_blur_jitter():
    img = _smooth(20, 30)
    data = {"image/encoded": _png(img)}
    flipped = build_pp("decode|flip(p=1.0)")(data, _rng())["image"]
    np.testing.assert_array_equal(flipped, img[:, ::-1])
    same = build_pp("decode|flip(p=0)|grayscale(p=0)|blur(p=0)|color_jitter(p=0)")(data, _rng())
    np.testing.assert_array_equal(same["image"], img)
    gray = build_pp("decode|grayscale(p=1.0)")(data, _rng())["image"]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    blurred = build_pp("decode|blur(p=1.0, sigma=(2.0, 2.0))")(data, _rng())["image"]
    assert blurred.shape == img.shape and not np.array_equal(blurred, img)
    jitter = build_pp("decode|color_jitter(0.8, 0.8, 0.8, 0.2, p=1.0)")
    j1, j2 = jitter(data, _rng(3))["image"], jitter(data, _rng(3))["image"]
    np.testing.assert_array_equal(j1, j2)
    assert j1.shape == img.shape and not np.array_equal(j1, img)


@pytest.mark.parametrize(
    "payload",
    [b"", b"not an image at all", "truncated"],
    ids=["empty", "garbage", "truncated"],
)
def test_bad_images_raise_counted_skip_with_key(payload):
    if payload == "truncated":
        payload = _jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        payload = payload[: len(payload) // 2]
    pp = build_pp("decode|rrc(16)|normalize")
    with pytest.raises(BadImageError, match="key='bad-1'") as e:
        pp({"image/encoded": payload, "key": "bad-1"}, _rng())
    assert e.value.reason == "bad_image" and e.value.key == "bad-1"


def test_grayscale_and_rgba_inputs_become_rgb():
    gray = Image.fromarray(_smooth(10, 10)[..., 0])
    buf = io.BytesIO()
    gray.save(buf, "PNG")
    out = build_pp("decode|resize(8)")({"image/encoded": buf.getvalue()}, _rng())["image"]
    assert out.shape == (8, 8, 3)
    rgba = np.dstack([_smooth(10, 10), np.full((10, 10), 128, np.uint8)])
    out = build_pp("decode")({"image/encoded": _png(rgba)}, _rng())["image"]
    assert out.shape == (10, 10, 3)


def test_tokenize_op_chooses_nonempty_caption():
    pp = build_pp("tokenize(context_length=16)")
    seen = set()
    for seed in range(20):
        out = pp({"caption": ["", "a dog", "a cat", "  "], "key": "k"}, _rng(seed))
        assert out["tokens"].shape == (16,) and out["tokens"].dtype == np.int32
        seen.add(out["caption_text"])
    assert seen == {"a dog", "a cat"}
    with pytest.raises(EmptyCaptionError, match="key='k'"):
        pp({"caption": ["", " "], "key": "k"}, _rng())


def test_preprocess_pickles_by_spec():
    pp = build_pp("decode|rrc(8)|flip|normalize('imagenet')")
    again = pickle.loads(pickle.dumps(pp))
    data = {"image/encoded": _png(_smooth(20, 20))}
    np.testing.assert_array_equal(pp(data, _rng(5))["image"], again(data, _rng(5))["image"])


def test_resize_small_and_hue_round_like_torchvision():
    # torchvision Resize(100) on 335x200 (w x h): long side int(100 * 335 / 200) = int(167.5) = 167.
    out = build_pp("decode|resize_small(100)")({"image/encoded": _png(_smooth(200, 335))}, _rng())
    assert out["image"].shape == (100, 167, 3)
    # adjust_hue adds np.int8(0.1 * 255) = 25 (truncated, not rounded to 26) to PIL's 8-bit hue.
    img = Image.fromarray(_smooth(4, 4))
    hue = np.asarray(img.convert("HSV"))[..., 0].astype(np.int16)
    expected = np.asarray(
        Image.merge(
            "HSV",
            (Image.fromarray(((hue + 25) % 256).astype(np.uint8)), *img.convert("HSV").split()[1:]),
        ).convert("RGB")
    )
    np.testing.assert_array_equal(np.asarray(preprocess._adjust_hue(img, 0.1)), expected)


def _jpeg_variants() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(coarse).resize((643, 485), Image.Resampling.BICUBIC))
    out = {"baseline": _jpeg(photo, 90)}
    for name, kwargs, image in [
        ("progressive", {"progressive": True}, Image.fromarray(photo)),
        ("grayscale", {}, Image.fromarray(photo).convert("L")),
        ("cmyk", {}, Image.fromarray(photo).convert("CMYK")),
    ]:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90, **kwargs)
        out[name] = buf.getvalue()
    return out


@pytest.mark.parametrize("kind", ["baseline", "progressive", "grayscale", "cmyk"])
@pytest.mark.parametrize(
    "chain", ["decode", "decode|resize_small(100)", "decode|rrc(64)|flip", "decode|resize(700)"]
)
def test_simplejpeg_decoding_gives_pils_pixels(kind, chain, monkeypatch):
    """janus.data.input.jpeg (simplejpeg) and PIL decode to the same pixels, at full and drafted
    scales; CMYK goes to PIL. Skipped only where simplejpeg is not installed (.ci/run has it)."""
    from janus.data.input import jpeg

    pytest.importorskip("simplejpeg")
    data = _jpeg_variants()[kind]
    assert (jpeg.open_jpeg(data) is None) == (kind == "cmyk")
    pp = build_pp(chain)
    fast = pp({"image/encoded": data}, _rng(4))["image"]
    monkeypatch.setattr(jpeg, "simplejpeg", None)  # PIL only
    np.testing.assert_array_equal(fast, pp({"image/encoded": data}, _rng(4))["image"])


def test_simplejpeg_falls_back_to_pil_which_still_rejects_broken_files():
    from janus.data.input import jpeg

    pytest.importorskip("simplejpeg")
    data = _jpeg_variants()["baseline"]
    truncated = data[: len(data) // 2]
    assert isinstance(jpeg.open_jpeg(truncated), jpeg.LazyJpeg)  # the header is intact
    with pytest.raises(BadImageError, match="key='t'"):
        build_pp("decode|resize(8)")({"image/encoded": truncated, "key": "t"}, _rng())
