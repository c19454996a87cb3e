"""Model inference for evaluation: build the model from a checkpoint's config, jit the image
function once per input shape, run it data-parallel over this process' devices.

`Embedder(config, variables, kind)` -> callable (uint8 images [B, H, W, 3], scaling) -> float32
[B, K]: kind "logits" (CE head, 1000-way), "image_emb" (VL, L2-normalised) or "features" (pre-head
features, for linear probes). The eval chain's normalisation (`scaling`, a
`janus.data.input.pixel_scaling.PixelScaling`) is applied on the device, inside the jitted function,
with the same `scale_pixels` as the train step. The per-set classifier math (class subsets,
zero-shot and probe heads, top-k) runs on the host in NumPy: it is small next to the image tower,
and keeping it out of the jitted function means one compilation per image shape whatever the class
set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from janus.data.input.pixel_scaling import PixelScaling, scale_pixels

EVAL_PP = "decode|resize_small({small})|center_crop({res})|normalize"
_MODEL_SKIP = ("name", "dtype", "text")
_SCALING = ("normalize", "value_range")  # the ops that turn uint8 pixels into model inputs


def model_from_config(config: Mapping):
    """The model as the trainer builds it: create_model(model.name, loss, dtype, text, **rest)."""
    from janus.models import create_model

    m = dict(config.get("model") or {})
    if "name" not in m or "loss" not in config:
        raise KeyError("checkpoint config lacks model.name or loss; cannot rebuild the model")
    kwargs = {k: v for k, v in m.items() if k not in _MODEL_SKIP and v is not None}
    return create_model(
        m["name"], config["loss"], dtype=m.get("dtype", "float32"), text=m.get("text"), **kwargs
    )


def eval_pp(config: Mapping, resolution: int | None = None) -> str:
    """The eval preprocessing chain: config input.eval_pp, else resize to 256/224 x res + crop,
    then the same pixel scaling as the training chain (its last normalize / value_range op), so
    a run trained with e.g. `normalize('imagenet')` is not evaluated with CLIP's constants."""
    from janus.data.input.preprocess import parse_op, split_chain

    inp = config.get("input") or {}
    if inp.get("eval_pp") and resolution is None:
        return str(inp["eval_pp"])
    res = int(resolution or inp.get("resolution") or 224)
    scaling = [op for op in split_chain(str(inp.get("pp") or "")) if parse_op(op)[0] in _SCALING]
    pp = EVAL_PP.format(small=int(round(res * 256 / 224)), res=res)
    return pp.replace("|normalize", "|" + scaling[-1]) if scaling else pp


def local_mesh() -> Mesh:
    """A data-parallel mesh over THIS process' devices only.

    Each process evaluates its own shard of a set, so its batch is process-local data: putting
    it on a mesh that spans other processes' devices would treat it as the whole global batch.
    With a process-local mesh every jitted call stays inside the process, and no collective runs
    during inference; the processes meet only when the integer counts are summed.
    """
    return Mesh(np.array(jax.local_devices()), ("data",))


class Embedder:
    """Jitted image function of a model; a batch is split over this process' devices.

    `compiled_shapes` records the padded batch shapes seen: one compilation per shape, reused for
    every checkpoint (`set_variables` swaps the weights)."""

    def __init__(self, model, variables: Mapping, kind: str):
        if kind not in ("logits", "image_emb", "features"):
            raise ValueError(f"unknown output kind {kind!r}")
        self.model, self.kind = model, kind
        self.mesh = local_mesh()
        self.n_dev = self.mesh.devices.size
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self._repl = NamedSharding(self.mesh, PartitionSpec())
        self.set_variables(variables)
        method = {"logits": None, "image_emb": "encode_image", "features": "image_features"}[kind]

        def fn(variables, images, scaling):
            kw = {"method": method} if method else {}
            images = scale_pixels(images, scaling).astype(np.float32)
            out = model.apply(variables, images, train=False, **kw)
            return out.astype(np.float32)

        self._fn = jax.jit(fn, out_shardings=self._repl, static_argnames="scaling")
        self.compiled_shapes: set[tuple] = set()

    def set_variables(self, variables: Mapping) -> None:
        """New weights, same jitted function (no recompilation for the same shapes)."""
        self.variables = jax.device_put(dict(variables), self._repl)

    def dispatch(self, images: np.ndarray, scaling: PixelScaling | None):
        """Starts the computation (async dispatch) -> a handle for `fetch`; lets the caller load
        the next batch while this one runs. `scaling`: the eval chain's (`build_pp(pp).scaling`);
        None for images that are model inputs already."""
        images = np.asarray(images)
        b = images.shape[0]
        pad = (-b) % self.n_dev
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        self.compiled_shapes.add(images.shape)
        x = jax.device_put(images, self.batch_sharding)
        return self._fn(self.variables, x, scaling=scaling), b

    @staticmethod
    def fetch(handle) -> np.ndarray:
        out, b = handle
        return np.asarray(out)[:b]

    def __call__(self, images: np.ndarray, scaling: PixelScaling | None) -> np.ndarray:
        return self.fetch(self.dispatch(images, scaling))


class TextEncoder:
    """Jitted `encode_text` of a VL model (for zero-shot class embeddings)."""

    def __init__(self, model, variables: Mapping):
        self.model, self.variables = model, dict(variables)
        self._fn = jax.jit(lambda v, t: model.apply(v, t, method="encode_text").astype(np.float32))

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(self.variables, np.asarray(tokens, np.int32)))


def round_batch(batch_size: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(batch_size / multiple)) * multiple)
