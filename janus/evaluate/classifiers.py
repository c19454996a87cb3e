"""Classifier heads over a class set, applied on the host to the jitted image function's output.

- `head` (CE models): the 1000-way logits restricted to the class set (= logits outside it -inf).
- `zeroshot` (VL models): 100 x cosine with the class set's zero-shot embeddings, built for the
  class set's names only (janus.evaluate.zeroshot).
- `linear_probe`: a logistic-regression probe on frozen features (janus.evaluate.linear_probe),
  trained over the label set; a class subset (ImageNet-R / -A / ObjectNet) takes its columns.

Every head maps the image output [B, K] to logits [B, C] whose columns are `classes` in order, so
targets are positions inside the class set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from janus.evaluate import restrict, zeroshot

CLASSIFIERS = ("head", "zeroshot", "linear_probe")


class SubsetHead:
    """CE head: columns of the 1000-way logits."""

    def __init__(self, classes: Sequence[int]):
        self.classes = np.asarray(classes, np.int64)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        if logits.shape[-1] <= int(self.classes.max()):
            raise ValueError(
                f"the model's head has {logits.shape[-1]} outputs; the head classifier expects "
                f"1000-way ImageNet logits (class index {int(self.classes.max())} requested)"
            )
        return restrict.subset_logits(logits, self.classes)


class ZeroShotHead:
    def __init__(self, classes: Sequence[int], class_emb: np.ndarray):
        self.classes = np.asarray(classes, np.int64)
        if class_emb.shape[0] != len(self.classes):
            raise ValueError(
                f"{class_emb.shape[0]} class embeddings for {len(self.classes)} classes"
            )
        self.class_emb = class_emb

    def __call__(self, image_emb: np.ndarray) -> np.ndarray:
        return zeroshot.zeroshot_logits(image_emb, self.class_emb)


class ProbeHead:
    """A linear probe over `probe_classes`, evaluated on `classes` (a subset of them)."""

    def __init__(self, classes: Sequence[int], probe):
        self.classes = np.asarray(classes, np.int64)
        pos = {int(c): i for i, c in enumerate(probe.classes)}
        missing = [int(c) for c in self.classes if int(c) not in pos]
        if missing:
            raise ValueError(f"probe was not trained on classes {missing[:10]}")
        self.columns = np.asarray([pos[int(c)] for c in self.classes], np.int64)
        self.probe = probe

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.probe.logits(features)[:, self.columns]


def topk_counts(logits: np.ndarray, targets: np.ndarray, ks=(1, 5)) -> dict[int, int]:
    """Number of rows whose top-k (k capped at C) holds a target. targets bool [B, C]."""
    c = logits.shape[-1]
    kmax = min(max(ks), c)
    # argpartition then sort the top kmax: O(B C) instead of a full sort.
    part = np.argpartition(-logits, kmax - 1, axis=-1)[:, :kmax] if kmax < c else None
    if part is None:
        part = np.argsort(-logits, axis=-1, kind="stable")
    else:
        order = np.argsort(-np.take_along_axis(logits, part, -1), axis=-1, kind="stable")
        part = np.take_along_axis(part, order, -1)
    out = {}
    for k in ks:
        hit = np.take_along_axis(targets, part[:, : min(k, c)], -1).any(-1)
        out[k] = int(hit.sum())
    return out
