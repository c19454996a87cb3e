"""Config: sweep strings, validation messages naming the field, duration resolution, the configs."""

import dataclasses
import os
import pathlib

import pytest

from janus import config as config_lib

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_config_module(name):
    return config_lib.load_config_module(str(CONFIGS / f"{name}.py"))


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.py")))
def test_every_config_validates_and_documents_itself(name):
    mod = load_config_module(name)
    doc = mod.__doc__ or ""
    assert "python -m janus.main --config configs/" in doc, "docstring gives the command"
    assert "Hardware" in doc and "Expected" in doc
    c = mod.get_config(None)
    config_lib.validate(c, num_devices=8, check_data=False)
    c = mod.get_config("steps=10,seed=3")
    assert (c.total_steps, c.total_epochs, c.total_examples, c.seed) == (10, None, None, 3)


def test_paper_recipe_defaults():
    c = load_config_module("in100").get_config(None)
    o = c.optimizer
    assert (o.name, o.lr, o.b1, o.b2, o.eps, o.weight_decay) == (
        "adamw",
        5e-4,
        0.9,
        0.999,
        1e-8,
        0.2,
    )
    assert (o.schedule, o.warmup_steps) == ("cosine", 2000)
    assert (c.input.batch_size, c.total_epochs, c.input.resolution) == (512, 256, 224)
    assert all(op in c.input.pp for op in ("rrc(224", "flip", "color_jitter", "grayscale", "blur"))
    assert c.model.name == "clip_rn50"


def test_sweep_string_sets_fields_and_rejects_unknown_keys():
    mod = load_config_module("scaling")
    c = mod.get_config("loss=infonce,size=rn50x4,budget=250000,lr=1e-3,res=160")
    assert (c.loss, c.model.name, c.data.budget, c.optimizer.lr) == (
        "infonce",
        "clip_rn50x4",
        250000,
        1e-3,
    )
    assert c.input.resolution == 160 and "rrc(160" in c.input.pp
    with pytest.raises(ValueError, match=r"unknown config argument key 'lossy'.*valid keys:.*loss"):
        mod.get_config("lossy=ce")
    with pytest.raises(ValueError, match="key=value"):
        mod.get_config("loss")
    assert load_config_module("in100").get_config("scale=1/16").data.budget_scale == 1 / 16


def test_mixture_sweep():
    c = load_config_module("janus").get_config("mix=data/a*1+data/b*3")
    assert config_lib.train_dirs(c) == [("data/a", 1.0), ("data/b", 3.0)]


def _mini(**changes):
    c = load_config_module("mini").get_config(None)
    for path, value in changes.items():
        node = c
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        with node.ignore_type():
            node[leaf] = value
    return c


@pytest.mark.parametrize(
    "changes, match",
    [
        (
            {"optimizer.lrr": 1.0},
            r"unknown config field 'optimizer.lrr'; known fields of optimizer",
        ),
        ({"optimizzer": 1}, r"unknown config field 'optimizzer'"),
        ({"optimizer.lr": "fast"}, r"'optimizer.lr' = 'fast' has type str; expected int \| float"),
        ({"input.batch_size": 12}, r"'input.batch_size' = 12 .* not divisible by the 8 data"),
        ({"label_set": "in101"}, r"'label_set' = 'in101'"),
        ({"model.name": "resnet51"}, r"'model.name' = 'resnet51' is not a registered model"),
        ({"loss": "mse"}, r"'loss' = 'mse'"),
        ({"optimizer.name": "adam"}, r"'optimizer.name' = 'adam'"),
        ({"total_steps": 300}, r"exactly one of total_steps, total_epochs, total_examples"),
        ({"total_epochs": None}, r"exactly one of total_steps.*set: none"),
        ({"input.pp": "decode|nosuchop"}, r"'input.pp'"),
        ({"mesh": [("data", 3)]}, r"'mesh'"),
        ({"optimizer.grad_accum_steps": 3}, r"'optimizer.grad_accum_steps' = 3 must divide"),
        ({"checkpoint.keep_every": 0}, r"'checkpoint.keep_every' = 0 must be > 0"),
        ({"data.budget": 0}, r"'data.budget' = 0 must be > 0"),
        ({"data.budget": 10, "data.budget_scale": 0.5}, r"only one of data.budget and data.budg"),
    ],
)
def test_validation_messages_name_the_field(changes, match):
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.validate(_mini(**changes), num_devices=8, check_data=False)


def test_missing_data_dir_and_process_divisibility(tmp_path):
    c = _mini(**{"data.train": str(tmp_path / "nope")})
    with pytest.raises(config_lib.ConfigError, match=r"'data.train': data directory .*nope"):
        config_lib.validate(c, num_devices=8)
    c = _mini(**{"data.train": f"{tmp_path}*1+{tmp_path / 'nope'}*2"})
    with pytest.raises(config_lib.ConfigError, match=r"'data.train\[0\]'.* no info.json"):
        config_lib.validate(c, num_devices=8)
    with pytest.raises(config_lib.ConfigError, match="not divisible by the 3 processes"):
        config_lib.validate(_mini(), num_devices=8, num_processes=3, check_data=False)


def test_resolve_durations_in_one_place():
    c = _mini(**{"total_epochs": 2.5})
    d = config_lib.resolve_durations(c, 1000)  # batch 64: 15.625 steps per epoch
    assert (d.total_steps, d.steps_per_epoch) == (40, 15.625)  # rounded up
    c = _mini(**{"total_epochs": None, "total_examples": 6400})
    c.optimizer.warmup_epochs = 1.0
    d = config_lib.resolve_durations(c, 640)
    assert (d.total_steps, d.warmup_steps) == (100, 10)
    # Warmup never exceeds the run.
    assert (
        config_lib.resolve_durations(_mini(total_epochs=None, total_steps=5), 640).warmup_steps == 5
    )
    c = _mini(**{"data.budget": None})
    c.data.budget_scale = 0.5
    assert config_lib.resolve_budget(c, lambda d, b: 2000) == 1000


def test_a_run_is_resolved_once_into_what_config_json_records():
    c = _mini(**{"total_epochs": 2.5})
    run = config_lib.resolve_run(
        c,
        num_train_examples=1000,
        budget=1000,
        mesh={"data": 4, "fsdp": 2},
        num_processes=2,
        device_kind="cpu",
    )
    assert run.durations == config_lib.resolve_durations(c, 1000)
    record = run.record()
    assert {k: v for k, v in record.items() if k != "resolved"} == config_lib.to_dict(c)
    assert record["resolved"] == {
        "total_steps": 40,  # 2.5 epochs of 15.625 steps, rounded up
        "warmup_steps": 32,  # configs/mini.py: 2 epochs
        "num_train_examples": 1000,
        "budget": 1000,
        "steps_per_epoch": 15.625,
        "num_devices": 8,
        "num_processes": 2,
        "mesh": {"data": 4, "fsdp": 2},
        "device_kind": "cpu",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.budget = 5


def test_cluster_detection_only_when_a_cluster_is_there():
    from janus.main import cluster_env

    assert cluster_env({}) is None
    assert cluster_env({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) is None
    assert cluster_env({"TPU_WORKER_HOSTNAMES": "localhost"}) is None
    assert cluster_env({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "16"})[0] == "slurm"
    assert cluster_env({"TPU_WORKER_HOSTNAMES": "a,b,c,d"})[0] == "tpu"
    kind, kw = cluster_env(
        {"JANUS_COORDINATOR_ADDRESS": "h:1", "JANUS_NUM_PROCESSES": "2", "JANUS_PROCESS_ID": "1"}
    )
    assert kind == "explicit" and kw == dict(
        coordinator_address="h:1", num_processes=2, process_id=1
    )


def test_issue_example_and_every_sweep_key_is_also_a_config_field():
    janus = load_config_module("janus")
    c = janus.get_config("loss=infonce,model=clip_rn50,budget=250000")
    assert (c.loss, c.model.name, c.data.budget, c.data.budget_scale) == (
        "infonce",
        "clip_rn50",
        250000,
        None,
    )
    config_lib.validate(c, num_devices=8, check_data=False)
    # budget= and scale= clear each other; so do steps=/epochs=/examples=.
    c = janus.get_config("budget=250000,scale=9")
    assert (c.data.budget, c.data.budget_scale) == (None, 9.0)
    c = janus.get_config("scale=9,budget=1000,epochs=2")
    assert (c.data.budget, c.data.budget_scale, c.total_epochs, c.total_steps) == (
        1000,
        None,
        2.0,
        None,
    )
    # The same through --config.<field>=value: the field named on the command line wins its group.
    c = janus.get_config(None)
    c.data.budget_scale, c.total_steps, c.optimizer.warmup_epochs = 2.0, 100, 1.0
    overridden = ["data.budget_scale", "total_steps", "optimizer.warmup_epochs"]
    c = config_lib.prefer_command_line(c, overridden)
    assert (c.data.budget, c.total_epochs, c.optimizer.warmup_steps) == (None, None, None)
    config_lib.validate(c, num_devices=8, check_data=False)


def test_main_reads_sweep_fields_from_the_command_line():
    """--config.total_steps on a config that sets total_epochs trains N steps (through absl)."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    argv = ["main", f"--config={CONFIGS / 'in100.py'}:loss=infonce", "--config.total_steps=7",
            "--config.data.budget_scale=0.5", "--config.model.name=clip_rn50x4",
            "--config.optimizer.warmup_steps=2"]  # fmt: skip
    holder = config_flags.DEFINE_config_file(
        "config", None, "", flag_values=fv, lock_config=True, sys_argv=argv
    )
    fv(argv)
    overridden = config_flags.get_override_values(fv["config"])
    c = config_lib.prefer_command_line(holder.value, overridden)
    assert (c.total_steps, c.total_epochs, c.data.budget_scale, c.model.name, c.loss) == (
        7,
        None,
        0.5,
        "clip_rn50x4",
        "infonce",
    )
    config_lib.validate(c, num_devices=8, check_data=False)


def test_plain_machine_never_initialises_jax_distributed(monkeypatch):
    import jax

    from janus import main

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for var in ("JANUS_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
                "MEGASCALE_NUM_SLICES", "JANUS_NUM_CPU_DEVICES"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    assert main.initialize_distributed() is None and calls == []
    assert main.initialize_distributed({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "2"}) == "slurm"
    assert calls == [{}]


def test_accelerator_preset_bf16_compute_float32_params_host_workers(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    janus = load_config_module("janus")
    c = janus.get_config("preset=gpu,batch=256")
    assert (c.model.dtype, c.data.worker_count, c.input.batch_size) == ("bfloat16", 15, 256)
    config_lib.validate(c, num_devices=8, check_data=False)
    assert janus.get_config("preset=tpu").model.dtype == "bfloat16"
    c = janus.get_config("preset=gpu,preset=cpu")  # later keys win, as for every sweep key
    assert (c.model.dtype, c.data.worker_count) == ("float32", 0)
    with pytest.raises(config_lib.ConfigError, match="unknown preset 'gpx'; did you mean 'gpu'"):
        janus.get_config("preset=gpx")

    import jax
    import optax

    from janus import train_step

    c = janus.get_config("preset=gpu,model=resnet_tiny,res=32")
    state = train_step.make_init_fn(train_step.build_model(c), optax.identity(), c)()
    assert {str(x.dtype) for x in jax.tree.leaves(state["params"])} == {"float32"}


@pytest.mark.parametrize(
    "name, arg, declared",
    [
        ("vit_s16", None, True),
        ("mini", "arch=vit", True),
        ("mini", None, False),
        ("in100", None, False),
    ],
)
def test_towers_with_stochastic_depth_declare_their_drop_path_rate_off(name, arg, declared):
    """So that --config.model.drop_path_rate=0.1 can set it (ml_collections overrides declared
    fields only); a tower without stochastic depth does not get the keyword."""
    model = load_config_module(name).get_config(arg).model
    assert ("drop_path_rate" in model) == declared
    if declared:
        assert model.drop_path_rate == 0.0
