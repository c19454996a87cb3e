"""Test setup: 8 host CPU devices, so every sharded code path runs on more than one device.

The flag must be set before jax is first imported, which is why it lives here at module level.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tests' programs are tiny and run a few steps, so XLA's compile time dominates: compile them
# with most optimizations off (LLVM at -O0), which halves a run's CPU time. Semantics are the
# same; JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the suite fully optimised (docs/development.md).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import atexit  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

# One persistent XLA compilation cache for the test session, its xdist workers and every janus.main
# they start (the environment is inherited): a program compiled by one test is read back by the
# next that builds the same one (docs/development.md, "CI time"). New for each session, so a test
# never depends on what an earlier session left; set JAX_COMPILATION_CACHE_DIR to keep one.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="janus-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402


@pytest.fixture
def fully_optimised_xla():
    """XLA's full optimisation for this test's compiles: for numerical comparisons that hold to
    the last digits only when both sides are compiled the same optimised way (remat's recomputed
    forward against the stored one); the rest of the suite compiles with most optimizations off."""
    import jax

    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="session")
def num_devices():
    import jax

    return jax.device_count()


# A small JANuS-mini v2 (janus.data.mini.generate.SMALL: 200 curated samples, the budget the trainer
# tests use, and a few of everything else), built once per test session with the real generator and
# builder.
@pytest.fixture(scope="session")
def mini_v2(tmp_path_factory):
    """The records root (`<root>/<source>`); the raw data are in `<root>_raw`."""
    from janus.data.mini import generate, prepare

    root = tmp_path_factory.mktemp("mini_v2") / "mini"
    prepare.prepare(
        str(root),
        sizes=generate.SMALL,
        workers=1,
        log=lambda *_: None,
    )
    return root


@pytest.fixture
def interrupt():
    """interrupt(cmd, ready, sig) runs cmd in a new session (so the signal reaches its workers
    too, as Ctrl-C in a terminal does), sends `sig` to the group once ready() holds and returns
    (returncode, stderr); never a hang."""

    def run(cmd, ready, sig, timeout=120):
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.time() + timeout
            while not ready():
                assert proc.poll() is None and time.time() < deadline, "ended or stalled early"
                time.sleep(0.01)
            os.killpg(proc.pid, sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode, err

    return run
