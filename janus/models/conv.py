"""2-D convolutions as sums of matrix products on the CPU (`conv_general_dilated`).

Why: XLA's CPU backend runs convolutions well below its matrix products on the same data.
- Its kernel gradient is another convolution that contracts over the batch, with windows as large
  as the feature map (a 56x56 "kernel" for ResNet-50's first stage) and each operand transposed to
  put the batch last: about half of the ResNet-50 CE train step in its profile (benchmarks/
  RESULTS.md, "Train step profile"). For a kernel ``[KH, KW, Cin, Cout]`` the same gradient is

      dW[i, j] = sum over n, h, w of  x_pad[n, h*s + i, w*s + j, :]^T  dY[n, h, w, :]

  one matrix product ``[N*Ho*Wo, Cin]^T [N*Ho*Wo, Cout]`` per kernel tap.
- 1x1 and 3x3 convolutions (all of ResNet-50's but the stem) are, forward, the same taps summed:
  ``Y = sum over i, j of  window(i, j) @ W[i, j]``, and their input gradient is the VJP of that,
  matrix products too. On the 2-core VM this took the ResNet-50 train step from 4.5-4.7 to
  4.1-4.3 s, 0.71x to 0.82x torchvision's images/s (benchmarks/RESULTS.md, "ResNet convolutions
  as matrix products on the CPU"), for 2-3 s more compile.

Other convolutions (the 7x7 stem) keep XLA's forward and input gradient. Every kernel gradient is
the custom VJP's tap form (autodiff's of the summed taps puts the wide operand first: slower). The
numbers differ from XLA's only in float rounding (the summation order). Other platforms (GPU, TPU)
keep XLA's convolution and its gradients: `lax.platform_dependent` picks per backend when the step
is lowered.

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
_TAP_KERNELS = {(1, 1), (3, 3)}  # computed as summed matrix products on the CPU (measured)


def _conv_by_xla(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def _windows(x, kernel_hw, strides, padding, out_hw):
    """(i, j, the input window that kernel tap (i, j) multiplies: [N, Ho, Wo, Cin]) per tap."""
    (sh, sw), (ho, wo) = strides, out_hw
    x_pad = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    for i in range(kernel_hw[0]):
        for j in range(kernel_hw[1]):
            yield i, j, x_pad[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]


def _conv_by_taps(x, w, strides, padding):
    kh, kw = w.shape[:2]
    out_hw = [
        (x.shape[1 + d] + sum(padding[d]) - k) // strides[d] + 1 for d, k in enumerate((kh, kw))
    ]
    out = None
    for i, j, window in _windows(x, (kh, kw), strides, padding, out_hw):
        tap = jnp.einsum("nhwc,co->nhwo", window, w[i, j])
        out = tap if out is None else out + tap
    return out


def _conv(x, w, strides, padding):
    """The forward convolution: summed matrix products on the CPU for tap kernels, else XLA's."""
    if tuple(w.shape[:2]) not in _TAP_KERNELS:
        return _conv_by_xla(x, w, strides, padding)
    by_taps = functools.partial(_conv_by_taps, strides=strides, padding=padding)
    by_xla = functools.partial(_conv_by_xla, strides=strides, padding=padding)
    return lax.platform_dependent(x, w, cpu=by_taps, default=by_xla)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_tap_grad(x, w, strides, padding):
    return _conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
    return _conv(x, w, strides, padding), (x, w)


def _kernel_grad_by_taps(x, dy, w, strides, padding):
    taps = []
    for _, _, window in _windows(x, w.shape[:2], strides, padding, dy.shape[1:3]):
        # XLA's CPU matmul transposes its left operand to [channels, N*Ho*Wo] first: make
        # that the operand with fewer channels, then transpose the small result instead.
        if x.shape[-1] > dy.shape[-1]:
            taps.append(jnp.einsum("nhwo,nhwc->oc", dy, window).T)
        else:
            taps.append(jnp.einsum("nhwc,nhwo->co", window, dy))
    return jnp.stack(taps).reshape(w.shape).astype(w.dtype)


def _kernel_grad_by_xla(x, dy, w, strides, padding):
    _, kernel_vjp = jax.vjp(lambda w_: _conv_by_xla(x, w_, strides, padding), w)
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
    """`lax.conv_general_dilated`, as matrix products on the CPU for plain NHWC convolutions."""
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
