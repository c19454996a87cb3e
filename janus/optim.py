"""Optimisers and learning-rate schedules (optax), built from `config.optimizer`.

- `make_schedule(opt, total_steps, warmup_steps)`: linear warmup from 0, then cosine / linear /
  constant (cosine and linear end at `lr * end_lr_factor`) / step (torchvision's StepLR/MultiStepLR:
  x `step_factor` from each of `step_boundaries`, fractions of the whole run, on).
- `decay_mask(params, patterns)`: True where weight decay applies. Norm scales/biases, every bias
  the CLIP temperature (logit_scale, logit_bias) and the ViT class token are excluded by path
  regex (config.NO_DECAY_PATTERNS).
- `make_optimizer(opt, total_steps, warmup_steps)`: AdamW | SGD (momentum, weight decay) | LAMB,
  with optional global-norm clipping and frozen parameters (`optimizer.freeze`, a regex on
  parameter paths such as "^image_tower/" for a linear probe). Gradient accumulation is done in the
  train step (microbatch gradients averaged before one update), so the optimizer sees the global
  batch.
  The train step also keeps the BatchNorm statistics under `freeze` unchanged (`frozen_mask`).
  LP-FT (`frozen_steps`): the freeze holds for a first phase only, then a fresh optimizer trains
  everything (`switch_at`).
  `optimizer.layer_decay` < 1 multiplies each update by its layer's factor (`janus.layer_decay`,
  ViT-family towers; `model` names the tower).
- `with_ema(tx, decay)` (`optimizer.ema_decay` > 0): the optimizer state also holds an
  exponential moving average of the parameters (`ema_params(opt_state)`), so it is sharded,
  checkpointed and restored with the rest of the state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from janus import layer_decay as layer_decay_lib
from janus.config import SCHEDULES


def make_schedule(opt, total_steps: int, warmup_steps: int) -> optax.Schedule:
    lr = float(opt["lr"])
    end = lr * float(opt["end_lr_factor"])
    decay_steps = max(int(total_steps) - int(warmup_steps), 1)
    kind = opt["schedule"]
    if kind == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
    elif kind == "linear":
        main = optax.linear_schedule(lr, end, decay_steps)
    elif kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "step":
        main = _step_schedule(opt, total_steps, warmup_steps)
    else:
        raise ValueError(f"optimizer.schedule = {kind!r}; known: {', '.join(SCHEDULES)}")
    if warmup_steps <= 0:
        return main
    warm = optax.linear_schedule(0.0, lr, int(warmup_steps))
    return optax.join_schedules([warm, main], [int(warmup_steps)])


def _step_schedule(opt, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """lr x step_factor ** (boundaries passed): boundary b is step round(b * total_steps) of the
    run, so a 30-epoch run with (1/3, 2/3) drops at epochs 10 and 20 as torchvision's 90-epoch
    recipe does at 30 and 60. The schedule after warmup counts from the warmup's end; a boundary
    inside the warmup takes effect when it ends."""
    lr, factor = float(opt["lr"]), float(opt["step_factor"])
    after_warmup = jnp.asarray(
        [round(float(b) * int(total_steps)) - int(warmup_steps) for b in opt["step_boundaries"]]
    )

    def schedule(count):
        passed = jnp.sum(jnp.asarray(count) >= after_warmup)
        return lr * factor**passed

    return schedule


def param_path(path) -> str:
    """A jax key path as 'a/b/c' (what optimizer.no_decay/freeze and init_from filters match)."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def frozen_mask(tree, pattern: str):
    """Pytree of bools like `tree` (params or batch_stats): True where the path matches the
    `optimizer.freeze` regex."""
    frozen = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(frozen.search(param_path(path))), tree
    )


def decay_mask(params, patterns: Sequence[str] | str):
    """Pytree of bools like `params`: True = apply weight decay (path matches no pattern)."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p]
    regexes = [re.compile(p) for p in patterns]
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(r.search(param_path(path)) for r in regexes), params
    )


def make_optimizer(
    opt,
    total_steps: int,
    warmup_steps: int,
    *,
    frozen_steps: int = 0,
    frozen_lr: float = 0.0,
    model: str = "",
):
    """-> (optax.GradientTransformation, schedule).

    frozen_steps > 0 (LP-FT): `optimizer.freeze` holds only for the first `frozen_steps` steps,
    trained with peak lr `frozen_lr` and no warmup; then a fresh optimizer (new moments, its own
    warmup and schedule over the remaining steps, peak `opt["lr"]`) trains every parameter.
    `model`: model.name, whose blocks `optimizer.layer_decay` numbers."""
    layer_decay = float(opt.get("layer_decay", 1.0))
    layer_decay_lib.check_model(model, layer_decay)
    tx, schedule = _make_phases(opt, total_steps, warmup_steps, frozen_steps, frozen_lr)
    if layer_decay != 1:
        tx = optax.chain(tx, layer_decay_lib.scale_by_layer(layer_decay))
    if opt.get("ema_decay"):
        tx = with_ema(tx, float(opt["ema_decay"]))
    return tx, schedule


def _make_phases(opt, total_steps, warmup_steps, frozen_steps, frozen_lr):
    if frozen_steps:
        if not 0 < frozen_steps < total_steps:
            raise ValueError(f"frozen_steps = {frozen_steps} must be in (0, {total_steps})")
        first, first_lr = _make_optimizer({**opt, "lr": frozen_lr}, frozen_steps, 0)
        rest = total_steps - frozen_steps
        second, second_lr = _make_optimizer({**opt, "freeze": ""}, rest, min(warmup_steps, rest))
        schedule = optax.join_schedules([first_lr, second_lr], [frozen_steps])
        return switch_at(first, second, frozen_steps), schedule
    return _make_optimizer(opt, total_steps, warmup_steps)


def with_ema(tx, decay: float) -> optax.GradientTransformation:
    """`tx`, whose state also holds `ema = decay * ema + (1 - decay) * params` of the parameters
    after each update (timm's ModelEmaV2 form: no warmup or bias correction; the average starts at
    the initial parameters, so early on it leans on them). State: {"inner": tx's, "ema": params},
    the EMA a copy (the train step donates the state: no buffer may appear twice).
    The update adds the same parameters the train step then applies (`optax.apply_updates`)."""

    def init(params):
        return {"inner": tx.init(params), "ema": jax.tree.map(jnp.copy, params)}

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("with_ema: update needs the parameters")
        updates, inner = tx.update(grads, state["inner"], params)
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(
            lambda e, p: (decay * e + (1 - decay) * p).astype(e.dtype), state["ema"], new
        )
        return updates, {"inner": inner, "ema": ema}

    return optax.GradientTransformation(init, update)


def ema_params(opt_state):
    """The EMA of the parameters in an optimizer state made by `with_ema` (the state, the saved
    tree of one, or the part of it holding "ema"); None when the run keeps no EMA (no other
    optimizer state is a mapping with that key)."""
    if isinstance(opt_state, Mapping) and "ema" in opt_state:
        return opt_state["ema"]
    return None


def switch_at(first, second, boundary: int) -> optax.GradientTransformation:
    """`first` for the first `boundary` updates, then `second` (whose state starts fresh then:
    it is only updated from that step on, so its schedule counts from 0)."""

    def init(params):
        return {
            "count": jnp.zeros((), jnp.int32),
            "first": first.init(params),
            "second": second.init(params),
        }

    def update(grads, state, params=None):
        def run_first():
            updates, new = first.update(grads, state["first"], params)
            return updates, {**state, "first": new}

        def run_second():
            updates, new = second.update(grads, state["second"], params)
            return updates, {**state, "second": new}

        updates, new_state = jax.lax.cond(state["count"] < boundary, run_first, run_second)
        return updates, {**new_state, "count": state["count"] + 1}

    return optax.GradientTransformation(init, update)


def _make_optimizer(opt, total_steps: int, warmup_steps: int):
    schedule = make_schedule(opt, total_steps, warmup_steps)
    wd = float(opt["weight_decay"])
    patterns = opt["no_decay"]
    mask = lambda params: decay_mask(params, patterns)
    name = opt["name"]
    if name == "adamw":
        tx = optax.adamw(
            schedule, b1=opt["b1"], b2=opt["b2"], eps=opt["eps"], weight_decay=wd, mask=mask
        )
    elif name == "lamb":
        tx = optax.lamb(
            schedule, b1=opt["b1"], b2=opt["b2"], eps=opt["eps"], weight_decay=wd, mask=mask
        )
    elif name == "sgd":
        # Weight decay added to the gradient before momentum (as torch.optim.SGD), same mask.
        tx = optax.chain(
            optax.add_decayed_weights(wd, mask=mask),
            optax.sgd(schedule, momentum=opt["momentum"] or None, nesterov=opt["nesterov"]),
        )
    else:
        raise ValueError(f"optimizer.name = {name!r}; known: adamw, sgd, lamb")
    if opt["clip_norm"]:
        tx = optax.chain(optax.clip_by_global_norm(float(opt["clip_norm"])), tx)
    if opt.get("freeze"):
        # Linear probes / partial fine-tuning: matching parameters get zero updates (and no
        # optimizer state), the rest train as configured.
        labels = lambda params: jax.tree.map(
            lambda f: "frozen" if f else "train", frozen_mask(params, opt["freeze"])
        )
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule
