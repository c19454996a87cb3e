"""Paths to the vendored reference data (third_party/reference): class lists, label sets, maps.

Set JANUS_REFERENCE_DIR to read them from elsewhere (e.g. a non-editable install).
"""

import functools
import json
import os
import pathlib

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "third_party" / "reference"


def reference_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("JANUS_REFERENCE_DIR", _DEFAULT))


def reference_path(name: str) -> pathlib.Path:
    path = reference_dir() / name
    if not path.exists():
        raise FileNotFoundError(
            f"reference file {path} not found; set JANUS_REFERENCE_DIR to the folder holding "
            "janus' vendored reference data (third_party/reference in a checkout)"
        )
    return path


@functools.cache
def load_json(name: str):
    with open(reference_path(name)) as f:
        return json.load(f)
