"""Test setup: 8 host CPU devices, so every sharded code path runs on more than one device.

The flag must be set before jax is first imported, which is why it lives here at module level.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def num_devices():
    import jax

    return jax.device_count()
