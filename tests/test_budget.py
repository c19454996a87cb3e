"""Budgets: exactly n, deterministic in the seed, nested across sizes, balanced when asked."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janus.data.budget import apportion, select_budget


def _entries(n=600, sources=("a", "b", "c"), classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "key": f"{sources[i % len(sources)]}/{i}",
            "source": sources[i % len(sources)],
            "labels": [int(rng.integers(classes))],
        }
        for i in range(n)
    ]


def test_exact_and_deterministic():
    e = _entries()
    a = select_budget(e, 100, seed=3)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, select_budget(e, 100, seed=3))
    assert not np.array_equal(a, select_budget(e, 100, seed=4))


def test_independent_of_entry_order():
    e = _entries()
    perm = np.random.default_rng(1).permutation(len(e))
    shuffled = [e[i] for i in perm]
    keys = {e[i]["key"] for i in select_budget(e, 77, seed=0)}
    keys2 = {shuffled[i]["key"] for i in select_budget(shuffled, 77, seed=0)}
    assert keys == keys2


@settings(max_examples=25, deadline=None)
@given(
    n1=st.integers(0, 150),
    extra=st.integers(0, 150),
    seed=st.integers(0, 10),
    balanced=st.booleans(),
    weighted=st.booleans(),
)
def test_nested(n1, extra, seed, balanced, weighted):
    e = _entries(900)
    kw = {"seed": seed, "class_balanced": balanced}
    if weighted:
        kw["source_weights"] = {"a": 1.0, "b": 2.0, "c": 0.5}
    small = set(select_budget(e, n1, **kw).tolist())
    big = set(select_budget(e, n1 + extra, **kw).tolist())
    assert len(small) == n1 and len(big) == n1 + extra and small <= big


def test_class_balanced_counts():
    e = _entries(2000, classes=7)
    sel = select_budget(e, 100, seed=0, class_balanced=True)
    counts = Counter(e[i]["labels"][0] for i in sel)
    assert sorted(counts.values()) == [14] * 5 + [15] * 2  # 100 = 7*14 + 2


def test_class_balanced_ignores_unlabelled_and_reports_shortfall():
    e = [{"key": f"k{i}", "source": "s", "labels": [i % 3]} for i in range(30)]
    e += [{"key": f"u{i}", "source": "s", "labels": []} for i in range(50)]
    sel = select_budget(e, 30, seed=0, class_balanced=True)
    assert all(e[i]["labels"] for i in sel)
    e.append({"key": "rare", "source": "s", "labels": [9]})
    with pytest.raises(ValueError, match="class 9: 1"):
        select_budget(e, 30, seed=0, class_balanced=True)


def test_source_weights_and_counts():
    e = _entries(900)
    sel = select_budget(e, 90, seed=0, source_weights={"a": 1, "b": 2, "c": 0})
    assert Counter(e[i]["source"] for i in sel) == {"a": 30, "b": 60}
    sel = select_budget(e, 10, seed=0, source_counts={"a": 7, "c": 3})
    assert Counter(e[i]["source"] for i in sel) == {"a": 7, "c": 3}
    with pytest.raises(ValueError, match="sum to"):
        select_budget(e, 11, seed=0, source_counts={"a": 7, "c": 3})
    with pytest.raises(ValueError, match="source 'a': needs 400, has 300"):
        select_budget(e, 400, seed=0, source_counts={"a": 400})


def test_apportion_is_monotone():
    w = {"x": 0.5, "y": 0.3, "z": 0.2}
    prev = {k: 0 for k in w}
    for n in range(60):
        cur = apportion(n, w)
        assert sum(cur.values()) == n and all(cur[k] >= prev[k] for k in w)
        assert all(abs(cur[k] - n * w[k]) < 1 for k in w)
        prev = cur


def test_errors():
    e = _entries(10)
    with pytest.raises(ValueError, match="needs 11, has 10"):
        select_budget(e, 11, seed=0)
    with pytest.raises(ValueError, match="unique"):
        select_budget(e + e[:1], 3, seed=0)
    with pytest.raises(ValueError, match="not both"):
        select_budget(e, 3, seed=0, source_counts={"a": 3}, source_weights={"a": 1})
    assert len(select_budget(e, 0, seed=0)) == 0


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 120),
    seed=st.integers(0, 3),
    balanced=st.booleans(),
    split=st.sampled_from(["pooled", "weights", "counts"]),
    block=st.sampled_from([1, 17, 1 << 20]),
    n_bad=st.integers(0, 40),
)
def test_the_shortlist_chooses_as_all_entries_do(n, seed, balanced, split, block, n_bad):
    """The builder selects on `shortlist_budget`'s entries only (its columns are files): the same
    choice as on every entry, or the same error, with bad images left out."""
    from janus.data.budget import select_budget_columns, shortlist_budget

    rng = np.random.default_rng(seed)
    names = ["a", "b", "c"]
    m = 400
    prio = rng.integers(0, 2**64 - 1, m, dtype=np.uint64, endpoint=True)
    prio[rng.integers(0, m, 30)] = prio[0]  # ties: broken by position
    classes = rng.choice(np.r_[-1, np.arange(12)], m, p=[0.1] + [0.9 / 12] * 12).astype(np.int16)
    codes = rng.integers(0, 3, m).astype(np.int16)
    kwargs = {"class_balanced": balanced}
    if split == "weights":
        kwargs["source_weights"] = {"a": 1.0, "b": 3.0}  # source "c" is not in the budget
    elif split == "counts":
        kwargs["source_counts"] = {"c": n // 2, "a": n - n // 2}
    bad = np.sort(rng.choice(m, n_bad, replace=False))
    alive = np.setdiff1d(np.arange(m), bad)

    def select(pos):
        try:
            chosen = select_budget_columns(
                prio[pos],
                classes[pos].astype(np.int64),
                n,
                keys_at=lambda p: [str(pos[i]) for i in p],
                sources=np.asarray(names, dtype=object)[codes[pos]],
                **kwargs,
            )
        except ValueError as e:
            return str(e)
        return pos[chosen].tolist()

    short = shortlist_budget(
        prio, classes, n, source_codes=codes, source_names=names, exclude=bad, block=block, **kwargs
    )
    assert np.isin(short, alive).all() and (np.diff(short) > 0).all()
    assert select(short) == select(alive)
    if isinstance(select(alive), list):  # the shortlist is short: about n, not the 400 entries
        assert len(short) <= n + (13 * 3 if balanced else 0)
