"""End to end through `python -m janus.main` on synthetic JANuS-mini records (32 px, tiny models).

Runs share a persistent XLA compilation cache so that the later processes skip most compiling.
Every subprocess runs in its own process group with a timeout: a stuck run fails its test with
every thread's stack (SIGUSR1) instead of blocking CI.
- a 40-step run: the workdir layout (DONE, the skip report in data_manifest.json), metrics,
  console progress, checkpoint retention, the in-loop evaluation hook;
- the same run interrupted by SIGTERM (clean save + exit 0), resumed, SIGKILLed, resumed: final
  state bitwise equal to the uninterrupted run;
- the first step's progress line (console only), also after a resume;
- the NaN guard (exit 1, last good checkpoint kept); a VL (InfoNCE) run with gradient accumulation
  on an fsdp mesh; a validation error from the CLI (exit 2);
- (slow) 2 processes x 4 CPU devices through launch/local.py: same loss as 1 process x 8 devices;
- in process: init_from with path filters; gradient accumulation equals the full-batch update;
  optimizer.freeze leaves the frozen parameters and their BatchNorm statistics bitwise unchanged.
"""

import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from janus import checkpoint as ckpt_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
PP = "decode|rrc(32,scale=(0.35,1.0))|flip|normalize"
STEPS = 40


@pytest.fixture(scope="module")
def data_dir(mini_v2):
    """The session's small JANuS-mini v2 root (tests/conftest.py): 200 curated samples."""
    return mini_v2


@pytest.fixture(scope="module")
def env():
    """The session's environment: its XLA compilation cache included (tests/conftest.py)."""
    return dict(os.environ, JAX_PLATFORMS="cpu")


def command(data_dir, workdir, sweep=f"steps={STEPS},res=32,batch=16", *extra):
    return [
        sys.executable, "-m", "janus.main",
        f"--config={REPO}/configs/mini.py:root={data_dir},{sweep}",
        f"--workdir={workdir}",
        "--config.data.budget=200",
        f"--config.input.pp={PP}",
        "--config.log.every_steps=10",
        "--config.checkpoint.every_steps=10",
        "--config.checkpoint.keep=2",
        "--config.checkpoint.keep_every=20",
        *extra,
        *([] if "--inloop_eval" in extra else ["--noinloop_eval"]),  # only where a test asks
    ]  # fmt: skip


def run(cmd, env, timeout=300):
    """Runs to completion; a run stuck past `timeout` fails the test with its threads' stacks
    (janus.main dumps them on SIGUSR1)."""
    p = start(cmd, env)
    stdout, stderr = finish(p, timeout)
    return subprocess.CompletedProcess(cmd, p.returncode, stdout.decode(), stderr.decode())


def start(cmd, env):
    """A run in its own process group, so a stuck one is killed with everything it started."""
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def finish(p, timeout):
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGUSR1)  # janus.main (and launch/local.py) print all stacks
        time.sleep(3)
        os.killpg(p.pid, signal.SIGKILL)
        _, stderr = p.communicate()
        pytest.fail(f"stuck after {timeout}s: {p.args}\n{stderr.decode()[-8000:]}")


def with_devices(env, n):
    e = dict(env)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
    return e


def metrics(workdir):
    return [json.loads(line) for line in open(workdir / "metrics.jsonl")]


def full_state(workdir, step):
    return ckpt_lib._restore_numpy(ckpt_lib.checkpoints_dir(workdir) / str(step) / "state")


def assert_bitwise_equal(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def reference_run(data_dir, env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ref") / "run"
    # With the mini config's in-loop evaluation (every 150 steps and at the end).
    out = run(command(data_dir, workdir, f"steps={STEPS},res=32,batch=16", "--inloop_eval"), env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return workdir, out


def test_main_trains_end_to_end(reference_run):
    workdir, out = reference_run
    assert f"[step 10/{STEPS}] " in out.stdout and "loss=" in out.stdout and "eta=" in out.stdout
    if platform.libc_ver()[0] == "glibc":  # janus.host_memory: set, and said at start-up
        assert "; CPU scratch memory kept between steps (glibc " in out.stdout
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["model"]["name"] == "clip_rn_tiny" and cfg["resolved"]["total_steps"] == STEPS
    assert cfg["resolved"]["num_devices"] == 8
    manifest = json.loads((workdir / "data_manifest.json").read_text())
    assert manifest["n_examples"] == 200
    assert manifest["skipped_in_training"] == {"counts": {}, "first_keys": {}}  # the end report
    assert json.loads((workdir / "DONE").read_text())["step"] == STEPS  # for evaluate --watch
    rows = metrics(workdir)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [10, 20, 30, 40]
    for key in ("loss", "accuracy", "learning_rate", "grad_norm", "param_norm", "step_time_s",
                "images_per_s_per_device", "eta_s"):  # fmt: skip
        assert all(np.isfinite(r[key]) for r in train_rows), key
    assert train_rows[0]["mfu"] is None  # no known peak FLOP/s on CPU
    assert all(0 <= r["data_wait_fraction"] <= 1 for r in train_rows)  # in the progress line too
    assert "data_wait_fraction=" in out.stdout
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert list(workdir.glob("events.out.tfevents.*"))[0].stat().st_size > 0
    # The evaluator's hook ran at the last step: eval/40.json and eval scalars in metrics.jsonl.
    result = json.loads((workdir / "eval" / f"{STEPS}.json").read_text())
    assert result["suite"] == "mini" and set(result["sets"]) >= {"val", "sketch"}
    assert any("eval/mini/val/top1" in r for r in rows)
    # keep=2 plus every 20th.
    assert ckpt_lib.list_complete_steps(workdir) == [20, 30, 40]
    config, variables, step = ckpt_lib.load_for_inference(workdir)
    assert step == STEPS and config["loss"] == "ce" and "batch_stats" in variables


def _signal_when(proc, workdir, min_step, sig, deadline=300):
    end = time.time() + deadline
    while time.time() < end:
        if proc.poll() is not None:
            break
        steps = ckpt_lib.list_complete_steps(workdir)
        if steps and steps[-1] >= min_step:
            t = time.time()
            proc.send_signal(sig)
            return steps[-1], t
        time.sleep(0.05)
    if proc.poll() is None:
        finish(proc, 0.1)  # fails with the stacks
    pytest.fail(f"run ended before checkpoint {min_step}: {proc.communicate()}")


def test_sigterm_sigkill_and_resume_are_exact(reference_run, data_dir, env, tmp_path):
    ref_dir, _ = reference_run
    workdir = tmp_path / "run"
    cmd = command(data_dir, workdir)

    # 1. SIGTERM (preemption): saves the step it reached and exits 0 within seconds.
    p = start(cmd, env)
    _, t_signal = _signal_when(p, workdir, 10, signal.SIGTERM)
    stdout, stderr = finish(p, 120)
    assert p.returncode == 0, stderr.decode()[-3000:]
    assert time.time() - t_signal < 60
    stopped = ckpt_lib.list_complete_steps(workdir)[-1]
    assert 10 <= stopped < STEPS and b"stopped by SIGTERM" in stdout
    assert not (workdir / "DONE").exists()

    # 2. Resume, then SIGKILL after the next checkpoint: no chance to clean up.
    p = start(cmd, env)
    killed_after, _ = _signal_when(p, workdir, stopped + 1, signal.SIGKILL)
    finish(p, 60)
    assert p.returncode == -signal.SIGKILL
    assert killed_after < STEPS, "the run finished before it could be killed"

    # 3. Resume to the end: bitwise the uninterrupted run's state (params, BN stats, optimizer).
    out = run(cmd, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming from" in out.stdout
    assert_bitwise_equal(full_state(workdir, STEPS), full_state(ref_dir, STEPS))
    ref_rows = {r["step"]: r for r in metrics(ref_dir) if "loss" in r}
    assert metrics(workdir)[-1]["loss"] == ref_rows[STEPS]["loss"]


def test_first_step_prints_a_progress_line_also_after_a_resume(data_dir, env, tmp_path):
    """A run prints its first progress line after its first step, not only every
    log.every_steps (a slow step would leave it silent for minutes), also after a resume. That
    line is on the console only: metrics.jsonl and TensorBoard keep their log steps."""
    import re

    workdir = tmp_path / "first"
    cmd = command(data_dir, workdir, "steps=4,res=32,batch=16", "--config.log.every_steps=50")
    progress = lambda out: [int(s) for s in re.findall(r"\[step (\d+)/4\] ", out.stdout)]

    out = run([*cmd, "--config.stop_after_steps=2"], env)  # stops (and logs, saves) at step 2
    assert out.returncode == 0, out.stderr[-3000:]
    assert progress(out) == [1, 2]
    out = run(cmd, env)  # resumes at step 2; step 4 is the last
    assert out.returncode == 0 and "resuming from" in out.stdout, out.stderr[-3000:]
    assert progress(out) == [3, 4]
    assert [r["step"] for r in metrics(workdir)] == [2, 4]


def test_nan_guard_stops_with_the_step_and_keeps_last_good_checkpoint(data_dir, env, tmp_path):
    workdir = tmp_path / "nan"
    cmd = command(data_dir, workdir, "steps=6,res=32,batch=16,lr=1e30",
                  "--config.optimizer.warmup_steps=4", "--config.log.every_steps=1",
                  "--config.checkpoint.every_steps=1", "--config.checkpoint.keep=5")  # fmt: skip
    out = run(cmd, with_devices(env, 2), timeout=180)
    assert out.returncode == 1
    assert "NonFiniteLossError" in out.stderr and "at step 2" in out.stderr
    assert not (workdir / "DONE").exists()
    # Step 1 ran at lr 0 (warmup start) and was saved; nothing non-finite was.
    assert ckpt_lib.list_complete_steps(workdir) == [1]
    _, variables, _ = ckpt_lib.load_for_inference(workdir)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))


def test_vl_run_with_grad_accumulation_on_an_fsdp_mesh(data_dir, env, tmp_path):
    workdir = tmp_path / "vl"
    cmd = command(data_dir, workdir, "loss=infonce,steps=2,res=32,batch=16",
                  "--config.optimizer.grad_accum_steps=2", "--config.log.every_steps=1",
                  "--config.model.text.layers=1", "--config.mesh=(('data',1),('fsdp',2))",
                  "--config.sharding=fsdp")  # fmt: skip
    out = run(cmd, with_devices(env, 2))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((workdir / "config.json").read_text())["resolved"]["mesh"] == {
        "data": 1, "fsdp": 2,
    }  # fmt: skip
    rows = metrics(workdir)
    assert [r["step"] for r in rows] == [1, 2]
    assert {"i2t_acc", "t2i_acc", "logit_scale", "loss"} <= set(rows[0])
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_invalid_config_fails_before_compiling(data_dir, env, tmp_path):
    out = run(command(data_dir, tmp_path / "bad", "steps=2,res=32,batch=12"), env, timeout=120)
    assert out.returncode == 2
    assert "'input.batch_size' = 12" in out.stderr and "8 data-parallel devices" in out.stderr
    missing = command(
        tmp_path / "missing", tmp_path / "bad", "steps=2", "--config.data.prepare=none"
    )
    out = run(missing, env, timeout=120)
    assert out.returncode == 2 and "data directory" in out.stderr


@pytest.mark.slow
def test_two_processes_match_one_process(reference_run, data_dir, env, tmp_path):
    ref_dir, _ = reference_run
    workdir = tmp_path / "two"
    cmd = [sys.executable, str(REPO / "launch" / "local.py"), "--nproc", "2",
           "--devices-per-process", "4", "--",
           *command(data_dir, workdir, f"steps={STEPS},res=32,batch=16"),
           "--config.stop_after_steps=10"]  # fmt: skip
    out = run(cmd, env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["resolved"]["num_processes"] == 2 and cfg["resolved"]["num_devices"] == 8
    # Same global batches (the union of the processes' slices), same init: the same loss.
    ref = {r["step"]: r for r in metrics(ref_dir) if "loss" in r}
    rows = metrics(workdir)  # written by process 0 only
    assert [r["step"] for r in rows] == [10]
    np.testing.assert_allclose(rows[0]["loss"], ref[10]["loss"], rtol=1e-4)
    np.testing.assert_allclose(rows[0]["param_norm"], ref[10]["param_norm"], rtol=1e-5)
    assert ckpt_lib.list_complete_steps(workdir) == [10]
    data_iter = ckpt_lib.checkpoints_dir(workdir) / "10" / "data_iter"
    assert sorted(p.name for p in data_iter.glob("process_*")) == [
        "process_0-of-2.json", "process_1-of-2.json",
    ]  # fmt: skip


def test_init_from_another_checkpoint_with_path_filters(reference_run):
    import importlib.util

    from janus import train_state

    ref_dir, _ = reference_run
    spec = importlib.util.spec_from_file_location("cfg_mini", REPO / "configs" / "mini.py")
    mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mini)
    c = mini.get_config("steps=2,res=32,batch=16")
    c.checkpoint.init_from = str(ref_dir)
    c.checkpoint.init_exclude = "^params/head/"  # a fresh head, as for fine-tuning
    model, tx, _, init_fn, mesh, shardings = _step_setup(c, total_steps=2)
    fresh = jax.jit(init_fn, out_shardings=shardings)()
    head = np.asarray(fresh["params"]["head"]["kernel"])
    state, taken = train_state.init_from(dict(fresh), c, shardings)

    _, loaded, _ = ckpt_lib.load_for_inference(ref_dir)
    assert taken and not any(p.startswith("params/head/") for p in taken)
    np.testing.assert_array_equal(np.asarray(state["params"]["head"]["kernel"]), head)
    assert_bitwise_equal(
        jax.device_get(state["params"]["image_tower"]), loaded["params"]["image_tower"]
    )
    assert_bitwise_equal(jax.device_get(state["batch_stats"]), loaded["batch_stats"])
    kernel = state["params"]["image_tower"]["conv1"]["kernel"]
    assert kernel.sharding == shardings["params"]["image_tower"]["conv1"]["kernel"]


def test_grad_accumulation_makes_one_update_equal_to_the_full_batch():
    """Two microbatches of 8 give the update of one batch of 16 (a LayerNorm model: no batch
    statistics, so the mean gradient is the same; plain SGD, so the update is linear in it)."""
    from janus import config as config_lib
    from janus import sharding, train_step

    c = config_lib.paper_config()
    c.model.name, c.label_set, c.input.resolution, c.input.batch_size = "vit_tiny", "mini10", 32, 16
    c.restrict_to_label_set = False
    c.optimizer.name, c.optimizer.momentum, c.optimizer.weight_decay = "sgd", 0.0, 0.0
    model, tx, schedule, init_fn, mesh, shardings = _step_setup(c, total_steps=10)
    rng = np.random.default_rng(0)
    local = {"image": rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
             "label": rng.integers(0, 10, size=16).astype(np.int32)}  # fmt: skip
    results, flops = {}, {}
    for accum in (1, 2):
        step = train_step.make_train_step(
            model, tx, schedule, loss="ce", seed=0, grad_accum_steps=accum
        )
        state = jax.jit(init_fn, out_shardings=shardings)()
        batch = sharding.shard_batch(local, mesh)
        compiled, flops[accum] = train_step.compile_train_step(step, state, batch, shardings, mesh)
        with jax.set_mesh(mesh):
            results[accum] = jax.device_get(compiled(state, batch))
    (s1, m1), (s2, m2) = results[1], results[2]
    # The MFU numerator: the same work per step however it is split (XLA counts a scan body once).
    assert flops[2] == pytest.approx(flops[1], rel=0.1)
    np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s2["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "freeze,accum",
    [("^image_tower/", 1), ("^image_tower/(bn1|conv1|layer1_0)/", 2)],
    ids=["linear_probe", "partly_frozen_accum"],
)
def test_freeze_leaves_frozen_params_and_batch_stats_unchanged(freeze, accum):
    """A few steps with optimizer.freeze: the frozen parameters AND their BatchNorm statistics
    stay bitwise equal while the head (and, partly frozen, the other BN statistics) change."""
    from janus import config as config_lib
    from janus import optim, sharding, train_step

    c = config_lib.paper_config()
    c.model.name, c.label_set, c.input.resolution, c.input.batch_size = (
        "resnet_tiny",
        "mini10",
        32,
        8,
    )
    c.restrict_to_label_set = False
    c.optimizer.freeze, c.optimizer.weight_decay = freeze, 0.1  # decay must not touch frozen
    model, tx, schedule, init_fn, mesh, shardings = _step_setup(c, total_steps=10)
    step = train_step.make_train_step(
        model, tx, schedule, loss="ce", seed=0, grad_accum_steps=accum, freeze=freeze
    )
    state = jax.jit(init_fn, out_shardings=shardings)()
    before = jax.device_get(state)
    rng = np.random.default_rng(0)
    local = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
             "label": rng.integers(0, 10, size=8).astype(np.int32)}  # fmt: skip
    batch = sharding.shard_batch(local, mesh)
    compiled, flops = train_step.compile_train_step(step, state, batch, shardings, mesh)
    if freeze == "^image_tower/":  # no backward pass through the frozen tower
        full = train_step.make_train_step(model, tx, schedule, loss="ce", seed=0)
        _, full_flops = train_step.compile_train_step(full, state, batch, shardings, mesh)
        assert flops < 0.6 * full_flops
    with jax.set_mesh(mesh):
        for _ in range(3):
            state, metrics = compiled(state, batch)
    after = jax.device_get(state)
    assert np.isfinite(metrics["loss"])
    changed = {"params": [], "batch_stats": []}
    for col in changed:
        frozen = optim.frozen_mask(before[col], freeze)
        flat = jax.tree_util.tree_flatten_with_path(frozen)[0]
        for (path, is_frozen), old, new in zip(
            flat, jax.tree.leaves(before[col]), jax.tree.leaves(after[col])
        ):
            if is_frozen:
                old, new = np.asarray(old), np.asarray(new)
                assert old.tobytes() == new.tobytes(), f"{col}/{optim.param_path(path)} changed"
            elif not np.array_equal(old, new):
                changed[col].append(optim.param_path(path))
    assert any(p.startswith("head/") for p in changed["params"])
    if freeze == "^image_tower/":
        assert changed["params"] == ["head/bias", "head/kernel"]
    else:  # the unfrozen stages train, and their BN statistics still update
        assert any(p.startswith("image_tower/layer4_0/") for p in changed["params"])
        assert any(p.startswith("image_tower/layer4_0/") for p in changed["batch_stats"])


@pytest.mark.parametrize("loss", ["ce", "multilabel_ce", "sigmoid"])
def test_restrict_to_label_set_leaves_other_classes_untouched(loss):
    """restrict_to_label_set (every CE-family loss): the head rows of classes outside the label
    set get no gradient, so one SGD step without weight decay leaves them bitwise unchanged."""
    from janus import config as config_lib
    from janus import sharding, train_step

    c = config_lib.paper_config()
    c.model.name, c.label_set, c.input.resolution, c.input.batch_size = "vit_tiny", "mini10", 32, 8
    c.loss = loss
    c.optimizer.name, c.optimizer.momentum, c.optimizer.weight_decay = "sgd", 0.0, 0.0
    mask = train_step.class_mask_for(c)
    assert mask.sum() == 10
    model, tx, schedule, init_fn, mesh, shardings = _step_setup(c, total_steps=10)
    rng = np.random.default_rng(0)
    label = np.flatnonzero(mask)[rng.integers(0, 10, size=8)].astype(np.int32)
    local = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32), "label": label,
             "labels": np.eye(1000, dtype=np.float32)[label]}  # fmt: skip
    step = train_step.make_train_step(model, tx, schedule, loss=loss, seed=0, class_mask=mask)
    state = jax.jit(init_fn, out_shardings=shardings)()
    before = np.asarray(jax.device_get(state["params"]["head"]["kernel"]))
    batch = sharding.shard_batch(local, mesh)
    compiled, _ = train_step.compile_train_step(step, state, batch, shardings, mesh)
    with jax.set_mesh(mesh):
        state, metrics = compiled(state, batch)
    after = np.asarray(jax.device_get(state["params"]["head"]["kernel"]))
    assert np.isfinite(metrics["loss"])
    assert not np.array_equal(before[:, mask], after[:, mask])
    assert before[:, ~mask].tobytes() == after[:, ~mask].tobytes()


def _step_setup(c, *, total_steps: int):
    """-> (model, tx, schedule, init_fn, mesh, shardings) of config `c` on a 1-axis data mesh."""
    from janus import optim, sharding, train_step

    model = train_step.build_model(c)
    tx, schedule = optim.make_optimizer(c.optimizer, total_steps, 0)
    init_fn = train_step.make_init_fn(model, tx, c)
    mesh = sharding.make_mesh([("data", -1)])
    shardings = sharding.param_shardings(jax.eval_shape(init_fn), mesh)
    return model, tx, schedule, init_fn, mesh, shardings
