"""Captions of JANuS-mini v2's web sources: alt-text (LAION-like) and title + description
(YFCC-like), with the noise real web text has.

A caption names its class by one of the class's names (CLIP's name or a WordNet synonym, from the
vendored reference), sometimes in the plural, and describes some of the drawn factors in words
(texture, palette, parts, setting, size, style). `Noise` sets how often a caption names no class,
two classes, or the wrong class; URLs, HTML and filler words are mixed in. Which labels come out
is decided by janus.data.ingest.matching in the builder, exactly as for real captions.
"""

from __future__ import annotations

import dataclasses
import functools

from janus.data import labelsets
from janus.data.mini import world


@dataclasses.dataclass(frozen=True)
class Noise:
    no_class: float = 0.15  # the caption names no class at all
    two_classes: float = 0.05  # it also names a second class
    wrong_class: float = 0.03  # it names another class instead of the drawn one
    url: float = 0.15
    html: float = 0.1
    plural: float = 0.25


STYLE_WORDS = {
    "photo": ("", "photo of", "picture of", "close-up of"),
    "drawing": ("drawing of", "pencil sketch of", "line art of"),
    "cartoon": ("cartoon", "clipart", "vector illustration of"),
    "painting": ("painting of", "watercolor of", "artwork:"),
    "pattern": ("seamless pattern with", "fabric print of", "wallpaper with"),
}
FILLER = ("stock", "free download", "hd", "best", "cute", "new", "vintage", "amazing", "buy now")
NO_CLASS = ("IMG_{n}", "untitled {n}", "image {n}", "DSC{n}", "product {n}", "my photos {n}")


@functools.cache
def class_names() -> dict[int, tuple[str, ...]]:
    """ImageNet index -> the names a caption may use (CLIP's first, then WordNet's)."""
    clip, syn = labelsets.class_names("clip"), labelsets.synonyms()
    out = {}
    for c in world.label_set():
        # Capitalised synonyms are Latin taxa and proper names ("Panthera leo"): not alt-text.
        names = [clip[c]] + [s for s in syn[c] if not s[:1].isupper()]
        out[c] = tuple(dict.fromkeys(n.lower() for n in names))
    return out


def plural(name: str) -> str:
    head, _, last = name.rpartition(" ")
    if last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def _name(rng, imagenet: int, noise: Noise) -> str:
    names = class_names()[imagenet]
    name = names[0] if rng.random() < 0.6 else names[int(rng.integers(len(names)))]
    return plural(name) if rng.random() < noise.plural else name


def _other_class(rng, f: world.ClassFactors) -> int:
    others = [c for c in world.label_set() if c != f.imagenet]
    return others[int(rng.integers(len(others)))]


def _subject(rng, f: world.ClassFactors, noise: Noise) -> str:
    """The words naming what is drawn, with the noise applied."""
    u = rng.random()
    if u < noise.no_class:
        return ""
    if u < noise.no_class + noise.wrong_class:
        return _name(rng, _other_class(rng, f), noise)
    name = _name(rng, f.imagenet, noise)
    if u < noise.no_class + noise.wrong_class + noise.two_classes:
        name = f"{name} and {_name(rng, _other_class(rng, f), noise)}"
    return name


def _factor_words(rng, f: world.ClassFactors, style: str, p: float) -> dict[str, str]:
    """A random subset of the drawn factors, in words (colours only where the style keeps them)."""
    words = world.describe(f)
    if style in ("drawing", "cartoon", "painting"):
        words.pop("palette")
    if style in ("drawing", "cartoon", "pattern"):
        words.pop("context")
    if words["parts"] == "no parts":
        words.pop("parts")
    return {k: v for k, v in words.items() if rng.random() < p}


def alt_text(rng, f: world.ClassFactors, style: str, noise: Noise) -> str:
    """A LAION-like alt-text for an image of class `f` drawn in `style`."""
    subject = _subject(rng, f, noise)
    w = _factor_words(rng, f, style, 0.45)
    style_words = STYLE_WORDS[style]
    lead = style_words[int(rng.integers(len(style_words)))] if rng.random() < 0.6 else ""
    adjectives = " ".join(w[k] for k in ("size", "texture", "palette") if k in w)
    noun = subject or ("thing" if rng.random() < 0.5 else "design")
    text = " ".join(x for x in (lead, adjectives, noun) if x)
    if "parts" in w:
        text += f" with {w['parts']}"
    if "context" in w:
        text += f" in the {w['context']}"
    if not subject and rng.random() < 0.5:
        text = NO_CLASS[int(rng.integers(len(NO_CLASS)))].format(n=int(rng.integers(100, 9999)))
    if rng.random() < 0.3:
        text = f"{FILLER[int(rng.integers(len(FILLER)))]} {text}"
    if rng.random() < noise.html:
        text = f"<b>{text}</b> &amp; more"
    if rng.random() < noise.url:
        text += f" https://img.example.com/{int(rng.integers(10**6, 10**7))}.jpg"
    return text


def title_description(rng, f: world.ClassFactors, style: str, noise: Noise) -> tuple[str, str]:
    """A YFCC-like (title, description) pair: camera file names, trips, first-person text."""
    subject = _subject(rng, f, noise)
    w = _factor_words(rng, f, style, 0.35)
    if not subject or rng.random() < 0.35:
        title = f"DSC_{int(rng.integers(1000, 9999))}" if rng.random() < 0.6 else "holiday 2009"
    else:
        title = subject
    trips = ("at the zoo", "on our trip", "in the garden", "last weekend", "near home")
    desc = ""
    if subject and title != subject:
        look = " ".join(w[k] for k in ("texture", "palette") if k in w)
        desc = f"saw this {look} {subject} {trips[int(rng.integers(len(trips)))]}".replace(
            "  ", " "
        )
    elif w:
        desc = "look at the " + " and ".join(f"{v}" for k, v in w.items() if k != "size")
    if rng.random() < noise.url / 2:
        desc += " more on www.example.org/photos"
    return title, desc.strip()
