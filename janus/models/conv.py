"""2-D convolutions: 1x1 ones as matrix products on the CPU (`conv_general_dilated`).

Why: XLA's CPU backend runs a 1x1 convolution well below its matrix product on the same data,
and a 1x1 convolution is one: ``[N*Ho*Wo, Cin] @ [Cin, Cout]`` over the (strided) input, its input
gradient ``dY @ W^T`` and its kernel gradient ``X^T @ dY``. Per layer on the 2-core VM the matrix
products beat XLA's convolution in every shape measured at 50 M multiply-adds and over; below that
the two are within tens of microseconds and either may win. So 1x1 convolutions of at least
`MATMUL_MIN_MACS` take the matrix products (all of ResNet-50's at 224 px, 0.2-1.6 G each), smaller
ones (all of JANuS-mini's, at most 8 M) keep XLA's convolution. Every other convolution is XLA's,
forward and gradients: as one matrix product per kernel tap, the 3x3 kernel gradient and forward
were slower than XLA's. Figures: benchmarks/RESULTS.md, "1x1 convolutions as matrix products";
`benchmarks/conv_layers.py` measures each layer.

The numbers differ from XLA's only in float rounding (the summation order). Other platforms (GPU,
TPU) keep XLA's convolution and its gradients: `lax.platform_dependent` picks per backend when the
step is lowered.

`conv_general_dilated` has `jax.lax.conv_general_dilated`'s signature, so flax's
``nn.Conv(conv_general_dilated=...)`` takes it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
_NO_PADDING = ((0, 0), (0, 0))
MATMUL_MIN_MACS = 50_000_000  # a 1x1 convolution's multiply-adds from which the CPU uses a matmul


def multiply_adds(x_shape, w_shape, strides, padding) -> int:
    """Multiply-adds of an NHWC/HWIO convolution with explicit pads: output pixels x kernel size."""
    out_hw = [
        (x_shape[1 + d] + sum(padding[d]) - w_shape[d]) // strides[d] + 1 for d in range(2)
    ]  # fmt: skip
    return x_shape[0] * out_hw[0] * out_hw[1] * w_shape[0] * w_shape[1] * w_shape[2] * w_shape[3]


def matmul_on_cpu(x_shape, w_shape, strides, padding) -> bool:
    """Whether this NHWC convolution runs as a matrix product on the CPU (see the module doc)."""
    if tuple(w_shape[:2]) != (1, 1) or tuple(map(tuple, padding)) != _NO_PADDING:
        return False
    return multiply_adds(x_shape, w_shape, strides, padding) >= MATMUL_MIN_MACS


def _by_xla(x, w, strides):
    return lax.conv_general_dilated(x, w, strides, _NO_PADDING, dimension_numbers=_NHWC)


def _by_matmul(x, w, strides):
    return jnp.einsum("nhwc,co->nhwo", x[:, :: strides[0], :: strides[1], :], w[0, 0])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pointwise(x, w, strides):
    by_matmul = functools.partial(_by_matmul, strides=strides)
    return lax.platform_dependent(
        x, w, cpu=by_matmul, default=functools.partial(_by_xla, strides=strides)
    )


def _pointwise_fwd(x, w, strides):
    return _pointwise(x, w, strides), (x, w)


def _grads_by_matmul(x, w, dy, strides):
    _, input_vjp = jax.vjp(lambda x_: _by_matmul(x_, w, strides), x)
    x_seen = x[:, :: strides[0], :: strides[1], :]
    # XLA's CPU matmul transposes its left operand to [channels, N*Ho*Wo] first: make that the
    # operand with fewer channels, then transpose the small result instead (measured per layer).
    if x.shape[-1] > dy.shape[-1]:
        dw = jnp.einsum("nhwo,nhwc->oc", dy, x_seen).T
    else:
        dw = jnp.einsum("nhwc,nhwo->co", x_seen, dy)
    return input_vjp(dy)[0], dw.reshape(w.shape)


def _grads_by_xla(x, w, dy, strides):
    _, vjp = jax.vjp(lambda x_, w_: _by_xla(x_, w_, strides), x, w)
    return vjp(dy)


def _pointwise_bwd(strides, residuals, dy):
    x, w = residuals
    by_matmul = functools.partial(_grads_by_matmul, strides=strides)
    by_xla = functools.partial(_grads_by_xla, strides=strides)
    return lax.platform_dependent(x, w, dy, cpu=by_matmul, default=by_xla)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


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
    """`lax.conv_general_dilated`, with large plain NHWC 1x1 convolutions as matrix products on
    the CPU."""
    args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)  # fmt: skip
    strides = tuple(int(s) for s in window_strides)
    pointwise = (
        lhs.ndim == 4
        and not isinstance(padding, str)
        and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        and feature_group_count == 1
        and batch_group_count == 1
        and precision is None
        and preferred_element_type is None
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        and matmul_on_cpu(lhs.shape, rhs.shape, strides, padding)
    )
    return _pointwise(lhs, rhs, strides) if pointwise else lax.conv_general_dilated(*args)
