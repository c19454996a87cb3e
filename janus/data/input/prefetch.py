"""Batches in flight to the devices: the transfer of batch N+1 starts before step N runs.

``DevicePrefetch(batches, put, depth)`` wraps a checkpointable batch iterator (``get_state`` /
``set_state``, e.g. ``batching.SkipBatchIterator``); ``put`` moves a host batch to the devices
(``janus.sharding.shard_batch``; jax dispatches the copy asynchronously). It keeps ``depth``
batches put ahead of the consumer.

Checkpoints stay exact: each prefetched batch carries the inner iterator's state right after it,
and ``get_state`` answers the state after the last batch handed out, so batches fetched but not
yet consumed are read again after a resume, never lost. ``set_state`` drops the queue.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import grain


class DevicePrefetch(grain.DatasetIterator):
    def __init__(self, batches, put: Callable[[Any], Any], depth: int = 2):
        super().__init__()
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._inner = batches
        self._put = put
        self._depth = depth
        self._queue: collections.deque = collections.deque()  # (device batch, inner state after)
        self._state = None  # the inner state after the last batch handed out; None: at inner's

    def __next__(self):
        while len(self._queue) < self._depth:
            try:
                host = next(self._inner)
            except StopIteration:
                if not self._queue:
                    raise
                break
            self._queue.append((self._put(host), self._inner.get_state()))
        batch, self._state = self._queue.popleft()
        return batch

    def get_state(self) -> dict[str, Any]:
        return self._inner.get_state() if self._state is None else self._state

    def set_state(self, state: dict[str, Any]) -> None:
        self._queue.clear()
        self._state = None
        self._inner.set_state(state)

    def skip_report(self) -> dict:
        """The inner iterator's skips up to the last batch handed out (not the prefetched)."""
        return self._inner.skip_report(self.get_state())

    def close(self) -> None:
        self._queue.clear()
        if hasattr(self._inner, "close"):
            self._inner.close()

    def __str__(self) -> str:
        return f"DevicePrefetch({self._inner}, depth={self._depth})"
