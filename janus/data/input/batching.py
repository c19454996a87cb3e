"""Batches of a grain element stream, with bad inputs dropped and counted (or masked, for eval).

A ``Stream`` reads a per-process grain ``MapDataset`` in chunks of ``batch_size`` elements: a
thread or worker process makes a whole chunk and stacks it where it was made (``_collate``), so
the per-element cost of grain's thread hand-offs, of pickling across processes and of batching is
paid once per batch. ``SkipBatchIterator`` cuts the chunks into batches and only re-cuts when
skips left one short.

An element that cannot give a sample is a skip marker ``{SKIP: reason, "key": ..., "detail": ...}``
(the transforms of ``janus.data.input.pipeline`` make them). ``mode="skip"`` (train) drops it,
counts it and keeps the first keys per reason, logging the 1st, 2nd, 4th, ... of each kind;
``mode="mask"`` (eval) keeps its row with ``mask=False``. The iterator's state is the number of
stream elements consumed plus those counts: plain JSON, independent of grain's internals, of
``worker_count`` and of the chunking, so resuming from ``get_state`` gives the same batches.
"""

from __future__ import annotations

import collections
import functools
import logging
from typing import Any

import grain
import numpy as np

log = logging.getLogger(__name__)

_FIRST_KEYS = 5  # offending keys kept per skip reason
SKIP = "_skip"  # marker field of a skipped element ("_pad": eval padding, never counted)


def _collate(elements: list, spec: dict | None = None) -> dict:
    """A chunk of stream elements, stacked where it was made (a grain thread or worker process).

    -> {"rows": {key: stacked array} (None if no row), "good": bool per element,
    "skips": [(offset in the chunk, marker)]}. Skipped elements are not rows, or, with ``spec``
    (eval), rows of ``spec``.
    """
    good = np.array([SKIP not in e for e in elements], dtype=bool)
    skips = [(i, e) for i, (e, ok) in enumerate(zip(elements, good)) if not ok]
    if spec is None:
        rows = [e for e, ok in zip(elements, good) if ok]
    else:
        rows = [e if ok else spec for e, ok in zip(elements, good)]
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]} if rows else None
    return {"rows": stacked, "good": good, "skips": skips}


class _Chunks(grain.MapDataset):
    """Chunk i: ``collate`` of elements [i * size, (i + 1) * size) of ``parent`` (the last may be
    short), read with grain's batched ``_getitems``: each transformation of the chain then keeps
    its statistics once a chunk, not once an element (2-3% of the fast chain's CPU an image;
    ``ds.batch`` reads element by element). The elements, and their rngs, are the same."""

    def __init__(self, parent: grain.MapDataset, size: int, collate):
        super().__init__(parent)
        self._size = size
        self._collate = collate

    def __len__(self) -> int:
        return -(-len(self._parent) // self._size)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        start = index * self._size
        stop = min(len(self._parent), start + self._size)
        return self._collate(self._parent._getitems(list(range(start, stop))))


class Stream:
    """The per-process element stream: a grain MapDataset, read in collated chunks of
    ``batch_size`` elements by threads or worker processes."""

    def __init__(self, map_ds: grain.MapDataset, batch_size: int, worker_count: int, spec=None):
        self.map_ds = map_ds
        self.batch_size = batch_size
        self.worker_count = worker_count
        self.spec = spec

    def iterator(self, position: int):
        """An iterator over the chunks of elements ``position, position + 1, ...``."""
        ds = self.map_ds[position:] if position else self.map_ds
        ds = _Chunks(ds, self.batch_size, functools.partial(_collate, spec=self.spec))
        it_ds = ds.to_iter_dataset(_read_options(self.worker_count))
        return iter(_with_workers(it_ds, self.worker_count))


class SkipBatchIterator(grain.DatasetIterator):
    """Batches a ``Stream``; skip markers are dropped and counted (``mode="skip"``) or become
    masked rows (``mode="mask"``, eval: padding and bad images give ``mask=False``).

    The state is the number of stream elements consumed plus the skip counts -- plain JSON that
    does not depend on grain's internals, on ``worker_count`` or on the chunking; ``set_state``
    re-opens the stream at that position (restarting the worker processes once).
    """

    def __init__(self, stream: Stream, *, mode: str = "skip", drop_remainder=True):
        super().__init__()
        self._stream = stream
        self._mode = mode
        self._drop_remainder = drop_remainder
        self._position = 0
        self._it = None  # opened lazily, so set_state right after creation starts workers once
        self._chunk = None  # the chunk being cut into batches, and where in it
        self._cursor = 0
        self._counts: collections.Counter = collections.Counter()
        self._first: dict[str, list[str]] = {}

    def _record_skip(self, element: dict) -> None:
        reason = element[SKIP]
        if reason == "_pad":
            return
        self._counts[reason] += 1
        keys = self._first.setdefault(reason, [])
        if len(keys) < _FIRST_KEYS:
            keys.append(element.get("key", "?"))
        n = self._counts[reason]
        if n & (n - 1) == 0:  # log the 1st, 2nd, 4th, 8th, ... skip of each kind
            log.warning("skipped %d example(s) (%s), latest: %s", n, reason, element.get("detail"))

    def _take(self, need: int):
        """Up to ``need`` rows from the current chunk, in stream order: (rows, mask, number of
        rows) or None; the skips passed on the way are recorded and the position advances past
        them."""
        chunk, start = self._chunk, self._cursor
        good = chunk["good"]
        if self._mode == "mask":  # every element is a row
            end = min(len(good), start + need)
            first, last = start, end
        else:
            after = np.flatnonzero(good[start:]) + start
            end = int(after[need - 1]) + 1 if len(after) >= need else len(good)
            first = int(np.count_nonzero(good[:start]))
            last = first + int(np.count_nonzero(good[start:end]))
        for offset, element in chunk["skips"]:
            if start <= offset < end:
                self._record_skip(element)
        self._position += end - start
        self._cursor = end
        if end == len(good):
            self._chunk = None
        if last == first:
            return None
        rows = chunk["rows"]
        whole = first == 0 and last == len(next(iter(rows.values())))
        part = rows if whole else {k: v[first:last] for k, v in rows.items()}
        return part, good[start:end], last - first

    def __next__(self) -> dict:
        if self._it is None:
            self._it = self._stream.iterator(self._position)
        parts, n = [], 0
        while n < self._stream.batch_size:
            if self._chunk is None:
                try:
                    self._chunk, self._cursor = next(self._it), 0
                except StopIteration:
                    if parts and not self._drop_remainder:
                        break
                    raise
            part = self._take(self._stream.batch_size - n)
            if part is not None:
                parts.append(part)
                n += part[2]
        if len(parts) == 1:
            batch, mask, _ = parts[0]
        else:
            batch = {k: np.concatenate([rows[k] for rows, _, _ in parts]) for k in parts[0][0]}
            mask = np.concatenate([m for _, m, _ in parts])
        if self._mode == "mask":
            batch = {**batch, "mask": mask}
        return batch

    def get_state(self) -> dict[str, Any]:
        return {
            "position": self._position,
            "skipped": dict(self._counts),
            "first_keys": {k: list(v) for k, v in self._first.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._close_stream()
        self._position = int(state["position"])
        self._counts = collections.Counter(state.get("skipped", {}))
        self._first = {k: list(v) for k, v in state.get("first_keys", {}).items()}

    def skip_report(self, state: dict[str, Any] | None = None) -> dict:
        """{"counts": {reason: n}, "first_keys": {reason: [...]}} of the skips seen so far, or
        of those up to ``state`` (a ``get_state()`` of this stream: a prefetcher's consumer)."""
        state = self.get_state() if state is None else state
        return {
            "counts": dict(state.get("skipped", {})),
            "first_keys": {k: list(v) for k, v in state.get("first_keys", {}).items()},
        }

    def _close_stream(self) -> None:
        self._chunk = None
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()

    def close(self) -> None:
        """Stops worker processes (call before exit when ``worker_count > 0``)."""
        self._close_stream()

    def __del__(self):
        try:
            self._close_stream()
        except Exception:  # interpreter shutdown: nothing useful left to do
            pass

    def __str__(self) -> str:
        return f"SkipBatchIterator(batch_size={self._stream.batch_size}, mode={self._mode})"


def skip_report(iterator) -> dict:
    """The runtime skips of a loader's iterator (report at the end of a run and in its manifest)."""
    return iterator.skip_report()


def _read_options(worker_count: int) -> grain.ReadOptions:
    # Two threads overlap decoding (it releases the GIL), a chunk each; a small buffer (in chunks)
    # bounds memory.
    threads = 2 if worker_count == 0 else 1
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2)


def _with_workers(ds: grain.IterDataset, worker_count: int) -> grain.IterDataset:
    if worker_count <= 0:
        return ds
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain workers read absl flags (STACK.md pitfall)
        flags.FLAGS.mark_as_parsed()
    return ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=2)
    )
