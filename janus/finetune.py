"""Fine-tuning a CLIP checkpoint as a classifier, ready for WiSE-FT (configs/finetune.py).

The fine-tuned model is `model.clip_head`'s `CLIPClassifier`: CLIP's image tower (+ projection)
taken from `checkpoint.init_from`, and a head over its L2-normalised embedding. The head starts as
the zero-shot classifier, so step 0 classifies exactly as zero-shot evaluation of the checkpoint:
its columns for the label set's classes are CLIP's logit scale x the zero-shot class embeddings,
built as the evaluator builds them (`finetune.templates`, `finetune.class_names`); every other
column and the bias are zero (training restricts the logits to the label set).

Before the first step the trainer saves that starting model as `<workdir>/zeroshot/`
(checkpoint.ZEROSHOT_ENDPOINT, the training layout at step 0), so `janus.evaluate --wise` needs only
the workdir. `finetune.mode` lp / lpft freeze the image side for the whole run or for its first
`finetune.lp_fraction` (`optimizer_plan`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np

from janus import checkpoint as ckpt_lib
from janus import config as config_lib
from janus.config import ConfigError, is_vl

# The parameters a linear probe keeps fixed (optimizer.freeze syntax: paths inside params).
LINEAR_PROBE_FROZEN = r"^image_(tower|projection)/"


def is_finetune(config) -> bool:
    return config.get("finetune") is not None


def optimizer_plan(config, total_steps: int) -> tuple[dict, int]:
    """-> (optimizer settings, frozen_steps) for janus.optim.make_optimizer and the train step:
    config.optimizer as it is, except that finetune.mode lp freezes the image side for the whole
    run at finetune.lp_lr, and lpft for its first finetune.lp_fraction (`frozen_steps`, at
    finetune.lp_lr; then a fresh optimizer trains everything at optimizer.lr)."""
    opt = config_lib.to_dict(config)["optimizer"]
    mode = config["finetune"]["mode"] if is_finetune(config) else "ft"
    if mode == "ft":
        return opt, 0
    opt["freeze"] = "|".join(p for p in (LINEAR_PROBE_FROZEN, opt["freeze"]) if p)
    if mode == "lp":
        return {**opt, "lr": config["finetune"]["lp_lr"]}, 0
    steps = int(round(config["finetune"]["lp_fraction"] * total_steps))
    if not 0 < steps < total_steps:
        raise ConfigError(
            f"finetune.lp_fraction = {config['finetune']['lp_fraction']} of {total_steps} steps "
            f"leaves {steps} linear-probe steps; LP-FT needs both phases"
        )
    return opt, steps


def load_clip(config) -> tuple[dict, dict, object]:
    """-> (config, variables, model) of the CLIP checkpoint that fine-tuning run `config` starts
    from (checkpoint.init_from: a workdir or step dir); it must be a VL model of config's tower."""
    from janus.evaluate.inference import model_from_config

    path = config["checkpoint"]["init_from"]
    clip_config, variables, _ = ckpt_lib.load_for_inference(path)
    if not is_vl(clip_config.get("loss")):
        raise ConfigError(
            f"checkpoint.init_from = {path!r} is a {clip_config.get('loss')!r} model; "
            "fine-tuning starts from a CLIP (VL) checkpoint"
        )
    name = (clip_config.get("model") or {}).get("name")
    if name != config["model"]["name"]:
        raise ConfigError(
            f"config field 'model.name' = {config['model']['name']!r}, but the CLIP checkpoint "
            f"checkpoint.init_from = {path!r} has model.name = {name!r}"
        )
    return clip_config, variables, model_from_config(clip_config)


def zeroshot_head(config, clip: tuple[dict, dict, object], num_classes: int) -> dict:
    """{"kernel" [D, num_classes], "bias" [num_classes]}: the head that makes the CLIPClassifier
    the zero-shot classifier of `clip` over config.label_set (module docstring)."""
    from janus.data import labelsets
    from janus.evaluate import zeroshot

    clip_config, variables, model = clip
    ft = config["finetune"]
    classes = labelsets.resolve_label_set(config["label_set"])
    names, templates = zeroshot.class_prompts(classes, ft["class_names"], ft["templates"])
    class_emb = zeroshot.encode_classes(model, variables, clip_config, names, templates)
    scale = min(math.exp(float(variables["params"]["logit_scale"])), 100.0)  # CLIP's clamp
    kernel = np.zeros((class_emb.shape[1], num_classes), np.float32)
    kernel[:, classes] = scale * class_emb.T
    return {"kernel": kernel, "bias": np.zeros((num_classes,), np.float32)}


def check_image_side_taken(config, fresh: Mapping, taken) -> None:
    """Every array of the fine-tuned model but its head came from the CLIP checkpoint: other
    tower kwargs would leave some freshly initialised, silently, otherwise."""
    wanted = {p for p in ckpt_lib.flat_paths(fresh) if not p.startswith("params/head/")}
    left = sorted(wanted - set(taken))
    if left:
        raise ConfigError(
            f"checkpoint.init_from = {config['checkpoint']['init_from']!r} lacks {len(left)} "
            f"image-side array(s) of the model, e.g. {left[:3]} (are model.* the CLIP run's?)"
        )


def zeroshot_endpoint(workdir: str) -> str:
    return os.path.join(workdir, ckpt_lib.ZEROSHOT_ENDPOINT)
