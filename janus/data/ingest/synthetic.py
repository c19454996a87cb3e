"""JANuS-mini: an offline, procedurally drawn 10-class dataset with really shifted eval splits.

Classes are the `mini10` label set (the first 10 JANuS IN100 classes; records keep their ImageNet-1k
indices). Each class is a shape with its own colour, drawn at 64 px and stored as JPEG, with a
template caption naming the ImageNet class. Splits:

| split | style | what shifts |
| --- | --- | --- |
| `train`, `val` | "photo": coloured shape on a noisy tinted background | nothing (i.i.d.) |
| `v2` | same style, new draws, slightly smaller objects and more noise | a little |
| `sketch` | greyscale pencil outline with hatching on paper | colour and texture gone |
| `r` | rendition: random flat palette, posterised, thick outline | colour means nothing |
| `a` | small object among distractor shapes of other classes, occluded | clutter/occlusion |
| `objectnet` | any rotation, off-centre, striped/checkered backgrounds | pose and background |

A model that leans on colour does well on val and worse on sketch/r/a. Every image is a function of
(seed, split, class, index), so builds are byte-identical.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import shutil
import time

import numpy as np
from PIL import Image, ImageDraw

from janus.data import labelsets, records, tfrecord
from janus.data.ingest.builder import finalize_split
from janus.data.ingest.config import BUILDER_VERSION

SPLITS = ("train", "val", "v2", "sketch", "r", "a", "objectnet")
SOURCE = "mini"
_SS = 2  # supersampling factor for smooth edges


def _circle(n=32, r=1.0, cx=0.0, cy=0.0):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _star(points=5, inner=0.45):
    t = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False) - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _poly(*pts):
    return np.asarray(pts, dtype=float)


# Each class: list of (polygon in [-1, 1]^2, is_hole). Holes are cut out of the filled mask.
SHAPES = [
    [(_circle(), False)],  # disc
    [(_poly((-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)), False)],  # square
    [(_poly((0, -1), (0.95, 0.8), (-0.95, 0.8)), False)],  # triangle
    [
        (
            _poly(
                (-0.3, -1),
                (0.3, -1),
                (0.3, -0.3),
                (1, -0.3),
                (1, 0.3),
                (0.3, 0.3),
                (0.3, 1),
                (-0.3, 1),
                (-0.3, 0.3),
                (-1, 0.3),
                (-1, -0.3),
                (-0.3, -0.3),
            ),
            False,
        )
    ],  # plus
    [(_circle(), False), (_circle(r=0.55), True)],  # ring
    [(_star(), False)],  # star
    [(_poly((0, -1), (0.6, 0), (0, 1), (-0.6, 0)), False)],  # diamond
    [(_circle(n=6), False)],  # hexagon
    [
        (
            _poly(
                (-1, -0.25), (0.3, -0.25), (0.3, -0.7), (1, 0), (0.3, 0.7), (0.3, 0.25), (-1, 0.25)
            ),
            False,
        )
    ],  # arrow  # noqa: E501
    [(_circle(), False), (_circle(r=0.85, cx=0.45, cy=-0.2), True)],  # crescent
]
HUES = np.arange(10) / 10.0


def _hsv_to_rgb(h, s, v):
    h = np.asarray(h, dtype=float) % 1.0
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.array(table[int(i)], dtype=float)


def _mask(shape_idx, size, cx, cy, radius, angle) -> np.ndarray:
    big = size * _SS
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for poly, hole in SHAPES[shape_idx]:
        pts = (poly @ rot.T) * radius + np.array([cx, cy])
        draw.polygon([tuple(p) for p in (pts * big).tolist()], fill=0 if hole else 255)
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)[..., None] / 255.0


def _background(rng, size, kind: str) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == "pattern":  # objectnet: stripes or checks in two random colours
        c1, c2 = rng.uniform(0.15, 0.95, 3), rng.uniform(0.15, 0.95, 3)
        period = rng.uniform(0.08, 0.25)
        if rng.random() < 0.5:
            a = rng.uniform(0, np.pi)
            sel = (np.sin((xx * np.cos(a) + yy * np.sin(a)) / period * np.pi) > 0)[..., None]
        else:
            sel = (((xx // period) + (yy // period)) % 2 == 0)[..., None]
        return np.where(sel, c1, c2)
    base = _hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.45, 0.95))
    grad = rng.uniform(-0.2, 0.2, 2)
    return np.clip(base + ((xx - 0.5) * grad[0] + (yy - 0.5) * grad[1])[..., None], 0, 1)


def _object_colour(rng, cls, hue_jitter) -> np.ndarray:
    h = HUES[cls] + rng.uniform(-hue_jitter, hue_jitter)
    return _hsv_to_rgb(h, rng.uniform(0.65, 1.0), rng.uniform(0.65, 1.0))


def _edges(m: np.ndarray) -> np.ndarray:
    m = m[..., 0]
    gx = np.abs(np.diff(m, axis=1, prepend=m[:, :1]))
    gy = np.abs(np.diff(m, axis=0, prepend=m[:1, :]))
    e = np.clip((gx + gy) * 2.5, 0, 1)
    # thicken by one pixel so outlines survive JPEG
    e = np.maximum(e, np.roll(e, 1, 0) * 0.8)
    return np.maximum(e, np.roll(e, 1, 1) * 0.8)[..., None]


def render(cls: int, split: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """uint8 [size, size, 3] image of class `cls` (0..9) in the style of `split`."""
    radius, jitter, angle_max, noise, hue_jitter = 0.36, 0.12, np.deg2rad(25), 0.04, 0.03
    if split == "v2":
        radius, noise, hue_jitter = 0.31, 0.07, 0.05
    if split == "a":
        radius = 0.24
    if split == "objectnet":
        angle_max, jitter = np.pi, 0.2
    r = radius * rng.uniform(0.8, 1.2)
    cx, cy = 0.5 + rng.uniform(-jitter, jitter, 2)
    m = _mask(cls, size, cx, cy, r, rng.uniform(-angle_max, angle_max))

    if split == "sketch":
        # pencil drawing: grey paper, dark outline, light diagonal hatching inside the shape
        paper = rng.uniform(0.85, 1.0)
        yy, xx = np.mgrid[0:size, 0:size]
        hatch = ((xx + yy * rng.choice([-1, 1])) % rng.integers(3, 6) == 0)[..., None]
        img = np.full((size, size, 3), paper) * (1 - m * hatch * rng.uniform(0.2, 0.45))
        img = img * (1 - _edges(m) * rng.uniform(0.7, 1.0))
        strokes = rng.normal(0, 0.03, (size, size, 1))
        img = np.clip(img + strokes, 0, 1).mean(axis=2, keepdims=True).repeat(3, axis=2)
    else:
        bg = _background(rng, size, "pattern" if split == "objectnet" else "plain")
        if split == "r":
            # rendition: a random palette (any hue for the object), flat, posterised, outlined
            fg = _hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
        else:
            fg = _object_colour(rng, cls, 0.08 if split == "objectnet" else hue_jitter)
        shade = 1 - 0.25 * (np.mgrid[0:size, 0:size][0] / size)[..., None]
        img = bg * (1 - m) + fg * shade * m
        if split == "a":
            img = _clutter(img, cls, rng, size)
        if split == "r":
            img = np.round(img * 2) / 2
            img = img * (1 - _edges(m) * 0.9)
        img = img + rng.normal(0, noise, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _clutter(img, cls, rng, size):
    for _ in range(rng.integers(2, 5)):
        other = int((cls + rng.integers(1, 10)) % 10)
        m = _mask(
            other, size, *rng.uniform(0.15, 0.85, 2), rng.uniform(0.12, 0.2), rng.uniform(0, 6.3)
        )
        img = img * (1 - m) + _object_colour(rng, other, 0.03) * m
    # one occluding grey bar across the middle region
    x0, y0 = rng.integers(size // 4, size // 2, 2)
    w, h = rng.integers(size // 6, size // 3, 2)
    img[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0.3, 0.7)
    return img


def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _caption(label: int, rng, templates, names) -> str:
    # A random prompt template around the CLIP class name (what matching.template_caption does).
    return templates[int(rng.integers(len(templates)))].format(names[label])


def build_mini(
    out,
    *,
    train_per_class: int = 200,
    eval_per_class: int = 50,
    size: int = 64,
    seed: int = 0,
    train_shards: int = 4,
    command: str | None = None,
    splits=SPLITS,
) -> dict:
    """Write JANuS-mini to `out` (replacing an earlier build there); returns info.json."""
    out = pathlib.Path(out)
    if (out / records.INFO_FILE).is_file():
        if records.read_info(out).get("suite") != "mini":
            raise ValueError(f"{out} holds a non-mini records directory; refusing to overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = labelsets.resolve_label_set("mini10").tolist()
    names = labelsets.class_names("clip")
    templates = labelsets.zeroshot_templates("openai80")
    info = {}
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown JANuS-mini split {split!r}; expected one of {SPLITS}")
        split_id = SPLITS.index(split)  # seeds depend on the split, not on which splits are built
        per_class = train_per_class if split == "train" else eval_per_class
        order = np.random.default_rng([seed, split_id]).permutation(per_class * len(classes))
        n_shards = train_shards if split == "train" else 1
        bounds = np.linspace(0, len(order), n_shards + 1).round().astype(int)
        manifest = []
        for s in range(n_shards):
            name = records.shard_name(split, s, n_shards)
            with tfrecord.ShardWriter(out / name) as w:
                for j in order[bounds[s] : bounds[s + 1]].tolist():
                    cls, i = divmod(j, per_class)
                    rng = np.random.default_rng([seed, split_id, cls, i])
                    label = classes[cls]
                    key = f"{SOURCE}/{split}/{cls}_{i:05d}"
                    caption = _caption(label, rng, templates, names)
                    data = _jpeg(render(cls, split, rng, size))
                    ex = {
                        "image/encoded": data,
                        "image/format": "jpeg",
                        "label": [label],
                        "label/source": "human",
                        "caption": [caption],
                        "source": SOURCE,
                        "key": key,
                    }
                    off = w.write(records.encode_example(ex))
                    manifest.append(
                        {
                            "key": key,
                            "source": SOURCE,
                            "labels": [label],
                            "label_source": "human",
                            "split": split,
                            "shard": name,
                            "offset": off,
                        }
                    )
        summary = {
            "n": len(manifest),
            "seed": seed,
            "command": command,
            "num_shards": n_shards,
            "per_source": {SOURCE: len(manifest)},
            "per_class": {str(c): per_class for c in classes},
            "style": split,
            "skipped": {},
        }
        info = finalize_split(
            out,
            split,
            manifest,
            summary,
            "mini10",
            {SOURCE: {"kind": "synthetic", "selected": len(manifest)}},
            name="janus_mini",
            extra_info={"suite": "mini", "image_size": size, "builder_version": BUILDER_VERSION},
        )
    return info


def main(argv=None, command: str | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m janus.data.build synthetic",
        description="Build the offline JANuS-mini dataset (10 classes, shifted eval splits).",
    )
    p.add_argument("--out", required=True, help="records directory (an earlier mini is replaced)")
    p.add_argument("--train-per-class", type=int, default=200, help="default 200")
    p.add_argument("--eval-per-class", type=int, default=50, help="per eval split, default 50")
    p.add_argument("--size", type=int, default=64, help="image side in pixels, default 64")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.time()
    info = build_mini(
        args.out,
        train_per_class=args.train_per_class,
        eval_per_class=args.eval_per_class,
        size=args.size,
        seed=args.seed,
        command=command,
    )
    print(f"[build] JANuS-mini in {args.out}: {info['splits']} ({time.time() - t0:.1f} s)")
    return 0
