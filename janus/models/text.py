"""CLIP text transformer (the text tower of the VL objective), laid out like open_clip's.

Causal self-attention over token embeddings plus a learned positional embedding, pre-LN residual
blocks, a final LayerNorm, pooling at the end-of-text token (the argmax token id, since EOT has the
highest id in CLIP's vocabulary) and a bias-free projection. Defaults are OpenAI's RN50 text tower:
width 512, 12 layers, 8 heads, context 77, vocab 49408, QuickGELU.

Parameter names are a stable seam: `janus/convert/open_clip_text.py` maps open_clip state dicts onto
them. The tree is

    token_embedding/embedding            [vocab, width]          (torch: token_embedding.weight)
    positional_embedding                 [context, width]        (torch: positional_embedding)
    resblocks_{i}/ln_1/{scale,bias}      [width]
    resblocks_{i}/attn/in_proj/kernel    [width, 3*width]        (torch: in_proj_weight.T; q|k|v)
    resblocks_{i}/attn/in_proj/bias      [3*width]
    resblocks_{i}/attn/out_proj/{kernel,bias}
    resblocks_{i}/ln_2/{scale,bias}
    resblocks_{i}/mlp/c_fc/{kernel,bias} [width, mlp_width]
    resblocks_{i}/mlp/c_proj/{kernel,bias}
    ln_final/{scale,bias}
    text_projection                      [width, output_dim]     (torch: text_projection, x @ P)

Parameters are float32; `dtype` is the compute dtype. LayerNorm and softmax run in float32 (like
open_clip's LayerNormFp32 under mixed precision); the output features are float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus.models.layers import Mlp, SelfAttention, get_activation

# torch.nn.LayerNorm's default; flax's is 1e-6, which would break parity with open_clip weights.
LN_EPS = 1e-5


def _layer_norm(name: str) -> nn.Module:
    # A plain nn.LayerNorm with float32 compute keeps the param path flat (`ln_1/scale`).
    return nn.LayerNorm(epsilon=LN_EPS, dtype=jnp.float32, param_dtype=jnp.float32, name=name)


class ResidualAttentionBlock(nn.Module):
    """open_clip's pre-LN block: the shared `SelfAttention` (causal) and `Mlp` of
    `janus.models.layers` under open_clip's parameter names and initialisation."""

    width: int
    heads: int
    mlp_width: int
    proj_std: float
    activation: str = "quick_gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _layer_norm("ln_1")(x).astype(self.dtype)
        attn = SelfAttention(
            self.heads,
            self.dtype,
            kernel_init=nn.initializers.normal(self.width**-0.5),
            out_init=nn.initializers.normal(self.proj_std),
            names=("in_proj", "out_proj"),
            name="attn",
        )
        n = x.shape[1]
        x = x + attn(h, jnp.tril(jnp.ones((n, n), dtype=bool)))  # causal
        h = _layer_norm("ln_2")(x).astype(self.dtype)
        mlp = Mlp(
            self.mlp_width,
            self.activation,
            self.dtype,
            kernel_init=nn.initializers.normal((2 * self.width) ** -0.5),
            out_init=nn.initializers.normal(self.proj_std),
            bias_init=nn.initializers.zeros,
            names=("c_fc", "c_proj"),
            name="mlp",
        )
        return x + mlp(h)


class TextTransformer(nn.Module):
    """tokens int32 [B, L] (L <= context_length) -> text features float32 [B, output_dim].

    `output_dim=None` drops the projection and returns the pooled width-dim features.
    """

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    output_dim: int | None = 512
    activation: str = "quick_gelu"
    dtype: Any = jnp.float32

    @property
    def feature_dim(self) -> int:
        return self.output_dim or self.width

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        get_activation(self.activation)  # fail early on an unknown name
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
        n = tokens.shape[1]
        if n > self.context_length:
            raise ValueError(f"token length {n} exceeds context_length={self.context_length}")
        x = nn.Embed(
            self.vocab_size,
            self.width,
            embedding_init=nn.initializers.normal(0.02),
            param_dtype=jnp.float32,
            name="token_embedding",
        )(tokens)
        pos = self.param(
            "positional_embedding",
            nn.initializers.normal(0.01),
            (self.context_length, self.width),
            jnp.float32,
        )
        # The residual stream is kept in the compute dtype, as open_clip does under autocast.
        x = (x + pos[:n]).astype(self.dtype)
        proj_std = self.width**-0.5 * (2 * self.layers) ** -0.5
        mlp_width = int(self.width * self.mlp_ratio)
        for i in range(self.layers):
            x = ResidualAttentionBlock(
                self.width,
                self.heads,
                mlp_width,
                proj_std,
                self.activation,
                self.dtype,
                name=f"resblocks_{i}",
            )(x)
        x = _layer_norm("ln_final")(x)
        # End-of-text pooling: EOT has the highest id, so argmax finds it (open_clip 'argmax').
        eot = jnp.argmax(tokens, axis=-1)
        pooled = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
        if self.output_dim:
            proj = self.param(
                "text_projection",
                nn.initializers.normal(self.width**-0.5),
                (self.width, self.output_dim),
                jnp.float32,
            )
            pooled = pooled.astype(self.dtype) @ proj.astype(self.dtype)
        return pooled.astype(jnp.float32)
