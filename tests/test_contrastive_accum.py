"""Exact contrastive gradient accumulation (`optimizer.contrastive_accum`, docs/training.md).

With `grad_accum_steps=k > 1` a contrastive step caches every microbatch's embeddings, takes the
global batch's loss, and recomputes each microbatch with gradients: its loss, metrics and every
gradient equal the full-batch (k=1) step's, on 1 and on 8 devices. `local` is the per-microbatch
loss of before. The tests read the gradients from the optimizer's state (`_recording_sgd`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from janus import config as config_lib
from janus import losses, sharding, train_step
from janus.config import ConfigError
from janus.models import create_model, init_variables

RES, CTX = 16, 8
TINY_TEXT = dict(width=16, layers=1, heads=2, context_length=CTX, vocab_size=64)
TINY_VIT = dict(width=16, depth=1, num_heads=2)  # patch 8: 4 patches of a 16 px image


def _recording_sgd() -> optax.GradientTransformation:
    """SGD at lr 1 whose state is the last gradient, so a step's gradients can be compared."""

    def update(grads, state, params=None):
        del state, params
        return jax.tree.map(jnp.negative, grads), {"grads": grads}

    return optax.GradientTransformation(
        lambda p: {"grads": jax.tree.map(jnp.zeros_like, p)}, update
    )


def _setup(name, loss, n_devices, res=RES, **tower):
    model = create_model(name, loss, text=TINY_TEXT, **tower)
    tx = _recording_sgd()

    def init():
        key = jax.random.key(0, impl="unsafe_rbg")
        v = init_variables(model, key, res, context_length=CTX)
        state = {"step": jnp.zeros((), jnp.int32), "params": v["params"]}
        state["opt_state"] = tx.init(v["params"])
        if v.get("batch_stats"):
            state["batch_stats"] = v["batch_stats"]
        return state

    mesh = sharding.make_mesh([("data", n_devices)], devices=jax.devices()[:n_devices])
    shardings = sharding.param_shardings(jax.eval_shape(init), mesh)
    return model, tx, mesh, shardings, jax.jit(init, out_shardings=shardings)


def _batch(n, res=RES, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(n, res, res, 3)).astype(np.float32),
        "tokens": rng.integers(1, 64, size=(n, CTX)).astype(np.int32),
    }


_COMPILED = {}


def _run(setup, batch_np, loss, k, mode="global"):
    """One step from the initial state -> (metrics, state after it), on the host."""
    model, tx, mesh, shardings, init = setup
    state, batch = init(), sharding.shard_batch(batch_np, mesh)
    key = (id(setup), len(batch_np["image"]), k, mode)
    if key not in _COMPILED:
        step = train_step.make_train_step(
            model, tx, optax.constant_schedule(1.0), loss=loss, seed=0,
            grad_accum_steps=k, contrastive_accum=mode,
        )  # fmt: skip
        # The setup kept with its step, so that its id is never reused while cached
        _COMPILED[key] = (
            setup,
            train_step.compile_train_step(step, state, batch, shardings, mesh)[0],
        )
    compiled = _COMPILED[key][1]
    with jax.set_mesh(mesh):
        state, metrics = jax.device_get(compiled(state, batch))
    return metrics, state


def _assert_trees_close(a, b, rtol=1e-5):
    """Leaf by leaf within float32 summation-order tolerance: `rtol` of each element, or of the
    leaf's largest element for the ones near zero."""
    leaves_a, tree_a = jax.tree.flatten_with_path(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for (path, x), y in zip(leaves_a, leaves_b):
        # A floor for leaves whose gradient is zero up to rounding (attention pooling's key bias)
        atol = max(rtol * float(np.max(np.abs(y))), 1e-7)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("n_devices", [1, 8])
@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_global_accumulation_equals_the_full_batch_step(loss, n_devices):
    """k = 2 and 4 microbatches: the global batch's loss, retrieval accuracies and logit scale,
    and every gradient leaf (the logit scale's and SigLIP's bias included, counted once) equal
    the k=1 step's."""
    setup = _setup("vit_tiny", loss, n_devices, **TINY_VIT)
    batch = _batch(32)
    m1, s1 = _run(setup, batch, loss, 1)
    g1 = s1["opt_state"]["grads"]
    assert abs(g1["logit_scale"]) > 1e-6
    for k in (2, 4):
        mk, sk = _run(setup, batch, loss, k)
        for name in ("loss", "i2t_acc", "t2i_acc", "logit_scale", "grad_norm"):
            np.testing.assert_allclose(mk[name], m1[name], rtol=1e-5, err_msg=f"k={k} {name}")
        _assert_trees_close(sk["opt_state"]["grads"], g1)


def test_local_mode_is_the_mean_of_the_microbatch_losses():
    """`contrastive_accum="local"`: each microbatch's own InfoNCE (its rows i::k of the batch),
    loss and gradients averaged over the microbatches, as before exact accumulation; at
    initialisation that loss is about log(B/k), below the global batch's log(B)."""
    loss, k = "infonce", 2
    setup = _setup("vit_tiny", loss, 1, **TINY_VIT)
    model, init = setup[0], setup[-1]
    batch = _batch(16)
    m, s = _run(setup, batch, loss, k, mode="local")
    params = jax.device_get(init()["params"])

    def mean_microbatch_loss(p):
        total = 0.0
        for i in range(k):
            out = model.apply({"params": p}, batch["image"][i::k], batch["tokens"][i::k])
            total += losses.infonce(out["image_emb"], out["text_emb"], out["logit_scale"])[0]
        return total / k

    value, grads = jax.jit(jax.value_and_grad(mean_microbatch_loss))(params)
    np.testing.assert_allclose(m["loss"], value, rtol=1e-5)
    _assert_trees_close(s["opt_state"]["grads"], grads)
    out = model.apply({"params": params}, batch["image"], batch["tokens"])
    full, _ = losses.infonce(out["image_emb"], out["text_emb"], out["logit_scale"])
    assert m["loss"] < full - 0.3  # about log(16) - log(8) at init: half the negatives


def test_clip_resnet_batchnorm_statistics_come_from_each_microbatch():
    """CLIP-ResNet (BatchNorm), k=2: the loss and gradients are those of the global batch's loss
    over embeddings whose BatchNorm normalised by their own microbatch (as in open_clip), and the
    running statistics take one update per microbatch. With two identical microbatches this is
    the full-batch step's loss and gradient."""
    loss, k, res = "infonce", 2, 32
    setup = _setup("clip_rn_tiny", loss, 1, res=res)
    model, init = setup[0], setup[-1]
    batch = _batch(8, res=res)
    m, s = _run(setup, batch, loss, k)
    start = jax.device_get(init())

    def reference(p):
        outs, bs = [], start["batch_stats"]
        for i in range(k):
            out, new = model.apply(
                {"params": p, "batch_stats": bs}, batch["image"][i::k], batch["tokens"][i::k],
                train=True, mutable=["batch_stats"],
            )  # fmt: skip
            outs.append(out)
            bs = new["batch_stats"]
        rows = {
            n: jnp.stack([o[n] for o in outs], 1).reshape(8, -1) for n in ("image_emb", "text_emb")
        }
        value, _ = losses.infonce(rows["image_emb"], rows["text_emb"], outs[0]["logit_scale"])
        return value, bs

    (value, bs), grads = jax.jit(jax.value_and_grad(reference, has_aux=True))(start["params"])
    np.testing.assert_allclose(m["loss"], value, rtol=1e-5)
    _assert_trees_close(s["opt_state"]["grads"], grads, rtol=1e-4)
    _assert_trees_close(s["batch_stats"], bs)

    # Identical microbatches (rows 2j and 2j+1 equal): the same as one full batch.
    twice = jax.tree.map(lambda x: np.repeat(x[:4], 2, axis=0), batch)
    m1, s1 = _run(setup, twice, loss, 1)
    m2, s2 = _run(setup, twice, loss, k)
    np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
    _assert_trees_close(s2["opt_state"]["grads"], s1["opt_state"]["grads"], rtol=1e-4)


def test_contrastive_accum_is_a_validated_config_field():
    c = config_lib.paper_config()
    assert c.optimizer.contrastive_accum == "global"
    c.optimizer.contrastive_accum = "local"
    config_lib.validate(c, check_data=False, check_registries=False)
    c.optimizer.contrastive_accum = "micro"
    with pytest.raises(ConfigError, match="'optimizer.contrastive_accum' = 'micro'.*global"):
        config_lib.validate(c, check_data=False, check_registries=False)
    assert train_step.accumulation_note("ce", 4, "global") is None
    assert train_step.accumulation_note("infonce", 1, "global") is None
    assert "global" in train_step.accumulation_note("siglip", 4, "global")
    assert "local" in train_step.accumulation_note("infonce", 2, "local")
