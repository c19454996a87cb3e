"""Stochastic depth (`model.drop_path_rate`; janus.models.layers.DropPath) in ViT/DeiT, ConvNeXt
and VOLO: timm's `drop_path` with the same keep mask, timm's per-block rates in each tower, and
at evaluation (or rate 0) the towers' outputs are those without it.
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus import config as config_lib
from janus import train_step
from janus.models import create_model, init_variables, layers

REPO = pathlib.Path(__file__).resolve().parents[1]
# (tower, image size, tower kwargs): the test sizes, with enough blocks for a schedule.
TOWERS = {
    "vit_tiny": (16, dict(width=16, depth=3, num_heads=2)),
    "deit_tiny": (16, dict(width=16, depth=3, num_heads=2)),
    # layer scale 1 rather than 1e-6: the blocks' branches must show in the outputs
    "convnext_tiny": (32, dict(depths=(1, 2, 1, 1), ls_init_value=1.0)),
    "volo_tiny": (16, {}),
}


def _images(size, n=4):
    return jnp.asarray(np.random.default_rng(0).normal(size=(n, size, size, 3)), jnp.float32)


def _recorded_rates(model, variables, images) -> list[float]:
    """The rate of every DropPath call of a training forward pass, in call order (traced only:
    the rates are Python numbers of the modules)."""
    rates = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.DropPath) and context.method_name == "__call__":
            rates.append(float(args[1]))
        return next_fun(*args, **kwargs)

    def forward(variables):
        return model.apply(
            variables, images, train=True, rngs={"dropout": jax.random.key(1)},
            mutable=["batch_stats"],
        )  # fmt: skip

    with nn.intercept_methods(record):
        jax.eval_shape(forward, variables)
    return rates


def test_drop_path_equals_timms():
    """timm's drop_path (training) and janus' with the same Bernoulli keep mask: equal within
    1e-6 (kept samples scaled by 1 / (1 - rate), dropped ones zero)."""
    pytest.importorskip("timm", reason="the timm comparison needs the torch extra")
    import torch
    from timm.layers import drop_path as timm_drop_path

    rate, x = 0.4, np.random.default_rng(0).normal(size=(8, 3, 5)).astype(np.float32)
    torch.manual_seed(0)
    keep = torch.empty((8, 1, 1)).bernoulli_(1 - rate)  # timm's own draw, repeated below
    torch.manual_seed(0)
    expect = timm_drop_path(torch.from_numpy(x), rate, training=True).numpy()
    out = layers.drop_path(jnp.asarray(x), jnp.asarray(keep.numpy().reshape(8) > 0), rate)
    assert 0 < keep.sum() < 8  # both kinds of sample
    np.testing.assert_allclose(out, expect, atol=1e-6)


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_rates_follow_timms_schedule(name):
    """Each tower's per-block rates (both branches of a transformer or outlooker block, the one
    of a ConvNeXt block) rise linearly from 0 to drop_path_rate over its blocks, as timm's
    `VisionTransformer` / `ConvNeXt` / `VOLO` built with drop_path_rate set; VOLO's
    class-attention blocks have none."""
    size, kw = TOWERS[name]
    rate = 0.3
    model = create_model(name, "ce", num_classes=10, drop_path_rate=rate, **kw)
    variables = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), size))
    got = _recorded_rates(model, variables, _images(size))
    expect = _timm_rates(name, size, kw, rate)
    np.testing.assert_allclose(got, expect, atol=1e-7)
    assert max(got) == pytest.approx(rate)


def _timm_rates(name, size, kw, rate) -> list[float]:
    """The drop-path rates of timm's equivalent model (same block counts), in forward order."""
    pytest.importorskip("timm", reason="the timm comparison needs the torch extra")
    from timm.models import convnext, vision_transformer, volo

    def prob(m):
        return getattr(m, "drop_prob", 0.0)  # nn.Identity where the rate is 0

    if name in ("vit_tiny", "deit_tiny"):
        model = vision_transformer.VisionTransformer(
            img_size=size, patch_size=8, embed_dim=kw["width"], depth=kw["depth"],
            num_heads=kw["num_heads"], drop_path_rate=rate,
        )  # fmt: skip
        return [prob(m) for b in model.blocks for m in (b.drop_path1, b.drop_path2)]
    if name == "convnext_tiny":
        model = convnext.ConvNeXt(depths=kw["depths"], dims=(16, 32, 64, 128), drop_path_rate=rate)
        return [prob(b.drop_path) for s in model.stages for b in s.blocks]
    # volo_tiny: one outlooker (width 32), two transformer blocks (width 64)
    model = volo.VOLO(
        layers=[1, 2, 0, 0], img_size=size, stem_hidden_dim=16, embed_dims=[32, 64, 64, 64],
        num_heads=[2, 2, 2, 2], drop_path_rate=rate,
    )  # fmt: skip
    blocks = [m for m in model.network.modules() if hasattr(m, "drop_path1")]
    return [prob(m) for b in blocks for m in (b.drop_path1, b.drop_path2)]


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_off_at_evaluation_and_on_in_training(name):
    """With drop_path_rate 0.5: at evaluation (train=False) the outputs are bitwise those of the
    same weights at rate 0; in training they differ, and depend on the 'dropout' key only."""
    size, kw = TOWERS[name]
    plain = create_model(name, "ce", num_classes=10, **kw)
    dropped = create_model(name, "ce", num_classes=10, drop_path_rate=0.5, **kw)
    variables = init_variables(plain, jax.random.key(0), size)
    x = _images(size)
    np.testing.assert_array_equal(dropped.apply(variables, x), plain.apply(variables, x))

    def train(model, key):
        out, _ = model.apply(
            variables, x, train=True, rngs={"dropout": jax.random.key(key)},
            mutable=["batch_stats"],
        )  # fmt: skip
        return np.asarray(out)

    once = train(dropped, 1)
    assert not np.allclose(once, train(plain, 1), atol=1e-6)
    np.testing.assert_array_equal(once, train(dropped, 1))
    assert not np.array_equal(once, train(dropped, 2))


@pytest.mark.parametrize("scan_layers,remat", [(True, False), (False, True), (True, True)])
def test_scanned_and_rematerialised_vits(scan_layers, remat):
    """Scanned blocks take their rates as a scanned input: a ViT with scan_layers / remat and
    drop_path_rate > 0 drops paths in training and is its rate-0 self at evaluation."""
    kw = dict(TOWERS["vit_tiny"][1], scan_layers=scan_layers, remat=remat)
    model = create_model("vit_tiny", "ce", num_classes=10, drop_path_rate=0.5, **kw)
    plain = create_model("vit_tiny", "ce", num_classes=10, **kw)
    variables = init_variables(model, jax.random.key(0), 16)
    x = _images(16)
    evaluated = model.apply(variables, x)
    np.testing.assert_array_equal(evaluated, plain.apply(variables, x))
    trained = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert np.all(np.isfinite(trained)) and not np.allclose(trained, evaluated, atol=1e-6)


def test_the_config_field_reaches_the_tower():
    """configs/arch.py declares model.drop_path_rate (0) for its towers with stochastic depth, so
    `--config.model.drop_path_rate=0.1` can set it, and an older run without the field resumes;
    the rate is a tower kwarg, and one outside [0, 1] fails in one line naming the field."""
    from janus.run_records import ADDED_OFF

    arch = config_lib.load_config_module(str(REPO / "configs" / "arch.py"))
    assert arch.get_config("model=vgg16_bn,loss=ce").model.get("drop_path_rate") is None
    for arg in ("model=deit_s16,loss=ce", "setup=mini,model=convnext_tiny,loss=infonce"):
        assert arch.get_config(arg).model.drop_path_rate == ADDED_OFF["model.drop_path_rate"] == 0
    c = arch.get_config("model=deit_s16,loss=ce")
    c.model.drop_path_rate = 0.1
    config_lib.validate(c, check_data=False)
    assert train_step.build_model(c).image_tower.drop_path_rate == 0.1
    model = create_model("vit_tiny", "ce", drop_path_rate=1.5, **TOWERS["vit_tiny"][1])
    with pytest.raises(ValueError, match=r"model\.drop_path_rate = 1\.5"):
        init_variables(model, jax.random.key(0), 16)
