"""One live writer per directory: a lock file naming its holder, taken over when the holder died.

`<dir>/LOCK` holds one JSON object: host, pid, start time (and a token). It is created atomically
(written beside it, then hard-linked into place: the link fails when a lock exists, also on NFS).
While held, the holder
- keeps an `fcntl.flock` on it (released by the kernel when the process dies, however it dies);
- touches its mtime every `lease_s / 4` seconds (the lease, for holders on other hosts).

A lock found is stale, and is taken over with a note, when
- its holder is on this host and its pid is gone (or the pid lives but holds no flock on the file:
  the pid was reused), or
- its holder is on another host and the lease expired: no touch for `lease_s` seconds
  (`JANUS_LOCK_LEASE_S`, default 300; a shared filesystem gives no other sign of a dead host).
Otherwise `WorkdirBusy` names the holder. Multi-host jobs: process 0 takes the lock for the job
(`acquire_for_job`, which janus.run_records holds a training run with, broadcasts the outcome so
every process stops together). `not_writable` probes a directory with a file.

`append_error_log` keeps a failure's traceback in `<dir>/errors.log`, where janus.main and
janus.evaluate print one line; janus.main writes there only in a workdir this process has held
(`held_here`), never in one another run holds or that it refused as not writable.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

LOCK_NAME = "LOCK"
DEFAULT_LEASE_S = 300.0
ERROR_LOG = "errors.log"  # <dir>/errors.log: the tracebacks of the failures said in one line

# Real paths of the directories this process has held (alone or for its job), kept after release:
# a run's own workdir, where its failure may be logged.
_HELD_HERE: set[str] = set()


class WorkdirBusy(ValueError):
    """Another live process holds the directory; the message is one line naming it. (A
    ValueError: CLIs that report a bad argument with status 2, like janus.data.build, report it
    the same way.)"""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def not_writable(directory: str | os.PathLike) -> str | None:
    """None when a file can be created and removed in `directory` (made when missing), else one
    line naming the directory and the OS error: how a run finds an unwritable workdir or
    checkpoints/ before it compiles, not minutes later in a library's thread. Cloud paths
    (gs://...) are not probed."""
    directory = os.fspath(directory)
    if "://" in directory:
        return None
    probe = os.path.join(directory, f".write-probe.{socket.gethostname()}.{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.remove(probe)
    except OSError as e:
        return f"{directory} is not writable: [Errno {e.errno}] {e.strerror or e}"
    return None


def held_here(directory: str | os.PathLike) -> bool:
    """Whether this process has held `directory`'s lock (alone, or for its job) at some point."""
    return os.path.realpath(directory) in _HELD_HERE


def append_error_log(
    directory: str | os.PathLike, text: str, *, command: str = "", process_index: int = 0
) -> str | None:
    """Appends `text` (a traceback) under a header line (UTC time, host, pid, `command`) to
    `<directory>/errors.log` (`errors.process<i>.log` for process i > 0 of a multi-process job:
    one writer per file on a shared filesystem). -> its path; None when `directory` is not a
    directory or the file cannot be written: the failure is on stderr all the same."""
    directory = os.fspath(directory)
    name = ERROR_LOG if process_index == 0 else f"errors.process{process_index}.log"
    path = os.path.join(directory, name)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    header = f"=== {when} host {socket.gethostname()} pid {os.getpid()}: {command}".rstrip()
    try:
        if not os.path.isdir(directory):
            return None
        with open(path, "a") as f:
            f.write(f"{header}\n{text.rstrip()}\n\n")
    except OSError:
        return None
    return path


def lease_seconds() -> float:
    return float(os.environ.get("JANUS_LOCK_LEASE_S", DEFAULT_LEASE_S))


def _describe(holder: dict) -> str:
    start = holder.get("start")
    when = (
        datetime.datetime.fromtimestamp(start, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if isinstance(start, int | float)
        else "?"
    )
    what = f" ({holder['what']})" if holder.get("what") else ""
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {when}{what}"


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # exists but is not ours (or unreadable): assume alive
    return True


def _flock_free(path: str) -> bool:
    """True when nobody holds an flock on `path` (the holder process is dead)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


class WorkdirLock:
    """`with WorkdirLock(dir, what="training"):` or acquire()/release()."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        what: str = "",
        name: str = LOCK_NAME,
        lease_s: float | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, name)
        self.what = what
        self.lease_s = lease_seconds() if lease_s is None else float(lease_s)
        self.log = log or (lambda m: print(m, flush=True))
        self.holder: dict | None = None
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquiring

    def _stale_reason(self, holder: dict) -> str | None:
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return "it is gone"
        if not holder:
            return "unreadable lock file" if age > 10 else None  # being written: wait a moment
        if holder.get("host") == socket.gethostname():
            if not _pid_alive(holder.get("pid")):
                return f"pid {holder.get('pid')} is gone"
            if age > 10 and _flock_free(self.path):
                return f"pid {holder.get('pid')} does not hold it (pid reused)"
            return None
        if age > self.lease_s:
            return f"its lease expired ({age:.0f}s without a heartbeat > {self.lease_s:.0f}s)"
        return None

    def acquire(self) -> WorkdirLock:
        os.makedirs(self.directory, exist_ok=True)
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": time.time(),
            "what": self.what,
            "token": uuid.uuid4().hex,
        }
        tmp = f"{self.path}.{me['token']}"
        with open(tmp, "w") as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            for _ in range(50):
                try:
                    os.link(tmp, self.path)  # atomic: fails when a lock exists
                except FileExistsError:
                    holder = _read(self.path)
                    if holder is None:
                        continue  # released meanwhile: try again
                    reason = self._stale_reason(holder)
                    if reason is None:
                        if not holder:
                            time.sleep(0.2)
                            continue
                        raise WorkdirBusy(
                            f"{self.directory} is in use by {_describe(holder)}; lock file "
                            f"{self.path} (it is taken over once that process is gone)",
                            holder,
                        ) from None
                    self._take_over(holder, reason)
                    continue
                break
            else:
                raise WorkdirBusy(f"could not take the lock {self.path}", {})
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.holder = me
        _HELD_HERE.add(os.path.realpath(self.directory))
        self._fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._thread = threading.Thread(target=self._heartbeat, name="janus-lock", daemon=True)
        self._thread.start()
        return self

    def _take_over(self, holder: dict, reason: str) -> None:
        """Moves the stale lock aside (rename: only one taker wins) and leaves a note."""
        aside = f"{self.path}.stale.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else moved it first
        if _read(aside) != holder:  # a fresh lock was created meanwhile: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        else:
            self.log(f"note: taking over the stale lock of {_describe(holder)}: {reason}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)

    def _heartbeat(self) -> None:
        period = max(self.lease_s / 4, 0.05)
        while not self._stop.wait(period):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    # -- releasing

    def release(self) -> None:
        if self.holder is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if (_read(self.path) or {}).get("token") == self.holder["token"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self.holder = None, None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def held(directory: str | os.PathLike, **kwargs) -> Iterator[WorkdirLock]:
    lock = WorkdirLock(directory, **kwargs).acquire()
    try:
        yield lock
    finally:
        lock.release()


def acquire_for_job(directory: str | os.PathLike, **kwargs) -> WorkdirLock | None:
    """Process 0 takes the lock for the whole job; every process learns whether it got it.
    -> the lock on process 0 (None elsewhere); raises WorkdirBusy on every process otherwise."""
    import jax

    if jax.process_count() == 1:
        return WorkdirLock(directory, **kwargs).acquire()
    import numpy as np
    from jax.experimental import multihost_utils

    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(directory, **kwargs).acquire()
        except WorkdirBusy as e:
            error = e
    ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if error is not None:
        raise error
    if not ok:
        raise WorkdirBusy(f"{os.fspath(directory)} is in use (process 0 could not lock it)", {})
    _HELD_HERE.add(os.path.realpath(directory))  # held for the job: its failures are ours to log
    return lock


def locked(directory_of: Callable[..., str | os.PathLike], **lock_kwargs):
    """Decorator: the call holds the lock of `directory_of(*args, **kwargs)` while it runs
    (e.g. the data builder on its --out: `@locked(lambda cfg, **_: cfg.out, name=...)`)."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            with WorkdirLock(directory_of(*args, **kwargs), **lock_kwargs):
                return fn(*args, **kwargs)

        return call

    return wrap
