"""WiSE-FT (Wortsman et al., CVPR 2022): evaluating the weight-space ensembles of a fine-tuning run.

    python -m janus.evaluate --workdir DIR --wise 0,0.25,0.5,0.75,1 [--step N] [set options]

For each alpha, the variables `(1 - alpha) * zero-shot + alpha * fine-tuned`, array by array (image
tower, projection, BatchNorm statistics and head), are evaluated with the model's head like any
checkpoint. The zero-shot end is `DIR/zeroshot/` (checkpoint.ZEROSHOT_ENDPOINT: the model a
configs/finetune.py run started from, its head the zero-shot classifier), the fine-tuned end the
run's checkpoint (--step, default the latest). alpha 0 is exactly the zero-shot model and alpha 1
exactly the fine-tuned one (x * 1 + y * 0 is x in floating point). Each result is the evaluator's
JSON plus `alpha` and `wise` (the two ends), written as `eval/<step>_wise<alpha>.json` with a row of
results.csv whose alpha column is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np

from janus import checkpoint as ckpt_lib


class WiseError(ValueError):
    """A bad --wise argument or a workdir without both ends; the message names which."""


def parse_alphas(text: str) -> list[float]:
    """'0,0.25,1' -> [0.0, 0.25, 1.0]; each in [0, 1], no repeats."""
    alphas = []
    for part in text.split(","):
        try:
            a = float(part)
        except ValueError:
            raise WiseError(f"--wise: {part.strip()!r} in {text!r} is not a number") from None
        if not 0 <= a <= 1:
            raise WiseError(f"--wise: alpha {a:g} in {text!r} is outside [0, 1]")
        if a in alphas:
            raise WiseError(f"--wise: alpha {a:g} is given twice in {text!r}")
        alphas.append(a)
    return alphas


def interpolate(zeroshot: Mapping, finetuned: Mapping, alpha: float) -> dict:
    """(1 - alpha) * zeroshot + alpha * finetuned for every array of two variables trees of one
    model (float32, as stored); a tree of another model is an error naming the first difference."""
    zs_paths = ckpt_lib.flat_paths(zeroshot)
    ft_paths = ckpt_lib.flat_paths(finetuned)
    if zs_paths != ft_paths:
        only = sorted(set(zs_paths) ^ set(ft_paths))
        raise WiseError(f"the two ends hold different arrays, e.g. {only[:3]}")

    def mix(path, z, f):
        if np.shape(z) != np.shape(f):
            raise WiseError(
                f"{jax.tree_util.keystr(path, simple=True, separator='/')}: shape "
                f"{np.shape(z)} at the zero-shot end, {np.shape(f)} fine-tuned"
            )
        z, f = np.asarray(z), np.asarray(f)
        return ((1 - alpha) * z + alpha * f).astype(np.result_type(z, f))

    return jax.tree_util.tree_map_with_path(mix, dict(zeroshot), dict(finetuned))


def load_ends(workdir: str, step: int | None = None) -> tuple[dict, dict, dict, int]:
    """-> (config, zero-shot variables, fine-tuned variables, fine-tuned step) of a fine-tuning
    workdir; the config is the fine-tuned checkpoint's (both ends are one model)."""
    endpoint = os.path.join(workdir, ckpt_lib.ZEROSHOT_ENDPOINT)
    if not ckpt_lib.list_complete_steps(endpoint):
        raise WiseError(
            f"{endpoint} holds no checkpoint: --wise needs the zero-shot end that a "
            "configs/finetune.py run saves when it starts"
        )
    _, zs, _ = ckpt_lib.load_for_inference(endpoint)
    where = os.path.join(workdir, ckpt_lib.CHECKPOINTS, str(step)) if step is not None else workdir
    config, ft, ft_step = ckpt_lib.load_for_inference(where)
    return config, zs, ft, ft_step


def evaluate(evaluator, workdir: str, alphas, step: int | None = None) -> list[dict]:
    """The eval result of every alpha (janus.evaluate.runner.Evaluator; nothing written)."""
    config, zs, ft, ft_step = load_ends(workdir, step)
    if evaluator.classifier_for(config) != "head":
        raise WiseError("--wise interpolates the head too: evaluate it with --classifier head")
    ends = {
        "zeroshot": os.path.join(ckpt_lib.ZEROSHOT_ENDPOINT, ckpt_lib.CHECKPOINTS, "0"),
        "finetuned": os.path.join(ckpt_lib.CHECKPOINTS, str(ft_step)),
    }
    out = []
    for alpha in alphas:
        result = evaluator.evaluate_variables(
            config, interpolate(zs, ft, alpha), step=ft_step, checkpoint=ends["finetuned"]
        )
        out.append({**result, "alpha": alpha, "wise": ends})
    return out
