"""janus.sharding: meshes, FSDP rules, batch sharding, and 1-device == 8-device training.

conftest.py provides 8 host CPU devices. The train-step tests run the same global batches through
the same jitted step on a 1-device mesh, an 8-way data-parallel mesh and a 2x4 data x FSDP mesh, and
compare losses, parameters, BatchNorm statistics and optimizer state.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from janus import losses, sharding
from janus.models import CLIP, Classifier, TextTransformer, create_model, init_variables

TINY_TEXT = dict(width=32, layers=1, heads=2, context_length=8, vocab_size=64, output_dim=16)


def fast_key(seed):
    """rbg keys: XLA compiles threefry initialisers for every parameter ~3-5x slower on a 2-core
    CPU than the tiny models themselves; the tests only need some initialisation."""
    return jax.random.key(seed, impl="unsafe_rbg")


class TinyBNTower(nn.Module):
    """Stand-in image tower (conv -> BatchNorm -> relu -> mean pool -> dense): the real towers
    compile for ~20 s each on a 2-core CPU, times three meshes; the layouts under test are the
    wrappers', the sharding rules' and BatchNorm's, which this tower exercises in a second."""

    dtype: object = jnp.float32

    @property
    def feature_dim(self):
        return 32

    @nn.compact
    def __call__(self, images, train=False):
        x = nn.Conv(16, (3, 3), strides=2, dtype=self.dtype)(images.astype(self.dtype))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(self.feature_dim, dtype=self.dtype)(x)


# ---------------------------------------------------------------- meshes and rules


def test_make_mesh(num_devices):
    assert num_devices == 8
    m = sharding.make_mesh()
    assert m.axis_names == ("data",) and m.shape["data"] == 8
    m = sharding.make_mesh([("data", -1), ("fsdp", 4)])
    assert dict(m.shape) == {"data": 2, "fsdp": 4}
    assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)
    one = sharding.make_mesh([("data", 1)], devices=jax.devices()[:1])
    assert one.size == 1
    with pytest.raises(ValueError, match="does not fit"):
        sharding.make_mesh([("data", 3)])
    with pytest.raises(ValueError, match="at most one"):
        sharding.make_mesh([("data", -1), ("fsdp", -1)])


def test_fsdp_rules():
    spec = lambda path, shape: sharding.fsdp_spec(path, shape, 4, min_size=64)
    assert spec("params/image_tower/conv1/kernel", (3, 3, 8, 16)) == P(None, None, None, "fsdp")
    assert spec("params/head/kernel", (64, 10)) == P("fsdp", None)  # 10 is not divisible by 4
    assert spec("params/head/kernel", (6, 10)) == P()  # nothing divisible: replicated
    assert spec("params/head/bias", (1024,)) == P()
    assert spec("batch_stats/bn1/mean", (1024,)) == P()
    assert spec("params/text_tower/positional_embedding", (77, 512)) == P()
    assert spec("params/x/kernel", (4, 8)) == P()  # under min_size
    # Embedding [vocab, width]: the largest divisible dim.
    assert spec("params/text_tower/token_embedding/embedding", (49408, 512)) == P("fsdp", None)


def test_param_shardings_trees():
    mesh = sharding.make_mesh([("data", 2), ("fsdp", 4)])
    tree = {"params": {"w": jnp.zeros((128, 8)), "bias": jnp.zeros(128)}, "step": jnp.zeros(())}
    sh = sharding.param_shardings(tree, mesh, "fsdp", min_size=16)
    assert sh["params"]["w"].spec == P("fsdp", None)
    assert sh["params"]["bias"].spec == P() and sh["step"].spec == P()
    rep = sharding.param_shardings(tree, mesh, "replicate")
    assert all(s.spec == P() for s in jax.tree.leaves(rep))
    with pytest.raises(ValueError, match="needs a mesh axis named 'fsdp'"):
        sharding.param_shardings(tree, sharding.make_mesh(), "fsdp")
    with pytest.raises(ValueError, match="unknown sharding strategy"):
        sharding.param_shardings(tree, mesh, "zero3")


def test_batch_sharding_and_shard_batch():
    mesh = sharding.make_mesh([("data", 2), ("fsdp", 4)])
    assert sharding.batch_sharding(mesh).spec == P(("data", "fsdp"))
    batch = {"image": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "label": np.arange(16)}
    g = sharding.shard_batch(batch, mesh)
    assert g["image"].shape == (16, 3) and len(g["image"].addressable_shards) == 8
    assert g["image"].addressable_shards[0].data.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(g["label"]), batch["label"])
    with pytest.raises(ValueError, match=r"\['label'\].*8 data-parallel"):
        sharding.shard_batch({"label": np.arange(12)}, mesh)


def test_constrain_batch_is_noop_without_mesh():
    x = jnp.ones((4, 2))
    assert sharding.constrain_batch(x) is x


def test_constrain_batch_under_mesh():
    f = lambda x: sharding.constrain_batch(x) * 2
    with jax.set_mesh(sharding.make_mesh([("data", 2), ("fsdp", 4)])):
        jaxpr = str(jax.make_jaxpr(f)(jnp.ones((8, 3))))
        assert "sharding_constraint" in jaxpr and "P(('data', 'fsdp'),)" in jaxpr
        # A batch the mesh cannot split (e.g. batch-1 init) is left alone.
        assert "sharding_constraint" not in str(jax.make_jaxpr(f)(jnp.ones((1, 3))))


# ---------------------------------------------------------------- global-batch losses


@pytest.mark.parametrize("name", ["infonce", "siglip"])
def test_contrastive_loss_8_devices_equals_1(name):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(16, 8)).astype(np.float32)
    txt = (img + rng.normal(size=(16, 8))).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    args = (10.0,) if name == "infonce" else (10.0, -5.0)

    def f(i, t):
        loss, metrics = losses.LOSSES[name](i, t, *args)
        return loss, metrics

    want, want_m = jax.jit(f)(img, txt)
    mesh = sharding.make_mesh([("data", 8)])
    bs = sharding.batch_sharding(mesh)
    i8, t8 = jax.device_put(img, bs), jax.device_put(txt, bs)
    got, got_m = jax.jit(f, in_shardings=(bs, bs))(i8, t8)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    jax.tree.map(np.testing.assert_allclose, got_m, want_m)
    # Gradients w.r.t. the sharded embeddings too (every sample is a negative for every other).
    grad = lambda i, t: jax.grad(lambda a, b: f(a, b)[0], argnums=(0, 1))(i, t)
    g1 = jax.jit(grad)(img, txt)
    g8 = jax.jit(grad, in_shardings=(bs, bs), out_shardings=(bs, bs))(i8, t8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g8, g1)


# ---------------------------------------------------------------- train steps


def _step_fn(model, tx, kind):
    def step(state, batch):
        def loss_fn(params):
            variables = {"params": params, "batch_stats": state["batch_stats"]}
            if kind == "ce":
                logits, upd = model.apply(
                    variables, batch["image"], train=True, mutable=["batch_stats"]
                )
                loss = losses.softmax_cross_entropy(logits, batch["label"], label_smoothing=0.1)
            else:
                out, upd = model.apply(
                    variables, batch["image"], batch["tokens"], train=True, mutable=["batch_stats"]
                )
                loss, _ = losses.infonce(out["image_emb"], out["text_emb"], out["logit_scale"])
            return loss, upd["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}, loss

    return step


def _train(model, variables, tx, kind, batches, mesh, strategy):
    state = {
        "params": variables["params"],
        "batch_stats": variables["batch_stats"],
        "opt_state": tx.init(variables["params"]),
    }
    state_sh = sharding.param_shardings(state, mesh, strategy, min_size=256)
    step = jax.jit(
        _step_fn(model, tx, kind),
        in_shardings=(state_sh, sharding.batch_sharding(mesh)),
        out_shardings=(state_sh, NamedSharding(mesh, P())),
    )
    state = jax.device_put(state, state_sh)
    losses_seen = []
    with jax.set_mesh(mesh):
        for b in batches:
            state, loss = step(state, sharding.shard_batch(b, mesh))
            losses_seen.append(float(loss))
    n_split = sum(any(ax is not None for ax in s.spec) for s in jax.tree.leaves(state_sh))
    return jax.device_get(state), losses_seen, n_split


def _check_same(run_a, run_b, rtol=2e-4, atol=2e-5):
    (state_a, losses_a, _), (state_b, losses_b, _) = run_a, run_b
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), state_a, state_b
    )


MESHES = {
    "1dev": ([("data", 1)], "replicate"),
    "dp8": ([("data", 8)], "replicate"),
    "dp2_fsdp4": ([("data", 2), ("fsdp", 4)], "fsdp"),
}


def _runs(model, variables, tx, kind, batches):
    out = {}
    for key, (axes, strategy) in MESHES.items():
        devices = jax.devices()[:1] if key == "1dev" else None
        mesh = sharding.make_mesh(axes, devices=devices)
        out[key] = _train(model, variables, tx, kind, batches, mesh, strategy)
    return out


@pytest.mark.slow
def test_ce_with_batchnorm_trains_identically_on_1_and_8_devices():
    model = Classifier(image_tower=TinyBNTower(), num_classes=10)
    variables = init_variables(model, fast_key(0), 16)
    assert "batch_stats" in variables
    rng = np.random.default_rng(0)
    batches = [
        {
            "image": rng.normal(size=(16, 16, 16, 3)).astype(np.float32),
            "label": rng.integers(0, 10, 16).astype(np.int32),
        }
        for _ in range(2)
    ]
    runs = _runs(model, variables, optax.sgd(0.1, momentum=0.9), "ce", batches)
    assert runs["dp2_fsdp4"][2] > 0, "FSDP run should split some parameters"
    _check_same(runs["1dev"], runs["dp8"])
    _check_same(runs["1dev"], runs["dp2_fsdp4"])
    # BatchNorm running statistics moved, and identically (global batch, not per device).
    bs0 = jax.tree.leaves(variables["batch_stats"])
    bs1 = jax.tree.leaves(runs["dp8"][0]["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(bs0, bs1))


def _clip_batches(n, size, seed):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n):
        tokens = rng.integers(1, 62, size=(16, 8)).astype(np.int32)
        tokens[:, 5] = 63  # EOT: the highest id
        batches.append(
            {"image": rng.normal(size=(16, size, size, 3)).astype(np.float32), "tokens": tokens}
        )
    return batches


@pytest.mark.slow
def test_clip_trains_identically_on_1_and_8_devices():
    model = CLIP(image_tower=TinyBNTower(), text_tower=TextTransformer(**TINY_TEXT), embed_dim=16)
    variables = init_variables(model, fast_key(1), 16, context_length=8)
    batches = _clip_batches(2, 16, seed=1)
    # eps well above the gradient noise: Adam's first step is ~sign(g), and float-reduction-order
    # noise on a ~0 gradient would otherwise flip it between meshes.
    tx = optax.adamw(1e-3, eps=1e-3, weight_decay=0.1)
    runs = _runs(model, variables, tx, "infonce", batches)
    assert runs["dp2_fsdp4"][2] > 0
    assert runs["1dev"][1][1] != runs["1dev"][1][0]  # it trained
    _check_same(runs["1dev"], runs["dp8"])
    _check_same(runs["1dev"], runs["dp2_fsdp4"])


@pytest.mark.slow
def test_real_tiny_clip_resnet_trains_identically_on_1_and_8_devices():
    """The registry's clip_rn_tiny (BatchNorm, anti-aliased pooling, attention pool) with a real
    text tower: 1 device == 8 data-parallel devices == 2x4 data x FSDP, for the same batches."""
    text = {k: v for k, v in TINY_TEXT.items() if k != "output_dim"}
    model = create_model("clip_rn_tiny", "infonce", text=text)
    variables = init_variables(model, fast_key(2), 32, context_length=8)
    tx = optax.adamw(1e-3, eps=1e-3, weight_decay=0.1)
    runs = _runs(model, variables, tx, "infonce", _clip_batches(2, 32, seed=2))
    assert runs["dp2_fsdp4"][2] > 0
    _check_same(runs["1dev"], runs["dp8"])
    _check_same(runs["1dev"], runs["dp2_fsdp4"])
