"""Model registry: image-tower name + loss -> a Classifier or CLIP module.

`TOWERS` merges the `TOWER_FACTORIES` of the tower modules (resnet, clip_resnet, vit, volo, vgg,
convnext); each factory takes `dtype` and tower kwargs and returns a flax module with
`feature_dim`. The objective picks the wrapper (DESIGN.md: CE and VL runs differ only in `loss`):

- `ce`, `multilabel_ce`, `sigmoid` -> `Classifier` (linear head over `num_classes`); with
  `clip_head=True` (`model.clip_head`, fine-tuning a CLIP checkpoint: configs/finetune.py)
  `CLIPClassifier`, the head over CLIP's normalised image embedding (projection as for CLIP);
- `infonce`, `siglip` -> `CLIP` with the CLIP text tower. `embed_dim` defaults to the tower's own
  output width for `clip_*` towers (which end in CLIP's projection: 1024 for clip_rn50) and to 512
  otherwise (a bias-free projection is added after the tower). The text tower defaults to OpenAI's
  for that image tower (width 512, 12 layers, 8 heads, QuickGELU; RN50x4: width 640, 10 heads);
  `text=` overrides any of its kwargs (tests shrink it).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus.losses import CLASSIFICATION_LOSSES, CONTRASTIVE_LOSSES
from janus.models import clip_resnet, convnext, resnet, vgg, vit, volo
from janus.models.clip import CLIP, Classifier, CLIPClassifier
from janus.models.text import TextTransformer


def _merge(*factories: dict) -> dict:
    merged: dict = {}
    for f in factories:
        clash = set(merged) & set(f)
        if clash:
            raise RuntimeError(f"image tower names registered twice: {sorted(clash)}")
        merged.update(f)
    return merged


TOWERS: dict[str, Any] = _merge(
    resnet.TOWER_FACTORIES,
    clip_resnet.TOWER_FACTORIES,
    vit.TOWER_FACTORIES,
    volo.TOWER_FACTORIES,
    vgg.TOWER_FACTORIES,
    convnext.TOWER_FACTORIES,
)

DTYPES = {
    "float32": jnp.float32,
    "fp32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "bf16": jnp.bfloat16,
}

# Towers whose output already is CLIP's joint embedding (attention pool / ViT `proj`).
CLIP_TOWER_PREFIX = "clip_"
DEFAULT_EMBED_DIM = 512
TEXT_KWARGS = (
    "vocab_size",
    "context_length",
    "width",
    "layers",
    "heads",
    "mlp_ratio",
    "activation",
)
# open_clip model_configs/*.json text_cfg where it differs from the TextTransformer defaults.
TEXT_DEFAULTS: dict[str, dict] = {"clip_rn50x4": {"width": 640, "heads": 10}}


def image_tower_names() -> list[str]:
    return sorted(TOWERS)


def resolve_dtype(dtype: Any) -> Any:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown model dtype {dtype!r}; known: {sorted(DTYPES)}")
        return DTYPES[dtype]
    return jnp.dtype(dtype).type


def build_tower(name: str, *, dtype: Any = "float32", **tower_kwargs) -> nn.Module:
    if name not in TOWERS:
        raise ValueError(f"unknown image tower {name!r}; known: {image_tower_names()}")
    try:
        return TOWERS[name](dtype=resolve_dtype(dtype), **tower_kwargs)
    except TypeError as e:
        raise ValueError(f"bad kwargs {sorted(tower_kwargs)} for image tower {name!r}: {e}") from e


def build_text_tower(
    image_tower_name: str, embed_dim: int, *, dtype: Any = "float32", text: dict | None = None
) -> TextTransformer:
    text = dict(text or {})
    unknown = sorted(set(text) - set(TEXT_KWARGS) - {"output_dim"})
    if unknown:
        raise ValueError(f"unknown model.text keys {unknown}; known: {list(TEXT_KWARGS)}")
    if text.pop("output_dim", embed_dim) != embed_dim:
        raise ValueError(f"model.text.output_dim must equal the embedding width {embed_dim}")
    kwargs = {**TEXT_DEFAULTS.get(image_tower_name, {}), **text}
    return TextTransformer(output_dim=embed_dim, dtype=resolve_dtype(dtype), **kwargs)


def create_model(
    name: str,
    loss: str,
    *,
    dtype: Any = "float32",
    num_classes: int = 1000,
    text: dict | None = None,
    embed_dim: int | None = None,
    clip_head: bool = False,
    **tower_kwargs,
) -> nn.Module:
    """Image tower `name` wrapped for `loss` (see module docstring). Parameters are float32;
    `dtype` ("float32" | "bfloat16") is the compute dtype. Extra kwargs go to the tower."""
    tower = build_tower(name, dtype=dtype, **tower_kwargs)
    compute = resolve_dtype(dtype)
    if loss not in CLASSIFICATION_LOSSES + CONTRASTIVE_LOSSES:
        raise ValueError(
            f"unknown loss {loss!r}; known: {list(CLASSIFICATION_LOSSES + CONTRASTIVE_LOSSES)}"
        )
    if clip_head and loss not in CLASSIFICATION_LOSSES:
        raise ValueError(f"clip_head is a classifier over CLIP's embedding: loss {loss!r} is VL")
    if loss in CLASSIFICATION_LOSSES and not clip_head:
        # model.text may be set in configs shared between CE and VL runs: ignored here.
        return Classifier(image_tower=tower, num_classes=num_classes, dtype=compute)
    own_projection = name.startswith(CLIP_TOWER_PREFIX)
    if own_projection:
        if embed_dim is not None and embed_dim != tower.feature_dim:
            raise ValueError(
                f"{name} ends in CLIP's projection to {tower.feature_dim}; set the tower's own "
                f"output width (e.g. output_dim/proj_dim) instead of embed_dim={embed_dim}"
            )
        embed_dim = tower.feature_dim
    elif embed_dim is None:
        embed_dim = DEFAULT_EMBED_DIM
    if clip_head:
        return CLIPClassifier(
            image_tower=tower,
            embed_dim=embed_dim,
            project_image=not own_projection,
            num_classes=num_classes,
            dtype=compute,
        )
    return CLIP(
        image_tower=tower,
        text_tower=build_text_tower(name, embed_dim, dtype=dtype, text=text),
        embed_dim=embed_dim,
        project_image=not own_projection,
        loss=loss,
        dtype=compute,
    )


def init_variables(model: nn.Module, rng, image_size, context_length: int = 77) -> dict:
    """Initialise {"params", "batch_stats"?} from dummy inputs; pure, so `jax.eval_shape` and
    `jax.jit(..., out_shardings=...)` can wrap it. `image_size`: int or (H, W)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    rng = jax.random.key(rng) if isinstance(rng, int) else rng
    images = jnp.zeros((1, h, w, 3), jnp.float32)
    # One jit-compiled init is much faster than flax's op-by-op eager init (and nests under jit).
    if isinstance(model, CLIP):
        tokens = jnp.zeros((1, context_length), jnp.int32)
        variables = jax.jit(functools.partial(model.init, train=False))(rng, images, tokens)
    else:
        variables = jax.jit(functools.partial(model.init, train=False))(rng, images)
    return dict(variables)
