"""Label sets and ImageNet-1k class metadata, read from the vendored reference data.

Records always store ImageNet-1k indices (0..999, the sorted-wnid order). A label set is metadata
applied at train and eval time: a sorted array of those indices (`resolve_label_set`), or a boolean
mask over the 1000 classes (`class_mask`). Nothing here is written from memory: every list comes
from `janus/vendored/reference/` through `janus.data.reference.load_json`.

Random nested label sets, `random:K:SEED` or `random:K:SEED:BASE` (BASE a named set, default
in1000), hold the K classes of BASE with the best priority, a hash of (SEED, wnid). The ranking of
a class does not depend on K, so for one SEED and BASE the set of K classes is a subset of the set
of any larger K (the label-set-size ablation compares nested sets).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib

import numpy as np

from janus.data.budget import priorities
from janus.data.reference import load_json

NUM_CLASSES = 1000

_SUBSETS = "imagenet_label_subsets.json"
_JANUS_SETS = "janus_label_sets.json"
_CLIP = "clip_zeroshot_protocol.json"
_SYNONYMS = "imagenet1k_synonyms.json"
_OPENIMAGES = "openimages_to_imagenet1k.json"

LABEL_SET_NAMES: tuple[str, ...] = (
    "in1000",
    "in100",
    "in100_dogs",
    *(f"in100_rand_{i:02d}" for i in range(1, 10)),
    "mini10",
    "mini25",
)


def _janus_set(name: str) -> list[int]:
    return load_json(_JANUS_SETS)[name]


def _named_set(name: str) -> list[int]:
    if name == "in1000":
        return list(range(NUM_CLASSES))
    if name == "mini10":
        # The synthetic JANuS-mini dataset uses the first 10 classes of the JANuS IN100 list.
        return _janus_set("in100")[:10]
    if name == "mini25":
        # JANuS-mini v2: the IN100 classes that ImageNet-R and ImageNet-A both hold (25), so the
        # evaluator's R/A restriction keeps all of them (36/37 of IN100 on real data).
        both = set(shift_set_classes("r").tolist()) & set(shift_set_classes("a").tolist())
        return [c for c in _janus_set("in100") if c in both]
    return _janus_set(name)


RANDOM_PREFIX = "random:"


def _random_set(spec: str) -> list[int]:
    """`random:K:SEED[:BASE]` (module docstring): K classes of BASE ranked by hash(SEED, wnid)."""
    parts = spec[len(RANDOM_PREFIX) :].split(":")
    usage = f"label set {spec!r}: expected random:K:SEED or random:K:SEED:BASE"
    if len(parts) not in (2, 3):
        raise ValueError(usage)
    try:
        k, seed = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"{usage}, with integers K and SEED") from None
    base_name = parts[2] if len(parts) == 3 else "in1000"
    if base_name not in LABEL_SET_NAMES:
        raise ValueError(f"{usage}; BASE {base_name!r} is not one of {', '.join(LABEL_SET_NAMES)}")
    base = np.asarray(_named_set(base_name), dtype=np.int64)
    if not 1 <= k <= base.size:
        raise ValueError(f"label set {spec!r}: K={k} must be in [1, {base.size}] ({base_name})")
    wnids = imagenet_wnids()
    prio = priorities([wnids[c] for c in base.tolist()], seed)
    return sorted(base[np.argsort(prio, kind="stable")[:k]].tolist())


def _read_index_file(path: pathlib.Path) -> list[int]:
    text = path.read_text()
    stripped = text.strip()
    if stripped.startswith("["):
        values = json.loads(stripped)
    else:
        values = [line.split("#")[0].strip() for line in text.splitlines()]
        values = [v for v in values if v]
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ValueError(f"label set file {path}: entries must be integers ({e})") from None


def _validate(indices: list[int], what: str) -> np.ndarray:
    arr = np.asarray(sorted(set(indices)), dtype=np.int64)
    if arr.size == 0:
        raise ValueError(f"label set {what} is empty")
    if arr.size != len(indices):
        raise ValueError(f"label set {what} has duplicate indices")
    bad = arr[(arr < 0) | (arr >= NUM_CLASSES)]
    if bad.size:
        raise ValueError(
            f"label set {what}: indices outside [0, {NUM_CLASSES}): {bad[:10].tolist()}"
        )
    return arr


@functools.cache
def _resolve_cached(name_or_path: str) -> np.ndarray:
    if name_or_path in LABEL_SET_NAMES:
        arr = _validate(_named_set(name_or_path), repr(name_or_path))
    elif name_or_path.startswith(RANDOM_PREFIX):
        arr = _validate(_random_set(name_or_path), repr(name_or_path))
    else:
        path = pathlib.Path(os.path.expanduser(name_or_path))
        if not path.is_file():
            raise ValueError(
                f"unknown label set {name_or_path!r}: not one of {', '.join(LABEL_SET_NAMES)}, "
                "not random:K:SEED[:BASE] and not a file of indices "
                "(JSON list or one index per line)"
            )
        arr = _validate(_read_index_file(path), str(path))
    arr.setflags(write=False)
    return arr


def resolve_label_set(label_set) -> np.ndarray:
    """Sorted int64 ImageNet-1k indices of a label set: a name, a file of indices, a sequence of
    indices or a boolean mask over the 1000 classes (`class_mask`)."""
    if isinstance(label_set, str | os.PathLike):
        return _resolve_cached(os.fspath(label_set)).copy()
    arr = np.asarray(label_set)
    if arr.dtype == bool:
        if arr.shape != (NUM_CLASSES,):
            raise ValueError(f"label set mask has shape {arr.shape}, expected ({NUM_CLASSES},)")
        arr = np.flatnonzero(arr)
    return _validate(arr.ravel().tolist(), "given as indices")


def class_mask(label_set_indices, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Boolean mask [num_classes], True for classes in the label set."""
    idx = np.asarray(label_set_indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ValueError(f"label set indices outside [0, {num_classes})")
    mask = np.zeros(num_classes, dtype=bool)
    mask[idx] = True
    return mask


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in sorted order (index = class id)."""
    return list(load_json(_SUBSETS)["imagenet_1k_wnids_sorted"])


@functools.cache
def wnid_to_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def synonyms() -> list[list[str]]:
    """WordNet lemma synonyms of every class, index -> list of names."""
    table = load_json(_SYNONYMS)["synonyms"]
    return [list(table[str(i)]) for i in range(NUM_CLASSES)]


def class_names(kind: str = "clip") -> list[str]:
    """1000 names: `clip` (cleaned CLIP names), `wordnet` (first lemma) or a file of 1000 lines."""
    if kind == "clip":
        return list(load_json(_CLIP)["imagenet_1k_classnames"])
    if kind == "wordnet":
        return [s[0] for s in synonyms()]
    path = pathlib.Path(os.path.expanduser(str(kind)))
    if not path.is_file():
        raise ValueError(f"class names {kind!r}: not 'clip', 'wordnet' or an existing file")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != NUM_CLASSES:
        raise ValueError(f"class names file {path}: {len(names)} names, expected {NUM_CLASSES}")
    return names


def shift_set_classes(name: str) -> np.ndarray:
    """ImageNet-1k indices covered by a shift set: `r`, `a` (200 each), `objectnet` (125)."""
    subsets = load_json(_SUBSETS)
    if name == "r":
        return np.asarray(sorted(subsets["imagenet_r_200_idx"]), dtype=np.int64)
    if name == "a":
        return np.asarray(sorted(subsets["imagenet_a_200_idx"]), dtype=np.int64)
    if name == "objectnet":
        idx = {i for v in subsets["objectnet_folder_to_imagenet_idx"].values() for i in v}
        return np.asarray(sorted(idx), dtype=np.int64)
    raise ValueError(f"unknown shift set {name!r}: expected one of r, a, objectnet")


def objectnet_folder_map() -> dict[str, list[int]]:
    """ObjectNet folder name -> ImageNet-1k indices (113 folders)."""
    table = load_json(_SUBSETS)["objectnet_folder_to_imagenet_idx"]
    return {k: list(v) for k, v in table.items()}


def openimages_map() -> dict[str, int]:
    """OpenImages label MID (e.g. '/m/01wb7') -> ImageNet-1k index."""
    return dict(load_json(_OPENIMAGES)["mapping"])


def zeroshot_templates(kind: str = "openai80") -> list[str]:
    """Prompt templates (`{}` = class name): `openai80`, `openai7` or `single`."""
    if kind == "openai80":
        return list(load_json(_CLIP)["openai_imagenet_templates"])
    if kind == "openai7":
        return list(load_json(_CLIP)["simple_imagenet_templates"])
    if kind == "single":
        return ["a photo of a {}."]
    raise ValueError(f"unknown template set {kind!r}: expected openai80, openai7 or single")


SHIFT_SETS_WITH_SUBSETS = ("r", "a", "objectnet")


def describe(label_set: str) -> dict:
    """A label set's size and its intersection with each partial shift set (R, A, ObjectNet): the
    class counts the evaluator restricts those sets to under the ImageNet protocol."""
    classes = resolve_label_set(label_set)
    out = {"label_set": str(label_set), "classes": int(classes.size)}
    for name in SHIFT_SETS_WITH_SUBSETS:
        out[name] = int(np.intersect1d(classes, shift_set_classes(name)).size)
    return out


def main(argv=None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="python -m janus.data.labelsets",
        description="Print label sets' sizes and their intersections with ImageNet-R, -A and "
        "ObjectNet (one JSON line each).",
    )
    p.add_argument("label_sets", nargs="+", help="names, random:K:SEED[:BASE] or index files")
    p.add_argument("--indices", action="store_true", help="also print the sorted class indices")
    args = p.parse_args(argv)
    for name in args.label_sets:
        try:
            row = describe(name)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.indices:
            row["indices"] = resolve_label_set(name).tolist()
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
