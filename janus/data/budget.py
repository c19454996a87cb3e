"""Data budgets: choose exactly N samples from a mixture, deterministic in a seed and nested.

How nesting is guaranteed:
- every entry gets a priority from a hash of (seed, key), so the choice does not depend on the order
  of `entries` or on the other entries present;
- per-source counts for weights come from a sequential apportionment (each next sample goes to the
  source furthest below its share), so the count of every source never decreases as n grows;
- within a source, entries are ranked once (by priority; round-robin over classes when
  class-balanced) and the first `count` are taken. A selection for n1 < n2 is therefore a
  prefix, hence a subset.

Class-balanced means per source: with c classes present, every class gets floor(count/c) or one more
(the extra ones go to the classes whose next entry has the best priority).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np


def priorities(keys: Sequence[str], seed: int) -> np.ndarray:
    """uint64 priority of each key: the first 8 bytes (little-endian) of blake2b(seed, key)."""
    salted = hashlib.blake2b(digest_size=8, salt=int(seed).to_bytes(8, "little", signed=True))
    digests = []
    for k in keys:
        h = salted.copy()  # half the cost of a new hasher per key (hashed for millions of keys)
        h.update(k.encode("utf-8"))
        digests.append(h.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


def _first_label(labels) -> int:
    arr = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
    return int(arr[0]) if arr.size else -1


def apportion(n: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Integer counts summing to n, proportional to weights, monotone in n (no Alabama paradox)."""
    names = list(weights)
    w = np.asarray([float(weights[s]) for s in names])
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"source weights must be non-negative and not all zero: {dict(weights)}")
    if len(names) == 1:
        return {names[0]: int(n)}
    # Plain floats: the same float64 arithmetic as NumPy, without its per-call overhead in the loop.
    w = (w / w.sum()).tolist()
    counts = [0] * len(names)
    sources = range(len(names))
    for k in range(1, n + 1):
        # Give sample k to the source furthest below its share after k samples (ties: first name).
        counts[max(sources, key=lambda i: w[i] * k - counts[i])] += 1
    return dict(zip(names, counts))


def _rank(positions: np.ndarray, prio: np.ndarray, classes: np.ndarray, balanced: bool):
    """Order of `positions` whose prefixes are the nested selections."""
    order = positions[np.argsort(prio[positions], kind="stable")]
    if not balanced:
        return order
    # Round-robin over classes: round r holds each class's r-th best entry, ordered by priority.
    cls = classes[order]
    by_class = np.argsort(cls, kind="stable")  # within a class: still in priority order
    sorted_cls = cls[by_class]
    starts = np.flatnonzero(np.r_[True, sorted_cls[1:] != sorted_cls[:-1]])
    sizes = np.diff(np.r_[starts, len(cls)])
    round_of = np.empty(len(order), dtype=np.int64)
    round_of[by_class] = np.arange(len(cls)) - np.repeat(starts, sizes)
    return order[np.argsort(round_of, kind="stable")]


def _check_unique(prio: np.ndarray, keys_at) -> None:
    """Keys are unique. Distinct priorities imply distinct keys, so only entries whose 64-bit
    priorities collide are compared by key (no set of millions of strings)."""
    p = np.sort(prio)
    clash = np.unique(p[1:][p[1:] == p[:-1]])
    if clash.size:
        keys = keys_at(np.flatnonzero(np.isin(prio, clash)))
        if len(set(keys)) != len(keys):
            raise ValueError("entry keys are not unique; budgets need unique keys")


def select_budget(
    entries: Sequence[Mapping],
    n: int,
    *,
    seed: int,
    class_balanced: bool = False,
    source_weights: Mapping[str, float] | None = None,
    source_counts: Mapping[str, int] | None = None,
) -> np.ndarray:
    """Positions (sorted int64) of exactly n entries; see the module docstring for the guarantees.

    entries: dicts with "key", "source" and "labels". With neither source_weights nor
    source_counts the sources are pooled. ValueError (naming the shortfall per source/class) if n
    cannot be met.
    """
    keys = [str(e["key"]) for e in entries]
    return select_budget_columns(
        priorities(keys, seed),
        np.asarray([_first_label(e.get("labels")) for e in entries], dtype=np.int64),
        n,
        sources=np.asarray([str(e.get("source", "")) for e in entries], dtype=object),
        keys_at=lambda pos: [keys[i] for i in pos.tolist()],
        class_balanced=class_balanced,
        source_weights=source_weights,
        source_counts=source_counts,
    )


def select_budget_columns(
    prio: np.ndarray,
    classes: np.ndarray,
    n: int,
    *,
    keys_at,
    sources: np.ndarray | None = None,
    class_balanced: bool = False,
    source_weights: Mapping[str, float] | None = None,
    source_counts: Mapping[str, int] | None = None,
) -> np.ndarray:
    """`select_budget` over columns: prio = `priorities(keys, seed)`, classes = first label (-1:
    none), sources (only needed with weights/counts); keys_at(positions) -> their keys (called
    only for entries whose priorities collide)."""
    n = int(n)
    if n < 0:
        raise ValueError(f"budget must be >= 0, got {n}")
    if source_weights is not None and source_counts is not None:
        raise ValueError("give source_weights or source_counts, not both")
    _check_unique(prio, keys_at)
    eligible = classes >= 0 if class_balanced else np.ones(len(prio), dtype=bool)

    if source_counts is not None:
        counts = {str(s): int(c) for s, c in source_counts.items()}
        if sum(counts.values()) != n:
            raise ValueError(f"source_counts sum to {sum(counts.values())}, budget is {n}")
    elif source_weights is not None:
        counts = apportion(n, {str(s): w for s, w in source_weights.items()})
    else:
        counts = None
    if counts is not None and sources is None:
        raise ValueError("source_weights/source_counts need the entries' sources")

    groups = (
        {None: np.flatnonzero(eligible)}
        if counts is None
        else {s: np.flatnonzero(eligible & (sources == s)) for s in counts}
    )
    wanted = {None: n} if counts is None else counts
    chosen, problems = [], []
    for s, pos in groups.items():
        need = wanted[s]
        where = "all sources" if s is None else f"source {s!r}"
        if need > len(pos):
            problems.append(f"{where}: needs {need}, has {len(pos)} eligible")
            continue
        if class_balanced and need:
            present, per_class = np.unique(classes[pos], return_counts=True)
            q, rem = divmod(need, len(present))
            short = [f"class {c}: {k}" for c, k in zip(present, per_class) if k < q]
            if short or (per_class > q).sum() < rem:
                problems.append(
                    f"{where}: class-balanced {need} over {len(present)} classes needs {q} "
                    f"(+1 for {rem}) per class; too few in "
                    + (", ".join(short[:10]) if short else "classes beyond the base share")
                )
                continue
        chosen.append(_rank(pos, prio, classes, class_balanced)[:need])
    if problems:
        raise ValueError(f"budget of {n} cannot be met: " + "; ".join(problems))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
