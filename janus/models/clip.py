"""The two model wrappers around an image tower: a linear classifier (CE objectives) and CLIP.

Both take an already-built image tower (`tower(images, train) -> [B, F]` with a `feature_dim`) and
keep it under the param name `image_tower`, so a tower trained with either objective has the same
parameter paths (linear probes and weight import see one layout).

- `Classifier`: `image_tower` + `head` (Dense F -> num_classes) -> logits float32. Towers trained
  with token labelling (VOLO) carry a non-zero ``aux_head_scale``: the Classifier then adds an
  ``aux_head`` (Dense F -> num_classes) over the tower's patch tokens (``tower.tokens``) and returns
  ``head(features) + aux_head_scale * max over tokens of aux_head(tokens)``, timm's forward.
- `CLIPClassifier`: CLIP's image side (`image_tower`, + `image_projection` as in `CLIP`) whose
  L2-normalised embedding feeds `head` (Dense embed_dim -> num_classes). Its parameter paths are
  CLIP's, so a CLIP checkpoint initialises it and the two interpolate weight by weight (WiSE-FT);
  a head of logit_scale x the zero-shot class embeddings makes it the zero-shot classifier.
- `CLIP`: `image_tower` (+ `image_projection`, a bias-free Dense F -> embed_dim, unless the tower
  already ends in CLIP's own projection, as `clip_*` towers do), `text_tower`
  (`janus.models.text.TextTransformer` with output_dim = embed_dim), and `logit_scale` (log of
  the temperature's inverse; init log(1/0.07) for InfoNCE, log(10) for SigLIP) plus `logit_bias`
  (SigLIP, init -10). The forward returns L2-normalised float32 embeddings and exp(logit_scale)
  clamped at 100.

Tower inputs and outputs are pinned batch-sharded (`janus.sharding.constrain_batch`) when a mesh is
set, so data-parallel and FSDP parameter layouts compile to the same data-parallel activations.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus.sharding import constrain_batch

MAX_LOGIT_SCALE = 100.0
# Initial log logit scale and logit bias per contrastive loss (CLIP; SigLIP, Zhai et al. 2023).
INIT_LOGIT_SCALE = {"infonce": math.log(1 / 0.07), "siglip": math.log(10.0)}
INIT_LOGIT_BIAS = {"siglip": -10.0}


def tower_features(tower: nn.Module, images: jax.Array, train: bool) -> jax.Array:
    """The image tower's output [B, F] in float32, batch-sharded (every wrapper's features)."""
    return constrain_batch(tower(constrain_batch(images), train).astype(jnp.float32))


def image_embedding(module: nn.Module, images: jax.Array, train: bool) -> jax.Array:
    """CLIP's L2-normalised image embedding: tower (+ `image_projection` when `project_image`)."""
    x = tower_features(module.image_tower, images, train)
    if module.project_image:
        x = module.image_projection(x.astype(module.dtype))
    return l2_normalize(x)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) along the last axis, in float32 (torch's F.normalize)."""
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


class Classifier(nn.Module):
    """images [B, H, W, 3] -> logits [B, num_classes] float32."""

    image_tower: nn.Module
    num_classes: int = 1000
    dtype: Any = jnp.float32

    def setup(self):
        self.head = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)
        # Only token-labelling towers (VOLO) define aux_head_scale; it is a tower kwarg.
        self.aux_head_scale = getattr(self.image_tower, "aux_head_scale", 0.0)
        if self.aux_head_scale:
            self.aux_head = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)

    def image_features(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Pre-head features [B, F] float32 (for linear probes)."""
        return tower_features(self.image_tower, images, train)

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        if not self.aux_head_scale:
            features = self.image_features(images, train)
            return self.head(features.astype(self.dtype)).astype(jnp.float32)
        features, tokens = self.image_tower.tokens(constrain_batch(images), train)
        logits = self.head(features.astype(self.dtype)).astype(jnp.float32)
        token_logits = self.aux_head(tokens.astype(self.dtype)).astype(jnp.float32)
        return constrain_batch(logits + self.aux_head_scale * token_logits.max(axis=1))


class CLIPClassifier(nn.Module):
    """images [B, H, W, 3] -> logits [B, num_classes] float32 over CLIP's image embedding."""

    image_tower: nn.Module
    embed_dim: int
    project_image: bool = True
    num_classes: int = 1000
    dtype: Any = jnp.float32

    def setup(self):
        if self.project_image:
            self.image_projection = nn.Dense(
                self.embed_dim, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32
            )
        self.head = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)

    def image_features(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Image tower output [B, F] float32, before any projection (for linear probes)."""
        return tower_features(self.image_tower, images, train)

    def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
        return image_embedding(self, images, train)

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.encode_image(images, train).astype(self.dtype)).astype(jnp.float32)


class CLIP(nn.Module):
    """(images, tokens) -> {"image_emb", "text_emb", "logit_scale"[, "logit_bias"]}."""

    image_tower: nn.Module
    text_tower: nn.Module
    embed_dim: int
    project_image: bool = True
    loss: str = "infonce"
    dtype: Any = jnp.float32

    def setup(self):
        if self.loss not in INIT_LOGIT_SCALE:
            raise ValueError(
                f"CLIP loss must be one of {sorted(INIT_LOGIT_SCALE)}, got {self.loss!r}"
            )
        if self.project_image:
            fan_in = self.image_tower.feature_dim
            self.image_projection = nn.Dense(
                self.embed_dim,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=nn.initializers.normal(fan_in**-0.5),
            )
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(INIT_LOGIT_SCALE[self.loss]), (), jnp.float32
        )
        if self.loss in INIT_LOGIT_BIAS:
            self.logit_bias = self.param(
                "logit_bias", nn.initializers.constant(INIT_LOGIT_BIAS[self.loss]), (), jnp.float32
            )

    def image_features(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Image tower output [B, F] float32, before any projection (for linear probes)."""
        return tower_features(self.image_tower, images, train)

    def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
        return image_embedding(self, images, train)

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        x = self.text_tower(constrain_batch(tokens))
        return constrain_batch(l2_normalize(x))

    def scale_and_bias(self) -> dict[str, jax.Array]:
        out = {"logit_scale": jnp.minimum(jnp.exp(self.logit_scale), MAX_LOGIT_SCALE)}
        if self.loss in INIT_LOGIT_BIAS:
            out["logit_bias"] = self.logit_bias
        return out

    def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False) -> dict:
        return {
            "image_emb": self.encode_image(images, train),
            "text_emb": self.encode_text(tokens),
            **self.scale_and_bias(),
        }
