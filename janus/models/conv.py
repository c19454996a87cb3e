"""A 2-D convolution whose weight gradient is a sum of matrix products (`conv_general_dilated`).

Why: XLA differentiates a convolution's kernel as another convolution that contracts over the
batch. On the CPU backend that convolution runs over windows as large as the feature map (a
56x56 "kernel" for ResNet-50's first stage) and needs each operand transposed to put the batch
last; the profile of the ResNet-50 CE train step (benchmarks/RESULTS.md, "Train step profile")
spends about half of its time there. For a kernel ``[KH, KW, Cin, Cout]`` the same gradient is

    dW[i, j] = sum over n, h, w of  x_pad[n, h*s + i, w*s + j, :]^T  dY[n, h, w, :]

one matrix product ``[N*Ho*Wo, Cin]^T [N*Ho*Wo, Cout]`` per kernel tap, which the CPU's matmul
kernels run at full speed on NHWC data as it lies. The forward pass and the input gradient are
XLA's own (unchanged numbers); only the kernel gradient's summation order differs (float rounding).
Other platforms (GPU, TPU) keep XLA's kernel gradient: `lax.platform_dependent` picks per backend.

`conv_general_dilated` has `jax.lax.conv_general_dilated`'s signature, so flax's
``nn.Conv(conv_general_dilated=...)`` takes it; anything other than an NHWC/HWIO convolution without
dilation or groups is passed to lax unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_tap_grad(x, w, strides, padding):
    return _conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
    return _conv(x, w, strides, padding), (x, w)


def _kernel_grad_by_taps(x, dy, w, strides, padding):
    kh, kw = w.shape[:2]
    (sh, sw), (ho, wo) = strides, dy.shape[1:3]
    x_pad = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    taps = []
    for i in range(kh):
        for j in range(kw):
            window = x_pad[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
            # XLA's CPU matmul transposes its left operand to [channels, N*Ho*Wo] first: make
            # that the operand with fewer channels, then transpose the small result instead.
            if x.shape[-1] > dy.shape[-1]:
                taps.append(jnp.einsum("nhwo,nhwc->oc", dy, window).T)
            else:
                taps.append(jnp.einsum("nhwc,nhwo->co", window, dy))
    return jnp.stack(taps).reshape(w.shape).astype(w.dtype)


def _kernel_grad_by_xla(x, dy, w, strides, padding):
    _, kernel_vjp = jax.vjp(lambda w_: _conv(x, w_, strides, padding), w)
    return kernel_vjp(dy)[0]


def _bwd(strides, padding, residuals, dy):
    x, w = residuals
    _, input_vjp = jax.vjp(lambda x_: _conv(x_, w, strides, padding), x)
    (dx,) = input_vjp(dy)
    # Only XLA's CPU backend is slow at its own kernel gradient; GPUs and TPUs keep theirs
    # (cuDNN's and the TPU's convolutions), chosen when the step is lowered for a platform.
    by_taps = functools.partial(_kernel_grad_by_taps, w=w, strides=strides, padding=padding)
    by_xla = functools.partial(_kernel_grad_by_xla, w=w, strides=strides, padding=padding)
    dw = lax.platform_dependent(x, dy, cpu=by_taps, default=by_xla)
    return dx, dw


_conv_tap_grad.defvjp(_fwd, _bwd)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """`lax.conv_general_dilated`, with the matmul kernel gradient for plain NHWC convolutions."""
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    plain = (
        lhs.ndim == 4
        and not isinstance(padding, str)
        and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        and feature_group_count == 1
        and batch_group_count == 1
        and precision is None
        and preferred_element_type is None
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type,
        )  # fmt: skip
    strides = tuple(int(s) for s in window_strides)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv_tap_grad(lhs, rhs, strides, pads)
