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
    round_of = np.empty(len(order), dtype=np.int64)
    round_of[by_class] = _rank_in_runs(cls[by_class])
    return order[np.argsort(round_of, kind="stable")]


def _rank_in_runs(sorted_ids: np.ndarray) -> np.ndarray:
    """Each element's position within its run of equal values."""
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return np.arange(len(sorted_ids)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_ids)]))


def _check_unique(prio: np.ndarray, keys_at) -> None:
    """Keys are unique. Distinct priorities imply distinct keys, so only entries whose 64-bit
    priorities collide are compared by key (no set of millions of strings)."""
    p = np.sort(prio)
    clash = np.unique(p[1:][p[1:] == p[:-1]])
    if clash.size:
        keys = keys_at(np.flatnonzero(np.isin(prio, clash)))
        if len(set(keys)) != len(keys):
            raise ValueError("entry keys are not unique; budgets need unique keys")


def _per_source(n: int, source_weights, source_counts) -> dict[str, int] | None:
    """Samples wanted from each source; None: the sources are pooled."""
    if source_weights is not None and source_counts is not None:
        raise ValueError("give source_weights or source_counts, not both")
    if source_counts is not None:
        counts = {str(s): int(c) for s, c in source_counts.items()}
        if sum(counts.values()) != n:
            raise ValueError(f"source_counts sum to {sum(counts.values())}, budget is {n}")
        return counts
    if source_weights is not None:
        return apportion(n, {str(s): w for s, w in source_weights.items()})
    return None


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
    counts = _per_source(n, source_weights, source_counts)
    _check_unique(prio, keys_at)
    eligible = classes >= 0 if class_balanced else np.ones(len(prio), dtype=bool)
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


_CLASS_IDS = 1 << 16  # first labels are int16 (-1: none): class c of group g is g * 2**16 + c + 1


def shortlist_budget(
    prio: np.ndarray,
    classes: np.ndarray,
    n: int,
    *,
    source_codes: np.ndarray,
    source_names: Sequence[str],
    exclude: Sequence[int] = (),
    class_balanced: bool = False,
    source_weights: Mapping[str, float] | None = None,
    source_counts: Mapping[str, int] | None = None,
    block: int = 1 << 18,
) -> np.ndarray:
    """Sorted positions of the only entries `select_budget_columns` can choose with these
    arguments; on them alone it chooses exactly as on all entries, and fails with the same message.

    Those are, per group (the pool, or each source the budget names): the best `need` entries by
    (priority, position), or class-balanced the best q + 1 of each class, where q is the group's
    base share per class. The columns are read a block at a time (they may be memory-mapped
    files), so memory grows with n, not with the entries. `source_codes`: index of each entry's
    source in `source_names`; `exclude`: positions to leave out (images found bad).
    """
    per_source = _per_source(int(n), source_weights, source_counts)
    wanted = np.asarray([int(n)] if per_source is None else list(per_source.values()))
    if per_source is None:
        group_of_code = np.zeros(len(source_names), dtype=np.int64)
    else:
        group = {name: g for g, name in enumerate(per_source)}
        group_of_code = np.asarray([group.get(str(s), -1) for s in source_names], dtype=np.int64)
    exclude = np.asarray(exclude, dtype=np.int64)

    def blocks():
        for start in range(0, len(prio), block):
            stop = min(start + block, len(prio))
            group = group_of_code[np.asarray(source_codes[start:stop], dtype=np.int64)]
            cls = np.asarray(classes[start:stop], dtype=np.int64)
            pos = np.arange(start, stop)
            ok = (group >= 0) & ~np.isin(pos, exclude)
            if class_balanced:
                ok &= cls >= 0
            yield pos[ok], np.asarray(prio[start:stop])[ok], group[ok] * _CLASS_IDS + cls[ok] + 1

    if class_balanced:  # caps per class of a group: q + 1, from the classes present in it
        present = np.zeros(len(wanted) * _CLASS_IDS, dtype=np.int64)
        for _, _, ids in blocks():
            present += np.bincount(ids, minlength=len(present))
        present = (present.reshape(len(wanted), _CLASS_IDS) > 0).sum(1)
        cap = np.where((wanted > 0) & (present > 0), wanted // np.maximum(present, 1) + 1, 0)
        cap = cap.repeat(_CLASS_IDS)
    else:
        cap = wanted

    kept = (
        np.zeros(0, np.uint64),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
    )  # prio, pos, group
    # an entry enters while its rank group is not full, or with a priority below the group's worst
    worst = np.zeros(len(cap), dtype=np.uint64)
    worst[cap > 0] = np.iinfo(np.uint64).max
    full = cap == 0
    for pos, p, ids in blocks():
        rank_group = ids if class_balanced else ids // _CLASS_IDS
        enters = ~full[rank_group] | (p < worst[rank_group])
        if enters.any():
            kept = tuple(np.r_[k, new[enters]] for k, new in zip(kept, (p, pos, rank_group)))
            order = np.lexsort((kept[1], kept[0], kept[2]))  # by group, priority, position
            kept = tuple(k[order] for k in kept)
            kept = tuple(k[_rank_in_runs(kept[2]) < cap[kept[2]]] for k in kept)
            full = np.bincount(kept[2], minlength=len(cap)) >= cap
            last = np.r_[kept[2][1:] != kept[2][:-1], True]  # each group's worst kept
            worst[kept[2][last]] = kept[0][last]
    return np.sort(kept[1])
