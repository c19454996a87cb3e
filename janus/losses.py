"""Training objectives as pure functions on GLOBAL arrays.

Under `jax.jit` with batch-sharded inputs the contrastive losses' [B, B] similarity matrix spans the
global batch: XLA all-gathers the embeddings, so every sample on every device and host is a negative
with no explicit collective here. Everything is computed in float32 whatever the inputs' dtype.

Return types: the classification losses return a scalar (mean over the batch); the contrastive
losses return `(loss, metrics)` with `metrics = {"i2t_acc", "t2i_acc"}` (in-batch retrieval top-1).
`LOSSES` maps the config's `loss` names to these functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# Logits of classes outside the label set. Finite (not -inf) so that 0 * masked stays 0 and
# gradients stay finite; exp(-1e9 - max) underflows to exactly 0 in float32.
MASKED_LOGIT = -1e9


def apply_class_mask(logits: jax.Array, class_mask: jax.Array | None) -> jax.Array:
    """Restrict logits [..., C] to the classes where `class_mask` [C] (bool) is True."""
    logits = logits.astype(jnp.float32)
    if class_mask is None:
        return logits
    class_mask = jnp.asarray(class_mask, bool)
    if class_mask.shape != logits.shape[-1:]:
        raise ValueError(
            f"class_mask shape {class_mask.shape} != logits classes {logits.shape[-1:]}"
        )
    return jnp.where(class_mask, logits, MASKED_LOGIT)


def softmax_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    label_smoothing: float = 0.0,
    class_mask: jax.Array | None = None,
) -> jax.Array:
    """Mean CE under logits [B, C] of integer labels [B] or of target distributions [B, C]
    (mixup's and CutMix's mixed one-hots, `janus.mixing`).

    With `class_mask`, the softmax runs over the label set only and the smoothing mass is spread
    over the label set's classes (not over all C).
    """
    logits = apply_class_mask(logits, class_mask)
    targets = ce_targets(labels, logits.shape[-1], label_smoothing, class_mask)
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def ce_targets(
    labels: jax.Array,
    num_classes: int,
    label_smoothing: float = 0.0,
    class_mask: jax.Array | None = None,
) -> jax.Array:
    """The target distributions [B, C] of integer labels [B] or of targets [B, C], smoothed.

    Smoothing is affine in the target, so smoothing mixed one-hots equals mixing smoothed ones
    (timm's `mixup_target`)."""
    if labels.ndim == 2:
        targets = labels.astype(jnp.float32)
    else:
        targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        allowed = (
            jnp.ones((num_classes,), jnp.float32)
            if class_mask is None
            else jnp.asarray(class_mask, jnp.float32)
        )
        targets = (1.0 - label_smoothing) * targets + label_smoothing * allowed / allowed.sum()
    return targets


def multilabel_cross_entropy(
    logits: jax.Array, multi_hot: jax.Array, class_mask: jax.Array | None = None
) -> jax.Array:
    """The paper's multi-label CE: per sample, the SUM of softmax CE over its matched labels.

    multi_hot [B, C] in {0, 1}; a sample with k labels contributes sum_k -log p(label_k). A
    sample without labels contributes 0 but still counts in the batch mean.
    """
    log_p = jax.nn.log_softmax(apply_class_mask(logits, class_mask), axis=-1)
    return -jnp.mean(jnp.sum(multi_hot.astype(jnp.float32) * log_p, axis=-1))


def sigmoid_cross_entropy(
    logits: jax.Array, multi_hot: jax.Array, class_mask: jax.Array | None = None
) -> jax.Array:
    """Multi-hot binary CE: sum over classes (within `class_mask`, if given), mean over batch."""
    per_class = optax.sigmoid_binary_cross_entropy(
        logits.astype(jnp.float32), multi_hot.astype(jnp.float32)
    )
    if class_mask is not None:
        per_class = per_class * jnp.asarray(class_mask, jnp.float32)
    return jnp.mean(jnp.sum(per_class, axis=-1))


def _similarity(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array) -> jax.Array:
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ValueError(f"embeddings must both be [B, D]: {image_emb.shape} vs {text_emb.shape}")
    img = image_emb.astype(jnp.float32)
    txt = text_emb.astype(jnp.float32)
    return jnp.asarray(logit_scale, jnp.float32) * (img @ txt.T)


def _retrieval_metrics(logits_i2t: jax.Array) -> dict[str, jax.Array]:
    target = jnp.arange(logits_i2t.shape[0])
    return {
        "i2t_acc": jnp.mean(jnp.argmax(logits_i2t, axis=1) == target),
        "t2i_acc": jnp.mean(jnp.argmax(logits_i2t, axis=0) == target),
    }


def infonce(
    image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric InfoNCE (CLIP): mean of image->text and text->image CE over the global batch.

    Embeddings [B, D] should be L2-normalised; `logit_scale` is the (exp'd, clamped) temperature.
    Pair i is the positive for row/column i; all other samples of the global batch are negatives.
    """
    logits = _similarity(image_emb, text_emb, logit_scale)
    target = jnp.arange(logits.shape[0])
    i2t = optax.softmax_cross_entropy_with_integer_labels(logits, target)
    t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, target)
    loss = 0.5 * (jnp.mean(i2t) + jnp.mean(t2i))
    return loss, _retrieval_metrics(logits)


def siglip(
    image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, logit_bias: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023) over the global batch.

    Every (image, text) pair is a binary problem: +1 on the diagonal, -1 elsewhere; the loss is
    the sum over the B x B pairs divided by B.
    """
    logits = _similarity(image_emb, text_emb, logit_scale) + jnp.asarray(logit_bias, jnp.float32)
    n = logits.shape[0]
    signs = 2.0 * jnp.eye(n, dtype=jnp.float32) - 1.0
    loss = -jnp.sum(jax.nn.log_sigmoid(signs * logits)) / n
    return loss, _retrieval_metrics(logits)


LOSSES = {
    "ce": softmax_cross_entropy,
    "multilabel_ce": multilabel_cross_entropy,
    "sigmoid": sigmoid_cross_entropy,
    "infonce": infonce,
    "siglip": siglip,
}
CLASSIFICATION_LOSSES = ("ce", "multilabel_ce", "sigmoid")
CONTRASTIVE_LOSSES = ("infonce", "siglip")


def loss_and_metrics(
    name: str,
    outputs,
    batch: dict,
    *,
    label_smoothing: float = 0.0,
    class_mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One call for the train step: model outputs + batch -> (loss, metrics), by loss name.

    Classification: `outputs` are logits; `ce` reads batch["label"] (int [B]), `multilabel_ce` and
    `sigmoid` read batch["labels"] (multi-hot [B, C]); metrics {"top1"} against batch["label"]
    within the label set. Contrastive: `outputs` is the CLIP output dict.
    """
    if name in CONTRASTIVE_LOSSES:
        args = (outputs["image_emb"], outputs["text_emb"], outputs["logit_scale"])
        if name == "siglip":
            args += (outputs["logit_bias"],)
        return LOSSES[name](*args)
    if name == "ce":
        loss = softmax_cross_entropy(
            outputs, batch["label"], label_smoothing=label_smoothing, class_mask=class_mask
        )
    elif name in ("multilabel_ce", "sigmoid"):
        if "labels" not in batch:
            raise KeyError(f"loss {name!r} needs batch['labels'] (multi-hot; multi_hot=True)")
        loss = LOSSES[name](outputs, batch["labels"], class_mask)
    else:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    metrics = {}
    if "label" in batch:
        pred = jnp.argmax(apply_class_mask(outputs, class_mask), axis=-1)
        metrics["top1"] = jnp.mean(pred == batch["label"])
    return loss, metrics
