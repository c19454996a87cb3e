"""Place converted tower/head/text weights into the janus wrapper layout, check them, and save.

Layout (`janus.models.clip`): CE models ``{"params": {"image_tower", "head", "aux_head"?},
"batch_stats": {"image_tower"}}`` (``aux_head``: VOLO's token-labelling head); CLIP models
``{"params": {"image_tower", "text_tower", "logit_scale"}, ...}`` (the ``clip_*`` towers end in
CLIP's own projection, so there is no ``image_projection``). Every leaf is checked against
``jax.eval_shape`` of the model that ``create_model`` builds from the written config, so a
checkpoint that saves is one the evaluator can load. `at_resolution` moves a
conversion to another image size (interpolating the position embeddings).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from janus.convert.common import Converted, check_tree_shapes

CLIP_EVAL_PP_SOURCE = (
    "openai/CLIP clip.py _transform(n_px): Resize(n_px, BICUBIC), CenterCrop(n_px), "
    "Normalize(CLIP mean, std); open_clip image_transform for OpenAI weights is the same"
)


def clip_eval_pp(res: int) -> str:
    """CLIP's own eval preprocessing as a janus chain (res = the model's input size)."""
    return f"decode|resize_small({res},method='bicubic')|center_crop({res})|normalize('clip')"


def model_config(c: Converted, *, dtype: str = "float32", source: dict | None = None) -> dict:
    """The config dict the checkpoint carries (DESIGN.md field names)."""
    model: dict[str, Any] = {"name": c.name, "dtype": dtype, **c.tower_kwargs}
    if c.loss == "ce" and c.head is not None and np.shape(c.head["bias"])[0] != 1000:
        model["num_classes"] = int(np.shape(c.head["bias"])[0])  # create_model's default is 1000
    if c.clip is not None:
        text = dict(c.clip["text_kwargs"])
        text.pop("output_dim", None)  # create_model ties it to the image embedding width
        model["text"] = text
    config = {
        "seed": 0,
        "loss": c.loss,
        "label_set": "in1000",
        "model": model,
        "input": {"resolution": c.image_size},
    }
    if c.clip is not None:
        config["input"]["context_length"] = c.clip["text_kwargs"]["context_length"]
        # Evaluate as the published zero-shot numbers were measured (OpenAI CLIP's `preprocess`:
        # Resize(n_px, BICUBIC) on the short side, CenterCrop(n_px), CLIP's mean/std), not with
        # janus's default resize to 256/224 x res; `janus.evaluate --resolution` overrides it.
        config["input"]["eval_pp"] = clip_eval_pp(c.image_size)
        config["input"]["eval_pp_source"] = CLIP_EVAL_PP_SOURCE
    if source:
        config["converted_from"] = dict(source)
    return config


def to_variables(c: Converted) -> dict:
    params: dict = {"image_tower": c.tower["params"]}
    variables: dict = {"params": params}
    if c.tower.get("batch_stats"):
        variables["batch_stats"] = {"image_tower": c.tower["batch_stats"]}
    if c.loss == "ce":
        if c.head is None:
            raise ValueError(f"{c.name}: the state dict has no classifier head (fc/head)")
        params["head"] = c.head
        if c.aux_head is not None:
            params["aux_head"] = c.aux_head
    else:
        params["text_tower"] = c.clip["text"]
        params["logit_scale"] = np.asarray(c.clip["logit_scale"], np.float32)
    return jax.tree.map(lambda x: np.asarray(x, np.float32), variables)


def at_resolution(c: Converted, image_size: int | None, method: str = "bilinear") -> Converted:
    """``c`` for ``image_size`` px inputs: ViT / attention-pool position embeddings are resized
    (`janus.models.posemb`) and the config records the new ``input.resolution``."""
    if image_size is None or image_size == c.image_size:
        return c
    from janus.models.posemb import resize_posembs
    from janus.models.registry import build_tower

    tower = build_tower(c.name, **c.tower_kwargs)
    images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    template = jax.eval_shape(lambda: tower.init(jax.random.key(0), images, train=False))
    params = resize_posembs(c.tower["params"], template["params"], method)
    return dataclasses.replace(c, tower={**c.tower, "params": params}, image_size=image_size)


def build_checked(c: Converted, *, dtype: str = "float32"):
    """-> (model, variables): the janus model for ``c`` and its variables, shape-checked."""
    from janus.models import create_model, init_variables

    cfg = model_config(c, dtype=dtype)
    m = dict(cfg["model"])
    name, text = m.pop("name"), m.pop("text", None)
    model = create_model(name, c.loss, dtype=m.pop("dtype"), text=text, **m)
    context = cfg["input"].get("context_length", 77)
    template = jax.eval_shape(lambda: init_variables(model, 0, c.image_size, context))
    variables = to_variables(c)
    check_tree_shapes(variables, dict(template), f"{c.name} ({c.loss})")
    return model, variables


def save(
    c: Converted,
    workdir: str | os.PathLike,
    *,
    step: int = 0,
    dtype: str = "float32",
    source: dict | None = None,
    eval_pp: str | None = None,
) -> str:
    """Shape-check and write ``<workdir>/checkpoints/<step>/`` for the evaluator; -> step dir.
    ``eval_pp``: the eval chain to record (default: CLIP's own for open_clip weights, none
    otherwise; "none" records none)."""
    from janus.checkpoint import save_for_inference

    _, variables = build_checked(c, dtype=dtype)
    config = model_config(c, dtype=dtype, source=source)
    if eval_pp is not None:
        config["input"].pop("eval_pp", None)
        config["input"].pop("eval_pp_source", None)
        if eval_pp.strip().lower() != "none":
            from janus.data.input.preprocess import build_pp

            build_pp(eval_pp)  # a bad chain fails here, not at evaluation
            config["input"]["eval_pp"] = eval_pp
            config["input"]["eval_pp_source"] = "janus.convert --eval-pp"
    return save_for_inference(workdir, step, config, variables)
