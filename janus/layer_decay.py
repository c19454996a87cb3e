"""Layer-wise learning-rate decay (`optimizer.layer_decay`), as BEiT and timm's
`param_groups_layer_decay` do it for fine-tuning a ViT.

A tower of L depth-ordered blocks has L + 2 layers: layer 0 is the input side (patch embedding,
class and distillation tokens, position embedding, CLIP's `ln_pre`), layer i + 1 is block i, and
layer L + 1 is everything after the blocks (final norm, projection, head, any other tower). A
parameter of layer l has its updates multiplied by `layer_decay ** (L + 1 - l)`: the head trains at
the full learning rate, each block below it at `layer_decay` times the one above. Scaling the
updates after the optimizer is timm's per-group learning rate for AdamW, SGD and LAMB alike (their
weight decay is scaled by the group's lr too). Scanned blocks (`scan_layers`, params stacked under
`encoder/blocks` with a leading depth axis) get one multiplier per row.

Only the ViT family (`vit_*`, `deit_*`, `clip_vit_*`) has its layers numbered here; another
`model.name` with `layer_decay` < 1 is a config error naming it.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from janus.config.errors import ConfigError

MODELS = ("vit_", "deit_", "clip_vit_")
_INPUT = re.compile(r"^image_tower/(patch_embed|cls|dist|pos_embed|ln_pre)(/|$)")
_BLOCK = re.compile(r"^image_tower/encoder/block_(\d+)/")
_SCANNED = re.compile(r"^image_tower/encoder/blocks/")


def check_model(model: str, layer_decay: float) -> None:
    """A one-line error when `layer_decay` is on for a model whose layers are not numbered."""
    if layer_decay != 1 and not model.startswith(MODELS):
        raise ConfigError(
            f"config field 'optimizer.layer_decay' = {layer_decay!r} needs a tower with "
            f"depth-ordered blocks: model.name = {model!r} is not one of "
            f"{', '.join(m + '*' for m in MODELS)}; set optimizer.layer_decay=1"
        )


def _path(path) -> str:
    """'a/b/c', as janus.optim.param_path (not imported: janus.optim imports this module)."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def num_blocks(params) -> int:
    """L: the image tower's block count, from the parameter paths (or the scanned leading axis)."""
    ids = set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        p = _path(path)
        if m := _BLOCK.search(p):
            ids.add(int(m.group(1)))
        elif _SCANNED.search(p):
            ids.update(range(np.shape(leaf)[0]))
    if not ids:
        raise ValueError("optimizer.layer_decay: no image_tower/encoder blocks in the parameters")
    return max(ids) + 1


def layer_ids(params):
    """Pytree like `params`: each leaf's layer id (an int; an int array of one per row for a
    scanned block stack)."""
    top = num_blocks(params) + 1

    def one(path, leaf):
        p = _path(path)
        if _INPUT.search(p):
            return 0
        if m := _BLOCK.search(p):
            return int(m.group(1)) + 1
        if _SCANNED.search(p):
            return np.arange(1, np.shape(leaf)[0] + 1)
        return top

    return jax.tree_util.tree_map_with_path(one, params)


def layer_scales(params, layer_decay: float):
    """Pytree like `params`: the update multiplier `layer_decay ** (L + 1 - layer id)` of each
    leaf (a float; a float32 array shaped to broadcast over a scanned leaf's rows)."""
    top = num_blocks(params) + 1

    def scale(ids, leaf):
        if isinstance(ids, np.ndarray):
            s = np.asarray(layer_decay, np.float64) ** (top - ids)
            return s.astype(np.float32).reshape((-1,) + (1,) * (np.ndim(leaf) - 1))
        return float(layer_decay) ** (top - ids)

    return jax.tree.map(scale, layer_ids(params), params)


def scale_by_layer(layer_decay: float) -> optax.GradientTransformation:
    """Multiplies each update by its `layer_scales` (no state)."""

    def update(updates, state, params=None):
        del params
        scales = layer_scales(updates, layer_decay)
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def describe(params, layer_decay: float) -> str:
    """The console line of the multipliers: the range, layer by layer."""
    top = num_blocks(params) + 1
    lowest = float(layer_decay) ** top
    return (
        f"layer decay {layer_decay:g}: {top + 1} layers (input, {top - 1} blocks, head); "
        f"update multipliers from {lowest:.4g} (patch embedding) to 1 (head)"
    )
