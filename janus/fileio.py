"""Atomic file writes: a reader (or a crash) never sees half a file. And file names made from
values (label sets, sweep arguments), which may hold '/', ':' or '*'.

Every writer of results, manifests, markers and caches goes through here: write to a temporary file
beside the target (same filesystem), flush and fsync, then `os.replace` it over the target.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """`open(path, mode)` for writing; the file appears at `path` only if the block succeeds."""
    path = pathlib.Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")  # pid: concurrent writers don't collide
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def safe_name(value: str) -> str:
    """`value` as one path component: every character other than letters, digits, '.', '_', '+'
    and '-' becomes '-' ('random:5:0' -> 'random-5-0', 'sets/a.txt' -> 'sets-a.txt')."""
    return re.sub(r"[^A-Za-z0-9._+-]", "-", str(value))
