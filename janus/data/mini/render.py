"""Drawing JANuS-mini v2 images: a class's factors, a style and the viewing conditions -> pixels.

An object is a body (shape family, randomly deformed) filled with the class texture in the class
palette, with its parts (legs, ears, tail, spikes) in the secondary colour, at the class size, in
front of a background context. Styles decide which factors reach the pixels:

| style | keeps | loses |
| --- | --- | --- |
| `photo` | everything, shaded and noisy | - |
| `drawing` | shape, parts, texture as hatching, size | colour, background |
| `cartoon` | shape, parts, texture | palette (random flat colours), background (flat) |
| `painting` | shape, parts, blurred texture, background layout | palette (hue-rotated) |
| `pattern` | shape, parts, palette, texture (tiled, small copies) | size, background |

`Conditions` set the rest: how often the background is the class's own context, pose range,
scale, lighting, noise, blur, JPEG quality, distractor objects, occlusion and a second labelled
object. Every image is a pure function of its numpy Generator, so files are byte-identical
across runs and processes.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from janus.data.mini import world

SIZE = 64  # stored image side
_SS = 2  # supersampling
_N = SIZE * _SS

STYLES = ("photo", "drawing", "cartoon", "painting", "pattern")


@dataclasses.dataclass(frozen=True)
class Conditions:
    """How one source or shift set samples its images."""

    styles: tuple[tuple[str, float], ...] = (("photo", 1.0),)
    context_match: float = 0.6  # P(background = the class's own context); else a random one
    rotation: float = 20.0  # max |pose angle| in degrees
    scale: tuple[float, float] = (0.9, 1.1)  # object size multiplier
    offset: float = 0.08  # max centre shift (fraction of the side)
    light: tuple[float, float] = (0.85, 1.15)
    noise: float = 0.03
    blur: float = 0.0  # max Gaussian blur radius (pixels)
    quality: tuple[int, int] = (85, 95)  # JPEG quality range
    distractors: tuple[int, int] = (0, 0)  # other objects drawn around
    occlude: float = 0.0  # P(an occluding bar)
    second_object: float = 0.0  # P(a second, labelled object of another class)
    patterned_background: float = 0.0  # P(stripes/checks instead of a context)

    def pick_style(self, rng) -> str:
        names, p = zip(*self.styles)
        return names[int(rng.choice(len(names), p=np.asarray(p) / sum(p)))]


# ---------------------------------------------------------------------------------------------
# Geometry, in the object frame: unit radius, y pointing down.


def _ring(n, r=1.0, cx=0.0, cy=0.0, ry=None):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + (r if ry is None else ry) * np.sin(t)], 1)


def _densify(poly: np.ndarray, n: int = 48) -> np.ndarray:
    closed = np.vstack([poly, poly[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    t = np.concatenate([[0], np.cumsum(seg)])
    s = np.linspace(0, t[-1], n, endpoint=False)
    return np.stack([np.interp(s, t, closed[:, 0]), np.interp(s, t, closed[:, 1])], 1)


def _star(points=5, inner=0.5):
    t = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False) - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


_CROSS = np.array(
    [(-0.32, -1), (0.32, -1), (0.32, -0.32), (1, -0.32), (1, 0.32), (0.32, 0.32), (0.32, 1)]
    + [(-0.32, 1), (-0.32, 0.32), (-1, 0.32), (-1, -0.32), (-0.32, -0.32)],
    dtype=float,
)

# shape family -> [(polygon, is_hole)]
_BODIES = (
    [(_ring(48, 1.0, ry=0.68), False)],
    [(_densify(_star(), 50), False)],
    [(_densify(np.array([(0, -1), (0.95, 0.75), (-0.95, 0.75)]), 48), False)],
    [(_densify(_CROSS, 60), False)],
    [(_ring(48), False), (_ring(48, 0.8, cx=0.45, cy=-0.25), True)],
)


def _bar(x0, y0, x1, y1, w):
    d = np.array([x1 - x0, y1 - y0], float)
    nrm = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * w / 2
    p0, p1 = np.array([x0, y0]), np.array([x1, y1])
    return np.array([p0 + nrm, p1 + nrm, p1 - nrm, p0 - nrm])


def _parts(kind: int) -> list[np.ndarray]:
    if kind == 1:  # legs
        return [_bar(x, 0.45, x * 1.15, 1.3, 0.16) for x in (-0.6, -0.2, 0.2, 0.6)]
    if kind == 2:  # ears
        return [_ring(20, 0.3, cx=x, cy=-0.95) for x in (-0.5, 0.5)]
    if kind == 3:  # tail
        return [_bar(0.8, 0.1, 1.25, -0.2, 0.18), _bar(1.2, -0.18, 1.45, -0.75, 0.16)]
    if kind == 4:  # spikes
        out = []
        for t in np.linspace(0, 2 * np.pi, 8, endpoint=False):
            c, s = np.cos(t), np.sin(t)
            out.append(
                np.array(
                    [
                        (0.85 * c - 0.18 * s, 0.85 * s + 0.18 * c),
                        (1.4 * c, 1.4 * s),
                        (0.85 * c + 0.18 * s, 0.85 * s - 0.18 * c),
                    ]
                )
            )
        return out
    return []


@dataclasses.dataclass
class _Pose:
    cx: float
    cy: float
    radius: float
    angle: float

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        rot = np.array([[c, -s], [s, c]])
        return ((pts @ rot.T) * self.radius + [self.cx, self.cy]) * _N

    def object_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Object-frame (u, v) of every supersampled pixel (textures rotate with the object)."""
        yy, xx = (np.mgrid[0:_N, 0:_N] + 0.5) / _N
        dx, dy = (xx - self.cx) / self.radius, (yy - self.cy) / self.radius
        c, s = np.cos(self.angle), np.sin(self.angle)
        return c * dx + s * dy, -s * dx + c * dy


def _fill(polys, pose: _Pose, wobble=None) -> np.ndarray:
    img = Image.new("L", (_N, _N), 0)
    draw = ImageDraw.Draw(img)
    for poly, hole in polys:
        if wobble is not None:
            ang = np.arctan2(poly[:, 1], poly[:, 0])
            poly = poly * (1 + wobble[0] * np.sin(wobble[1] * ang + wobble[2]))[:, None]
        draw.polygon([tuple(p) for p in pose.to_image(poly).tolist()], fill=0 if hole else 255)
    return np.asarray(img, np.float32) / 255.0


def _texture(kind: int, u, v, freq: float) -> np.ndarray:
    """1 where the secondary colour shows."""
    if kind == 1:
        return (np.sin(u * freq * np.pi) > 0).astype(np.float32)
    if kind == 2:
        fu, fv = (u * freq / 2) % 1 - 0.5, (v * freq / 2) % 1 - 0.5
        return (fu**2 + fv**2 < 0.09).astype(np.float32)
    if kind == 3:
        return ((np.floor(u * freq / 2) + np.floor(v * freq / 2)) % 2).astype(np.float32)
    if kind == 4:
        return (np.sin(np.hypot(u, v) * freq * np.pi) > 0).astype(np.float32)
    return np.zeros_like(u, dtype=np.float32)


def _edges(m: np.ndarray, width: int) -> np.ndarray:
    img = Image.fromarray((m * 255).astype(np.uint8))
    grown = np.asarray(img.filter(ImageFilter.MaxFilter(2 * width + 1)), np.float32) / 255
    shrunk = np.asarray(img.filter(ImageFilter.MinFilter(2 * width + 1)), np.float32) / 255
    return grown - shrunk


def _hsv(h, s, v) -> np.ndarray:
    h = (h % 1.0) * 6
    i, f = int(h) % 6, h - int(h)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _rotate_hue(rgb: np.ndarray, turns: float) -> np.ndarray:
    """Rotates colours about the grey axis (a hue shift that keeps brightness)."""
    k = np.ones(3) / np.sqrt(3)
    a = 2 * np.pi * turns
    out = rgb * np.cos(a) + np.cross(k, rgb) * np.sin(a) + np.outer(rgb @ k, k) * (1 - np.cos(a))
    return np.clip(out, 0, 1)


# ---------------------------------------------------------------------------------------------
# Backgrounds


def _background(rng, context: int, patterned: bool) -> np.ndarray:
    yy, xx = (np.mgrid[0:_N, 0:_N] + 0.5) / _N
    if patterned:  # an unusual setting: stripes or checks in two random colours
        c1, c2 = rng.uniform(0.2, 0.9, 3), rng.uniform(0.2, 0.9, 3)
        period = rng.uniform(0.08, 0.2)
        if rng.random() < 0.5:
            a = rng.uniform(0, np.pi)
            sel = np.sin((xx * np.cos(a) + yy * np.sin(a)) / period * np.pi) > 0
        else:
            sel = ((xx // period) + (yy // period)) % 2 == 0
        return np.where(sel[..., None], c1, c2)
    jitter = rng.uniform(-0.06, 0.06, 3)
    if context == 0:  # water: blue, darker with depth, wave lines
        img = np.array([0.2, 0.45, 0.75]) * (1.1 - 0.4 * yy[..., None])
        waves = np.sin(yy * rng.uniform(30, 45) + np.sin(xx * 12 + rng.uniform(0, 6)) * 1.5) > 0.8
        img = img + 0.15 * waves[..., None]
    elif context == 1:  # grass: green with vertical blades
        img = np.array([0.3, 0.6, 0.22]) * (0.8 + 0.3 * yy[..., None])
        blades = rng.random((1, _N)) * (np.sin(yy * 40) * 0.5 + 0.5)
        img = img + (blades[..., None] - 0.25) * 0.18
    elif context == 2:  # sky: pale blue gradient with white clouds
        img = np.array([0.55, 0.75, 0.95]) + 0.2 * yy[..., None]
        for _ in range(int(rng.integers(1, 4))):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 0.7), rng.uniform(0.1, 0.2)
            cloud = np.exp(-(((xx - cx) / (1.8 * r)) ** 2 + ((yy - cy) / r) ** 2) * 2)
            img = img * (1 - cloud[..., None]) + cloud[..., None] * 0.97
    elif context == 3:  # sand: beige with speckles and dunes
        img = (
            np.array([0.86, 0.76, 0.55])
            - 0.08 * np.sin(xx * 7 + yy * 3 + rng.uniform(0, 6))[..., None]
        )
        img = img + rng.normal(0, 0.05, (_N, _N, 1))
    else:  # room: a wall above a floor
        horizon = rng.uniform(0.55, 0.75)
        wall = rng.uniform(0.6, 0.85) * np.array([1.0, 0.97, 0.92])
        floor = np.array([0.45, 0.3, 0.18]) * rng.uniform(0.8, 1.2)
        img = np.where((yy > horizon)[..., None], floor, wall)
        img = img + (((xx * 8) % 1 < 0.04) & (yy > horizon))[..., None] * -0.1
    return np.clip(img + jitter, 0, 1)


# ---------------------------------------------------------------------------------------------
# Objects


def _pose(rng, f: world.ClassFactors, cond: Conditions, scale: float = 1.0, centre=None):
    radius = world.SIZES[f.size] * rng.uniform(*cond.scale) * scale
    if centre is None:
        centre = 0.5 + rng.uniform(-cond.offset, cond.offset, 2)
    return _Pose(
        float(centre[0]), float(centre[1]), radius, np.deg2rad(rng.uniform(-1, 1) * cond.rotation)
    )


def _draw_object(img, rng, f: world.ClassFactors, pose: _Pose, style: str, palette):
    """Composites one object onto img (float [N, N, 3]) in place; returns its silhouette."""
    wobble = (rng.uniform(0.0, 0.15), int(rng.integers(2, 5)), rng.uniform(0, 2 * np.pi))
    body = _fill(_BODIES[f.shape], pose, wobble)
    parts = _fill([(p, False) for p in _parts(f.parts)], pose) if f.parts else body * 0
    parts = parts * (1 - body)
    u, v = pose.object_coords()
    tex = _texture(f.texture, u, v, rng.uniform(3.5, 5.0)) * body
    primary, secondary = palette
    if style == "drawing":
        outline = np.maximum(_edges(body, 2), _edges(parts, 2))
        hatch = tex * 0.35 + body * 0.06
        ink = np.clip(outline * 0.9 + hatch + parts * 0.25, 0, 1)[..., None]
        img *= 1 - ink * rng.uniform(0.75, 1.0)
        return np.maximum(body, parts)
    colour = primary * (1 - tex[..., None]) + secondary * tex[..., None]
    part_colour = secondary * 0.6
    if style == "photo" or style == "painting":
        yy = (np.mgrid[0:_N, 0:_N][0] + 0.5) / _N
        shade = 1.05 - 0.35 * np.clip((yy - pose.cy) / (2 * pose.radius) + 0.5, 0, 1)
        colour = colour * shade[..., None]
    sil = np.maximum(body, parts)[..., None]
    obj = colour * body[..., None] + part_colour * parts[..., None]
    img[:] = img * (1 - sil) + obj
    if style == "cartoon":
        img *= 1 - np.maximum(_edges(body, 3), _edges(parts, 3))[..., None] * 0.9
    return sil[..., 0]


def _random_palette(rng) -> tuple[np.ndarray, np.ndarray]:
    h = rng.random()
    return _hsv(h, rng.uniform(0.6, 1), rng.uniform(0.7, 1)), _hsv(
        h + rng.uniform(0.25, 0.75), rng.uniform(0.3, 1), rng.uniform(0.5, 1)
    )


def _class_palette(f: world.ClassFactors):
    _, p, s = world.PALETTES[f.palette]
    return np.asarray(p), np.asarray(s)


def render(f: world.ClassFactors, style: str, cond: Conditions, rng, others=()) -> np.ndarray:
    """uint8 [SIZE, SIZE, 3]: class `f` in `style` under `cond`. `others` are extra labelled
    objects (ClassFactors) drawn beside it (a multi-object image)."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; known: {STYLES}")
    f = world.instance(f, rng)
    context = f.context if rng.random() < cond.context_match else int(rng.integers(5))
    patterned = rng.random() < cond.patterned_background
    palette = _class_palette(f)
    if style == "drawing":
        img = np.full((_N, _N, 3), rng.uniform(0.85, 1.0))
    elif style == "cartoon":
        img = np.broadcast_to(_hsv(rng.random(), rng.uniform(0.1, 0.4), 1.0), (_N, _N, 3)).copy()
        palette = _random_palette(rng)
    elif style == "pattern":
        img = np.broadcast_to(_hsv(rng.random(), rng.uniform(0.0, 0.3), 0.95), (_N, _N, 3)).copy()
    else:
        img = _background(rng, context, patterned)
    if style == "painting":
        turns = rng.uniform(0.15, 0.85)
        palette = tuple(_rotate_hue(c, turns) for c in palette)
        img = _rotate_hue(img.reshape(-1, 3), turns).reshape(img.shape)

    if cond.distractors[1] > 0:  # other classes' objects, smaller, around the image
        for _ in range(int(rng.integers(cond.distractors[0], cond.distractors[1] + 1))):
            other = world.classes()[int(rng.integers(world.NUM_CLASSES))]
            p = _pose(rng, other, cond, 0.55, centre=rng.uniform(0.1, 0.9, 2))
            _draw_object(img, rng, other, p, style, _class_palette(other))
    if style == "pattern":  # small copies of the object on a grid, like a printed fabric
        k = int(rng.integers(2, 4))
        for i in range(k):
            for j in range(k):
                centre = ((i + 0.5) / k, (j + 0.5) / k)
                p = _Pose(*centre, radius=0.42 / k, angle=np.deg2rad(rng.uniform(-15, 15)))
                _draw_object(img, rng, f, p, style, palette)
    else:
        if others:
            centres = [(0.3, 0.5 + rng.uniform(-0.1, 0.1)), (0.7, 0.5 + rng.uniform(-0.1, 0.1))]
            _draw_object(img, rng, f, _pose(rng, f, cond, 0.7, centres[0]), style, palette)
            for o in others:
                _draw_object(
                    img, rng, o, _pose(rng, o, cond, 0.7, centres[1]), style, _class_palette(o)
                )
        else:
            _draw_object(img, rng, f, _pose(rng, f, cond), style, palette)
    if rng.random() < cond.occlude:
        x0, y0 = rng.integers(_N // 5, _N // 2, 2)
        w, h = rng.integers(_N // 6, _N // 3, 2)
        img[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0.2, 0.8, 3)

    if style == "drawing":
        img = img.mean(axis=2, keepdims=True).repeat(3, axis=2)
    if style in ("cartoon", "pattern"):
        img = np.round(img * 4) / 4
    img = np.clip(img * rng.uniform(*cond.light), 0, 1)
    out = Image.fromarray((img * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.Resampling.BOX)
    radius = rng.uniform(0, cond.blur) + (0.8 if style == "painting" else 0.0)
    if radius > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    channels = 1 if style == "drawing" else 3  # pencil on paper stays grey
    arr = np.asarray(out, np.float32) / 255 + rng.normal(0, cond.noise, (SIZE, SIZE, channels))
    return (np.clip(arr, 0, 1) * 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str, rng, cond: Conditions) -> bytes:
    out = io.BytesIO()
    if fmt == "png":
        Image.fromarray(arr).save(out, format="PNG")
    else:
        Image.fromarray(arr).save(out, format="JPEG", quality=int(rng.integers(*cond.quality)))
    return out.getvalue()
