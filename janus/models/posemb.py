"""Resize learned position embeddings to another image resolution.

A ViT's ``pos_embed`` ([prefix + gh*gw, D]) and the CLIP ResNet attention pool's ``pos_embed``
([1 + gh*gw, C]) are tied to the grid of the image size they were created at. Loading weights at
another resolution keeps the prefix rows (class / mean token) and interpolates the grid rows, as
timm's ``resample_abs_pos_embed`` and open_clip's ``resize_pos_embed`` do. Grids are square (the
towers are trained and evaluated on square crops).

``method="bilinear"`` (the default) equals torch's ``F.interpolate(mode="bilinear",
align_corners=False)`` when upsampling; downsampling is antialiased (``jax.image.resize``).
``"bicubic"`` uses Keys' a=-0.5 kernel, so it differs slightly from torch's a=-0.75 bicubic.
"""

from __future__ import annotations

import math

import jax
import numpy as np

METHODS = {"bilinear": "linear", "bicubic": "cubic"}
POSEMB_NAME = "pos_embed"


def split_prefix(num_rows: int) -> tuple[int, int]:
    """-> (prefix tokens, grid side) of a [prefix + side**2, D] embedding: prefix 0, 1 (class
    token) or 2 (DeiT's class and distillation tokens). Unambiguous: no two positive squares differ
    by 1 or 2."""
    for prefix in (2, 1, 0):
        side = math.isqrt(num_rows - prefix)
        if side > 0 and side * side == num_rows - prefix:
            return prefix, side
    raise ValueError(f"{num_rows} position rows are not a square grid plus 0, 1 or 2 prefix tokens")


def resize_posemb(
    posemb: np.ndarray, new_side: int, num_prefix: int, method: str = "bilinear"
) -> np.ndarray:
    """[num_prefix + s*s, D] -> [num_prefix + new_side**2, D]; prefix rows are kept as they are."""
    if method not in METHODS:
        raise ValueError(f"unknown resize method {method!r}; known: {sorted(METHODS)}")
    posemb = np.asarray(posemb, np.float32)
    prefix, grid = posemb[:num_prefix], posemb[num_prefix:]
    side = math.isqrt(grid.shape[0])
    if side * side != grid.shape[0]:
        raise ValueError(f"position embedding grid of {grid.shape[0]} rows is not square")
    if side == new_side:
        return posemb
    width = grid.shape[1]
    grid = jax.image.resize(
        grid.reshape(side, side, width), (new_side, new_side, width), METHODS[method]
    )
    return np.concatenate([prefix, np.asarray(grid).reshape(-1, width)], axis=0)


def resize_posembs(params: dict, template: dict, method: str = "bilinear") -> dict:
    """Resize every ``pos_embed`` leaf of ``params`` whose row count differs from ``template``
    (the same tree, e.g. ``jax.eval_shape`` of the module initialised at the new image size)."""

    def one(path, x, want):
        if getattr(path[-1], "key", None) != POSEMB_NAME or np.shape(x) == tuple(want.shape):
            return x
        prefix, _ = split_prefix(np.shape(x)[0])
        new_side = math.isqrt(want.shape[0] - prefix)
        if new_side * new_side != want.shape[0] - prefix:
            raise ValueError(
                f"{jax.tree_util.keystr(path)}: {np.shape(x)[0]} rows ({prefix} prefix) cannot "
                f"become {want.shape[0]}: not a square grid"
            )
        return resize_posemb(x, new_side, prefix, method)

    return jax.tree_util.tree_map_with_path(one, params, template)
