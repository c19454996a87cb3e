"""The three controlled ablations (configs/resolution.py, optimizer.py, diversity.py), without
training: each sweep lists the intended cells; any two runs differ only in the fields the
ablation varies; every run's config validates; `janus.sweep --print` lists every (cell, seed).
"""

import pathlib
import shlex

import pytest

from janus import config as config_lib
from janus import sweep
from janus.run_records import flat_config

REPO = pathlib.Path(__file__).resolve().parents[1]
MINI_TEXT = {"loss", "model.text"}  # configs/mini.py's loss= also sizes the text tower

# config -> variant -> (cells, {sweep key: the config fields it may change}). "setup" is fixed
# within a sweep.
CASES = {
    "resolution": {
        None: (
            [f"loss={loss},res={r}" for loss in ("ce", "infonce") for r in (128, 160, 224, 288)],
            {"loss": {"loss"}, "res": {"input.resolution", "input.pp"}},
        ),
        "mini": (
            [
                f"setup=mini,loss={loss},res={r}"
                for loss in ("ce", "infonce")
                for r in (32, 48, 64, 96)
            ],
            {"loss": MINI_TEXT, "res": {"input.resolution", "input.pp"}},
        ),
    },
    "optimizer": {
        variant: (
            [
                f"{prefix}loss={loss},opt={opt},sched={sched}"
                for loss in ("ce", "infonce")
                for opt in ("adamw", "sgd")
                for sched in ("cosine", "step")
            ],
            {
                "loss": MINI_TEXT if variant else {"loss"},
                "opt": {"optimizer.name", "optimizer.lr", "optimizer.weight_decay"},
                "sched": {"optimizer.schedule"},
            },
        )
        for variant, prefix in ((None, ""), ("mini", "setup=mini,"))
    },
    "diversity": {
        None: (["sources=1,scale=1", "sources=4,scale=1"], {"sources": {"data.train"}}),
        "mini": (
            [
                f"setup=mini,sources={k},scale={s}"
                for k, s in ((1, 1), (2, 1), (3, 1), (4, 1), (1, 2), (4, 2), (1, 4), (4, 4))
            ],
            {"sources": {"data.train"}, "scale": {"data.budget"}},
        ),
    },
}
PARAMS = [(name, variant) for name, variants in CASES.items() for variant in variants]


def _module(name):
    return config_lib.load_config_module(str(REPO / "configs" / f"{name}.py"))


def _keys(arg: str) -> dict:
    return dict(item.split("=", 1) for item in arg.split(","))


def _within(leaf: str, fields: set) -> bool:
    """`leaf` is one of `fields` or inside one (model.text.width is in model.text)."""
    return any(leaf == f or leaf.startswith(f + ".") for f in fields)


def _diff(a, b) -> set:
    fa, fb = flat_config(a.to_dict()), flat_config(b.to_dict())
    return {k for k in set(fa) | set(fb) if fa.get(k, "<unset>") != fb.get(k, "<unset>")}


@pytest.mark.parametrize("name, variant", PARAMS)
def test_each_sweep_lists_its_cells_with_three_seeds(name, variant):
    cells, _ = CASES[name][variant]
    assert _module(name).get_sweep(variant) == {"runs": cells, "seeds": [0, 1, 2]}


@pytest.mark.parametrize("name, variant", PARAMS)
def test_runs_differ_only_in_the_ablated_fields_and_validate(name, variant):
    """Every run against the first: the fields that differ lie within those of the sweep keys
    whose values differ, and each such key changes at least one of its fields; a seed changes only
    `seed`. Every run's config validates (mini on 1 device, real size on 8)."""
    module = _module(name)
    cells, fields = CASES[name][variant]
    first = module.get_config(cells[0])
    for arg in cells:
        c = module.get_config(arg)
        changed = {k for k, v in _keys(arg).items() if _keys(cells[0])[k] != v}
        diff, allowed = _diff(first, c), set().union(*(fields[k] for k in changed))
        assert all(_within(leaf, allowed) for leaf in diff), (arg, diff)
        assert all(any(_within(leaf, fields[k]) for leaf in diff) for k in changed), (arg, diff)
        config_lib.validate(c, num_devices=1 if variant else 8, check_data=False)
        assert _diff(c, module.get_config(f"{arg},seed=7")) == {"seed"}


@pytest.mark.parametrize("name", CASES)
def test_the_recipe_cell_is_the_base_recipe(name):
    """One mini cell of each ablation is configs/mini.py's default run, field for field (so the
    ablations share a reference point with the mini study); at real size the resolution and
    optimizer ablations' CE cell is configs/in100.py's."""
    mini = _module("mini").get_config()
    recipe_cell = {
        "resolution": ("loss=ce,res=64", "loss=ce,res=224"),
        "optimizer": ("loss=ce,opt=adamw,sched=cosine",) * 2,
        "diversity": ("sources=1,scale=1", None),
    }[name]
    module = _module(name)
    assert _diff(mini, module.get_config(f"setup=mini,{recipe_cell[0]}")) == set()
    if recipe_cell[1]:
        in100 = _module("in100").get_config("loss=ce")
        assert _diff(in100, module.get_config(recipe_cell[1])) == set()


# Mini ablation cells that are configs/mini_study.py cells, field for field and for every seed:
# once the mini study has run, they are linked to its runs, not trained again (docs/studies.md).
STUDY_1X = "scale=1,data=curated,arch=resnet"
SHARED_WITH_MINI_STUDY = [
    ("resolution", f"loss={loss},res=64", f"loss={loss},{STUDY_1X}")
    for loss in ("ce", "infonce")
] + [
    ("optimizer", f"loss={loss},opt=adamw,sched=cosine", f"loss={loss},{STUDY_1X}")
    for loss in ("ce", "infonce")
] + [
    ("diversity", f"sources={k},scale={s}", f"loss=ce,scale={s},data={data},arch=resnet")
    for k, data in ((1, "curated"), (4, "mix"))
    for s in (1, 2, 4)
]  # fmt: skip


@pytest.mark.parametrize("name, cell, study_cell", SHARED_WITH_MINI_STUDY)
def test_shared_cells_are_the_mini_study_runs(name, cell, study_cell):
    module, study = _module(name), _module("mini_study")
    assert study_cell in study.get_sweep()
    for seed in (0, 1, 2):
        ablation_run = module.get_config(f"setup=mini,{cell},seed={seed}")
        assert _diff(ablation_run, study.get_config(f"{study_cell},seed={seed}")) == set()


def test_the_documented_values_of_each_cell():
    """The values the docstrings state: resolutions and the eval chain at that size, each
    optimizer's lr / weight decay, the sources and budgets."""
    from janus.evaluate.inference import eval_pp

    res = _module("resolution")
    c = res.get_config("setup=mini,res=96")
    assert c.input.pp.startswith("decode|rrc(96,") and "center_crop(96)" in eval_pp(c.to_dict())
    assert res.get_config("res=288").input.pp.startswith("decode|rrc(288,")
    opt = _module("optimizer")
    got = {
        (setup, name): (c.optimizer.name, c.optimizer.lr, c.optimizer.weight_decay)
        for setup in ("paper", "mini")
        for name in ("adamw", "sgd")
        for c in [opt.get_config(f"setup={setup},opt={name}")]
    }
    assert got == {
        ("paper", "adamw"): ("adamw", 5e-4, 0.2),
        ("paper", "sgd"): ("sgd", 0.2, 1e-4),
        ("mini", "adamw"): ("adamw", 2e-3, 0.05),
        ("mini", "sgd"): ("sgd", 0.025, 1e-4),
    }
    step = opt.get_config("setup=mini,sched=step").optimizer
    assert (step.schedule, tuple(step.step_boundaries), step.step_factor) == (
        "step",
        (1 / 3, 2 / 3),
        0.1,
    )
    div = _module("diversity")
    c = div.get_config("setup=mini,sources=3,scale=4,root=/tmp/m")
    assert (c.data.train, c.data.budget) == ("/tmp/m/curated+/tmp/m/web+/tmp/m/flickr", 3200)
    c = div.get_config("sources=4,scale=1")
    assert c.data.train == "data/in100+data/laion100+data/yfcc100+data/oi100"
    assert (c.data.budget_scale, c.data.budget_reference, c.loss) == (1.0, "data/in100", "ce")


@pytest.mark.parametrize(
    "name, arg, message",
    [
        ("resolution", "setup=big", "config argument setup='big'; known: paper, mini"),
        ("optimizer", "opt=lamb", "config argument opt='lamb': opt='lamb'; known: adamw, sgd"),
        ("optimizer", "setup=mini,sched=linear", "sched='linear'; known: cosine, step"),
        ("optimizer", "opt=sgd,lr=0.1", "config argument opt='sgd' sets optimizer.lr"),
        ("diversity", "sources=5", "sources=5; expected an integer from 1 to 4"),
        ("diversity", "setup=mini,sources=0", "sources=0; expected an integer from 1 to 4"),
    ],
)
def test_bad_arguments_are_a_one_line_error_naming_the_key(name, arg, message):
    with pytest.raises(config_lib.ConfigError) as e:
        _module(name).get_config(arg)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", CASES)
def test_an_unknown_variant_is_refused(name, capsys):
    config = str(REPO / "configs" / f"{name}.py")
    assert sweep.main([f"{config}:big", "--root", "r", "--print"]) == 2
    assert f"configs/{name}.py has no sweep 'big'; known: mini" in capsys.readouterr().err


@pytest.mark.parametrize("name, variant", PARAMS)
def test_print_lists_every_cell_and_seed(name, variant, capsys):
    config = str(REPO / "configs" / f"{name}.py") + (f":{variant}" if variant else "")
    assert sweep.main([config, "--root", "runs/x", "--print", "--seeds", "0,1,2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    path = config.split(":")[0]
    cells, _ = CASES[name][variant]
    assert lines == [
        shlex.join(["python", "-m", "janus.main", f"--config={path}:{arg},seed={s}",
                    f"--workdir=runs/x/{sweep.run_name(arg)}_s{s}"])
        for arg in cells
        for s in (0, 1, 2)
    ]  # fmt: skip
    assert sweep.main([config, "--root", "runs/x", "--print"]) == 0  # the declared seeds
    assert capsys.readouterr().out.splitlines() == lines
