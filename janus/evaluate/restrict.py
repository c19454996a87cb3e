"""Label-set restriction (the paper's protocol, janus/vendored/reference/README.md).

- Images: keep only those with a label in the evaluated class set.
- CE models with a 1000-way head: logits outside the class set are -inf, i.e. the prediction is the
  argmax over the class set. `subset_logits` takes the columns of the class set (same ranking,
  cheaper); `mask_logits` is the literal -inf form; both give the same top-k among the class set.
- ImageNet-R, -A and ObjectNet hold only some classes: the class set there is the
  intersection of the label set with the set's classes (`eval_classes`).
- Targets are positions inside the (sorted) class set. An image may have several acceptable labels
  (ObjectNet folders that map to several ImageNet classes; multi-label records): a prediction is
  correct if it is ANY of them (the standard ObjectNet protocol). So targets are a multi-hot
  [N, C] over class-set positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Sets whose classes are a subset of ImageNet-1k: restrict to label set ∩ these classes.
PARTIAL_SETS = ("r", "a", "objectnet")


def eval_classes(label_set: Sequence[int], set_classes: Sequence[int] | None = None) -> np.ndarray:
    """Sorted 1000-way indices evaluated on a set: the label set, intersected with the set's
    classes when it has fewer than 1000 (ImageNet-R / -A / ObjectNet)."""
    ls = np.unique(np.asarray(label_set, dtype=np.int64))
    if set_classes is None:
        return ls
    return np.intersect1d(ls, np.asarray(set_classes, dtype=np.int64))


def mask_logits(logits: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """1000-way logits with every class outside `classes` set to -inf."""
    logits = np.asarray(logits, dtype=np.float32)
    keep = np.zeros(logits.shape[-1], dtype=bool)
    keep[np.asarray(classes, dtype=np.int64)] = True
    return np.where(keep, logits, -np.inf)


def subset_logits(logits, classes: Sequence[int]):
    """Columns of `classes` (works on numpy and jax arrays): [B, 1000] -> [B, C]."""
    return logits[..., np.asarray(classes, dtype=np.int64)]


def target_table(
    label_lists: Sequence[Sequence[int]], classes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot targets over class-set positions, and which rows have any label in the set.

    label_lists: per image (or per label group) the acceptable 1000-way labels.
    Returns (targets bool [N, C], keep bool [N]).
    """
    classes = np.asarray(classes, dtype=np.int64)
    pos = {int(c): i for i, c in enumerate(classes)}
    targets = np.zeros((len(label_lists), len(classes)), dtype=bool)
    for row, labels in enumerate(label_lists):
        for lab in labels:
            j = pos.get(int(lab))
            if j is not None:
                targets[row, j] = True
    return targets, targets.any(axis=1)


def topk_correct(logits, targets, ks: Sequence[int] = (1, 5)) -> dict[int, np.ndarray]:
    """Per-row correctness at each k: the plain NumPy reference that the runner's faster
    `classifiers.topk_counts` is tested against.

    logits [N, C] over the class set, targets bool [N, C]. k is capped at C (with fewer than 5
    classes, top-5 is trivially correct, as -inf columns could never be predicted anyway).
    """
    logits = np.asarray(logits)
    targets = np.asarray(targets, dtype=bool)
    order = np.argsort(-logits, axis=-1, kind="stable")
    out = {}
    for k in ks:
        top = order[:, : min(k, logits.shape[-1])]
        out[k] = np.take_along_axis(targets, top, axis=-1).any(axis=-1)
    return out
