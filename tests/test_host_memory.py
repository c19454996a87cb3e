"""janus.host_memory: a jitted CPU step's scratch buffer is reused from step to step, not mapped and
zero-filled afresh (counted in page faults, the kernel's own measure of it)."""

import json
import os
import platform
import subprocess
import sys

import pytest

from janus import host_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A step whose scratch is one 256 MiB product (8192 x 8192 float32, the next product's operand),
# far above glibc's largest mmap threshold (32 MiB): XLA frees it after each call. Minor faults are
# counted per call, 16 calls.
SCRIPT = """
import json, resource, sys
from janus import host_memory
kept = host_memory.keep_scratch_memory() if sys.argv[1] == "keep" else None
import jax, jax.numpy as jnp, numpy as np
step = jax.jit(lambda a, b: jnp.tanh(a @ b) @ b.T)
a = jnp.asarray(np.ones((8192, 64), np.float32))
b = jnp.asarray(np.ones((64, 8192), np.float32))
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = step(a, b).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults, "sum": float(out.sum()),
                  "async": jax.config.read("jax_cpu_enable_async_dispatch")}))
"""
SCRATCH_PAGES = 8192 * 8192 * 4 // 4096


def run_step(mode, **env):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", **env),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's: elsewhere nothing is changed")
def test_kept_scratch_is_reused_instead_of_faulted_in_each_step():
    mapped, kept = run_step("default"), run_step("keep")
    assert mapped["kept"] is None and mapped["async"] is True
    assert kept["kept"] == platform.libc_ver()[1] and kept["async"] is False
    # Without it every call maps the 256 MiB buffer afresh and faults in all its pages. With it the
    # heap grows over the first few calls until a freed buffer fits in it, then calls reuse it; now
    # and then one grows it again (other allocations took part of the freed space: 0-2 of the last 6
    # calls in trial runs, more often beside other jobs). So: of the last 12 calls, most reuse it.
    reused = lambda run: sum(f < 0.02 * SCRATCH_PAGES for f in run["faults"][4:])  # noqa: E731
    assert all(f > 0.9 * SCRATCH_PAGES for f in mapped["faults"][4:]), mapped
    assert reused(mapped) == 0 and reused(kept) >= 8, kept
    assert kept["sum"] == mapped["sum"] == 8192 * 8192 * 64  # tanh(64) is 1 in float32


def test_opt_out_changes_nothing():
    assert host_memory.keep_scratch_memory({host_memory.OPT_OUT: "0"}) is None
    off = run_step("keep", **{host_memory.OPT_OUT: "0"})
    assert off["kept"] is None and off["async"] is True


def test_the_start_up_line_says_which():
    assert host_memory.describe("2.36") == "CPU scratch memory kept between steps (glibc 2.36)"
    assert host_memory.describe(None) == "CPU scratch memory mapped per step"
