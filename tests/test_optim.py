"""Optimizers and schedules: warmup + decay shapes, the weight-decay mask, clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus import config as config_lib
from janus import optim


def _opt(**kw):
    o = config_lib.paper_config().optimizer
    for k, v in kw.items():
        with o.ignore_type():
            o[k] = v
    return o


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_schedule_warmup_then_decay(kind):
    s = optim.make_schedule(_opt(schedule=kind, lr=1.0, end_lr_factor=0.1), 110, 10)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    end = float(s(110))
    assert end == pytest.approx({"cosine": 0.1, "linear": 0.1, "constant": 1.0}[kind], abs=1e-6)
    if kind == "cosine":
        assert float(s(60)) == pytest.approx(0.55, abs=1e-3)  # halfway between 1 and 0.1


def test_decay_mask_excludes_norms_biases_and_temperature():
    params = {
        "image_tower": {
            "conv1": {"kernel": 0},
            "bn1": {"scale": 0, "bias": 0},
            "layer1_0": {"BatchNorm_0": {"scale": 0}, "downsample_bn": {"scale": 0}},
        },
        "text_tower": {"ln_final": {"scale": 0, "bias": 0}, "resblocks_0": {"ln_1": {"scale": 0}}},
        "head": {"kernel": 0, "bias": 0},
        "image_projection": {"kernel": 0},
        "logit_scale": 0,
        "logit_bias": 0,
        "pos_embedding": 0,
    }
    mask = optim.decay_mask(params, config_lib.NO_DECAY_PATTERNS)
    flat = {optim.param_path(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
    decayed = sorted(k for k, v in flat.items() if v)
    assert decayed == [
        "head/kernel",
        "image_projection/kernel",
        "image_tower/conv1/kernel",
        "pos_embedding",
    ]


def test_decay_mask_excludes_the_vit_class_token():
    """Like OpenCLIP's `ndim < 2` rule: the 1-D class token is not decayed (a 2-D positional
    embedding is, as in OpenCLIP)."""
    params = {"image_tower": {"cls": 0, "pos_embedding": 0}, "text_tower": {"class_embedding": 0}}
    mask = optim.decay_mask(params, config_lib.NO_DECAY_PATTERNS)
    assert mask == {"image_tower": {"cls": False, "pos_embedding": True},
                    "text_tower": {"class_embedding": False}}  # fmt: skip


@pytest.mark.parametrize("name", ["adamw", "sgd", "lamb"])
def test_optimizers_step_and_respect_the_mask(name):
    params = {"w": jnp.ones((3,)), "bias": jnp.ones((3,))}
    tx, _ = optim.make_optimizer(
        _opt(name=name, lr=0.1, weight_decay=0.5, warmup_steps=0, schedule="constant"), 10, 0
    )
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, state, params)
    # Zero gradients: only weight decay moves a parameter, and never the bias.
    assert np.all(np.asarray(updates["bias"]) == 0)
    assert np.all(np.asarray(updates["w"]) < 0)


def test_global_norm_clipping():
    params = {"w": jnp.zeros((4,))}
    tx, _ = optim.make_optimizer(
        _opt(
            name="sgd",
            lr=1.0,
            momentum=0.0,
            weight_decay=0.0,
            clip_norm=1.0,
            schedule="constant",
            warmup_steps=0,
        ),
        10,
        0,
    )
    updates, _ = tx.update({"w": jnp.full((4,), 10.0)}, tx.init(params), params)
    assert float(jnp.linalg.norm(updates["w"])) == pytest.approx(1.0, rel=1e-5)


def test_frozen_parameters_get_no_update():
    params = {"image_tower": {"w": jnp.ones((3,))}, "head": {"kernel": jnp.ones((3,))}}
    tx, _ = optim.make_optimizer(_opt(freeze="^image_tower/", warmup_steps=0), 10, 0)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert np.all(np.asarray(updates["image_tower"]["w"]) == 0)
    assert np.all(np.asarray(updates["head"]["kernel"]) < 0)


def test_step_schedule_drops_by_the_factor_at_each_boundary():
    """torchvision's StepLR shape: 100 steps, 10 of warmup, x0.1 at steps 30 and 60 (fractions
    0.3, 0.6 of the run); from each boundary step on, the lower lr."""
    opt = _opt(schedule="step", lr=0.4, step_boundaries=(0.3, 0.6), step_factor=0.1)
    s = optim.make_schedule(opt, 100, 10)
    expected = {0: 0.0, 5: 0.2, 10: 0.4, 29: 0.4, 30: 0.04, 59: 0.04, 60: 0.004, 99: 0.004}
    assert {t: float(s(t)) for t in expected} == pytest.approx(expected, rel=1e-6)
    # A boundary inside the warmup applies when the warmup ends; without warmup from step 0 on.
    early = optim.make_schedule(_opt(schedule="step", lr=1.0, step_boundaries=(0.05,)), 100, 10)
    assert [float(early(t)) for t in (9, 10, 50)] == pytest.approx([0.9, 0.1, 0.1])
    plain = optim.make_schedule(_opt(schedule="step", lr=1.0, step_boundaries=(0.5,)), 10, 0)
    assert [float(plain(t)) for t in (0, 4, 5, 9)] == pytest.approx([1.0, 1.0, 0.1, 0.1])


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            dict(step_boundaries=(0.6, 0.3)),
            "'optimizer.step_boundaries' = (0.6, 0.3) must be increasing",
        ),
        (
            dict(step_boundaries=(0.5, 1.0)),
            "'optimizer.step_boundaries' = (0.5, 1.0) must be increasing",
        ),
        (dict(schedule="step", step_boundaries=()), "'optimizer.step_boundaries' is empty"),
        (dict(step_factor=0.0), "'optimizer.step_factor' = 0.0 must be in (0, 1]"),
    ],
)
def test_bad_step_schedule_fields_are_a_config_error(fields, message):
    c = config_lib.paper_config()
    for k, v in fields.items():
        c.optimizer[k] = v
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(c, check_data=False, check_registries=False)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_an_older_run_without_the_step_fields_still_resumes(tmp_path):
    """The step fields' defaults, as config.json stores them, are their ADDED_OFF values: a run
    from before they existed resumes; turning the step schedule's factor on is refused."""
    import json

    from janus import run_records

    class NoCheckpoint:  # the stored config then comes from config.json
        directory = tmp_path / "checkpoints"

    now = config_lib.to_dict(config_lib.paper_config())
    old = json.loads(json.dumps(now))
    for k in ("step_boundaries", "step_factor"):
        del old["optimizer"][k]
    (tmp_path / "config.json").write_text(json.dumps(old))
    changes = run_records.check_resume(str(tmp_path), NoCheckpoint, 10, now, allow_changes="")
    assert changes == {
        "optimizer.step_boundaries": ("<unset>", [1 / 3, 2 / 3]),
        "optimizer.step_factor": ("<unset>", 0.1),
    }
    now["optimizer"]["step_factor"] = 0.5
    with pytest.raises(run_records.RunRefused, match="optimizer.step_factor"):
        run_records.check_resume(str(tmp_path), NoCheckpoint, 10, now, allow_changes="")
