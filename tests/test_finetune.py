"""Fine-tuning a CLIP and WiSE-FT on JANuS-mini (configs/finetune.py, janus.evaluate --wise): the
step-0 model is the zero-shot classifier, alpha 0 is the zero-shot model and alpha 1 the fine-tuned
one; the linear probe and LP-FT freeze what they say; the CSV keeps older results readable."""

import csv
import functools
import importlib.util
import json
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from janus import checkpoint as ckpt_lib
from janus import config as config_lib
from janus import finetune, optim, train
from janus import train_step as step_lib
from janus.data import labelsets
from janus.data.mini import generate
from janus.evaluate import results, runner, wise, zeroshot
from janus.evaluate.__main__ import main as evaluate_main
from janus.evaluate.inference import model_from_config
from janus.models import CLIPClassifier, create_model, init_variables

RES = 32
TINY_TEXT = {"width": 32, "layers": 1, "heads": 2}
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
ACCURACY_KEYS = ("top1", "top5", "n", "classes")


def _finetune_config(arg):
    spec = importlib.util.spec_from_file_location("cfg_finetune", CONFIGS / "finetune.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, mini_v2):
    """A CLIP checkpoint (clip_rn_tiny, tiny text tower) in the layout janus.convert writes."""
    model = create_model("clip_rn_tiny", "infonce", text=TINY_TEXT)
    variables = jax.tree.map(np.asarray, init_variables(model, 0, RES))
    config = {
        "loss": "infonce",
        "label_set": "mini25",
        "model": {"name": "clip_rn_tiny", "dtype": "float32", "text": TINY_TEXT},
        "input": {"resolution": RES, "pp": "decode|normalize"},
        "data": {"train": f"{mini_v2}/curated"},
    }
    out = tmp_path_factory.mktemp("clip")
    ckpt_lib.save_for_inference(str(out), 0, config, variables)
    return out


def _config(mini_v2, clip_dir, mode="ft", steps=3):
    c = _finetune_config(
        f"root={mini_v2},clip={clip_dir},mode={mode},res={RES},batch=16,steps={steps},"
        "templates=single,budget=200"
    )
    c.optimizer.warmup_epochs = None
    c.checkpoint.async_save = False
    c.evals = {}
    return c


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, mini_v2, clip_dir):
    wd = tmp_path_factory.mktemp("ft") / "run"
    train.train_and_evaluate(_config(mini_v2, clip_dir), str(wd))
    return wd


@functools.cache
def _eval_data(mini_v2):
    return generate.eval_sets(f"{mini_v2}_raw")


def _evaluator(mini_v2, **kw):
    return runner.Evaluator(
        runner.EvalOptions(
            data=_eval_data(mini_v2), templates="single", batch_size=32, max_examples=24, **kw
        )
    )


def _accuracies(result):
    return {s: {k: v[k] for k in ACCURACY_KEYS} for s, v in result["sets"].items()}


def test_step_zero_logits_are_the_zero_shot_logits(mini_v2, clip_dir, finetuned):
    """The saved start (<workdir>/zeroshot) classifies as CLIP zero-shot: its label-set logits
    are CLIP's logit scale x cosine with the evaluator's class embeddings (rtol 1e-5)."""
    config, start, step = ckpt_lib.load_for_inference(finetuned / "zeroshot")
    assert step == 0 and config["model"]["clip_head"] and config["finetune"]["mode"] == "ft"
    clip_config, clip_vars, _ = ckpt_lib.load_for_inference(clip_dir)
    clip = model_from_config(clip_config)
    images = np.random.default_rng(0).normal(size=(6, RES, RES, 3)).astype(np.float32)
    classes = labelsets.resolve_label_set("mini25")
    names, templates = zeroshot.class_prompts(classes, "clip", "single")
    class_emb = zeroshot.encode_classes(clip, clip_vars, clip_config, names, templates)
    image_emb = jax.jit(lambda v, x: clip.apply(v, x, method="encode_image"))(clip_vars, images)
    expected = zeroshot.zeroshot_logits(image_emb, class_emb)  # 100 x cosine
    scale = min(np.exp(float(clip_vars["params"]["logit_scale"])), 100.0)
    logits = np.asarray(jax.jit(model_from_config(config).apply)(start, images))
    np.testing.assert_allclose(logits[:, classes] * (100.0 / scale), expected, rtol=1e-5, atol=1e-5)
    others = np.setdiff1d(np.arange(1000), classes)
    assert not logits[:, others].any(), "columns outside the label set start at zero"
    # The image side is CLIP's, array for array.
    for side in ("params", "batch_stats"):
        np.testing.assert_equal(start[side]["image_tower"], clip_vars[side]["image_tower"])


def test_wise_ends_equal_zero_shot_and_fine_tuned(mini_v2, clip_dir, finetuned, capsys):
    """alpha 0 evaluates as zero-shot evaluation of the CLIP checkpoint and as the step-0 model,
    alpha 1 as the fine-tuned checkpoint; alpha is in the JSON and the CSV."""
    ev = _evaluator(mini_v2)
    zs = ev.evaluate_step(str(clip_dir))
    assert zs["classifier"] == "zeroshot"
    start = ev.evaluate_step(str(finetuned / "zeroshot"))
    tuned = ev.evaluate_step(str(finetuned))
    assert start["classifier"] == tuned["classifier"] == "head" and tuned["step"] == 3
    assert _accuracies(start) == _accuracies(zs)
    data_config = finetuned.parent / "sets.json"
    data_config.write_text(json.dumps(_eval_data(mini_v2)))
    argv = ["--workdir", str(finetuned), "--data.config", str(data_config), "--templates"]
    argv += ["single", "--batch_size", "32", "--max_examples", "24"]
    assert evaluate_main([*argv, "--wise", "1,0"]) == 0
    out = {a: json.loads((finetuned / "eval" / f"3_wise{a}.json").read_text()) for a in ("0", "1")}
    assert _accuracies(out["0"]) == _accuracies(zs)
    assert _accuracies(out["1"]) == _accuracies(tuned)
    assert out["0"]["metrics"] == start["metrics"] and out["1"]["metrics"] == tuned["metrics"]
    assert (out["0"]["alpha"], out["1"]["alpha"]) == (0.0, 1.0)
    assert out["1"]["wise"] == {"zeroshot": "zeroshot/checkpoints/0", "finetuned": "checkpoints/3"}
    rows = list(csv.DictReader(open(finetuned / "eval" / "results.csv")))
    assert [(r["step"], r["classifier"], r["alpha"]) for r in rows] == [
        ("3", "head", "0.0000"),
        ("3", "head", "1.0000"),
    ]
    assert "alpha=0 step 3" in capsys.readouterr().out


def test_wise_interpolates_every_array_and_checks_the_ends():
    zs = {"params": {"w": np.zeros(3, np.float32)}, "batch_stats": {"m": np.ones(2, np.float32)}}
    ft = {"params": {"w": np.full(3, 4, np.float32)}, "batch_stats": {"m": np.full(2, 3.0)}}
    mid = wise.interpolate(zs, ft, 0.25)
    np.testing.assert_array_equal(mid["params"]["w"], [1, 1, 1])
    np.testing.assert_array_equal(mid["batch_stats"]["m"], [1.5, 1.5])
    assert mid["params"]["w"].dtype == np.float32
    with pytest.raises(wise.WiseError, match="params/w: shape"):
        wise.interpolate(zs, {**ft, "params": {"w": np.zeros(4, np.float32)}}, 0.5)
    with pytest.raises(wise.WiseError, match="different arrays"):
        wise.interpolate(zs, {"params": ft["params"]}, 0.5)
    assert wise.parse_alphas("0, 0.25,1") == [0.0, 0.25, 1.0]
    for bad, why in (("0,1.5", "outside"), ("a", "not a number"), ("0.5,0.5", "twice")):
        with pytest.raises(wise.WiseError, match=why):
            wise.parse_alphas(bad)


def test_wise_without_a_zero_shot_end_exits_2(tmp_path, capsys):
    ckpt_lib.save_for_inference(
        str(tmp_path), 1, {"loss": "ce"}, {"params": {"w": np.zeros(2, np.float32)}}
    )
    assert evaluate_main(["--workdir", str(tmp_path), "--wise", "0,1"]) == 2
    assert "zeroshot holds no checkpoint" in capsys.readouterr().err


class _TinyTower(nn.Module):
    """Dense + BatchNorm: the smallest tower with both kinds of variables (compiles in seconds)."""

    @nn.compact
    def __call__(self, images, train=False):
        x = nn.Dense(8)(images.reshape(images.shape[0], -1))
        return nn.BatchNorm(use_running_average=not train)(x)


def test_lp_ft_freezes_the_image_side_for_its_probe_then_trains_everything():
    """LP-FT's train step and optimizer: for the first lp_fraction of the run the image side and
    its BatchNorm statistics stay bitwise unchanged while the head learns at lp_lr; after it the
    tower and its statistics train under a fresh schedule (optimizer.lr, from step 0 again)."""
    c = _finetune_config(f"mode=lpft,steps=4,clip=unused,res={RES}")
    c.optimizer.warmup_epochs = None
    model = CLIPClassifier(image_tower=_TinyTower(), embed_dim=8, num_classes=1000)
    opt, frozen_steps = finetune.optimizer_plan(c, 4)
    assert (opt["freeze"], frozen_steps) == (finetune.LINEAR_PROBE_FROZEN, 2)
    tx, schedule = optim.make_optimizer(opt, 4, 0, frozen_steps=2, frozen_lr=c.finetune.lp_lr)
    assert [float(schedule(i)) for i in (0, 2)] == pytest.approx([5e-3, 5e-4])
    step = step_lib.make_train_step(
        model, tx, schedule, loss="ce", seed=0, freeze=opt["freeze"], frozen_steps=2
    )
    state = jax.jit(step_lib.make_init_fn(model, tx, c))()
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(8, RES, RES, 3)).astype(np.float32),
        "label": rng.integers(0, 1000, 8).astype(np.int32),
    }
    step = jax.jit(step)
    seen = [jax.tree.map(np.asarray, state)]
    for _ in range(4):
        state, _ = step(state, batch)
        seen.append(jax.tree.map(np.asarray, state))
    side = lambda s: {k: s["params"][k] for k in ("image_tower", "image_projection")}
    for s in seen[1:3]:  # the probe
        np.testing.assert_equal(side(s), side(seen[0]))
        np.testing.assert_equal(s["batch_stats"], seen[0]["batch_stats"])
    assert not np.array_equal(
        seen[2]["params"]["head"]["kernel"], seen[0]["params"]["head"]["kernel"]
    )
    for before, after in ((seen[2], seen[3]), (seen[3], seen[4])):  # then everything trains
        for tree in (side, lambda s: s["batch_stats"]):
            pairs = zip(jax.tree.leaves(tree(after)), jax.tree.leaves(tree(before)))
            assert not any(np.array_equal(a, b) for a, b in pairs)


def test_finetune_config_checks_name_the_field(tmp_path):
    c = _finetune_config("clip=x")
    config_lib.validate(c, num_devices=1, check_data=False)
    for change, match in (
        (lambda c: setattr(c.finetune, "mode", "probe"), "finetune.mode"),
        (lambda c: setattr(c.model, "clip_head", False), "model.clip_head"),
        (lambda c: setattr(c.checkpoint, "init_from", None), "checkpoint.init_from"),
        (lambda c: setattr(c.finetune, "lp_fraction", 1.0), "finetune.lp_fraction"),
    ):
        c = _finetune_config("clip=x")
        change(c)
        with pytest.raises(config_lib.ConfigError, match=match):
            config_lib.validate(c, num_devices=1, check_data=False)
    # --config.finetune.mode=lp works as mode=lp does: the plan follows the field.
    c = _finetune_config("clip=x")
    c.finetune.mode = "lp"
    opt, steps = finetune.optimizer_plan(c, 10)
    assert (opt["freeze"], opt["lr"], steps) == (finetune.LINEAR_PROBE_FROZEN, 5e-3, 0)


def test_finetune_refuses_a_checkpoint_of_another_tower_or_objective(mini_v2, clip_dir, tmp_path):
    c = _config(mini_v2, clip_dir)
    c.model.name = "vit_tiny"
    with pytest.raises(config_lib.ConfigError, match="'model.name' = 'vit_tiny'.*clip_rn_tiny"):
        finetune.load_clip(c)
    ce = tmp_path / "ce"
    ckpt_lib.save_for_inference(str(ce), 1, {"loss": "ce"}, {"params": {"w": np.zeros(1)}})
    c.checkpoint.init_from = str(ce)
    with pytest.raises(config_lib.ConfigError, match="starts from a CLIP"):
        finetune.load_clip(c)
    fresh = {"params": {"head": {"kernel": 0}, "image_tower": {"a": 0, "b": 0}}}
    with pytest.raises(config_lib.ConfigError, match="lacks 1 image-side array"):
        finetune.check_image_side_taken(c, fresh, ["params/image_tower/a"])


def test_old_results_csv_without_alpha_stays_readable(tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    old_columns = [c for c in results.CSV_COLUMNS if c != "alpha"]
    with open(eval_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old_columns)
        w.writeheader()
        w.writerow({"step": "5", "classifier": "head", "val_top1": "0.5000"})
    result = {"step": 5, "classifier": "head", "alpha": 0.5, "loss": "ce", "sets": {}}
    results.write_result(str(tmp_path), {**result, "metrics": {}})
    rows = list(csv.DictReader(open(eval_dir / "results.csv")))
    assert [(r["step"], r["classifier"], r["alpha"], r["val_top1"]) for r in rows] == [
        ("5", "head", "", "0.5000"),
        ("5", "head", "0.5000", ""),
    ]
    assert (eval_dir / "5_wise0.5.json").exists()
