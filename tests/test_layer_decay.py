"""Layer-wise lr decay (optimizer.layer_decay): the multipliers of a 2-block ViT against a table
computed by hand, the updates they give, and layer_decay = 1 leaving the optimizer as it was."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_optim import _opt

from janus import config as config_lib
from janus import layer_decay, optim
from janus.models import create_model, init_variables

# A 2-block ViT (L = 2) with layer_decay 0.5: layer 0 = input side, 1 and 2 = blocks, 3 = the rest;
# multiplier 0.5 ** (3 - layer).
TABLE = {
    "image_tower/patch_embed/": 0.125,
    "image_tower/cls": 0.125,
    "image_tower/pos_embed": 0.125,
    "image_tower/encoder/block_0/": 0.25,
    "image_tower/encoder/block_1/": 0.5,
    "image_tower/norm/": 1.0,
    "head/": 1.0,
}


def _vit_params(**kw):
    model = create_model("vit_ti16", "ce", dtype="float32", depth=2, **kw)
    shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), 32))["params"]
    return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes)


def _expected(path: str) -> float:
    hits = [v for k, v in TABLE.items() if path.startswith(k)]
    assert len(hits) == 1, f"{path} is not in the hand-made table"
    return hits[0]


def _sgd(**kw):
    """Plain SGD at a constant lr 1: an update is minus the gradient times its multiplier."""
    return _opt(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant", **kw)


def test_two_block_vit_multipliers_match_the_hand_computed_table():
    params = _vit_params()
    scales = layer_decay.layer_scales(params, 0.5)
    flat = {optim.param_path(p): s for p, s in jax.tree_util.tree_leaves_with_path(scales)}
    assert len(flat) == 32  # every leaf checked below
    for path, s in flat.items():
        assert s == _expected(path), path
    assert layer_decay.num_blocks(params) == 2


def test_updates_are_scaled_per_layer():
    """SGD at lr 1 on unit gradients: each update is minus its multiplier."""
    params = _vit_params()
    opt = _sgd(layer_decay=0.5)
    tx, _ = optim.make_optimizer(opt, 10, 0, model="vit_ti16")
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    for path, u in jax.tree_util.tree_leaves_with_path(updates):
        np.testing.assert_array_equal(np.asarray(u), -_expected(optim.param_path(path)))


def test_scanned_blocks_get_one_multiplier_per_row():
    params = _vit_params(scan_layers=True)
    scales = layer_decay.layer_scales(params, 0.5)
    qkv = scales["image_tower"]["encoder"]["blocks"]["attn"]["qkv"]["kernel"]
    kernel = params["image_tower"]["encoder"]["blocks"]["attn"]["qkv"]["kernel"]
    assert qkv.shape == (2,) + (1,) * (kernel.ndim - 1)
    np.testing.assert_array_equal(qkv.ravel(), [0.25, 0.5])
    assert scales["image_tower"]["pos_embed"] == 0.125


def test_layer_decay_one_is_the_optimizer_as_before():
    params = _vit_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    opt = _opt(layer_decay=1.0, warmup_steps=0)
    tx, _ = optim.make_optimizer(opt, 10, 0, model="vit_ti16")
    before, _ = optim._make_optimizer(opt, 10, 0)
    state, ref_state = tx.init(params), before.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(ref_state)
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
        ref, ref_state = before.update(grads, ref_state, params)
        for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(ref), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_frozen_parameters_stay_frozen_under_layer_decay():
    params = _vit_params()
    opt = _sgd(layer_decay=0.5, freeze="^image_tower/")
    tx, _ = optim.make_optimizer(opt, 10, 0, model="vit_ti16")
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    assert not any(np.any(np.asarray(u)) for u in jax.tree.leaves(updates["image_tower"]))
    np.testing.assert_array_equal(np.asarray(updates["head"]["kernel"]), -1.0)


@pytest.mark.parametrize("model", ["convnext_t", "resnet50", "volo_d1"])
def test_a_tower_without_numbered_blocks_is_a_config_error_naming_it(model):
    with pytest.raises(config_lib.ConfigError, match=f"optimizer.layer_decay.*{model}"):
        optim.make_optimizer(_opt(layer_decay=0.75), 10, 0, model=model)
    optim.make_optimizer(_opt(layer_decay=1.0), 10, 0, model=model)  # off: any tower


def test_the_console_line_gives_the_range():
    line = layer_decay.describe(_vit_params(), 0.5)
    assert "0.125" in line and "4 layers" in line and "2 blocks" in line
