"""janus.sweep: a study declared in a config file, run one run after another, then the report.

A CI-sized study of three runs on tiny JANuS-mini records (10 steps, 32 px): two that train and one
whose config is invalid. The sweep runs all three, writes the report of the two, prints their
table and exits 1 naming the failure; run again, it skips the finished runs and resumes an
interrupted one from its checkpoint. `--print` gives the same commands as shell lines.
"""

import csv
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

from janus import display, sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
PP = "decode|rrc(32,scale=(0.35,1.0))|flip|normalize"
ARGS = ["loss=ce,seed=0", "loss=ce,seed=1", "loss=ce,model=no_such_model"]
NAMES = ["loss-ce_seed-0", "loss-ce_seed-1", "loss-ce_model-no_such_model"]

# A self-contained study config: a tiny CE model on JANuS-mini v1 records, evaluated at the end.
STUDY = """
from janus import config as config_lib


def get_config(arg=None):
    c = config_lib.paper_config()
    c.label_set, c.loss, c.model.name = "mini10", "ce", "resnet_tiny"
    c.data.train = {data!r}
    c.input.batch_size, c.input.resolution, c.input.pp = 16, 32, {pp!r}
    c.total_epochs, c.total_steps = None, 20
    c.optimizer.warmup_steps = 2
    c.checkpoint.every_steps, c.checkpoint.keep = 5, 2
    c.log.every_steps = 5
    c.evals.mini = dict(every_steps=1000, set="all", records={data!r}, batch_size=20)
    return config_lib.apply_sweep(c, arg)


def get_sweep():
    return {args!r}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(config file, root, janus.main flags, env)."""
    from janus.data.ingest import synthetic

    d = tmp_path_factory.mktemp("study")
    synthetic.build_mini(d / "mini", train_per_class=8, eval_per_class=2, size=32)
    config = d / "study.py"
    config.write_text(STUDY.format(data=str(d / "mini"), pp=PP, args=ARGS))
    flags = ["--config.total_steps=10"]  # passed through to every run
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # the session's XLA cache included
    return config, d / "runs", flags, env


def _sweep(study, *args):
    config, root, flags, env = study
    cmd = [sys.executable, "-m", "janus.sweep", str(config), "--root", str(root), *args]
    return subprocess.run(
        [*cmd, "--", *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def first(study):
    return _sweep(study)


def _table(stdout: str) -> list[list[str]]:
    """The rows of the last printed table, as cells."""
    at = stdout.rindex("results (latest eval/<step>.json of each run):")
    lines = [line for line in stdout[at:].splitlines()[1:] if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_sweep_runs_every_run_then_writes_the_report_and_prints_the_table(study, first):
    _, root, _, _ = study
    for i, name in enumerate(NAMES):
        assert f"[{i + 1}/3] {name} (new): python -m janus.main" in first.stdout
    for name in NAMES[:2]:
        assert (root / name / "DONE").exists() and (root / name / "eval" / "10.json").exists()
        log = (root / name / "sweep.log").read_text()
        assert "done at step 10" in log and log.rstrip().endswith("# exit status 0")
    rows = list(csv.DictReader(open(root / "report" / "results.csv")))
    assert [(r["run"], r["step"], r["mixture"]) for r in rows] == [
        (NAMES[0], "10", "mini"),
        (NAMES[1], "10", "mini"),
    ]
    for stem in ("robustness_vs_val_mini10", "scaling"):
        assert (root / "report" / f"{stem}.png").stat().st_size > 5000
    table = _table(first.stdout)
    assert table[0] == [
        "run", "step", "classifier", "val", "V2", "Sketch", "R", "A", "ObjectNet",
        "avg robustness", "robustness ratio",
    ]  # fmt: skip
    assert [row[:3] for row in table[2:]] == [[NAMES[0], "10", "head"], [NAMES[1], "10", "head"]]
    result = json.loads((root / NAMES[1] / "eval" / "10.json").read_text())
    assert table[3][3] == display.metric(result["sets"]["val"]["top1"])  # 4 significant digits
    assert table[3][-1] == display.metric(result["metrics"]["robustness_ratio"])


def test_a_failing_run_is_reported_and_the_others_still_run(study, first):
    _, root, _, _ = study
    assert first.returncode == 1
    log = root / NAMES[2] / "sweep.log"
    assert f"[3/3] {NAMES[2]}: FAILED, exit status 2 (log: {log})" in first.stdout
    assert "invalid config" in log.read_text()
    assert "1 of 3 runs failed" in first.stderr and f"[2] {NAMES[2]}: exit status 2" in first.stderr


def test_rerun_skips_finished_runs_and_resumes_an_interrupted_one(study, first):
    _, root, _, _ = study
    done0 = (root / NAMES[0] / "DONE").stat().st_mtime_ns
    # Run 1 "interrupted" after its step-5 checkpoint: no DONE, no step-10 checkpoint.
    (root / NAMES[1] / "DONE").unlink()
    shutil.rmtree(root / NAMES[1] / "checkpoints" / "10")
    again = _sweep(study)
    assert again.returncode == 1  # run 2 still fails
    assert f"[1/3] {NAMES[0]}: done, skipped" in again.stdout
    assert (root / NAMES[0] / "DONE").stat().st_mtime_ns == done0
    assert f"[2/3] {NAMES[1]} (started)" in again.stdout
    assert "resuming from" in again.stdout and (root / NAMES[1] / "DONE").exists()
    assert [row[0] for row in _table(again.stdout)[2:]] == NAMES[:2]
    # --only: just that run, no report.
    only = _sweep(study, "--only", "0")
    assert only.returncode == 0 and f"[1/3] {NAMES[0]}: done, skipped" in only.stdout
    assert NAMES[1] not in only.stdout and "results (" not in only.stdout


def test_print_emits_one_command_per_run(study):
    config, root, flags, _ = study
    out = _sweep(study, "--print")
    assert out.returncode == 0 and out.stderr == ""
    commands = [shlex.split(line) for line in out.stdout.splitlines()]
    assert commands == [
        ["python", "-m", "janus.main", f"--config={config}:{arg}", f"--workdir={root / name}",
         *flags]
        for arg, name in zip(ARGS, NAMES)
    ]  # fmt: skip
    assert _sweep(study, "--print", "--only", "2").stdout == out.stdout.splitlines()[2] + "\n"


def test_run_names_are_readable_and_must_be_unique(tmp_path):
    assert sweep.run_name("loss=ce,scale=1,data=curated") == "loss-ce_scale-1_data-curated"
    assert sweep.run_name("data=d/a*1+d/b*3, lr=1e-3") == "data-d-a-1+d-b-3_lr-1e-3"
    assert sweep.run_name("") == "default"
    with pytest.raises(ValueError, match="same workdir name: data-a-b: 'data=a/b', 'data=a-b'"):
        sweep.plan("c.py", ["data=a/b", "seed=1", "data=a-b"], "runs")
    (tmp_path / "plain.py").write_text("def get_config(arg=None):\n    return None\n")
    with pytest.raises(ValueError, match="needs a get_sweep"):
        sweep.load_sweep(str(tmp_path / "plain.py"))
    assert sweep.main([f"{tmp_path / 'plain.py'}", "--root", "r"]) == 2


def test_arch_config_lists_the_paper_grid_and_the_mini_smoke_test(capsys):
    """configs/arch.py: the named towers x {ce, infonce} on IN100, and with `:mini` the same
    families at test size on JANuS-mini; every run's config names a registered tower that builds
    with its objective."""
    from janus import config as config_lib
    from janus.models import create_model, image_tower_names

    config = str(REPO / "configs" / "arch.py")
    assert sweep.main([config, "--root", "runs/arch", "--print"]) == 0
    lines = capsys.readouterr().out.splitlines()
    models = ["vgg16_bn", "convnext_t", "convnext_s", "convnext_b", "volo_d1", "deit_s16",
              "deit_b16", "clip_rn50"]  # fmt: skip
    assert len(lines) == 2 * len(models)
    assert lines[0] == shlex.join(
        ["python", "-m", "janus.main", f"--config={config}:model=vgg16_bn,loss=ce",
         "--workdir=runs/arch/model-vgg16_bn_loss-ce"]
    )  # fmt: skip
    assert sweep.main([f"{config}:mini", "--root", "runs/arch_mini", "--dry_run"]) == 0
    mini = capsys.readouterr().out.splitlines()
    assert len(mini) == 10 and all(" (new): " in line for line in mini)
    assert "setup-mini_model-vgg_tiny_loss-ce_steps-100" in mini[0]

    arch = config_lib.load_config_module(config)
    for arg in arch.get_sweep() + arch.get_sweep("mini"):
        c = arch.get_config(arg)
        assert c.model.name in image_tower_names(), arg
        create_model(c.model.name, c.loss, text=c.model.text)  # builds (no init)
        if "setup=mini" in arg:
            assert (c.label_set, c.input.resolution, c.data.prepare) == ("mini25", 64, "mini")
            assert (c.total_steps, c.total_epochs) == (100, None)
        else:
            assert (c.label_set, c.input.resolution, c.optimizer.clip_norm) == ("in100", 224, 1.0)
            assert c.data.train == c.data.budget_reference == "data/in100"


def test_sweep_variant_errors(tmp_path, capsys):
    config = str(REPO / "configs" / "arch.py")
    assert sweep.main([f"{config}:big", "--root", "r", "--print"]) == 2
    assert "has no sweep 'big'; known: mini" in capsys.readouterr().err
    (tmp_path / "one.py").write_text("def get_sweep():\n    return ['seed=0']\n")
    assert sweep.main([f"{tmp_path / 'one.py'}:mini", "--root", "r", "--print"]) == 2
    assert "get_sweep() takes no variant" in capsys.readouterr().err


def test_seeds_make_a_run_per_cell_and_seed(tmp_path, capsys):
    """`get_sweep()` may declare seeds; `--seeds` overrides them; each (cell, seed) is a run named
    `<cell>_s<seed>` whose argument sets seed=; --print and --only N list every such run."""
    (tmp_path / "s.py").write_text(
        "def get_sweep():\n    return {'runs': ['loss=ce', 'loss=infonce'], 'seeds': [0, 1]}\n"
    )
    config = str(tmp_path / "s.py")
    assert sweep.main([config, "--root", "r", "--print"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [(c, s) for c in ("ce", "infonce") for s in (0, 1)]
    assert lines == [
        shlex.join(["python", "-m", "janus.main", f"--config={config}:loss={c},seed={s}",
                    f"--workdir=r/loss-{c}_s{s}"])
        for c, s in expected
    ]  # fmt: skip
    assert sweep.main([config, "--root", "r", "--print", "--only", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == lines[3:]
    assert sweep.main([config, "--root", "r", "--print", "--seeds", "7,2,5"]) == 0
    names = [shlex.split(line)[-1] for line in capsys.readouterr().out.splitlines()]
    assert names == [f"--workdir=r/loss-{c}_s{s}" for c in ("ce", "infonce") for s in (7, 2, 5)]
    runs = sweep.plan("c.py", ["loss=ce"], "r", seeds=[3])
    assert (runs[0].cell, runs[0].seed, runs[0].name) == ("loss-ce", 3, "loss-ce_s3")
    # Without seeds the names stay as they were.
    assert [r.name for r in sweep.plan("c.py", ARGS, "r")] == NAMES


@pytest.mark.parametrize(
    "seeds, message",
    [
        ("0,1,0", "--seeds: duplicate seeds [0] (got '0,1,0')"),
        ("0,a", "--seeds: seed 'a' is not a non-negative integer"),
        ("0,,1", "--seeds: seed '' is not a non-negative integer"),
        ("-1", "--seeds: seed '-1' is not a non-negative integer"),
    ],
)
def test_bad_seeds_are_a_one_line_error(tmp_path, capsys, seeds, message):
    (tmp_path / "s.py").write_text("def get_sweep():\n    return ['loss=ce']\n")
    assert sweep.main([str(tmp_path / "s.py"), "--root", "r", "--print", f"--seeds={seeds}"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_declared_seeds_are_checked_and_a_cell_may_not_set_seed(tmp_path, capsys):
    (tmp_path / "d.py").write_text(
        "def get_sweep():\n    return dict(runs=['a=1'], seeds=[1, 1])\n"
    )
    assert sweep.main([str(tmp_path / "d.py"), "--root", "r", "--print"]) == 2
    assert "get_sweep()['seeds']: duplicate seeds [1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="sets seed= while the sweep declares seeds"):
        sweep.plan("c.py", ["loss=ce,seed=4"], "r", seeds=[0, 1])


def test_subset_seed_chooses_the_budget_subset_apart_from_the_run_seed(tmp_path):
    """data.subset_seed (default None: the run's seed) picks which samples a budget keeps, so a
    study can vary the training seed on a fixed subset, or the subset under a fixed seed."""
    from janus import config as config_lib
    from janus.data.ingest import synthetic
    from janus.data.input.selection import select_examples

    assert config_lib.paper_config().data.subset_seed is None
    synthetic.build_mini(tmp_path / "mini", train_per_class=8, eval_per_class=2, size=16)

    def keys(**kw):
        s = select_examples(str(tmp_path / "mini"), budget=30, **kw)
        return s.items[:, 1].tolist(), s.manifest

    base, manifest = keys(seed=0)
    assert manifest["seed"] == manifest["subset_seed"] == 0
    assert keys(seed=5, subset_seed=0)[0] == base  # same subset, another run seed
    other, manifest = keys(seed=0, subset_seed=5)
    assert other != base and (manifest["seed"], manifest["subset_seed"]) == (0, 5)
    assert keys(seed=5)[0] == keys(seed=0, subset_seed=5)[0]  # default: the run's seed
