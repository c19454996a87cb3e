"""janus.convert: import public PyTorch weights (torchvision, timm, open_clip) as janus checkpoints.

`convert_file(family, path, **options) -> Converted`; `janus.convert.assemble.save` writes it as a
checkpoint; ``python -m janus.convert`` does both. One module per source family; `loading` reads
state dicts safely (never unpickling arbitrary objects) and reports missing/unexpected keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from janus.convert.common import Converted
from janus.convert.loading import KeyMismatchError, load_state_dict


def _torchvision(sd: Mapping[str, np.ndarray], source: str, **_) -> Converted:
    from janus.convert.torchvision import convert

    return convert(sd, source)


def _timm(sd, source, *, num_heads=None, scan_layers=False, **_) -> Converted:
    from janus.convert.timm import convert

    return convert(sd, source, num_heads=num_heads, scan_layers=scan_layers)


def _open_clip(sd, source, *, activation="quick_gelu", scan_layers=False, **_) -> Converted:
    from janus.convert.open_clip import convert

    return convert(sd, source, activation=activation, scan_layers=scan_layers)


FAMILIES: dict[str, Callable[..., Converted]] = {
    "torchvision": _torchvision,
    "timm": _timm,
    "open_clip": _open_clip,
}


def convert_state_dict(family: str, state_dict: Mapping[str, np.ndarray], source: str = "", **kw):
    if family not in FAMILIES:
        raise ValueError(f"unknown weights family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family](state_dict, source or family, **kw)


def convert_file(family: str, path, **kw) -> Converted:
    return convert_state_dict(family, load_state_dict(path), str(path), **kw)


__all__ = ["FAMILIES", "Converted", "KeyMismatchError", "convert_file", "convert_state_dict"]
