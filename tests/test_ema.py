"""The EMA of the parameters (optimizer.ema_decay): its update, its place in the optimizer state and
the checkpoint, a resumed run equal to an uninterrupted one, and `janus.evaluate --params ema`."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_evaluate import _config, _init, mini  # noqa: F401  (mini: a fixture)
from test_optim import _opt
from test_train import assert_bitwise_equal, command, full_state, run

from janus import checkpoint as ckpt_lib
from janus import optim
from janus.evaluate.__main__ import main as evaluate_main


def test_ema_follows_the_updated_parameters():
    """ema = d * ema + (1 - d) * params after each update, starting at the initial parameters."""
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([0.5])}
    tx = optim.with_ema(optax.sgd(0.1), 0.75)
    state = tx.init(params)
    assert state["ema"]["w"] is not params["w"]  # a copy: the step donates the whole state
    ema = jax.tree.map(np.asarray, params)
    for _ in range(3):
        grads = jax.tree.map(lambda p: p * 2.0, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: 0.75 * e + 0.25 * np.asarray(p), ema, params)
    for k in params:
        np.testing.assert_allclose(np.asarray(optim.ema_params(state)[k]), ema[k], rtol=1e-6)


def test_updates_are_those_of_the_wrapped_optimizer():
    params = {"w": jnp.arange(4.0)}
    opt = _opt(warmup_steps=0)
    plain, _ = optim.make_optimizer(opt, 10, 0)
    with_ema, _ = optim.make_optimizer(_opt(warmup_steps=0, ema_decay=0.9), 10, 0)
    s0, s1 = plain.init(params), with_ema.init(params)
    grads = {"w": jnp.array([0.1, -0.2, 0.3, 0.0])}
    for _ in range(2):
        u0, s0 = plain.update(grads, s0, params)
        u1, s1 = with_ema.update(grads, s1, params)
        np.testing.assert_array_equal(np.asarray(u0["w"]), np.asarray(u1["w"]))
    assert jax.tree.structure(s1["inner"]) == jax.tree.structure(s0)


def test_ema_decay_zero_keeps_no_ema():
    params = {"w": jnp.ones(3)}
    tx, _ = optim.make_optimizer(_opt(ema_decay=0.0), 10, 0)
    assert optim.ema_params(tx.init(params)) is None


def _save_state(workdir, step, config, variables, ema_decay):
    """A checkpoint in the training layout, its optimizer state that of a run with `ema_decay`."""
    tx, _ = optim.make_optimizer(_opt(ema_decay=ema_decay), 10, 0)
    opt_state = tx.init(variables["params"])
    if ema_decay:  # an EMA that differs from the parameters
        opt_state["ema"] = jax.tree.map(lambda x: x * np.float32(0.5), opt_state["ema"])
    state = {"step": np.int32(step), "opt_state": opt_state, **variables}
    ck = ckpt_lib.Checkpointer(workdir, async_save=False)
    ck.save(step, state, config=config)
    ck.close()
    return state


def test_load_for_inference_reads_the_ema_or_names_the_field(tmp_path):
    variables = {"params": {"w": np.arange(3, dtype=np.float32)}}
    config = {"loss": "ce", "model": {"name": "resnet_tiny"}}
    _save_state(tmp_path / "a", 5, config, variables, ema_decay=0.9)
    _, loaded, step = ckpt_lib.load_for_inference(tmp_path / "a", ema=True)
    assert step == 5
    np.testing.assert_array_equal(loaded["params"]["w"], [0.0, 0.5, 1.0])
    _, plain, _ = ckpt_lib.load_for_inference(tmp_path / "a")
    np.testing.assert_array_equal(plain["params"]["w"], [0.0, 1.0, 2.0])

    _save_state(tmp_path / "b", 5, config, variables, ema_decay=0.0)
    with pytest.raises(ckpt_lib.NoEma, match=r"checkpoints/5 .*optimizer\.ema_decay"):
        ckpt_lib.load_for_inference(tmp_path / "b", ema=True)


@pytest.mark.slow
def test_evaluate_params_ema_writes_its_own_result(mini, tmp_path, capsys):  # noqa: F811
    """--params ema and the default --params params on one step: two results, two CSV rows, each
    naming its weights; a checkpoint without an EMA is a one-line error."""
    wd = tmp_path / "run"
    _, variables = _init("resnet_tiny", "ce")
    _save_state(wd, 3, _config("ce", "resnet_tiny", mini), variables, ema_decay=0.9)
    quick = ["--workdir", str(wd), "--sets", "val", "--batch_size", "16", "--max_examples", "8"]
    assert evaluate_main([*quick, "--params", "ema"]) == 0
    assert evaluate_main(quick) == 0
    ema = json.loads((wd / "eval" / "3_ema.json").read_text())
    plain = json.loads((wd / "eval" / "3.json").read_text())
    assert (ema["params"], plain["params"]) == ("ema", "params")
    assert ema["checkpoint"] == plain["checkpoint"] == "checkpoints/3"
    rows = list(csv.DictReader(open(wd / "eval" / "results.csv")))
    assert sorted(r["params"] for r in rows) == ["ema", "params"]

    bare = tmp_path / "bare"
    _save_state(bare, 3, _config("ce", "resnet_tiny", mini), variables, ema_decay=0.0)
    capsys.readouterr()
    assert evaluate_main(["--workdir", str(bare), "--params", "ema"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optimizer.ema_decay" in err[0] and "checkpoints/3" in err[0]


@pytest.mark.slow
def test_a_resumed_run_with_ema_equals_an_uninterrupted_one(mini_v2, tmp_path):
    """4 steps with the EMA on, stopped at step 2 and resumed: bitwise the uninterrupted run's
    state, its EMA included."""
    env = dict(__import__("os").environ, JAX_PLATFORMS="cpu")
    ema = ["--config.optimizer.ema_decay=0.5", "--config.checkpoint.every_steps=2"]

    def cmd(workdir):
        return command(mini_v2, workdir, "steps=4,res=32,batch=16", *ema)

    ref, resumed = tmp_path / "ref", tmp_path / "resumed"
    out = run(cmd(ref), env)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run([*cmd(resumed), "--config.stop_after_steps=2"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run(cmd(resumed), env)
    assert out.returncode == 0 and "resuming from" in out.stdout, out.stderr[-3000:]
    state = full_state(resumed, 4)
    assert optim.ema_params(state["opt_state"]) is not None
    assert_bitwise_equal(state, full_state(ref, 4))


def test_the_report_shows_the_ema_beside_the_parameters(tmp_path):
    from janus import report

    (tmp_path / "eval").mkdir()
    for name, weights, top1 in (("3.json", None, 0.5), ("3_ema.json", "ema", 0.75)):
        result = {"step": 3, "classifier": "head", "sets": {"val": {"top1": top1, "n": 8}}}
        result.update(metrics={}, **({"params": weights} if weights else {}))  # older: no field
        (tmp_path / "eval" / name).write_text(json.dumps(result))
    rows = report.load_rows([str(tmp_path)])
    assert {r["params"]: r["val_top1"] for r in rows} == {"params": 0.5, "ema": 0.75}
