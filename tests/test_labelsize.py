"""The label-set-size ablation: configs/labelsize.py and configs/mini_labelsize.py choose nested
random label sets with a fixed budget per class, and the train pipeline honours both."""

import collections
import pathlib

import numpy as np
import pytest

from janus import config as config_lib
from janus import sweep
from janus.data import labelsets
from janus.data.input import pipeline

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _module(name):
    return config_lib.load_config_module(str(CONFIGS / f"{name}.py"))


def test_imagenet_sweep_is_nested_label_sets_at_a_fixed_budget_per_class():
    mod = _module("labelsize")
    assert sweep.load_sweep(str(CONFIGS / "labelsize.py")) == [
        f"k={k}" for k in (100, 200, 500, 1000)
    ]
    configs = [mod.get_config(arg) for arg in mod.get_sweep()]
    assert [c.label_set for c in configs] == [f"random:{k}:0" for k in (100, 200, 500, 1000)]
    assert [c.data.budget for c in configs] == [k * 300 for k in (100, 200, 500, 1000)]
    assert all(c.data.class_balanced and c.loss == "ce" for c in configs)
    classes = [set(labelsets.resolve_label_set(c.label_set).tolist()) for c in configs]
    assert all(a < b for a, b in zip(classes, classes[1:]))
    # keys are read together whatever their order; ls_seed picks another nested family
    c = mod.get_config("per_class=50,k=200,ls_seed=3,seed=1")
    assert (c.label_set, c.data.budget, c.seed) == ("random:200:3", 10_000, 1)


@pytest.mark.parametrize("arg", ["k=0", "k=ten", "per_class=0", "k=2000"])
def test_bad_label_size_arguments_name_the_value(arg):
    key, value = arg.split("=")
    with pytest.raises((config_lib.ConfigError, ValueError), match=f"{value}"):
        c = _module("labelsize").get_config(arg)
        config_lib.validate(c, num_devices=1, check_data=False)


def test_mini_label_size_run_trains_on_exactly_k_classes_times_per_class(mini_v2):
    mod = _module("mini_labelsize")
    assert mod.get_sweep() == ["k=5", "k=10", "k=15", "k=25"]
    c = mod.get_config(f"k=5,per_class=4,root={mini_v2}")
    config_lib.validate(c, num_devices=1, check_data=False)
    assert c.label_set == "random:5:0:mini25" and c.data.budget == 20
    # the train pipeline's selection, as the trainer calls it
    _, items, manifest = pipeline.select_examples(
        config_lib.train_dirs(c)[0][0],
        seed=c.seed,
        label_set=c.label_set,
        budget=c.data.budget,
        class_balanced=c.data.class_balanced,
    )
    assert len(items) == 20
    wanted = labelsets.resolve_label_set(c.label_set)
    per_class = {int(k): v for k, v in manifest["per_class"].items()}
    assert sorted(per_class) == wanted.tolist()
    assert set(per_class.values()) == {4}
    # K=10 keeps K=5's classes (nested), at the same per-class budget
    c10 = mod.get_config(f"k=10,per_class=4,root={mini_v2}")
    assert set(wanted.tolist()) < set(labelsets.resolve_label_set(c10.label_set).tolist())
    counts = collections.Counter(np.asarray(items)[:, 0].tolist())
    assert counts == {0: 20}
