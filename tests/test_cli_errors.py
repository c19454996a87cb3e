"""Bad arguments: one line on stderr naming the field (and the closest valid name), exit status 2.

The janus.main cases exit while parsing flags or validating the config, before any data is read
or anything compiles, so each subprocess takes a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from janus import config as config_lib
from janus.config import sweep as config_sweep

ROOT = Path(__file__).resolve().parents[1]


def _run(module: str, *args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--config.optimizer.lrr=1"], ["'optimizer.lrr'", "did you mean 'optimizer.lr'"]),
        (["--config.optimizer.lr=abc"], ["'optimizer.lr'", "'abc'"]),
        (["--config.model.nam=x"], ["'model.nam'", "did you mean 'name'"]),
        (["--config.optimizzer.lr=1"], ["'optimizzer.lr'", "did you mean 'optimizer.lr'"]),
        (["--config.optimizer.lr=-1"], ["'optimizer.lr'", "> 0"]),
        (["--config.label_smoothing=1.0"], ["'label_smoothing'", "[0, 1)"]),
    ],
)
def test_main_bad_field_is_one_line_and_exit_2(args, expected, tmp_path):
    out = _run(
        "janus.main",
        "--config",
        "configs/mini.py",
        "--workdir",
        str(tmp_path / "w"),
        "--config.data.prepare=none",
        *args,
    )
    assert out.returncode == 2, out.stderr
    line = _one_line(out.stderr)
    assert "invalid config" in line
    for e in expected:
        assert e in line, line
    assert not (tmp_path / "w").exists()


def test_main_unknown_sweep_key_is_one_line_and_exit_2(tmp_path):
    out = _run("janus.main", "--config", "configs/mini.py:lrr=1", "--workdir", str(tmp_path / "w"))
    assert out.returncode == 2, out.stderr
    line = _one_line(out.stderr)
    assert "'lrr'" in line and "did you mean 'lr'" in line, line


def _mini(**fields):
    c = config_lib.apply_sweep(config_lib.paper_config(), {})
    c.label_set = "mini10"
    c.model.name = "resnet_tiny"
    c.input.batch_size = 64
    c.total_epochs = 30.0
    c.optimizer.warmup_steps = 10
    for k, v in fields.items():
        config_sweep._assign(c, k, v)
    return c


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"optimizer.lr": -1.0}, "optimizer.lr"),
        ({"optimizer.lr": 0.0}, "optimizer.lr"),
        ({"optimizer.weight_decay": -0.1}, "optimizer.weight_decay"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"total_epochs": None, "total_steps": 100, "optimizer.warmup_steps": 100}, "warmup"),
        ({"optimizer.warmup_steps": None, "optimizer.warmup_epochs": 30.0}, "warmup"),
        ({"optimizer.warmup_steps": -1}, "warmup"),
        ({"input.batch_size": 0}, "input.batch_size"),
        ({"input.batch_size": 60}, "input.batch_size"),  # 8 devices
        ({"data.budget": 0}, "data.budget"),
        ({"data.budget": None, "data.budget_scale": -0.5}, "data.budget_scale"),
        ({"total_epochs": 0.0}, "total_epochs"),
    ],
)
def test_validate_semantic_checks(fields, field):
    config_lib.validate(_mini(), num_devices=8, check_data=False)
    with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")):
        config_lib.validate(_mini(**fields), num_devices=8, check_data=False)


def test_validate_eval_batch_size():
    c = _mini()
    c.evals.x = dict(every_steps=10, set="val", batch_size=0)
    with pytest.raises(config_lib.ConfigError, match=r"evals\.x\.batch_size"):
        config_lib.validate(c, num_devices=8, check_data=False)


def test_evaluate_missing_workdir_says_so(tmp_path):
    missing = tmp_path / "nope"
    out = _run("janus.evaluate", "--workdir", str(missing))
    assert out.returncode == 2
    line = _one_line(out.stderr)
    assert "does not exist" in line and str(missing) in line
    assert not missing.exists()


def test_failed_build_leaves_no_out_dir(tmp_path):
    (tmp_path / "src" / "train").mkdir(parents=True)  # a folder source with no images
    out_dir = tmp_path / "out"
    out = _run(
        "janus.data.build",
        "--out",
        str(out_dir),
        "--label-set",
        "mini10",
        "--budget",
        "10",
        "--source",
        f"kind=folder,name=a,path={tmp_path / 'src'}",
    )
    assert out.returncode == 2, out.stderr
    assert "error" in out.stderr
    assert not out_dir.exists()


def test_did_you_mean():
    assert config_lib.did_you_mean("lrr", ["lr", "wd"]) == "; did you mean 'lr'?"
    assert config_lib.did_you_mean("zzzzzz", ["lr", "wd"]) == ""


@pytest.mark.slow
def test_evaluate_does_not_warn_about_item_metadata(tmp_path):
    """orbax's 'Metadata file does not exist' warning came once per evaluated checkpoint."""
    import jax
    import numpy as np

    from janus.checkpoint import save_for_inference
    from janus.data.ingest import synthetic
    from janus.models import create_model, init_variables

    synthetic.build_mini(
        tmp_path / "mini", train_per_class=1, eval_per_class=1, size=32, train_shards=1
    )
    model = create_model("resnet_tiny", "ce")
    variables = jax.tree.map(np.asarray, init_variables(model, 0, 32))
    config = {
        "loss": "ce",
        "label_set": "mini10",
        "total_steps": None,
        "model": {"name": "resnet_tiny", "dtype": "float32", "text": None},
        "data": {"train": str(tmp_path / "mini")},
        "input": {"resolution": 32},
    }
    save_for_inference(str(tmp_path / "wd"), 3, config, variables)
    out = _run("janus.evaluate", "--workdir", str(tmp_path / "wd"), "--sets", "val")
    assert out.returncode == 0, out.stderr
    assert "Metadata file does not exist" not in out.stderr + out.stdout


def test_flag_error_line_for_a_config_file_error():
    err = ValueError("Error whilst parsing config file:\n\nTraceback (most recent call last):\n"
                     '  File "x.py", line 1\nKeyError: \'data\'')  # fmt: skip
    assert config_lib.flag_error_line(err) == "error in the config file: KeyError: 'data'"


def test_unknown_field_in_a_config_file_names_the_closest():
    c = _mini()
    c.optimizer.lrr = 1.0
    with pytest.raises(config_lib.ConfigError, match=r"did you mean 'optimizer\.lr'\?"):
        config_lib.validate(c, check_data=False)
