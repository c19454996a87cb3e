"""janus.models.conv: large 1x1 convolutions as matrix products equal XLA's convolution to rounding
on the CPU; every other convolution is XLA's own; the size rule keeps JANuS-mini's convolutions
XLA's; other platforms keep XLA's."""

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
@pytest.mark.parametrize("min_macs", [conv.MATMUL_MIN_MACS, 0])
def test_forward_and_gradients_match_xla(kernel, stride, cin, cout, size, min_macs, monkeypatch):
    """At the default threshold these small shapes are XLA's convolution exactly; with it at 0 the
    1x1 ones take the matrix products, equal to rounding (the others stay XLA's)."""
    monkeypatch.setattr(conv, "MATMUL_MIN_MACS", min_macs)
    rng = np.random.default_rng(kernel * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)), jnp.float32)
    padding = ((kernel // 2, kernel // 2),) * 2
    ref = _loss(lax.conv_general_dilated, stride, padding)
    new = _loss(conv.conv_general_dilated, stride, padding)
    (y_ref, (dx_ref, dw_ref)) = jax.jit(jax.value_and_grad(ref, (0, 1)))(x, w)
    y, (dx, dw) = jax.jit(jax.value_and_grad(new, (0, 1)))(x, w)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        if kernel == 1 and min_macs == 0:
            atol = 1e-5 * float(jnp.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)
        else:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "kernel,min_macs,convolutions_on_cpu",
    [(1, conv.MATMUL_MIN_MACS, 3), (1, 0, 0), (3, 0, 3), (7, 0, 3)],
)
def test_the_cpu_lowering_uses_matrix_products_other_platforms_keep_xla(
    kernel, min_macs, convolutions_on_cpu, monkeypatch
):
    """Lowered for each platform (jax.export; no device needed): on the CPU a 1x1 convolution over
    the size threshold is matrix products forward and backward, any other XLA's three
    convolutions; GPUs and TPUs always get XLA's three convolutions."""
    monkeypatch.setattr(conv, "MATMUL_MIN_MACS", min_macs)
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
            assert convolutions == convolutions_on_cpu
            assert ("stablehlo.dot_general" in text) == (convolutions_on_cpu == 0)
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


@pytest.mark.parametrize(
    "name,res,batch,xla_convolutions",
    [
        ("clip_rn_tiny", 64, 64, "all"),
        ("resnet50", 224, 16, "the 3x3 and the stem"),
        ("clip_rn50", 224, 16, "the 3x3 and the stem"),
    ],
)
def test_the_size_rule_keeps_janus_mini_on_xla_and_takes_resnet50_1x1s(
    name, res, batch, xla_convolutions
):
    """At configs/mini.py's shapes (64 px, batch 64) every convolution of clip_rn_tiny stays XLA's
    (below the size rule's threshold, where neither form is clearly faster); at 224 px, batch 16,
    every 1x1 of ResNet-50 and of CLIP's RN50 is a matrix product on the CPU (so their
    convolutions go through janus.models.conv). Lowered with jax.export: nothing compiled."""
    from janus.models import create_model, init_variables

    model = create_model(name, "ce")
    variables = jax.eval_shape(lambda: init_variables(model, 0, res))
    images = jax.ShapeDtypeStruct((batch, res, res, 3), jnp.float32)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    text = jax.export.export(forward, platforms=["cpu"])(variables, images).mlir_module()
    kernels = [
        leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
        if "conv" in jax.tree_util.keystr(path)
        and jax.tree_util.keystr(path).endswith("['kernel']")
    ]
    larger_than_1x1 = sum(k[:2] != (1, 1) for k in kernels)
    expected = {"all": len(kernels), "the 3x3 and the stem": larger_than_1x1}[xla_convolutions]
    assert larger_than_1x1 < len(kernels) and text.count("stablehlo.convolution") == expected


def test_multiply_adds_counts_output_pixels_times_kernel():
    """ResNet-50's stem at 224 px (7x7, stride 2, padding 3: 112x112 out) and a strided 1x1."""
    stem = conv.multiply_adds((16, 224, 224, 3), (7, 7, 3, 64), (2, 2), ((3, 3), (3, 3)))
    assert stem == 16 * 112 * 112 * 7 * 7 * 3 * 64
    assert conv.multiply_adds((2, 9, 9, 8), (1, 1, 8, 16), (2, 2), ((0, 0), (0, 0))) == 2 * 25 * 128
