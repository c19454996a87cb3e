"""janus.models.conv: its matmul kernel gradient equals XLA's (to rounding); same forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from janus.models import conv

NHWC = ("NHWC", "HWIO", "NHWC")


def _loss(conv_fn, stride, padding):
    def f(x, w):
        dn = lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
        return jnp.sum(jnp.sin(conv_fn(x, w, (stride, stride), padding, dimension_numbers=dn)))

    return f


@pytest.mark.parametrize(
    "kernel,stride,cin,cout,size",
    [
        (3, 1, 8, 16, 9),
        (3, 2, 8, 16, 10),
        (1, 1, 4, 8, 5),
        (1, 2, 8, 16, 9),
        (7, 2, 3, 8, 16),
        (1, 1, 16, 4, 5),
        (3, 2, 16, 8, 9),
    ],  # cin > cout: the transposed matmul
)
def test_gradients_match_xla(kernel, stride, cin, cout, size):
    rng = np.random.default_rng(kernel * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)), jnp.float32)
    padding = ((kernel // 2, kernel // 2),) * 2
    ref = _loss(lax.conv_general_dilated, stride, padding)
    new = _loss(conv.conv_general_dilated, stride, padding)
    np.testing.assert_array_equal(jax.jit(new)(x, w), jax.jit(ref)(x, w))  # same forward
    (dx_ref, dw_ref) = jax.jit(jax.grad(ref, (0, 1)))(x, w)
    dx, dw = jax.jit(jax.grad(new, (0, 1)))(x, w)
    np.testing.assert_array_equal(dx, dx_ref)  # XLA's own input gradient
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(dw_ref).max()))


@pytest.mark.parametrize("kernel", [1, 3, 7])
def test_the_cpu_lowering_has_the_matmul_kernel_gradient_other_platforms_keep_xla(kernel):
    """Lowered for each platform (jax.export; no device needed): on the CPU the forward and input
    gradient are XLA's convolutions and the kernel gradient matrix products; GPUs and TPUs get
    XLA's three convolutions only."""
    x = jnp.zeros((2, 9, 9, 8), jnp.float32)
    w = jnp.zeros((kernel, kernel, 8, 16), jnp.float32)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
    padding = ((kernel // 2, kernel // 2),) * 2

    def loss(x, w):
        y = conv.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=dn)
        return jnp.sum(y * y)

    step = jax.jit(jax.value_and_grad(loss, (0, 1)))
    for platform in ("cpu", "cuda", "tpu"):
        text = jax.export.export(step, platforms=[platform])(x, w).mlir_module()
        convolutions = text.count("stablehlo.convolution")
        if platform == "cpu":
            assert convolutions == 2 and "stablehlo.dot_general" in text
        else:
            assert convolutions == 3 and "stablehlo.dot_general" not in text, platform


def test_other_convolutions_go_to_lax_unchanged():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 8, 8, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
    for kw in (dict(feature_group_count=2), dict(rhs_dilation=(2, 2))):
        w_ = w if "feature_group_count" in kw else jnp.concatenate([w, w], axis=2)
        args = (x, w_, (1, 1), ((2, 2), (2, 2)))
        np.testing.assert_array_equal(
            conv.conv_general_dilated(*args, dimension_numbers=dn, **kw),
            lax.conv_general_dilated(*args, dimension_numbers=dn, **kw),
        )
    args = (x, jnp.concatenate([w, w], axis=2), (1, 1), "SAME")
    np.testing.assert_array_equal(
        conv.conv_general_dilated(*args, dimension_numbers=dn),
        lax.conv_general_dilated(*args, dimension_numbers=dn),
    )


def test_resnet_convolutions_use_it():
    """Every ResNet convolution goes through janus.models.conv (its custom VJP is in the jaxpr)."""
    from janus.models import create_model, init_variables

    model = create_model("resnet_tiny", "ce")
    variables = jax.eval_shape(lambda: init_variables(model, 0, 32))  # tracing only, no compile
    images = jnp.zeros((2, 32, 32, 3), jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, images, train=False))(variables))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables)]
    n_convs = sum("conv" in p and p.endswith("['kernel']") for p in paths)
    assert n_convs > 0 and jaxpr.count("custom_vjp_call") == n_convs
