"""Paths to the reference data (class lists, label sets, maps) shipped in `janus.vendored`.

Set JANUS_REFERENCE_DIR to read them from another folder instead.
"""

import functools
import json
import os
import pathlib

from janus import vendored


def reference_path(name: str) -> pathlib.Path:
    override = os.environ.get("JANUS_REFERENCE_DIR")
    path = pathlib.Path(override, name) if override else vendored.path("reference", name)
    if not path.exists():
        where = "JANUS_REFERENCE_DIR names it" if override else "janus' install lacks its data"
        raise FileNotFoundError(f"reference file {path} not found; {where}")
    return path


@functools.cache
def load_json(name: str):
    with open(reference_path(name)) as f:
        return json.load(f)
