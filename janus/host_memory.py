"""Keep XLA:CPU's per-step scratch buffer mapped from one step to the next.

XLA's CPU runtime mallocs each execution's temporary buffer and frees it afterwards: 2.2 GB for a
ViT-S/16 train step at 224 px, batch 16. glibc serves a chunk that large with its own mmap and
unmaps it on free, so every step the kernel zero-fills the whole buffer again, one 4 KiB page fault
at a time: 577 k faults and 1.1 s of system time in a 3.6 s ViT-S/16 step on a 2-core EPYC, and
5 M faults (12 s of system time in 47 s) in JANuS-mini's main job (benchmarks/RESULTS.md, "CPU
scratch memory kept between steps").

`keep_scratch_memory()`, called by the entrypoints before jax's first use, stops that (the heap
grows over the first few steps until a freed buffer fits, then steps reuse it):
- glibc gives no chunk its own mmap and never trims its heaps (`mallopt(M_MMAP_MAX, 0)`,
  `mallopt(M_TRIM_THRESHOLD, -1)`), so the freed buffer is the next step's malloc;
- jax runs a single-device CPU computation on the calling thread
  (`jax_cpu_enable_async_dispatch` off). That thread is the main one, whose heap can grow to any
  size; glibc serves a chunk over 64 MiB requested from any other thread with mmap whatever its
  settings, since a thread's own heap is at most 64 MiB. A multi-device CPU computation still runs
  on one thread per device (and its scratch is mapped per step, as before).

What it costs: the process keeps the memory it freed for reuse instead of returning it (resident
memory stays at its peak), and on a CPU the Python thread waits for each step; the input pipeline
has its own threads, so nothing it did during a step is lost. `M_ARENA_MAX=1` (every thread on the
main heap) would also keep the buffer, but the input pipeline's threads then share one heap lock,
and that made the mini job slower than the faults it saved.

Linux with glibc only; elsewhere, or with ``JANUS_KEEP_SCRATCH=0`` in the environment, it changes
nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

OPT_OUT = "JANUS_KEEP_SCRATCH"
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (glibc's malloc.h)
_M_MMAP_MAX = -4


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and others: no mallopt to set
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return libc


def keep_scratch_memory(env: dict[str, str] | None = None) -> str | None:
    """Sets the above; -> glibc's version when it did, None when it changed nothing."""
    env = os.environ if env is None else env
    if env.get(OPT_OUT, "1") == "0":
        return None
    libc = _glibc()
    if libc is None:
        return None
    # glibc takes the threshold as a size_t: -1 is the largest, "never trim".
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, -1)):
        raise OSError("glibc refused mallopt(M_MMAP_MAX, 0) or mallopt(M_TRIM_THRESHOLD, -1)")
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return libc.gnu_get_libc_version().decode()


def describe(kept: str | None) -> str:
    """The start-up line's words for keep_scratch_memory's result."""
    if kept:
        return f"CPU scratch memory kept between steps (glibc {kept})"
    return "CPU scratch memory mapped per step"
