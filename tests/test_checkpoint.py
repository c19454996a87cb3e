"""Checkpoints: sharded save/restore with the grain iterator, retention, crash safety, inference
loading and parameter-filtered initialisation."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from janus import checkpoint as ckpt_lib
from janus import sharding


def _state(mesh, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(16, 4)).astype(np.float32)
    return {
        "step": jnp.asarray(3, jnp.int32),
        "params": {
            "dense": {
                "kernel": jax.device_put(w, NamedSharding(mesh, P("data", None))),
                "bias": jax.device_put(np.arange(4, dtype=np.float32), NamedSharding(mesh, P())),
            }
        },
        "batch_stats": {"bn": {"mean": jnp.ones((4,))}},
        "opt_state": {"mu": jnp.zeros((16, 4))},
    }


def _iterator():
    return iter(grain.MapDataset.range(100).shuffle(seed=1).batch(4).to_iter_dataset())


def test_save_restore_sharded_state_and_data_iterator(tmp_path):
    mesh = sharding.make_mesh([("data", -1)])
    state = _state(mesh)
    it = _iterator()
    next(it), next(it)
    ck = ckpt_lib.Checkpointer(tmp_path, keep=2)
    ck.save(3, state, data_iter=it, config={"loss": "ce", "model": {"name": "x"}})
    expected_next = next(it)
    ck.close()

    ck = ckpt_lib.Checkpointer(tmp_path, keep=2)
    assert ck.latest_step() == 3 and ckpt_lib.list_complete_steps(tmp_path) == [3]
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    fresh_it = _iterator()
    restored = ck.restore(3, abstract, data_iter=fresh_it)
    ck.close()
    np.testing.assert_array_equal(next(fresh_it), expected_next)  # exactly the next batch
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.sharding == b.sharding

    config, variables, step = ckpt_lib.load_for_inference(tmp_path)  # a workdir works too
    assert step == 3 and config["model"]["name"] == "x"
    assert set(variables) == {"params", "batch_stats"}
    assert isinstance(variables["params"]["dense"]["kernel"], np.ndarray)
    np.testing.assert_array_equal(
        variables["params"]["dense"]["kernel"], np.asarray(state["params"]["dense"]["kernel"])
    )


def test_keep_last_k_plus_every_mth(tmp_path):
    mesh = sharding.make_mesh([("data", -1)])
    state = _state(mesh)
    ck = ckpt_lib.Checkpointer(tmp_path, keep=2, keep_every=4, async_save=True)
    for step in range(1, 11):
        ck.save(step, state)
    ck.close()
    assert ckpt_lib.list_complete_steps(tmp_path) == [4, 8, 9, 10]


def test_half_written_checkpoint_is_ignored_and_previous_intact(tmp_path):
    mesh = sharding.make_mesh([("data", -1)])
    state = _state(mesh)
    ck = ckpt_lib.Checkpointer(tmp_path, keep=3)
    ck.save(5, state)
    ck.close()
    # What a crash mid-write leaves: orbax's temporary dir, never renamed to its final name.
    tmp = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-1234"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_bytes(b"\x00" * 10)
    assert ckpt_lib.list_complete_steps(tmp_path) == [5]
    ck = ckpt_lib.Checkpointer(tmp_path, keep=3)
    assert ck.latest_step() == 5
    ck.close()
    _, variables, step = ckpt_lib.load_for_inference(tmp_path / "checkpoints")
    assert step == 5 and variables["params"]["dense"]["bias"].tolist() == [0, 1, 2, 3]


def test_save_for_inference_roundtrip_and_merge_filters(tmp_path):
    variables = {
        "params": {
            "image_tower": {"conv": {"kernel": np.full((3, 3), 2.0, np.float32)}},
            "head": {"kernel": np.full((3, 10), 2.0, np.float32)},
        },
        "batch_stats": {"image_tower": {"bn": {"mean": np.ones(3, np.float32)}}},
    }
    path = ckpt_lib.save_for_inference(tmp_path, 7, {"model": {"name": "m"}}, variables)
    assert path.endswith("checkpoints/7")
    config, loaded, step = ckpt_lib.load_for_inference(path)
    assert step == 7 and config == {"model": {"name": "m"}}
    assert "opt_state" not in loaded

    fresh = {
        "params": {
            "image_tower": {"conv": {"kernel": np.zeros((3, 3), np.float32)}},
            "head": {"kernel": np.zeros((3, 5), np.float32)},  # a new head: other shape
        },
        "batch_stats": {"image_tower": {"bn": {"mean": np.zeros(3, np.float32)}}},
    }
    merged, taken = ckpt_lib.merge_params(fresh, loaded, include=".*", exclude="^params/head/")
    assert taken == ["batch_stats/image_tower/bn/mean", "params/image_tower/conv/kernel"]
    assert merged["params"]["image_tower"]["conv"]["kernel"][0, 0] == 2.0
    assert merged["params"]["head"]["kernel"][0, 0] == 0.0
    with pytest.raises(ValueError, match=r"'params/head/kernel' has shape \(3, 10\)"):
        ckpt_lib.merge_params(fresh, loaded)
    with pytest.raises(ValueError, match="no parameter matched"):
        ckpt_lib.merge_params(fresh, loaded, include="^nothing")


def test_only_large_replicated_arrays_are_saved_in_replica_parallel_slices(tmp_path, monkeypatch):
    """A replicated array is written in per-replica slices only where a slice holds at least
    MIN_REPLICA_SLICE_BYTES (each slice is a device op; janus.checkpoint's docstring); both kinds
    restore bitwise."""
    from orbax.checkpoint._src.serialization import replica_slices

    mesh = sharding.make_mesh([("data", -1)])
    replicas = mesh.devices.size
    assert replicas > 1, "needs the suite's 8 host devices"
    rows = ckpt_lib.MIN_REPLICA_SLICE_BYTES * replicas // (4 * 256)  # exactly the minimum
    replicated = NamedSharding(mesh, P())
    rng = np.random.default_rng(0)
    state = {
        "large": jax.device_put(rng.normal(size=(rows, 256)).astype(np.float32), replicated),
        "small": jax.device_put(rng.normal(size=(rows // 2, 256)).astype(np.float32), replicated),
    }
    sliced = {}
    get_replica_slices = replica_slices.get_replica_slices

    def spy(arr, *args, **kwargs):
        out = get_replica_slices(arr, *args, **kwargs)
        sliced[arr.shape] = any(s.slice_args is not None for s in out.replica_slices)
        return out

    monkeypatch.setattr(replica_slices, "get_replica_slices", spy)
    ck = ckpt_lib.Checkpointer(tmp_path, async_save=False)
    ck.save(1, state)
    ck.close()
    assert sliced == {(rows, 256): True, (rows // 2, 256): False}

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state)  # fmt: skip
    ck = ckpt_lib.Checkpointer(tmp_path)
    restored = ck.restore(1, abstract)
    ck.close()
    for name in state:
        np.testing.assert_array_equal(np.asarray(restored[name]), np.asarray(state[name]))
