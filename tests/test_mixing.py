"""Mixup and CutMix on the device (`input.mixup`, `input.cutmix`; janus/mixing.py).

With lambda and the box forced equal, the mixed images and targets equal timm's `Mixup`; each
sample mixes with its mirror in the GLOBAL batch, so the mixed batch and the step's loss are the
same on 1 and on 8 devices and with gradient accumulation; off (the paper's recipe) the step is
the one without mixing, bitwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus import config as config_lib
from janus import losses, mixing, optim, sharding, train_step

RES, BATCH, CLASSES = 32, 16, 10


def _images_labels(n=BATCH, h=RES, w=RES, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, h, w, 3)).astype(np.float32)
    return images, rng.integers(0, CLASSES, size=n).astype(np.int32)


@pytest.mark.parametrize(
    "mode,lam,center",
    [("mixup", 0.3, None), ("cutmix", 0.3, (2, 14)), ("cutmix", 0.8, (6, 5))],
    ids=["mixup", "cutmix_clipped_box", "cutmix_inside"],
)
def test_mixed_images_and_targets_equal_timms(mode, lam, center, monkeypatch):
    """timm's `Mixup` (batch mode, label smoothing 0.1) with its Beta draw and box centre forced:
    janus' images and smoothed targets equal timm's within 1e-6, on a non-square image (12 x 16)
    and, for CutMix, with lambda corrected to the clipped box."""
    pytest.importorskip("timm", reason="the timm comparison needs the torch extra")
    import torch
    from timm.data import mixup as timm_mixup

    smoothing, (h, w) = 0.1, (12, 16)
    images, labels = _images_labels(n=6, h=h, w=w)
    monkeypatch.setattr(timm_mixup.np.random, "beta", lambda a, b: lam)
    if center is not None:
        draws = iter(center)  # timm's rand_bbox draws the centre row, then column
        monkeypatch.setattr(timm_mixup.np.random, "randint", lambda *a, **k: next(draws))
    alphas = dict(mixup_alpha=1.0, cutmix_alpha=0.0) if mode == "mixup" else dict(
        mixup_alpha=0.0, cutmix_alpha=1.0)  # fmt: skip
    mix = timm_mixup.Mixup(**alphas, label_smoothing=smoothing, num_classes=CLASSES)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    x_timm, y_timm = mix(x, torch.from_numpy(labels).long())

    use_cutmix = mode == "cutmix"
    box, lam_janus = (0, 0, 0, 0), jnp.float32(lam)
    if use_cutmix:
        box, lam_janus = mixing.cutmix_box(lam_janus, jnp.array(center), h, w)
    mixed = mixing.mix_images(jnp.asarray(images), lam_janus, use_cutmix, box)
    targets = mixing.mix_targets(jax.nn.one_hot(labels, CLASSES), lam_janus)
    targets = losses.ce_targets(targets, CLASSES, smoothing)
    np.testing.assert_allclose(mixed, x_timm.numpy().transpose(0, 2, 3, 1), atol=1e-6)
    np.testing.assert_allclose(targets, y_timm.numpy(), atol=1e-6)
    if use_cutmix:
        assert not np.array_equal(mixed, images)


def test_a_draw_is_timms_batch_draw():
    """Over many keys: a batch is mixed with chance mix_prob; with both alphas on, CutMix with
    chance mix_switch_prob, its lambda 1 - the box's share of the image (so the pasted pixels are
    that share); mixup lambdas follow Beta(alpha, alpha) (mean 1/2); unmixed batches have
    lambda 1 and are left as they are."""
    m = mixing.Mixing(mixup=0.8, cutmix=1.0, prob=0.75, switch_prob=0.25)
    h, w = 12, 16
    lam, cut, box = jax.vmap(lambda k: mixing.draw(k, m, h, w))(
        jax.random.split(jax.random.key(0), 4000)
    )
    lam, cut, box = np.asarray(lam), np.asarray(cut), np.asarray(box)
    unmixed = (lam == 1) & ~cut  # a CutMix box may round to nothing: lambda 1, as in timm
    assert abs(np.mean(~unmixed) - 0.75) < 0.03
    assert abs(np.mean(cut[~unmixed]) - 0.25) < 0.03
    area = (box[1] - box[0]) * (box[3] - box[2])
    np.testing.assert_allclose(lam[cut], 1 - area[cut] / (h * w), rtol=1e-6)
    assert abs(np.mean(lam[~cut & ~unmixed]) - 0.5) < 0.03
    images, labels = _images_labels(n=4, h=h, w=w)
    i = int(np.flatnonzero(cut & (lam < 0.9))[0])
    mixed = mixing.mix_images(jnp.asarray(images), lam[i], True, box[:, i])
    pasted = np.mean(np.any(np.asarray(mixed)[0] != images[0], axis=-1))
    assert pasted == pytest.approx(1 - lam[i], abs=1e-6)
    unchanged = mixing.mix_images(jnp.asarray(images), 1.0, False, box[:, 0])
    assert np.asarray(unchanged).tobytes() == images.tobytes()


@pytest.mark.parametrize("class_mask", [None, np.arange(CLASSES) < 6], ids=["all", "masked"])
def test_ce_takes_soft_targets(class_mask):
    """softmax_cross_entropy of one-hot targets is that of the integer labels (label smoothing
    and class mask as before); of mixed targets it is the lambda-weighted sum of the two CEs."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(8, CLASSES)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 6, size=8))
    kw = dict(label_smoothing=0.1, class_mask=class_mask)
    ce = losses.softmax_cross_entropy
    one_hot = jax.nn.one_hot(labels, CLASSES)
    np.testing.assert_allclose(ce(logits, one_hot, **kw), ce(logits, labels, **kw), rtol=1e-6)
    soft = mixing.mix_targets(one_hot, 0.3)
    expect = 0.3 * ce(logits, labels, **kw) + 0.7 * ce(logits, labels[::-1], **kw)
    np.testing.assert_allclose(ce(logits, soft, **kw), expect, rtol=1e-6)


# ------------------------------------------------------------------------------ the train step
def _config(loss="ce"):
    c = config_lib.paper_config()
    c.model.name, c.label_set, c.input.resolution = "vit_tiny", "mini10", RES
    c.model.width, c.model.depth, c.model.num_heads = 16, 1, 2  # fast compiles
    c.loss, c.restrict_to_label_set, c.label_smoothing = loss, False, 0.1
    c.optimizer.name, c.optimizer.momentum, c.optimizer.weight_decay = "sgd", 0.0, 0.0
    return c


def _step(c, mix, *, n_devices=8, accum=1):
    """One step of config `c` from its initial state on `n_devices` -> (metrics, params)."""
    model = train_step.build_model(c)
    tx, schedule = optim.make_optimizer(c.optimizer, 10, 0)
    init_fn = train_step.make_init_fn(model, tx, c)
    mesh = sharding.make_mesh([("data", n_devices)], devices=jax.devices()[:n_devices])
    shardings = sharding.param_shardings(jax.eval_shape(init_fn), mesh)
    step = train_step.make_train_step(
        model, tx, schedule, loss=c.loss, seed=c.seed, label_smoothing=c.label_smoothing,
        grad_accum_steps=accum, mixing=mix,
    )  # fmt: skip
    images, labels = _images_labels()
    local = {"image": images, "label": labels}
    if c.loss != "ce":
        local["labels"] = np.eye(1000, dtype=np.float32)[labels]
    state = jax.jit(init_fn, out_shardings=shardings)()
    batch = sharding.shard_batch(local, mesh)
    compiled, _ = train_step.compile_train_step(step, state, batch, shardings, mesh)
    with jax.set_mesh(mesh):
        state, metrics = compiled(state, batch)
    return jax.device_get(metrics), jax.device_get(state["params"]), model


def test_off_is_the_step_without_mixing():
    """The paper's recipe has no mixing (no mixing code in its step); a step whose mixing never
    fires (mix_prob 0) gives bitwise the loss and parameters of the step without mixing."""
    c = _config()
    assert mixing.Mixing.from_config(c) == mixing.OFF and not mixing.OFF.on
    m0, p0, _ = _step(c, mixing.OFF)
    m1, p1, _ = _step(c, mixing.Mixing(mixup=0.8, cutmix=1.0, prob=0.0))
    assert "mix_lam" not in m0 and m1["mix_lam"] == 1.0
    assert m1["loss"].tobytes() == m0["loss"].tobytes()
    for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_mixed_step_is_the_same_on_1_and_8_devices_and_with_accumulation():
    """Mixup or CutMix (both on; this seed's draw is checked) of the global batch: the loss of
    the step equals, on 1 device, the CE of the model on janus.mixing's batch mixed with the
    step's key; on 8 devices and with 2 microbatches it is the same within float32 rounding."""
    c = _config()
    mix = mixing.Mixing(mixup=0.8, cutmix=1.0)
    m1, _, model = _step(c, mix, n_devices=1)
    assert 0 < m1["mix_lam"] < 1
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(c.seed), 0), mixing.MIX_STREAM)
    images, labels = _images_labels()
    images, targets, lam = mixing.mix(key, jnp.asarray(images), jax.nn.one_hot(labels, 1000), mix)
    assert lam == m1["mix_lam"]
    tx, _ = optim.make_optimizer(c.optimizer, 10, 0)
    params = jax.jit(train_step.make_init_fn(model, tx, c))()["params"]
    logits = model.apply({"params": params}, images)
    expect = losses.softmax_cross_entropy(logits, targets, label_smoothing=c.label_smoothing)
    np.testing.assert_allclose(m1["loss"], expect, rtol=1e-6)
    for n_devices, accum in ((8, 1), (8, 2)):
        m, _, _ = _step(c, mix, n_devices=n_devices, accum=accum)
        assert m["mix_lam"] == m1["mix_lam"]
        np.testing.assert_allclose(m["loss"], m1["loss"], rtol=1e-6, err_msg=f"{n_devices=}")


def test_mixing_does_not_depend_on_the_device_count():
    """janus.mixing.mix of a batch sharded over 1 or 8 devices: bitwise the same batch."""
    images, labels = _images_labels()
    mix = mixing.Mixing(mixup=0.8, cutmix=1.0, switch_prob=1.0)  # CutMix: pixels move
    key = jax.random.key(3)
    out = []
    for n in (1, 8):
        mesh = sharding.make_mesh([("data", n)], devices=jax.devices()[:n])
        batch = sharding.shard_batch({"x": images, "y": np.eye(CLASSES)[labels]}, mesh)
        fn = jax.jit(lambda b: mixing.mix(key, b["x"], b["y"], mix))
        with jax.set_mesh(mesh):
            out.append(jax.device_get(fn(batch)))
    assert out[0][2] < 1
    for a, b in zip(out[0], out[1]):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_multi_hot_losses_train_on_mixed_labels():
    """sigmoid (multi-hot) with mixup: the step trains on the mixed multi-hot labels, as timm
    mixes dense targets; its loss differs from the unmixed step's."""
    c = _config("sigmoid")
    m_mixed, _, _ = _step(c, mixing.Mixing(mixup=0.8), n_devices=1)
    m_plain, _, _ = _step(c, mixing.OFF, n_devices=1)
    assert 0 < m_mixed["mix_lam"] < 1
    assert np.isfinite(m_mixed["loss"]) and m_mixed["loss"] != m_plain["loss"]


def test_contrastive_losses_refuse_mixing():
    c = _config("infonce")
    c.input.mixup = 0.8
    with pytest.raises(config_lib.ConfigError, match="input.mixup"):
        config_lib.validate(c)
    with pytest.raises(ValueError, match="CE losses only"):
        train_step.make_train_step(
            None, None, None, loss="infonce", seed=0, mixing=mixing.Mixing(mixup=0.8)
        )
