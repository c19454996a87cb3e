"""What a converter returns, and the shape check against the janus tower it targets.

Converters produce tower-level variables (the tower's own ``params``/``batch_stats`` trees) plus the
parts that live outside the tower: a classifier ``head`` (CE models) or the CLIP text tower,
projections and logit scale. `janus.convert.assemble` places them into the wrapper model's variable
layout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass
class Converted:
    """``name``: janus registry name of the image tower; ``tower_kwargs``: extra constructor args
    (recorded in the checkpoint's config so the evaluator rebuilds the same module); ``tower``:
    tower variables ``{"params": ..., "batch_stats"?: ...}``; ``head``: Dense ``{"kernel" [F, C],
    "bias" [C]}`` or None; ``aux_head``: the token-labelling head of VOLO classifiers, or None;
    ``loss``: "ce" | "infonce"; ``clip``: for CLIP models ``{"text": text
    params, "text_kwargs": dict, "logit_scale": float (log scale, as stored by open_clip)}``."""

    name: str
    loss: str
    tower: dict
    tower_kwargs: dict = dataclasses.field(default_factory=dict)
    head: dict | None = None
    aux_head: dict | None = None
    clip: dict | None = None
    image_size: int = 224  # the resolution the position embeddings were trained at


def _paths(tree) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p, simple=True, separator="/"): v for p, v in flat}


def check_tree_shapes(got, expected, what: str) -> None:
    """Raise ValueError naming every path whose presence or shape differs between two pytrees."""
    g, e = _paths(got), _paths(expected)
    problems = [f"missing {k} {tuple(e[k].shape)}" for k in sorted(set(e) - set(g))]
    problems += [f"unexpected {k} {tuple(g[k].shape)}" for k in sorted(set(g) - set(e))]
    problems += [
        f"{k}: converted {tuple(g[k].shape)} != janus {tuple(e[k].shape)}"
        for k in sorted(set(g) & set(e))
        if tuple(np.shape(g[k])) != tuple(e[k].shape)
    ]
    if problems:
        raise ValueError(
            f"{what}: converted weights do not fit the janus module: " + "; ".join(problems[:20])
        )
