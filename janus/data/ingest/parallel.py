"""The builder's process pool and progress lines."""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import signal
import sys
import time


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessMap:
    """A process pool, or in-process mapping for workers <= 1 (no start-up cost in tests).

    concurrent.futures rather than multiprocessing.Pool: a worker that dies (killed, out of memory)
    raises BrokenProcessPool here instead of hanging the build.

    Used as a context manager. Workers ignore Ctrl-C: a KeyboardInterrupt inside a worker can land
    while it sends a result and leave the pool's pipe torn, which hung the interrupted build. The
    main process gets the Ctrl-C and, leaving the block with an exception, terminates the workers
    rather than waiting for their tasks (one may be stuck, e.g. reading an image from a pipe).
    """

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._pool = None
        if self.workers > 1:
            # fork is cheap; after jax is imported, fork is unsafe (threads), so use spawn then.
            method = "spawn" if "jax" in sys.modules else "fork"
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_ignore_sigint,
            )

    def imap_unordered(self, fn, items):
        if self._pool is None:
            yield from map(fn, items)
            return
        futures = [self._pool.submit(fn, item) for item in items]
        for f in concurrent.futures.as_completed(futures):
            yield f.result()

    def imap(self, fn, items, ahead: int | None = None):
        """fn over `items`, results in order. `items` is read lazily and at most `ahead` (default
        twice the workers) are in flight, so a long stream is never held whole."""
        if self._pool is None:
            yield from map(fn, items)
            return
        pending = collections.deque()
        for item in items:
            pending.append(self._pool.submit(fn, item))
            if len(pending) >= (ahead or 2 * self.workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def map(self, fn, items):
        if self._pool is None:
            return list(map(fn, items))
        return list(self._pool.map(fn, items))

    def __enter__(self) -> ProcessMap:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is None:
            return
        if exc_type is None:
            self._pool.shutdown(wait=True)
            return
        # Python 3.14 has terminate_workers(); the pool then finds them dead and shuts down.
        for p in list((self._pool._processes or {}).values()):
            p.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)


class Progress:
    """Progress lines on stderr: in place on a terminal, every 5 s (and at the end) in a log.
    `total=None`: a stream of unknown length (no end line)."""

    def __init__(self, what: str, total: int | None, enabled: bool, already_done: int = 0):
        self.what, self.total, self.enabled = what, total, enabled
        self.done, self.t0, self._last = already_done, time.time(), 0.0
        self._already_done = already_done  # resumed work: not part of this run's rate
        self.tty = sys.stderr.isatty()

    def update(self, k: int, extra: str = "") -> None:
        self.done += k
        now = time.time()
        if not self.enabled or (
            now - self._last < (0.2 if self.tty else 5.0)
            and (self.total is None or self.done < self.total)
        ):
            return
        self._last = now
        rate = (self.done - self._already_done) / max(now - self.t0, 1e-9)
        done = self.done if self.total is None else f"{self.done}/{self.total}"
        line = f"[build] {self.what}: {done} ({rate:.0f}/s){extra}"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr)
        if self.tty and self.total is not None and self.done >= self.total:
            print(file=sys.stderr)
