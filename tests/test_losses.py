"""janus.losses against straightforward NumPy implementations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus import losses


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_ce(logits, labels, smoothing=0.0, mask=None):
    logits = logits.astype(np.float64)
    c = logits.shape[1]
    allowed = np.ones(c, bool) if mask is None else mask
    total = 0.0
    for row, y in zip(logits, labels):
        lp = _log_softmax(row[allowed])  # softmax over the label set only
        idx = {k: i for i, k in enumerate(np.flatnonzero(allowed))}
        target = np.full(len(lp), smoothing / allowed.sum())
        target[idx[y]] += 1 - smoothing
        total += -(target * lp).sum()
    return total / len(labels)


def _np_infonce(img, txt, scale):
    s = scale * img.astype(np.float64) @ txt.astype(np.float64).T
    n = len(s)
    i2t = -np.mean([_log_softmax(s[i])[i] for i in range(n)])
    t2i = -np.mean([_log_softmax(s[:, j])[j] for j in range(n)])
    return (
        0.5 * (i2t + t2i),
        np.mean(s.argmax(1) == np.arange(n)),
        np.mean(s.argmax(0) == np.arange(n)),
    )


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("masked", [False, True])
def test_softmax_cross_entropy(rng, smoothing, masked):
    logits = rng.normal(size=(6, 12)).astype(np.float32) * 3
    mask = np.zeros(12, bool)
    mask[[1, 4, 5, 9]] = True
    labels = rng.choice([1, 4, 5, 9], size=6)
    got = losses.softmax_cross_entropy(
        logits, labels, label_smoothing=smoothing, class_mask=mask if masked else None
    )
    want = _np_ce(logits, labels, smoothing, mask if masked else None)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.dtype == jnp.float32


def test_masked_ce_ignores_outside_logits(rng):
    logits = rng.normal(size=(4, 8)).astype(np.float32)
    mask = np.arange(8) < 4
    labels = np.array([0, 1, 2, 3])
    base = losses.softmax_cross_entropy(logits, labels, class_mask=mask)
    logits2 = logits.copy()
    logits2[:, 4:] = 1e4  # huge logits outside the label set change nothing
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits2, labels, class_mask=mask), base)
    g = jax.grad(losses.softmax_cross_entropy)(logits2, labels, class_mask=mask)
    assert np.all(np.isfinite(g)) and np.all(g[:, 4:] == 0)


def test_multilabel_cross_entropy(rng):
    logits = rng.normal(size=(5, 10)).astype(np.float32)
    multi_hot = np.zeros((5, 10), np.float32)
    multi_hot[0, [1, 3]] = 1
    multi_hot[1, 2] = 1
    multi_hot[2, [0, 5, 7]] = 1
    multi_hot[4, 9] = 1  # row 3 has no labels: contributes 0
    lp = _log_softmax(logits.astype(np.float64))
    want = np.mean([-lp[i, multi_hot[i] > 0].sum() for i in range(5)])
    np.testing.assert_allclose(losses.multilabel_cross_entropy(logits, multi_hot), want, rtol=1e-5)
    # One label per row reduces to plain CE.
    labels = np.array([1, 2, 0, 4, 9])
    np.testing.assert_allclose(
        losses.multilabel_cross_entropy(logits, np.eye(10, dtype=np.float32)[labels]),
        losses.softmax_cross_entropy(logits, labels),
        rtol=1e-6,
    )
    mask = np.arange(10) % 2 == 0
    lp_m = _log_softmax(logits[:, mask].astype(np.float64))
    mh = np.eye(10, dtype=np.float32)[[0, 2, 4, 6, 8]]
    want_m = np.mean([-lp_m[i, i] for i in range(5)])
    np.testing.assert_allclose(losses.multilabel_cross_entropy(logits, mh, mask), want_m, rtol=1e-5)


def test_sigmoid_cross_entropy(rng):
    logits = rng.normal(size=(4, 7)).astype(np.float32) * 2
    y = (rng.random((4, 7)) < 0.3).astype(np.float32)
    x = logits.astype(np.float64)
    per = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    np.testing.assert_allclose(
        losses.sigmoid_cross_entropy(logits, y), per.sum(1).mean(), rtol=1e-5
    )
    mask = np.arange(7) < 3
    np.testing.assert_allclose(
        losses.sigmoid_cross_entropy(logits, y, mask), per[:, :3].sum(1).mean(), rtol=1e-5
    )


def test_infonce(rng):
    img = _unit(rng.normal(size=(8, 16))).astype(np.float32)
    txt = _unit(img + 0.8 * rng.normal(size=(8, 16))).astype(np.float32)
    loss, metrics = losses.infonce(img, txt, 1 / 0.07)
    want, i2t, t2i = _np_infonce(img, txt, 1 / 0.07)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["i2t_acc"], i2t)
    np.testing.assert_allclose(metrics["t2i_acc"], t2i)
    # Perfectly aligned orthogonal pairs at a high temperature: loss -> 0, accuracy 1.
    eye = np.eye(8, 16, dtype=np.float32)
    loss, metrics = losses.infonce(eye, eye, 100.0)
    assert float(loss) < 1e-6 and float(metrics["i2t_acc"]) == 1.0 == float(metrics["t2i_acc"])
    # Uniform similarities: log(B).
    loss, _ = losses.infonce(np.ones((8, 4), np.float32) / 2, np.ones((8, 4), np.float32) / 2, 5.0)
    np.testing.assert_allclose(loss, math.log(8), rtol=1e-6)


def test_siglip(rng):
    img = _unit(rng.normal(size=(6, 8))).astype(np.float32)
    txt = _unit(rng.normal(size=(6, 8))).astype(np.float32)
    loss, metrics = losses.siglip(img, txt, 10.0, -10.0)
    z = 10.0 * img.astype(np.float64) @ txt.T.astype(np.float64) - 10.0
    sign = 2 * np.eye(6) - 1
    want = np.sum(np.log1p(np.exp(-sign * z))) / 6
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert set(metrics) == {"i2t_acc", "t2i_acc"}


def test_registry_and_errors():
    assert set(losses.LOSSES) == {"ce", "multilabel_ce", "sigmoid", "infonce", "siglip"}
    with pytest.raises(ValueError, match="class_mask shape"):
        losses.softmax_cross_entropy(
            np.zeros((2, 5)), np.zeros(2, int), class_mask=np.ones(4, bool)
        )
    with pytest.raises(ValueError, match="embeddings"):
        losses.infonce(np.zeros((4, 3)), np.zeros((5, 3)), 1.0)


def test_loss_and_metrics_dispatch(rng):
    logits = rng.normal(size=(4, 6)).astype(np.float32)
    label = np.array([0, 1, 2, 3])
    mh = np.eye(6, dtype=np.float32)[label]
    mask = np.arange(6) < 4
    batch = {"label": label, "labels": mh}
    loss, m = losses.loss_and_metrics("ce", logits, batch, label_smoothing=0.1, class_mask=mask)
    want = losses.softmax_cross_entropy(logits, label, label_smoothing=0.1, class_mask=mask)
    np.testing.assert_allclose(loss, want)
    np.testing.assert_allclose(m["top1"], np.mean(logits[:, :4].argmax(1) == label))
    loss, _ = losses.loss_and_metrics("multilabel_ce", logits, batch)
    np.testing.assert_allclose(loss, losses.multilabel_cross_entropy(logits, mh))
    loss, _ = losses.loss_and_metrics("sigmoid", logits, batch, class_mask=mask)
    np.testing.assert_allclose(loss, losses.sigmoid_cross_entropy(logits, mh, mask))
    emb = np.eye(4, 8, dtype=np.float32)
    out = {"image_emb": emb, "text_emb": emb, "logit_scale": 10.0, "logit_bias": -1.0}
    loss, m = losses.loss_and_metrics("siglip", out, {})
    np.testing.assert_allclose(loss, losses.siglip(emb, emb, 10.0, -1.0)[0])
    assert float(m["i2t_acc"]) == 1.0
    with pytest.raises(KeyError, match="multi_hot"):
        losses.loss_and_metrics("sigmoid", logits, {"label": label})
    with pytest.raises(ValueError, match="unknown loss"):
        losses.loss_and_metrics("hinge", logits, batch)
