"""Preprocessing ops by name: ``build_pp("decode|rrc(224,scale=(0.08,1.0))|flip|normalize")``.

One job: the registry of ops and the chain that runs them; long because of its dozen ops, which
share with the chain the lazy decode (``_pixels``, JPEG draft mode) that a split would cut apart.

A chain is a ``|``-separated list of ops; each op is ``name`` or ``name(args)`` where the args
are Python literals (parsed with ``ast.literal_eval``, never evaluated as code). The result is a
callable ``pp(features: dict, rng: np.random.Generator) -> dict``; all randomness comes from
``rng`` so that the pipeline can derive it from (seed, epoch, index) and resume exactly.

Images travel between ops as PIL images (fast C resizing, cropping, enhancing). ``decode`` opens the
file lazily (JPEGs through ``janus.data.input.jpeg``: simplejpeg when installed, PIL's pixels), so
the first op that needs pixels may use JPEG draft mode (DCT-domain downscaling) when it only needs a
smaller image, and ``rrc`` decodes only the region its crop and filter read
(``janus.data.input.jpeg_region``; the same pixels). ``rrc``/``resize`` with ``antialias=False``
(the fast path, ``fast_resize``) hand on a uint8 array instead. The chain always returns uint8
[H, W, 3].

``normalize`` and ``value_range`` run on the device, not here: each records a ``PixelScaling``
(``Preprocess.scaling``; see ``janus.data.input.pixel_scaling``) that the jitted train step and the
evaluator apply to the uint8 batch. Existing chains keep working unchanged; the scaling op must be
the chain's last image op (only ``tokenize`` may follow it).

Bad input raises a ``SkipExample`` subclass (``BadImageError``, ``EmptyCaptionError``) naming the
key; the pipeline counts and reports these -- it never emits a wrong sample. Anything else is a bug.
"""

from __future__ import annotations

import ast
import functools
import io
import logging
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from janus.data.input import erasing, fast_resize, jpeg, jpeg_region, pixel_scaling, randaugment
from janus.data.input.pixel_scaling import PixelScaling

log = logging.getLogger(__name__)
Op = Callable[[dict, np.random.Generator], dict]
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# Each filter's half-width in source pixels at scale 1 (Pillow's filters; nearest reads 1 pixel).
_SUPPORT = {"nearest": 1, "bilinear": 1, "bicubic": 2, "lanczos": 3}
_LAZY = "_lazy_image"  # features flag: the image (PIL or jpeg.LazyJpeg) is opened, not decoded
# features flag, set by the loader: image/encoded is known to decode whole (its records' builder
# checked every image), so a crop's decode may stop after the crop (``jpeg_region``).
IMAGE_VERIFIED = "_image_verified"


class SkipExample(Exception):
    """An input that cannot give a correct sample; the pipeline counts it under ``reason``."""

    reason = "bad_example"

    def __init__(self, key: str, detail: str):
        super().__init__(f"{self.reason}: key={key!r}: {detail}")
        self.key = key
        self.detail = detail

    def __reduce__(self):  # picklable across grain worker processes
        return (type(self), (self.key, self.detail))


class BadImageError(SkipExample):
    reason = "bad_image"


class EmptyCaptionError(SkipExample):
    reason = "empty_caption"


_OPS: dict[str, Callable[..., Op]] = {}


def register_op(name: str):
    """Registers ``factory(*args, **kwargs) -> op(features, rng) -> features`` under ``name``
    (or ``-> PixelScaling`` for an op that runs on the device)."""

    def wrap(factory):
        if name in _OPS:
            raise ValueError(f"preprocessing op {name!r} registered twice")
        _OPS[name] = factory
        return factory

    return wrap


def known_ops() -> list[str]:
    return sorted(_OPS)


# ---------------------------------------------------------------- parsing


def split_chain(spec: str) -> list[str]:
    """Splits on '|' outside brackets and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(spec):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_op(text: str) -> tuple[str, tuple, dict]:
    """``"rrc(224, scale=(0.08, 1))"`` -> ``("rrc", (224,), {"scale": (0.08, 1)})``."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"cannot parse preprocessing op {text!r}: {e.msg}") from None
    if isinstance(node, ast.Name):
        return node.id, (), {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError(f"preprocessing op {text!r} must look like name or name(literal args)")
    try:
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        raise ValueError(f"preprocessing op {text!r}: arguments must be Python literals") from None
    if None in kwargs:
        raise ValueError(f"preprocessing op {text!r}: **kwargs are not allowed")
    return node.func.id, args, kwargs


class Preprocess:
    """A built chain; picklable (it re-builds itself from the spec in grain worker processes).

    ``scaling``: the ``PixelScaling`` of its ``normalize`` / ``value_range`` op, which the device
    applies (``IDENTITY`` without one: pixel values 0..255 as floats)."""

    def __init__(self, spec: str):
        self.spec = spec
        self.names: list[str] = []
        self._ops: list[Op] = []
        self.scaling: PixelScaling = pixel_scaling.IDENTITY
        scaled_by = None
        filled = []  # (text, PixelScaling) of ops that draw pixels for the chain's scaling
        for text in split_chain(spec):
            name, args, kwargs = parse_op(text)
            if name not in _OPS:
                known = ", ".join(known_ops())
                raise ValueError(
                    f"unknown preprocessing op {name!r} in {spec!r}; known ops: {known}"
                )
            if scaled_by is not None and name not in _AFTER_SCALING:
                raise ValueError(
                    f"preprocessing op {text!r} follows {scaled_by!r} in {spec!r}: the pixel "
                    "scaling runs on the device, after the host chain, so it must be the last "
                    "image op"
                )
            try:
                made = _OPS[name](*args, **kwargs)
            except TypeError as e:
                raise ValueError(f"preprocessing op {text!r}: {e}") from None
            if isinstance(made, PixelScaling):
                self.scaling, scaled_by = made, text
            else:
                self._ops.append(made)
                if name in _FILLS_FOR_SCALING:
                    filled.append((text, made.scaling))
            self.names.append(name)
        for text, scaling in filled:
            if not erasing.same_scaling(scaling, self.scaling):
                raise ValueError(
                    f"preprocessing op {text!r} in {spec!r} draws its fill for another "
                    f"normalisation than the chain's ({scaled_by or 'none'}): give it the "
                    "chain's norm (or mean and std)"
                )

    def __reduce__(self):
        return (Preprocess, (self.spec,))

    def __call__(self, features: dict, rng: np.random.Generator) -> dict:
        features = dict(features)
        for op in self._ops:
            features = op(features, rng)
        if isinstance(features.get("image"), (Image.Image, jpeg.LazyJpeg)):
            features["image"] = np.asarray(_pixels(features), dtype=np.uint8)
        features.pop(_LAZY, None)
        return features

    def __repr__(self) -> str:
        return f"Preprocess({self.spec!r})"


def build_pp(spec: str) -> Preprocess:
    return Preprocess(spec)


# ---------------------------------------------------------------- image helpers


def _key(features: dict) -> str:
    return str(features.get("key", "?"))


def _pixels(features: dict, as_array: bool = False) -> Image.Image | np.ndarray:
    """The decoded RGB image (``as_array``: uint8 [h, w, 3], sparing simplejpeg's pixels a PIL
    copy); decoding errors (truncated, corrupt) become ``BadImageError``."""
    img = features.get("image")
    if img is None:
        raise ValueError("preprocessing needs an image: put 'decode' first in the chain")
    if isinstance(img, np.ndarray) and not as_array:
        img = Image.fromarray(img)
    if features.pop(_LAZY, False):
        try:
            if isinstance(img, jpeg.LazyJpeg):
                img = img.decode_array() if as_array else img.decode()
            else:
                img.load()
                if img.mode != "RGB":
                    img = img.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise BadImageError(_key(features), f"cannot decode image: {e}") from None
    features["image"] = img
    return img


def _decode_region(features: dict, region) -> np.ndarray | None:
    """uint8 pixels of ``region`` (x0, y0, x1, y1; ints) when the image is a JPEG not yet decoded
    and libjpeg can decode that region alone (``jpeg.LazyJpeg.decode_crop``: the whole decode's
    pixels, less work); else None, and the caller decodes the whole image."""
    img = features.get("image")
    if not (isinstance(img, jpeg.LazyJpeg) and features.get(_LAZY)):
        return None
    pixels = img.decode_crop(region)
    if pixels is not None:
        features.pop(_LAZY)
    return pixels


def _crop_array(features: dict, box) -> np.ndarray:
    """uint8 [y1 - y0, x1 - x0, 3]: the image's ``box`` (ints)."""
    pixels = _decode_region(features, box)
    if pixels is not None:
        return pixels
    x0, y0, x1, y1 = box
    return np.asarray(_pixels(features, as_array=True))[y0:y1, x0:x1]


def _resize_source(features: dict, box, out_w: int, out_h: int, method: str) -> Image.Image:
    """The PIL image to resize ``box`` from. Of an undecoded JPEG, only the pixels the filter reads
    are decoded (the box and the filter's support past each side: support x max(1, box/out),
    plus 2), pasted at their place in an image of the full size: PIL's coefficients depend on
    the box's coordinates, so only the same coordinates give the same pixels (checked bitwise,
    with the rest of the image filled with other values, in tests/test_jpeg_region.py)."""
    img = features.get("image")
    if not isinstance(img, jpeg.LazyJpeg):
        return _pixels(features)
    w, h = img.size
    mx = math.ceil(_SUPPORT[method] * max(1.0, (box[2] - box[0]) / out_w)) + 2
    my = math.ceil(_SUPPORT[method] * max(1.0, (box[3] - box[1]) / out_h)) + 2
    left, top = max(0, math.floor(box[0]) - mx), max(0, math.floor(box[1]) - my)
    right, bottom = min(w, math.ceil(box[2]) + mx), min(h, math.ceil(box[3]) + my)
    pixels = _decode_region(features, (left, top, right, bottom))
    if pixels is None:
        return _pixels(features)
    canvas = Image.new("RGB", (w, h))
    canvas.paste(Image.fromarray(pixels), (left, top))
    features["image"] = canvas
    return canvas


def _size(features: dict) -> tuple[int, int]:
    img = features.get("image")
    if img is None:
        raise ValueError("preprocessing needs an image: put 'decode' first in the chain")
    return (img.shape[1], img.shape[0]) if isinstance(img, np.ndarray) else img.size


def _draft(features: dict, box, out_w: int, out_h: int):
    """JPEG draft mode: decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) when ``box``, in
    the original image's coordinates, still covers at least (out_w, out_h) pixels at that scale.

    Returns the crop box in the decoded image's coordinates. DCT scaling maps the original's
    continuous coordinates to the small image's by exactly 1/scale (PIL's ``draft`` returns that
    box); the decoded size rounds up, so the scaled box always lies inside it.
    """
    img = features.get("image")
    if not features.get(_LAZY) or getattr(img, "format", None) != "JPEG":
        return box
    w, h = img.size
    bw, bh = box[2] - box[0], box[3] - box[1]
    req = (max(1, math.ceil(w * out_w / bw)), max(1, math.ceil(h * out_h / bh)))
    try:
        drafted = img.draft("RGB", req)
    except (OSError, ValueError) as e:
        raise BadImageError(_key(features), f"cannot decode image: {e}") from None
    if drafted is None or img.size == (w, h):
        return box
    sx, sy = drafted[1][2] / w, drafted[1][3] / h  # both 1/scale
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _check_resize(method: str, antialias: bool) -> None:
    """At op construction: a known method; antialias=False is bilinear, with OpenCV installed."""
    if method not in _RESAMPLE:
        raise ValueError(f"unknown resize method {method!r}; known: {sorted(_RESAMPLE)}")
    if not antialias:
        if method != "bilinear":
            raise ValueError(f"antialias=False is bilinear only; got method={method!r}")
        fast_resize.require_cv2()


@functools.cache
def _log_region_decoding() -> None:
    """Once a process: whether crops decode only their region (the build runs here, before the
    loader's threads need it); the pixels are the same either way, only the speed is not."""
    state = jpeg_region.status()
    (log.info if state == "on" else log.warning)("rrc: JPEG region decoding %s", state)


def _resize_box(
    features: dict, box, out_w: int, out_h: int, method: str, antialias: bool = True
) -> None:
    if not antialias:  # tf.image.resize's way: no DCT scaling either (it would smooth)
        features["image"] = fast_resize.bilinear(_crop_array(features, box), out_w, out_h)
        return
    box = _draft(features, box, out_w, out_h)
    img = _resize_source(features, box, out_w, out_h, method)
    features["image"] = img.resize((out_w, out_h), _RESAMPLE[method], box=box)


def _pair(x) -> tuple[int, int]:
    return (int(x), int(x)) if np.isscalar(x) else (int(x[0]), int(x[1]))


# ---------------------------------------------------------------- ops


@register_op("decode")
def decode() -> Op:
    """Opens ``image/encoded`` (JPEG/PNG/...) lazily; the first pixel op decodes it."""

    def op(features, rng):
        data = features.get("image/encoded")
        if not data:
            raise BadImageError(_key(features), "empty image/encoded")
        lazy_jpeg = jpeg.open_jpeg(data, verified=bool(features.get(IMAGE_VERIFIED)))
        if lazy_jpeg is not None:  # simplejpeg decodes it (same pixels as PIL, faster)
            features["image"] = lazy_jpeg
            features[_LAZY] = True
            return features
        try:
            img = Image.open(io.BytesIO(data))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise BadImageError(_key(features), f"cannot open image: {e}") from None
        if img.size[0] < 1 or img.size[1] < 1:
            raise BadImageError(_key(features), f"empty image of size {img.size}")
        features["image"] = img
        features[_LAZY] = True
        return features

    return op


def draw_rrc_box(w: int, h: int, rng: np.random.Generator, scale, ratio) -> tuple:
    """``rrc``'s crop box (x0, y0, x1, y1) in a ``w`` x ``h`` image, from ``rng``'s draws: area
    fraction uniform in ``scale``, aspect (w/h) log-uniform in ``ratio``, 10 tries, then a central
    crop clamped to ``ratio`` (torchvision's sampling). ``janus.data.input.dali_loader`` plans its
    crops with it, so both draw the same boxes."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(float(scale[0]), float(scale[1]))
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x = int(rng.integers(0, w - cw + 1))
            y = int(rng.integers(0, h - ch + 1))
            return (x, y, x + cw, y + ch)
    in_ratio = w / h  # fallback: the central crop, clamped to the ratio range
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        cw, ch = int(round(h * ratio[1])), h
    else:
        cw, ch = w, h
    x, y = (w - cw) // 2, (h - ch) // 2
    return (x, y, x + cw, y + ch)


@register_op("rrc")
def random_resized_crop(
    size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), method: str = "bilinear", antialias=True
) -> Op:
    """torchvision's RandomResizedCrop to ``size`` (int or (height, width)): area fraction in
    ``scale``, aspect (w/h) log-uniform in ``ratio`` (``draw_rrc_box``). ``antialias=False``: the
    fast path (janus.data.input.fast_resize), same crops, resized as tf.image.resize does by
    default."""
    out_h, out_w = _pair(size)
    _check_resize(method, antialias)
    _log_region_decoding()
    if not 0 < float(scale[0]) <= float(scale[1]) <= 1:
        raise ValueError(f"rrc scale must satisfy 0 < lo <= hi <= 1, got {scale}")

    def op(features, rng):
        w, h = _size(features)
        box = draw_rrc_box(w, h, rng, scale, ratio)
        _resize_box(features, box, out_w, out_h, method, antialias)
        return features

    return op


@register_op("resize_small")
def resize_small(size: int, method: str = "bilinear") -> Op:
    """Resizes so that the shorter side is ``size`` (aspect kept; the longer side truncated to an
    int, as torchvision's ``Resize(size)``)."""

    def op(features, rng):
        w, h = _size(features)
        short, long = min(w, h), max(w, h)
        new_long = max(1, int(size * long / short))
        out_w, out_h = (size, new_long) if w <= h else (new_long, size)
        _resize_box(features, (0, 0, w, h), out_w, out_h, method)
        return features

    return op


@register_op("resize")
def resize(size, method: str = "bilinear", antialias=True) -> Op:
    """Resizes to ``size`` (int: square; or (height, width)); ``antialias`` as in ``rrc``."""
    out_h, out_w = _pair(size)
    _check_resize(method, antialias)

    def op(features, rng):
        w, h = _size(features)
        _resize_box(features, (0, 0, w, h), out_w, out_h, method, antialias)
        return features

    return op


@register_op("center_crop")
def center_crop(size) -> Op:
    """Central crop of ``size`` (int or (height, width)); a smaller image is an error."""
    out_h, out_w = _pair(size)

    def op(features, rng):
        img = _pixels(features)
        w, h = img.size
        if w < out_w or h < out_h:
            raise ValueError(
                f"center_crop({out_h}, {out_w}) on a {h}x{w} image (key={_key(features)!r}); "
                "resize first, e.g. resize_small"
            )
        x, y = int(round((w - out_w) / 2)), int(round((h - out_h) / 2))
        features["image"] = img.crop((x, y, x + out_w, y + out_h))
        return features

    return op


def draw_flip(rng: np.random.Generator, p: float) -> bool:
    """``flip``'s draw (one uniform, taken whatever ``p``); dali_loader plans with it too."""
    return bool(rng.random() < p)


@register_op("flip")
def flip(p: float = 0.5) -> Op:
    """Horizontal flip with probability ``p``."""

    def op(features, rng):
        if draw_flip(rng, p):
            img = features["image"]
            if isinstance(img, np.ndarray):  # the fast path's pixels stay an array
                features["image"] = fast_resize.flip(img)
            else:
                features["image"] = _pixels(features).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return features

    return op


def _adjust_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotates hue by ``shift`` (fraction of a turn, in [-0.5, 0.5]) in PIL's 8-bit HSV, as
    torchvision's ``adjust_hue`` (whose ``np.int8(shift * 255)`` truncates toward zero)."""
    h, s, v = img.convert("HSV").split()
    hue = np.asarray(h, dtype=np.uint8)
    hue = (hue.astype(np.int16) + int(shift * 255)).astype(np.uint8)  # wraps mod 256
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


@register_op("color_jitter")
def color_jitter(b: float = 0.4, c: float = 0.4, s: float = 0.4, h: float = 0.1, p: float = 0.8):
    """SimCLR colour jitter: with probability ``p``, brightness/contrast/saturation/hue in random
    order (factors uniform in [1-x, 1+x], hue shift uniform in [-h, h] of a turn)."""
    if not 0 <= h <= 0.5:
        raise ValueError(f"color_jitter hue must be in [0, 0.5], got {h}")

    def op(features, rng):
        if rng.random() >= p:
            return features
        img = _pixels(features)
        for which in rng.permutation(4):
            if which == 0 and b > 0:
                img = ImageEnhance.Brightness(img).enhance(rng.uniform(max(0, 1 - b), 1 + b))
            elif which == 1 and c > 0:
                img = ImageEnhance.Contrast(img).enhance(rng.uniform(max(0, 1 - c), 1 + c))
            elif which == 2 and s > 0:
                img = ImageEnhance.Color(img).enhance(rng.uniform(max(0, 1 - s), 1 + s))
            elif which == 3 and h > 0:
                img = _adjust_hue(img, rng.uniform(-h, h))
        features["image"] = img
        return features

    return op


@register_op("grayscale")
def grayscale(p: float = 0.2) -> Op:
    """With probability ``p``, replaces the image by its luma (kept 3-channel)."""

    def op(features, rng):
        if rng.random() < p:
            features["image"] = _pixels(features).convert("L").convert("RGB")
        return features

    return op


@register_op("blur")
def blur(p: float = 0.5, sigma=(0.1, 2.0)) -> Op:
    """With probability ``p``, Gaussian blur with sigma uniform in ``sigma`` (pixels)."""

    def op(features, rng):
        if rng.random() < p:
            radius = rng.uniform(float(sigma[0]), float(sigma[1]))
            features["image"] = _pixels(features).filter(ImageFilter.GaussianBlur(radius))
        return features

    return op


@register_op("randaug")
def randaug(
    n: int = 2,
    m: float = 9,
    p: float = 0.5,
    mstd: float = 0.0,
    ops=None,
    fill=randaugment.DEIT_FILL,
    method: str = "bicubic",
) -> Op:
    """timm's RandAugment, ``rand-m{m}-n{n}-mstd{mstd}``: ``n`` of timm's 15 ops per image (or
    of ``ops``, by timm's names), each with probability ``p`` at magnitude ``m`` of 10;
    ``janus.data.input.randaugment``."""
    augment = randaugment.RandAugment(n, m, p=p, mstd=mstd, ops=ops, fill=fill, method=method)

    def op(features, rng):
        features["image"] = augment(_pixels(features), rng)
        return features

    return op


@register_op("erase")
def erase(
    p: float = 0.25,
    mode: str = "pixel",
    area=(0.02, 1 / 3),
    aspect=(0.3, 1 / 0.3),
    norm: str = "clip",
    mean=None,
    std=None,
) -> Op:
    """timm's RandomErasing, one box, on the uint8 image: ``norm`` (or ``mean``/``std``) must be
    the chain's ``normalize``, whose space the fill is drawn in; ``janus.data.input.erasing``."""
    try:
        scaling = pixel_scaling.normalization(norm, mean, std)
    except ValueError as e:
        raise ValueError(f"erase norm={norm!r}: {e}") from None
    eraser = erasing.RandomErasing(scaling, p, mode, area, aspect)

    def op(features, rng):
        features["image"] = eraser(_pixels(features), rng)
        return features

    op.scaling = scaling  # Preprocess checks it against the chain's normalize
    return op


_FILLS_FOR_SCALING = {"erase"}  # ops whose ``.scaling`` must map pixels as the chain's does


@register_op("normalize")
def normalize(name: str = "clip", mean=None, std=None) -> PixelScaling:
    """uint8 -> float32 ``(x / 255 - mean) / std`` on the device; ``name``: clip or imagenet."""
    return pixel_scaling.normalization(name, mean, std)


@register_op("value_range")
def value_range(lo: float = -1.0, hi: float = 1.0) -> PixelScaling:
    """uint8 -> float32 in [lo, hi] on the device (an alternative to ``normalize``)."""
    return pixel_scaling.value_range(lo, hi)


_AFTER_SCALING = {"tokenize"}  # ops that leave the image alone may follow the scaling op


@register_op("tokenize")
def tokenize(context_length: int = 77, key: str = "caption") -> Op:
    """Chooses one non-empty caption of ``features[key]`` with ``rng``; adds ``tokens`` int32.

    No non-empty caption -> ``EmptyCaptionError`` (a counted skip).
    """
    from janus.data.input.tokenizer import default_tokenizer

    tok = default_tokenizer(context_length)

    def op(features, rng):
        captions = features.get(key)
        if isinstance(captions, (str, bytes)):
            captions = [captions]
        texts = [
            c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in captions or []
        ]
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise EmptyCaptionError(_key(features), f"no non-empty {key!r}")
        text = texts[int(rng.integers(len(texts)))] if len(texts) > 1 else texts[0]
        features["caption_text"] = text
        features["tokens"] = tok.tokenize_one(text)
        return features

    return op
