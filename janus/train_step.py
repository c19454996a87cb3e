"""The sharded train step: model, state, one jitted update.

One code path for 1 CPU device, 8 host devices, a multi-host TPU pod or multi-node GPUs:

- State: a dict pytree {"step", "params", "batch_stats"?, "opt_state"}, initialised by a jitted,
  deterministic init (seed) straight into its shardings (`janus.sharding.param_shardings`).
- Step: `jax.jit` with explicit in/out shardings over the Mesh, the state donated. Each process
  passes its slice of the global batch; `janus.sharding.shard_batch` assembles the global arrays.
  Images arrive as uint8; the step applies the input chain's normalisation on the device
  (`janus.data.input.pixel_scaling`).
  The per-step RNG is fold_in(key(seed), step), so a resumed run draws the same numbers.
- Gradient accumulation splits the global batch into `optimizer.grad_accum_steps` microbatches,
  averages their gradients (and loss/metrics) and makes ONE optimizer update: for losses that are
  means over independent examples without batch statistics it equals the full-batch step (tested).
  Contrastive losses (`optimizer.contrastive_accum="global"`, the default) accumulate exactly, as
  GradCache / open_clip's `--accum-freq` do (`_cached_contrastive_grads`): the embeddings of
  every microbatch first (no gradients), then the global batch's loss and its gradient w.r.t. the
  embeddings, then per microbatch a recomputation (same dropout keys) whose VJP with its rows of
  that gradient adds its share to the parameter gradients. So every sample of the global batch is
  a negative and the gradients equal the full-batch step's (tested), for about one extra forward
  pass. `"local"`: each microbatch's own loss, averaged (fewer negatives; the behaviour before).
  BatchNorm statistics come from each microbatch in both modes (as in open_clip).
- Frozen parameters (`optimizer.freeze`, a regex also matched against batch_stats paths): their
  BatchNorm statistics are kept from the previous state, so a linear probe leaves the frozen tower
  bitwise unchanged. When every BatchNorm is frozen the model runs with train=False (BatchNorm uses
  its running statistics, as at evaluation; `train` also switches drop-path off).
  Partly frozen BN models run with train=True: frozen layers normalise by batch statistics but
  keep their running ones. LP-FT (`frozen_steps`): the step is the frozen one for the first
  `frozen_steps` steps and the unfrozen one after (a `lax.cond` on the state's step).
- Mixup / CutMix (`input.mixup`, `input.cutmix`; `janus.mixing`): on the device, before the
  forward pass and before the microbatch split, with a key folded from the step's rng. Each
  sample mixes with its mirror in the GLOBAL batch (the batch reversed), so the mixed batch does
  not depend on the device count or on `grad_accum_steps` (tested). `ce` trains on the mixed
  one-hots (batch["targets"], smoothed by the loss), `multilabel_ce` / `sigmoid` on the mixed
  multi-hot labels, as timm mixes them; the logged accuracy is against the unmixed labels, and
  `mix_lam` is the batch's lambda (1 when not mixed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from janus import config as config_lib
from janus import mixing as mixing_lib
from janus.config.schema import CONTRASTIVE_ACCUM


def model_kwargs(config) -> dict:
    """create_model kwargs from config.model (everything but name/dtype/text are tower kwargs)."""
    m = config_lib.to_dict(config)["model"]
    kwargs = {k: v for k, v in m.items() if k not in ("name", "dtype", "text")}
    if m.get("text") is not None:
        kwargs["text"] = dict(m["text"])
    return kwargs


def build_model(config):
    """The model of config.model and config.loss (`config`: a ConfigDict or a ResolvedRun's
    config; so for the functions below)."""
    from janus.models import create_model

    m = config["model"]
    return create_model(m["name"], config["loss"], dtype=m["dtype"], **model_kwargs(config))


def class_mask_for(config) -> np.ndarray | None:
    """The label set's mask for CE-family training logits, when config.restrict_to_label_set."""
    if config_lib.is_vl(config["loss"]) or not config["restrict_to_label_set"]:
        return None
    from janus.data import labelsets

    return labelsets.class_mask(labelsets.resolve_label_set(config["label_set"]))


def make_init_fn(model, tx, config) -> Callable[[], dict]:
    from janus.models import init_variables

    seed, resolution = config["seed"], config["input"]["resolution"]
    context_length = config["input"]["context_length"]

    def init():
        rng = jax.random.fold_in(jax.random.key(seed), 0x1217)  # init stream
        variables = init_variables(model, rng, resolution, context_length=context_length)
        variables = flax.core.unfreeze(variables)
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": variables["params"],
            "opt_state": tx.init(variables["params"]),
        }
        if variables.get("batch_stats"):
            state["batch_stats"] = variables["batch_stats"]
        return state

    return init


def restore_abstract(abstract, shardings):
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


def _split_microbatches(batch, n: int):
    """[B, ...] -> [n, B/n, ...] with each microbatch still spread over all data devices."""

    def one(x):
        x = x.reshape((x.shape[0] // n, n) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(one, batch)


def _join_microbatches(x):
    """[n, B/n, ...] -> [B, ...] in the batch's order: the inverse of `_split_microbatches`."""
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def make_train_step(
    model,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    loss: str,
    seed: int,
    class_mask: np.ndarray | None = None,
    label_smoothing: float = 0.0,
    grad_accum_steps: int = 1,
    contrastive_accum: str = "global",
    freeze: str = "",
    frozen_steps: int = 0,
    pixel_scaling=None,
    mixing: mixing_lib.Mixing = mixing_lib.OFF,
) -> Callable:
    """-> step(state, batch) -> (state, metrics) (not jitted; see `compile_train_step`).
    `freeze`: config.optimizer.freeze (the optimizer already zeroes those updates); with
    `frozen_steps` > 0 (LP-FT) only while state["step"] < frozen_steps, every parameter after.
    `pixel_scaling`: the input chain's `PixelScaling` (`build_pp(pp).scaling`), applied to the
    uint8 batch images on the device; None when the batch images are already model inputs.
    `contrastive_accum`: config.optimizer.contrastive_accum, how a contrastive loss accumulates
    over `grad_accum_steps` > 1 microbatches: "global" (exact, the global batch's negatives) or
    "local" (each microbatch's negatives only). `mixing`: the batch mixing of config.input
    (`janus.mixing.Mixing.from_config`); off by default."""
    from janus import losses
    from janus.data.input.pixel_scaling import scale_pixels
    from janus.optim import frozen_mask

    if contrastive_accum not in CONTRASTIVE_ACCUM:
        raise ValueError(f"contrastive_accum {contrastive_accum!r}; known: {CONTRASTIVE_ACCUM}")
    vl = config_lib.is_vl(loss)
    if mixing.on and vl:
        raise ValueError(f"mixup/CutMix mix class labels: loss {loss!r} has none (CE losses only)")
    cached = vl and grad_accum_steps > 1 and contrastive_accum == "global"
    mask = None if class_mask is None else np.asarray(class_mask, bool)

    def apply_model(params, batch_stats, batch, rng, *, train: bool):
        """-> (model outputs, new batch_stats)."""
        variables = {"params": params}
        mutable = False
        if batch_stats is not None:
            variables["batch_stats"] = batch_stats
            mutable = ["batch_stats"] if train else False
        inputs = (batch["image"], batch["tokens"]) if vl else (batch["image"],)
        out = model.apply(variables, *inputs, train=train, mutable=mutable, rngs={"dropout": rng})
        new_bs = batch_stats
        if mutable:
            out, new_vars = out
            new_bs = new_vars["batch_stats"]
        return out, new_bs

    def contrastive(out):
        """The contrastive loss of CLIP outputs -> (loss, metrics with the logit scale)."""
        value, metrics = losses.loss_and_metrics(loss, out, {})
        return value, dict(metrics, logit_scale=out["logit_scale"])

    def forward(params, batch_stats, batch, rng, *, train: bool):
        out, new_bs = apply_model(params, batch_stats, batch, rng, train=train)
        if vl:
            value, metrics = contrastive(out)
        else:
            cm = None if mask is None else jnp.asarray(mask)
            if loss == "ce":
                value = losses.softmax_cross_entropy(
                    out,
                    batch.get("targets", batch["label"]),  # mixed one-hots when mixing
                    label_smoothing=label_smoothing,
                    class_mask=cm,
                )
            elif loss == "multilabel_ce":
                value = losses.multilabel_cross_entropy(out, batch["labels"], class_mask=cm)
            else:
                value = losses.sigmoid_cross_entropy(out, batch["labels"], class_mask=cm)
            pred = jnp.argmax(losses.apply_class_mask(out, cm), axis=-1)
            metrics = {"accuracy": jnp.mean((pred == batch["label"]).astype(jnp.float32))}
        return value, (metrics, new_bs)

    def mix(batch, key):
        """The global batch with its images and CE targets mixed (`janus.mixing`) -> (batch,
        lambda)."""
        if loss == "ce":
            name, targets = "targets", jax.nn.one_hot(batch["label"], model.num_classes)
        else:
            name, targets = "labels", batch["labels"]
        images, targets, lam = mixing_lib.mix(key, batch["image"], targets, mixing)
        return dict(batch, image=images, **{name: targets}), lam

    def step(state, batch, freeze=freeze):
        batch = dict(batch, image=scale_pixels(batch["image"], pixel_scaling))
        rng = jax.random.fold_in(jax.random.key(seed), state["step"])
        lam = None
        if mixing.on:  # before the microbatch split: partners from the whole global batch
            batch, lam = mix(batch, jax.random.fold_in(rng, mixing_lib.MIX_STREAM))
        params, bs = state["params"], state.get("batch_stats")
        # Decided at trace time from the state's structure: which BN statistics are frozen.
        bs_frozen = frozen_mask(bs, freeze) if freeze and bs is not None else None
        all_frozen = bs_frozen is not None and all(jax.tree.leaves(bs_frozen))
        value_and_grad = jax.value_and_grad(
            functools.partial(forward, train=not all_frozen), has_aux=True
        )
        p_frozen = frozen_mask(params, freeze) if freeze else None

        def unfrozen(grads):
            if p_frozen is None:
                return grads
            # Frozen gradients are never used (nor counted in grad_norm): zeros let XLA drop
            # the backward pass through a frozen tower (a linear probe's cost is ~forward).
            return jax.tree.map(lambda f, g: jnp.zeros_like(g) if f else g, p_frozen, grads)

        def grad_fn(*args):
            out, grads = value_and_grad(*args)
            return out, unfrozen(grads)

        if grad_accum_steps == 1:
            (value, (metrics, bs)), grads = grad_fn(params, bs, batch, rng)
        elif cached:
            value, metrics, grads, bs = _cached_contrastive_grads(
                functools.partial(apply_model, train=not all_frozen),
                contrastive,
                unfrozen,
                params,
                bs,
                _split_microbatches(batch, grad_accum_steps),
                rng,
            )
        else:
            micro = _split_microbatches(batch, grad_accum_steps)

            def body(carry, xs):
                g_sum, l_sum, m_sum, bs_c = carry
                mb, i = xs
                (v, (m, bs_n)), g = grad_fn(params, bs_c, mb, jax.random.fold_in(rng, i))
                add = lambda a, b: jax.tree.map(jnp.add, a, b)
                return (add(g_sum, g), l_sum + v, add(m_sum, m), bs_n), None

            zeros_g = jax.tree.map(jnp.zeros_like, params)
            (_, (m0, _)), _ = jax.eval_shape(
                grad_fn, params, bs, jax.tree.map(lambda x: x[0], micro), rng
            )
            zeros_m = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m0)
            (grads, value, metrics, bs), _ = jax.lax.scan(
                body,
                (zeros_g, jnp.zeros((), jnp.float32), zeros_m, bs),
                (micro, jnp.arange(grad_accum_steps)),
            )
            n = float(grad_accum_steps)
            grads = jax.tree.map(lambda g: g / n, grads)
            value = value / n
            metrics = jax.tree.map(lambda m: m / n, metrics)
        if bs_frozen is not None:
            bs = jax.tree.map(
                lambda f, old, new: old if f else new, bs_frozen, state["batch_stats"], bs
            )
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        params = optax.apply_updates(params, updates)
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        if bs is not None:
            new_state["batch_stats"] = bs
        metrics = dict(
            metrics,
            loss=value,
            learning_rate=schedule(state["step"]),
            grad_norm=optax.global_norm(grads),
            param_norm=optax.global_norm(params),
        )
        if lam is not None:
            metrics["mix_lam"] = lam
        return new_state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)

    if frozen_steps and freeze:

        def phased_step(state, batch):
            # Both phases are compiled; each step runs one (frozen BatchNorm and no backward
            # pass through the frozen tower in the first).
            return jax.lax.cond(
                state["step"] < frozen_steps,
                functools.partial(step, freeze=freeze),
                functools.partial(step, freeze=""),
                state,
                batch,
            )

        step_fn = phased_step
    else:
        step_fn = step
    step_fn.grad_accum_steps = grad_accum_steps  # compile_train_step scales the FLOP count by it
    step_fn.accum_note = accumulation_note(loss, grad_accum_steps, contrastive_accum)
    step_fn.mix_note = mixing.note() if mixing.on else None
    return step_fn


def accumulation_note(loss: str, grad_accum_steps: int, contrastive_accum: str) -> str | None:
    """The console line that says how a contrastive loss accumulates (None when nothing does)."""
    if not config_lib.is_vl(loss) or grad_accum_steps == 1:
        return None
    if contrastive_accum == "global":
        return (
            f"contrastive accumulation: global ({loss} over the whole global batch, "
            f"{grad_accum_steps} microbatches, embeddings cached then recomputed with gradients)"
        )
    return (
        f"contrastive accumulation: local ({loss} within each of {grad_accum_steps} "
        "microbatches: fewer negatives than the global batch)"
    )


def _cached_contrastive_grads(apply_model, contrastive, unfrozen, params, bs, micro, rng):
    """Exact gradient accumulation for a contrastive loss (GradCache; open_clip `--accum-freq`).

    `micro`: the batch as [k, B/k, ...] microbatches (`_split_microbatches`); microbatch i runs
    with dropout key fold_in(rng, i) in both passes. `apply_model(params, bs, batch, rng)` ->
    (CLIP outputs, new batch_stats); `contrastive(outputs)` -> (loss, metrics); `unfrozen` zeroes
    the frozen gradients. -> (loss, metrics, grads, batch_stats), loss, metrics and grads those
    of the global batch.

    1. A scan over the microbatches computes their embeddings without gradients: memory holds one
       microbatch's activations and the B x D embeddings. Its BatchNorm updates are dropped (in
       training mode BatchNorm normalises by the microbatch's statistics, so its outputs do not
       depend on the running ones).
    2. The loss of the whole global batch (rows back in the batch's order, so its metrics are
       the full batch's), and its gradient w.r.t. the embeddings, logit scale and bias.
    3. A second scan recomputes each microbatch's outputs with the same keys and pulls its rows of
       that gradient back to the parameters (a VJP); the sum over microbatches is the full
       batch's gradient by the chain rule. The scale and bias are the same in every microbatch,
       so their cotangent goes in with the first microbatch only: counted once. The running
       BatchNorm statistics chain through the microbatches, as in the "local" accumulation.
    """
    k = jax.tree.leaves(micro)[0].shape[0]
    index = jnp.arange(k)

    def embed(_, xs):
        mb, i = xs
        out, _ = apply_model(params, bs, mb, jax.random.fold_in(rng, i))
        return None, out

    _, outs = jax.lax.scan(embed, None, (micro, index))
    outs = jax.lax.stop_gradient(outs)  # a cache: gradients reach the parameters in step 3 only
    rows = ("image_emb", "text_emb")
    # The scale and bias do not depend on the microbatch: take the first one's.
    cache = {n: _join_microbatches(v) if n in rows else v[0] for n, v in outs.items()}
    (value, metrics), d_cache = jax.value_and_grad(contrastive, has_aux=True)(cache)
    d_rows = _split_microbatches({n: d_cache[n] for n in rows}, k)

    def backward(carry, xs):
        g_sum, bs_c = carry
        mb, d_mb, i = xs
        key = jax.random.fold_in(rng, i)
        _, vjp, bs_n = jax.vjp(lambda p: apply_model(p, bs_c, mb, key), params, has_aux=True)
        first = (i == 0).astype(jnp.float32)
        d_out = {n: d_mb[n] if n in rows else first * d_cache[n] for n in d_cache}
        (g,) = vjp(d_out)
        return (jax.tree.map(jnp.add, g_sum, unfrozen(g)), bs_n), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grads, bs), _ = jax.lax.scan(backward, (zeros, bs), (micro, d_rows, index))
    return value, metrics, grads, bs


def compile_train_step(step_fn, state, batch, state_shardings, mesh):
    """AOT-compiles the step for these shapes/shardings. -> (compiled, flops per device or None).

    XLA's cost analysis counts a loop body once, so with gradient accumulation (a scan over the
    microbatches) its FLOPs are multiplied by the number of microbatches."""
    from janus import sharding as sharding_lib

    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch_sh = jax.tree.map(lambda _: sharding_lib.batch_sharding(mesh), batch)
    jitted = jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sh),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
    )
    with jax.set_mesh(mesh):
        compiled = jitted.lower(state, batch).compile()
    flops = None
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, list | tuple):
            cost = cost[0] if cost else None
        if cost and cost.get("flops", 0) > 0:
            flops = float(cost["flops"]) * getattr(step_fn, "grad_accum_steps", 1)
    except Exception as e:  # cost analysis is optional on some backends
        logging.info("no cost analysis: %s", e)
    return compiled, flops
