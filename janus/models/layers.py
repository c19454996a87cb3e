"""Shared building blocks for the image towers (and the CLIP text tower).

Layouts follow the PyTorch references so that weight import is a rename plus a transpose:

- `SelfAttention` (also the CLIP text tower's, under open_clip's names) keeps one fused `qkv`
  projection (``[D, 3D]``, q then k then v, heads contiguous
  inside each), exactly like timm's ``attn.qkv`` and torch's
  ``nn.MultiheadAttention.in_proj_weight``.
- `EncoderBlock` is the pre-LN transformer block shared by timm ViTs, open_clip's visual transformer
  and CLIP's text transformer (``ln_1 -> attn -> + -> ln_2 -> mlp -> +``).
- `Encoder` stacks blocks, optionally with ``nn.scan`` (stacked params under ``blocks`` with a
  leading layer axis: one compiled block, faster compiles for deep models) and ``nn.remat``
  (recompute activations in the backward pass to save memory).
- `DropPath` is timm's stochastic depth: in training, each sample's residual branch is dropped
  with the block's rate (and kept ones scaled by ``1 / (1 - rate)``); the towers' rates follow
  timm's linear schedule (`drop_path_rates`). Off at evaluation and at rate 0, where the towers'
  outputs are those without it.

All modules take ``dtype`` (the compute dtype) and keep parameters in ``param_dtype`` (float32).
Softmax and LayerNorm statistics run in float32 whatever the compute dtype, because bf16 softmax
loses too much.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's activation: ``x * sigmoid(1.702 x)`` (open_clip's ``QuickGELU``)."""
    return x * jax.nn.sigmoid(1.702 * x)


# torch's nn.GELU() is the exact erf form; flax's nn.gelu defaults to the tanh approximation, so
# name both.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": quick_gelu,
    "relu": jax.nn.relu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def torch_padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric padding ``kernel // 2`` like torch's ``padding=k//2``.

    flax's "SAME" pads asymmetrically for stride 2 on even inputs, which would shift every feature
    map by one pixel relative to the PyTorch references."""
    p = kernel // 2
    return ((p, p), (p, p))


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
    """torch's ``AdaptiveAvgPool2d(size)`` on ``[B, H, W, C]``: output cell ``i`` averages input
    rows ``floor(i*H/size) .. ceil((i+1)*H/size) - 1`` (cells overlap or repeat when H is not a
    multiple of ``size``, e.g. VGG's 7x7 pool over a 2x2 map at 64 px)."""

    def weights(n: int) -> np.ndarray:
        w = np.zeros((size, n), np.float32)
        for i in range(size):
            lo, hi = (i * n) // size, -((-(i + 1) * n) // size)
            w[i, lo:hi] = 1.0 / (hi - lo)
        return w

    _, h, w, _ = x.shape
    if (h, w) == (size, size):
        return x
    wh, ww = (jnp.asarray(weights(n), x.dtype) for n in (h, w))
    return jnp.einsum("ih,jw,bhwc->bijc", wh, ww, x)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Scaled dot-product attention on ``[B, T, H, Dh]`` tensors; softmax in float32.

    ``mask``: boolean, broadcastable to ``[B, H, Tq, Tk]``; True = may attend.
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * jnp.asarray(scale, q.dtype), k)
    logits = logits.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def drop_path_rates(rate: float, depth: int) -> tuple[float, ...]:
    """timm's per-block stochastic-depth rates: linear from 0 to `rate` over `depth` blocks
    (``torch.linspace(0, rate, depth)``)."""
    if not 0 <= rate <= 1:
        raise ValueError(f"model.drop_path_rate = {rate!r} must be in [0, 1]")
    return tuple(np.linspace(0.0, rate, depth).tolist())


def drop_path(x: jax.Array, keep: jax.Array, rate) -> jax.Array:
    """x [B, ...] with the samples where not `keep` [B] zeroed and the others scaled by
    1 / (1 - rate) (timm's ``drop_path``; at rate 1 everything is dropped)."""
    keep_prob = 1.0 - jnp.asarray(rate, jnp.float32)
    scale = jnp.where(keep & (keep_prob > 0), 1.0 / jnp.maximum(keep_prob, 1e-12), 0.0)
    return x * scale.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))


class DropPath(nn.Module):
    """Stochastic depth on a residual branch [B, ...]: each sample's is dropped with chance
    `rate` (a float, or a traced per-block value under ``nn.scan``), with a key of the
    'dropout' stream. Identity when `deterministic` (evaluation) or at a Python rate of 0."""

    @nn.compact
    def __call__(self, x: jax.Array, rate, deterministic: bool) -> jax.Array:
        if deterministic or (isinstance(rate, int | float) and rate == 0):
            return x
        keep_prob = 1.0 - jnp.asarray(rate, jnp.float32)
        keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, (x.shape[0],))
        return drop_path(x, keep, rate)


class SelfAttention(nn.Module):
    """Multi-head self-attention: a fused ``qkv`` Dense and an ``out`` Dense (both with bias).

    ``names`` / ``out_init`` let the CLIP text tower keep open_clip's names (``in_proj``,
    ``out_proj``) and initialisation with the same code."""

    num_heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable = nn.initializers.xavier_uniform()
    out_init: Callable | None = None  # None: kernel_init
    names: tuple[str, str] = ("qkv", "out")
    qkv_bias: bool = True  # VOLO's transformer blocks have none

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        b, t, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads {self.num_heads}")
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        qkv = dense(
            3 * d, use_bias=self.qkv_bias, kernel_init=self.kernel_init, name=self.names[0]
        )(x)
        q, k, v = jnp.split(qkv.reshape(b, t, 3, self.num_heads, d // self.num_heads), 3, axis=2)
        out = attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], mask)
        out_init = self.out_init or self.kernel_init
        return dense(d, kernel_init=out_init, name=self.names[1])(out.reshape(b, t, d))


class Mlp(nn.Module):
    """``fc1 -> act -> fc2`` (timm ``mlp.fc1/fc2``; the CLIP text tower passes ``names`` =
    ``("c_fc", "c_proj")`` and open_clip's initialisers)."""

    hidden_dim: int
    act: str = "gelu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable = nn.initializers.xavier_uniform()
    out_init: Callable | None = None  # None: kernel_init
    bias_init: Callable = nn.initializers.normal(1e-6)
    names: tuple[str, str] = ("fc1", "fc2")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype, bias_init=self.bias_init
        )
        y = dense(self.hidden_dim, kernel_init=self.kernel_init, name=self.names[0])(x)
        y = get_activation(self.act)(y)
        out_init = self.out_init or self.kernel_init
        return dense(x.shape[-1], kernel_init=out_init, name=self.names[1])(y)


def layer_norm(eps: float, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.LayerNorm:
    # force_float32_reductions (flax default) keeps the statistics in float32 under bf16 compute.
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block. Returns ``(x, None)`` so that it can be the body of ``nn.scan``.
    `drop_rate`: the block's drop-path rate on both residual branches (timm's ``drop_path1/2``),
    applied unless `deterministic`."""

    num_heads: int
    mlp_ratio: float = 4.0
    act: str = "gelu"
    ln_eps: float = 1e-6
    qkv_bias: bool = True
    deterministic: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, drop_rate=0.0):
        width = x.shape[-1]
        y = layer_norm(self.ln_eps, self.dtype, self.param_dtype, "ln_1")(x)
        y = SelfAttention(
            self.num_heads, self.dtype, self.param_dtype, qkv_bias=self.qkv_bias, name="attn"
        )(y, mask)
        x = x + DropPath()(y, drop_rate, self.deterministic)
        y = layer_norm(self.ln_eps, self.dtype, self.param_dtype, "ln_2")(x)
        y = Mlp(int(width * self.mlp_ratio), self.act, self.dtype, self.param_dtype, name="mlp")(y)
        return x + DropPath()(y, drop_rate, self.deterministic), None


class Encoder(nn.Module):
    """``depth`` EncoderBlocks.

    Unscanned params are ``block_0 .. block_{depth-1}``; with ``scan_layers`` they are one
    ``blocks`` subtree whose leaves carry a leading ``[depth]`` axis (`stack_blocks` converts
    between the two). ``remat`` wraps each block in ``nn.remat`` (activation rematerialisation).
    ``drop_path_rates``: one per block (`drop_path_rates`; empty = none), used when ``train``."""

    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    act: str = "gelu"
    ln_eps: float = 1e-6
    qkv_bias: bool = True
    scan_layers: bool = False
    remat: bool = False
    drop_path_rates: tuple[float, ...] = ()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array | None = None, train: bool = False
    ) -> jax.Array:
        rates = self.drop_path_rates or (0.0,) * self.depth
        if len(rates) != self.depth:
            raise ValueError(f"drop_path_rates has {len(rates)} rates for {self.depth} blocks")
        block_cls = nn.remat(EncoderBlock) if self.remat else EncoderBlock
        kwargs = dict(
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            act=self.act,
            ln_eps=self.ln_eps,
            qkv_bias=self.qkv_bias,
            deterministic=not (train and any(rates)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        if self.scan_layers:
            scanned = nn.scan(
                block_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, 0),  # the mask; each block's rate
                length=self.depth,
            )
            x, _ = scanned(**kwargs, name="blocks")(x, mask, jnp.asarray(rates, jnp.float32))
            return x
        for i in range(self.depth):
            x, _ = block_cls(**kwargs, name=f"block_{i}")(x, mask, rates[i])
        return x


def stack_blocks(encoder_params: dict, depth: int) -> dict:
    """Unscanned ``{block_i: tree}`` -> scanned ``{"blocks": tree with a leading [depth] axis}``."""
    missing = [f"block_{i}" for i in range(depth) if f"block_{i}" not in encoder_params]
    if missing:
        raise KeyError(f"encoder params lack {missing[:5]} (have {sorted(encoder_params)[:5]}...)")
    blocks = [encoder_params[f"block_{i}"] for i in range(depth)]
    return {"blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)}


def unstack_blocks(encoder_params: dict) -> dict:
    """Inverse of `stack_blocks`."""
    stacked = encoder_params["blocks"]
    depth = jax.tree.leaves(stacked)[0].shape[0]
    return {f"block_{i}": jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(depth)}
