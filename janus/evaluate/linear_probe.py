"""Linear probe on frozen image features (the paper's meta-analysis evaluated VL image towers so).

Features: `method="image_features"` of the checkpoint on `per_class` training images of every
label-set class (the first ones in the split's order, so the subset is deterministic), preprocessed
with the eval chain. Classifier: scikit-learn's multinomial LogisticRegression (L-BFGS) on
standardised features. Regularisation: L2, with C picked from `C_GRID` on a stratified 20 % hold-out
of the probe's training images (CLIP's protocol sweeps C on held-out data too), then refit on all of
them. Pass `C=` to fix it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

C_GRID = (0.01, 0.1, 1.0, 10.0)


@dataclasses.dataclass
class Probe:
    classes: np.ndarray  # 1000-way index of each output column
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # [F, C]
    bias: np.ndarray  # [C]
    C: float
    n_train: int

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, np.float32) - self.mean) / self.scale
        return x @ self.weight + self.bias


def select_per_class(item_labels: Sequence[Sequence[int]], classes, per_class: int) -> np.ndarray:
    """Positions of the first `per_class` items of each class (by first label in the class set)."""
    want = {int(c): per_class for c in classes}
    chosen = []
    for i, labels in enumerate(item_labels):
        for lab in labels:
            if want.get(int(lab), 0) > 0:
                want[int(lab)] -= 1
                chosen.append(i)
                break
    return np.asarray(chosen, np.int64)


def _fit(x, y, C, seed):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=1000, random_state=seed)
    clf.fit(x, y)
    return clf


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[int],
    *,
    C: float | None = None,
    seed: int = 0,
) -> Probe:
    """features [N, F], labels [N] 1000-way indices (each in `classes`)."""
    classes = np.asarray(sorted(int(c) for c in classes), np.int64)
    pos = {int(c): i for i, c in enumerate(classes)}
    y = np.asarray([pos[int(v)] for v in labels], np.int64)
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError(f"linear probe needs images of >= 2 classes, got {len(present)}")
    mean = features.mean(0)
    scale = features.std(0) + 1e-6
    x = (features - mean) / scale
    if C is None:
        rng = np.random.default_rng(seed)
        val = np.zeros(len(y), bool)
        for c in present:  # stratified 20 % hold-out
            idx = np.nonzero(y == c)[0]
            if len(idx) >= 2:
                val[rng.choice(idx, max(1, len(idx) // 5), replace=False)] = True
        scores = {
            c_: (_fit(x[~val], y[~val], c_, seed).predict(x[val]) == y[val]).mean() for c_ in C_GRID
        }
        C = max(C_GRID, key=lambda c_: (scores[c_], -c_))  # ties -> stronger regularisation
    clf = _fit(x, y, C, seed)
    weight = np.zeros((x.shape[1], len(classes)), np.float32)
    bias = np.full(len(classes), -np.inf, np.float32)  # classes without training images: never
    if clf.coef_.shape[0] == 1:  # binary: sklearn stores one row for class 1
        coef = np.concatenate([-clf.coef_, clf.coef_]) / 2
        icpt = np.concatenate([-clf.intercept_, clf.intercept_]) / 2
    else:
        coef, icpt = clf.coef_, clf.intercept_
    weight[:, clf.classes_] = coef.T
    bias[clf.classes_] = icpt
    return Probe(
        classes, mean.astype(np.float32), scale.astype(np.float32), weight, bias, C, len(y)
    )


def probe_from_embedder(
    embed: Callable[[np.ndarray], np.ndarray],
    batches,
    classes,
    *,
    C: float | None = None,
    seed: int = 0,
) -> Probe:
    """Runs `embed` over batches {"image", "label", "mask"} and fits the probe."""
    feats, labels = [], []
    for batch in batches:
        m = np.asarray(batch["mask"], bool)
        feats.append(embed(batch["image"])[m])
        labels.append(np.asarray(batch["label"])[m])
    return fit_probe(np.concatenate(feats), np.concatenate(labels), classes, C=C, seed=seed)
