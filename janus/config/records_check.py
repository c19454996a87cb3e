"""Do the run's records fit it: `data.train`'s dirs exist and are records (else the builder command
for a folder of images), their weights are positive, and their label set holds the run's
(`info.json` read and named when it cannot be). Part of `janus.config.validate`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from janus.config.errors import ConfigError
from janus.config.resolve import train_dirs


def check_train_dirs(d: Mapping) -> None:
    """Every `data.train` dir of config `d`, checked before anything is built or compiled."""
    for i, (path, weight) in enumerate(train_dirs(d)):
        where = f"data.train[{i}]" if len(train_dirs(d)) > 1 else "data.train"
        if not os.path.isdir(path):
            raise ConfigError(
                f"config field {where!r}: data directory {path!r} does not exist "
                "(build it with `python -m janus.data.build ...`)"
            )
        if not os.path.exists(os.path.join(path, "info.json")):
            raise ConfigError(
                f"config field {where!r}: {path!r} has no info.json; not a records directory"
                + _builder_hint(path, d.get("label_set"))
            )
        if weight <= 0:
            raise ConfigError(f"config field {where!r}: weight {weight} must be > 0")
        check_records_label_set(where, path, d.get("label_set"))


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _has_images(directory: str, depth: int = 3) -> bool:
    """Whether `directory` holds image files within `depth` levels (looks at a few entries)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)[:200]
    except OSError:
        return False
    for e in entries:
        if e.is_file() and e.name.lower().endswith(_IMAGE_SUFFIXES):
            return True
    return depth > 1 and any(
        _has_images(e.path, depth - 1) for e in entries[:20] if e.is_dir(follow_symlinks=False)
    )


def builder_command(path: str, label_set) -> str:
    """The `janus.data.build` command for a folder of images at `path`, guessed: class folders
    under `path` (then `path` is the split: `path=PARENT,split=NAME`), or split folders
    (`train/`, ...) holding the class folders (`path=PATH,split=train`)."""
    path = os.path.normpath(path)
    sub = [e.name for e in os.scandir(path) if e.is_dir()] if os.path.isdir(path) else []
    if "train" in sub:
        parent, split = path, "train"
    else:
        parent, split = os.path.dirname(path) or ".", os.path.basename(path)
    name = os.path.basename(parent) or "images"
    return (
        f"python -m janus.data.build --out {path}_records --label-set {label_set or 'in1000'} "
        f"--source kind=folder,name={name},path={parent},split={split}"
    )


def _builder_hint(path: str, label_set) -> str:
    if not _has_images(path):
        return ""
    return (
        f"; it holds images: build records from them first, e.g. "
        f"`{builder_command(path, label_set)}`, then set data.train to the --out directory "
        "(docs/data.md)"
    )


def check_records_label_set(where: str, path: str, label_set) -> None:
    """The records' info.json is read (an unreadable one is an error naming it), and the run's
    label set must be the records' or a subset of it: records built for a label set hold only
    its classes, so another set would silently train on the classes the two share."""
    import json

    info_path = os.path.join(path, "info.json")
    try:
        with open(info_path) as f:
            info = json.load(f)
        if not isinstance(info, dict):
            raise ValueError(f"expected a JSON object, found {type(info).__name__}")
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"config field {where!r}: {info_path} cannot be read ({e}); rebuild the records or "
            "restore the file"
        ) from None
    built_for = info.get("label_set")
    if label_set is None or built_for is None or built_for == label_set:
        return
    from janus.data import labelsets

    try:
        records_set = set(labelsets.resolve_label_set(built_for).tolist())
    except ValueError as e:
        raise ConfigError(
            f"config field {where!r}: {info_path} names label set {built_for!r}, which does not "
            f"resolve ({e})"
        ) from None
    try:
        run_set = labelsets.resolve_label_set(label_set).tolist()
    except (ValueError, OSError):
        return  # reported as the label_set field's error
    shared = [c for c in run_set if c in records_set]
    if len(shared) == len(run_set):
        return
    per_class = {}
    builds = info.get("build") if isinstance(info.get("build"), dict) else {}
    if "train" in builds:  # the split a run trains on
        builds = {"train": builds["train"]}
    for build in builds.values():
        for c, n in ((build or {}).get("per_class") or {}).items():
            per_class[c] = per_class.get(c, 0) + int(n)
    kept = ""
    if per_class:
        total = sum(per_class.values())
        keeps = sum(per_class.get(str(c), 0) for c in shared)
        kept = f"; it would keep {keeps} of the records' {total} samples"
    raise ConfigError(
        f"config field 'label_set' = {label_set!r}: {where} {path!r} was built for label set "
        f"{built_for!r} ({info_path}), which holds {len(shared)} of the run's {len(run_set)} "
        f"classes{kept}. Use --config.label_set={built_for} (or a subset of it), or build "
        f"records for {label_set!r}"
    )
