"""Checkpoint averaging (python -m janus.average): the mean of hand-made checkpoints, its errors,
and the evaluator reading the average with --params avg."""

import json

import jax
import numpy as np
import pytest
from test_evaluate import _config, _init, mini  # noqa: F401  (mini: a fixture)

from janus import average as average_lib
from janus import checkpoint as ckpt_lib
from janus.evaluate.__main__ import main as evaluate_main


def test_average_is_the_mean_of_every_array_in_its_dtype():
    a = {"params": {"w": np.array([1.0, 2.0], np.float32)}, "batch_stats": {"m": np.ones(2)}}
    b = {"params": {"w": np.array([3.0, 6.0], np.float32)}, "batch_stats": {"m": np.zeros(2)}}
    out = average_lib.average({10: a, 20: b})
    np.testing.assert_array_equal(out["params"]["w"], [2.0, 4.0])
    assert out["params"]["w"].dtype == np.float32
    np.testing.assert_array_equal(out["batch_stats"]["m"], [0.5, 0.5])


def test_trees_of_different_models_are_an_error_naming_the_steps():
    a = {"params": {"w": np.zeros(2)}}
    with pytest.raises(average_lib.AverageError, match=r"checkpoints 10 and 20 .*params/v"):
        average_lib.average({10: a, 20: {"params": {"v": np.zeros(2)}}})
    with pytest.raises(average_lib.AverageError, match=r"params/w: shapes .* \[10, 20\]"):
        average_lib.average({10: a, 20: {"params": {"w": np.zeros(3)}}})


@pytest.mark.slow
def test_average_of_two_checkpoints_is_their_mean_and_evaluates(mini, tmp_path, capsys):  # noqa: F811
    wd = tmp_path / "run"
    config = _config("ce", "resnet_tiny", mini)
    _, variables = _init("resnet_tiny", "ce")
    scaled = {s: jax.tree.map(lambda x, s=s: x * np.float32(s), variables) for s in (1, 2, 3)}
    for step, v in scaled.items():
        ckpt_lib.save_for_inference(str(wd), step, config, v)

    assert average_lib.main(["--workdir", str(wd), "--last", "2"]) == 0
    loaded_config, avg, step = ckpt_lib.load_for_inference(wd / "averaged")
    assert step == 3 and loaded_config["averaged_steps"] == [2, 3]
    for got, two, three in zip(*(jax.tree.leaves(t) for t in (avg, scaled[2], scaled[3]))):
        np.testing.assert_allclose(got, (two + three) / 2, rtol=1e-6)

    quick = ["--workdir", str(wd), "--sets", "val", "--batch_size", "16", "--max_examples", "8"]
    assert evaluate_main([*quick, "--params", "avg"]) == 0
    result = json.loads((wd / "eval" / "3_avg.json").read_text())
    assert result["params"] == "avg" and result["averaged_steps"] == [2, 3]
    assert result["checkpoint"] == "averaged/checkpoints/3" and result["sets"]["val"]["n"] == 8

    capsys.readouterr()
    assert average_lib.main(["--workdir", str(wd), "--last", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps [1, 2, 3]" in err[0] and "--last 4 needs 4" in err[0]
