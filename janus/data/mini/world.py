"""The JANuS-mini v2 world: 25 classes, each a composition of six visual factors.

The classes are the `mini25` label set: the JANuS IN100 classes that ImageNet-R and ImageNet-A both
contain (janus.data.labelsets), so the evaluator's R/A restriction keeps every class and ObjectNet
keeps the 4 that its folders map to, as on real data.

Class i = 5a + b (a, b in 0..4) takes its factors from the six lines of the affine plane of order
5 through the point (a, b): shape = a, palette = b, texture = a+b, parts = a+2b, context = a+3b,
size = a+4b (mod 5). Two distinct classes then share EXACTLY one factor value, so every single
cue (colour, shape, texture, background, ...) is shared by five classes and none solves the task
alone; any two cues identify the class. Instances vary (`instance`): palette, texture and parts
are sometimes atypical. Which cue survives which shift is a property of the shift
(janus.data.mini.render), not of the class. The factors are named in words so that captions can
describe them: language then carries information that labels do not.
"""

from __future__ import annotations

import dataclasses
import functools

from janus.data import labelsets

LABEL_SET = "mini25"
NUM_CLASSES = 25

SHAPES = ("oval", "star", "triangle", "cross", "crescent")
# (word, primary RGB, secondary RGB); words chosen so that none of them is an ImageNet class name.
PALETTES = (
    ("red and yellow", (0.85, 0.15, 0.12), (0.98, 0.85, 0.2)),
    ("blue and white", (0.15, 0.3, 0.85), (0.95, 0.95, 0.95)),
    ("green and brown", (0.2, 0.65, 0.25), (0.5, 0.32, 0.15)),
    ("purple and pink", (0.5, 0.2, 0.7), (0.98, 0.6, 0.75)),
    ("black and grey", (0.12, 0.12, 0.12), (0.62, 0.62, 0.62)),
)
TEXTURES = ("plain", "striped", "spotted", "checkered", "ringed")
PARTS = ("no parts", "legs", "ears", "a tail", "spikes")
CONTEXTS = ("water", "grass", "sky", "sand", "room")
SIZES = (0.26, 0.29, 0.32, 0.35, 0.38)  # object radius as a fraction of the image side
SIZE_WORDS = ("tiny", "small", "medium", "big", "large")


@dataclasses.dataclass(frozen=True)
class ClassFactors:
    index: int  # position in the label set (0..24)
    imagenet: int  # ImageNet-1k index
    shape: int
    palette: int
    texture: int
    parts: int
    context: int
    size: int


@functools.cache
def label_set() -> tuple[int, ...]:
    return tuple(int(c) for c in labelsets.resolve_label_set(LABEL_SET))


@functools.cache
def classes() -> tuple[ClassFactors, ...]:
    out = []
    for i, imagenet in enumerate(label_set()):
        a, b = divmod(i, 5)
        out.append(
            ClassFactors(
                i,
                imagenet,
                shape=a,
                palette=b,
                texture=(a + b) % 5,
                parts=(a + 2 * b) % 5,
                context=(a + 3 * b) % 5,
                size=(a + 4 * b) % 5,
            )
        )
    return tuple(out)


ATYPICAL = 0.25  # P(an instance shows another value of one of its varying factors)
VARYING = ("palette", "texture", "parts")


def instance(f: ClassFactors, rng) -> ClassFactors:
    """One instance of a class: each varying factor takes another value with P = ATYPICAL (real
    categories vary: a mitten is not always red). Shape, context and size stay the class's."""
    changes = {k: int(rng.integers(5)) for k in VARYING if rng.random() < ATYPICAL}
    return dataclasses.replace(f, **changes)


def describe(f: ClassFactors) -> dict[str, str]:
    """The factors of a class in words (what captions may say about it)."""
    return {
        "shape": SHAPES[f.shape],
        "palette": PALETTES[f.palette][0],
        "texture": TEXTURES[f.texture],
        "parts": PARTS[f.parts],
        "context": CONTEXTS[f.context],
        "size": SIZE_WORDS[f.size],
    }
