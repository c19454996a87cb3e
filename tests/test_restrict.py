"""Label-set restriction on constructed logits, including the R / A / ObjectNet intersections."""

import numpy as np
import pytest

from janus.evaluate import restrict


def test_mask_and_subset_agree():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 1000)).astype(np.float32)
    classes = np.sort(rng.choice(1000, size=37, replace=False))
    labels = rng.choice(classes, size=64)
    masked = restrict.mask_logits(logits, classes)
    assert np.isneginf(masked[:, np.setdiff1d(np.arange(1000), classes)]).all()
    # argmax over -inf-masked 1000-way logits == class-set position from the subset columns
    sub = restrict.subset_logits(logits, classes)
    assert (classes[sub.argmax(-1)] == masked.argmax(-1)).all()
    targets, keep = restrict.target_table([[int(y)] for y in labels], classes)
    assert keep.all()
    corr = restrict.topk_correct(sub, targets)
    assert (corr[1] == (masked.argmax(-1) == labels)).all()
    top5 = np.argsort(-masked, -1)[:, :5]
    assert (corr[5] == (top5 == labels[:, None]).any(-1)).all()


def test_outside_class_wins_unrestricted_but_not_restricted():
    logits = np.zeros((1, 1000), np.float32)
    logits[0, 3] = 10.0  # a class outside the label set has the top logit
    logits[0, 7] = 1.0
    classes = [5, 7, 9]
    corr = restrict.topk_correct(
        restrict.subset_logits(logits, classes), restrict.target_table([[7]], classes)[0]
    )
    assert corr[1].tolist() == [True]


def test_images_outside_label_set_are_dropped():
    targets, keep = restrict.target_table([[1], [2], [3, 4], [9]], [2, 4])
    assert keep.tolist() == [False, True, True, False]
    assert targets[2].tolist() == [False, True]


def test_multi_label_objectnet_any_match():
    # An ObjectNet folder mapped to two ImageNet classes: either prediction counts.
    classes = [10, 20, 30]
    targets, _ = restrict.target_table([[10, 30], [10, 30]], classes)
    logits = np.array([[0.0, 1.0, 5.0], [5.0, 1.0, 0.0]])
    assert restrict.topk_correct(logits, targets, ks=(1,))[1].tolist() == [True, True]


def test_intersections_with_reference_sets():
    labelsets = pytest.importorskip(
        "janus.data.labelsets", reason="RECORDS' labelsets not there yet"
    )
    in100 = labelsets.resolve_label_set("in100")
    sizes = {
        s: len(restrict.eval_classes(in100, labelsets.shift_set_classes(s)))
        for s in ("r", "a", "objectnet")
    }
    assert sizes == {"r": 36, "a": 37, "objectnet": 14}
    assert len(restrict.eval_classes(in100)) == 100
    assert len(restrict.eval_classes(np.arange(1000), labelsets.shift_set_classes("r"))) == 200


@pytest.mark.parametrize("num_classes", [3, 14, 100])
def test_fast_topk_counts_match_reference(num_classes):
    from janus.evaluate.classifiers import topk_counts

    rng = np.random.default_rng(num_classes)
    logits = rng.normal(size=(50, num_classes))
    targets = rng.random((50, num_classes)) < 0.05
    targets[np.arange(50), rng.integers(0, num_classes, 50)] = True
    ref = restrict.topk_correct(logits, targets)
    got = topk_counts(logits, targets)
    assert got == {1: int(ref[1].sum()), 5: int(ref[5].sum())}
    if num_classes < 5:
        assert got[5] == 50  # k is capped at the class count


def test_ce_head_on_r_a_objectnet_uses_the_intersection():
    """On ImageNet-R the CE head ranks only label set ∩ R: a label-set class outside R that has
    the top logit can never be predicted there (it still can on val)."""
    labelsets = pytest.importorskip(
        "janus.data.labelsets", reason="RECORDS' labelsets not there yet"
    )
    from janus.evaluate.classifiers import SubsetHead, topk_counts

    in100 = labelsets.resolve_label_set("in100")
    for name in ("r", "a", "objectnet"):
        classes = restrict.eval_classes(in100, labelsets.shift_set_classes(name))
        not_in_set = next(int(c) for c in in100 if c not in classes)
        target = int(classes[0])
        logits = np.zeros((1, 1000), np.float32)
        logits[0, not_in_set], logits[0, target] = 10.0, 1.0
        targets, _ = restrict.target_table([[target]], classes)
        assert topk_counts(SubsetHead(classes)(logits), targets)[1] == 1, name
        val_targets, _ = restrict.target_table([[target]], in100)
        assert topk_counts(SubsetHead(in100)(logits), val_targets)[1] == 0, name
