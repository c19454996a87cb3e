"""Image towers: registry coverage, shapes, feature_dim, BatchNorm semantics, scan/remat, bf16.

Exact parameter counts against the PyTorch references and numerical parity live in test_convert.py
(they need torch). Everything here runs on tiny variants at 32-64 px.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from janus.models import clip_resnet, convnext, layers, posemb, resnet, vgg, vit, volo

MODULES = (resnet, clip_resnet, vit, volo, vgg, convnext)
FACTORIES = {name: f for m in MODULES for name, f in m.TOWER_FACTORIES.items()}
REQUIRED = (
    [f"resnet{n}" for n in (18, 26, 34, 50, 101, 152)]
    + ["clip_rn50", "clip_rn101", "clip_rn50x4"]
    + ["vit_ti16", "vit_s16", "vit_s32", "vit_b16", "vit_b32", "vit_l16"]
    + ["volo_d1", "vgg16_bn", "convnext_t", "convnext_s", "convnext_b"]
    + ["deit_s16", "deit_b16", "deit_s16_distilled", "deit_b16_distilled"]
    + ["resnet_tiny", "clip_rn_tiny", "vit_tiny", "volo_tiny", "vgg_tiny", "convnext_tiny"]
    + ["deit_tiny"]
)


def n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def init(tower, size=64, batch=2, seed=0):
    # jit + rbg keys: compiling threefry initialisers for every parameter takes ~5x longer on a
    # loaded 2-core machine than the model itself.
    x = jax.random.normal(jax.random.key(seed + 1), (batch, size, size, 3))
    key = jax.random.key(seed, impl="unsafe_rbg")
    return jax.jit(lambda k, x: tower.init(k, x, train=False))(key, x), x


def apply(tower, variables, x, train=False):
    if train:
        return jax.jit(lambda v, x: tower.apply(v, x, train=True, mutable=["batch_stats"]))(
            variables, x
        )
    return jax.jit(lambda v, x: tower.apply(v, x, train=False))(variables, x)


def shapes(tower, size=64):
    x = jnp.zeros((1, size, size, 3))
    return jax.eval_shape(lambda: tower.init(jax.random.key(0), x, train=False))


def test_registry_covers_required_names():
    assert set(REQUIRED) <= set(FACTORIES)
    # No two tower modules export the same name (the CLIP owner's registry merges the dicts).
    names = [name for m in MODULES for name in m.TOWER_FACTORIES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_feature_dim_and_output_shape(name):
    tower = FACTORIES[name]()
    size = 64 if "tiny" in name else (288 if name == "clip_rn50x4" else 224)
    x = jnp.zeros((2, size, size, 3))
    variables = jax.eval_shape(lambda: tower.init(jax.random.key(0), x, train=False))
    out = jax.eval_shape(lambda v: tower.apply(v, x, train=False), variables)
    assert out.shape == (2, tower.feature_dim)
    for leaf in jax.tree.leaves(variables):
        assert leaf.dtype == jnp.float32


def test_known_feature_dims():
    dims = {"resnet18": 512, "resnet26": 2048, "resnet50": 2048, "clip_rn50": 1024,
            "clip_rn101": 512, "clip_rn50x4": 640, "vit_ti16": 192, "vit_s16": 384,
            "vit_b32": 768, "vit_l16": 1024, "clip_vit_b32": 512, "volo_d1": 384,
            "vgg16_bn": 4096, "convnext_t": 768, "convnext_s": 768, "convnext_b": 1024,
            "deit_s16": 384, "deit_s16_distilled": 768, "deit_b16_distilled": 1536}  # fmt: skip
    for name, dim in dims.items():
        assert FACTORIES[name]().feature_dim == dim, name


def test_tiny_variants_are_small():
    for name in [n for n in FACTORIES if n.endswith("_tiny")]:
        variables = shapes(FACTORIES[name]())
        assert n_params(variables["params"]) < 500_000, name


def test_resnet26_is_timm_bottleneck_2222():
    tower = FACTORIES["resnet26"]()
    assert tower.stage_sizes == (2, 2, 2, 2) and tower.block == "bottleneck"


@pytest.mark.parametrize("name", ["resnet_tiny", "clip_rn_tiny"])
def test_batchnorm_train_and_eval(name):
    tower = FACTORIES[name]()
    variables, x = init(tower, size=32, batch=4)
    out, updates = apply(tower, variables, x, train=True)
    assert out.shape == (4, tower.feature_dim)
    # torch momentum 0.1 == flax momentum 0.9: running mean moves 10% towards the batch mean.
    stem_bn = "bn1"
    new_mean = updates["batch_stats"][stem_bn]["mean"]
    assert not np.allclose(new_mean, 0.0)
    _, updates2 = apply(tower, {**variables, "batch_stats": updates["batch_stats"]}, x, True)
    np.testing.assert_allclose(
        updates2["batch_stats"][stem_bn]["mean"], new_mean * 0.9 + new_mean, rtol=1e-4, atol=1e-6
    )
    # Eval mode is deterministic per example (no batch dependence).
    full = apply(tower, variables, x)
    first = apply(tower, variables, x[:1])
    np.testing.assert_allclose(full[:1], first, rtol=1e-5, atol=1e-5)


def test_batchnorm_uses_global_batch_under_sharding():
    """A batch sharded over 8 devices gives the same outputs and statistics as on one device."""
    tower = FACTORIES["resnet_tiny"]()
    variables, x = init(tower, size=32, batch=8)
    step = jax.jit(lambda v, x: tower.apply(v, x, train=True, mutable=["batch_stats"]))
    ref_out, ref_stats = step(variables, x)
    devices = np.array(jax.devices()[:8])
    if len(devices) < 2:
        pytest.skip("needs several devices (conftest sets 8 host CPU devices)")
    mesh = Mesh(devices, ("data",))
    xs = jax.device_put(x[: len(devices) * (8 // len(devices))], NamedSharding(mesh, P("data")))
    out, stats = step(variables, xs)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "block,last",
    [
        (resnet.BasicBlock, "bn2"),
        (resnet.Bottleneck, "bn3"),
        (functools.partial(resnet.Bottleneck, anti_alias=True, stride=2), "bn3"),  # CLIP's
    ],
)
def test_zero_init_last_bn(block, last):
    x = jnp.ones((1, 4, 4, 8))
    key = jax.random.key(0, impl="unsafe_rbg")
    on = block(planes=4, zero_init_last_bn=True).init(key, x, train=False)["params"]
    off = block(planes=4, zero_init_last_bn=False).init(key, x, train=False)["params"]
    assert np.all(on[last]["scale"] == 0) and np.all(off[last]["scale"] == 1)
    assert np.all(on["bn1"]["scale"] == 1)


def test_clip_resnet_defaults_to_zero_init_like_open_clip():
    assert FACTORIES["clip_rn50"]().zero_init_last_bn
    assert not FACTORIES["resnet50"]().zero_init_last_bn


def test_clip_resnet_layout():
    tower = FACTORIES["clip_rn_tiny"]()
    p = shapes(tower)["params"]
    assert {"conv1", "conv2", "conv3", "bn1", "bn2", "bn3", "attnpool"} <= set(p)
    # 64 px -> 2x2 final map -> 4 spatial tokens + the mean token.
    assert p["attnpool"]["pos_embed"].shape == (5, 8 * 32)
    assert p["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 32, 64)


def test_vit_pool_options():
    tok = vit.ViT(patch_size=8, width=32, depth=1, num_heads=2)
    gap = vit.ViT(patch_size=8, width=32, depth=1, num_heads=2, pool="gap", class_token=False)
    v_tok, x = init(tok)
    v_gap = shapes(gap)
    assert v_tok["params"]["pos_embed"].shape == (65, 32)
    assert v_gap["params"]["pos_embed"].shape == (64, 32) and "cls" not in v_gap["params"]
    assert jax.eval_shape(lambda v: gap.apply(v, x), v_gap).shape == (2, 32)
    with pytest.raises(ValueError, match="class_token"):
        shapes(vit.ViT(patch_size=8, width=32, depth=1, num_heads=2, class_token=False))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        shapes(tok, size=60)


def test_clip_vit_layout_has_ln_pre_and_projection():
    tower = vit.ViT(
        patch_size=8, width=64, depth=1, num_heads=1, proj_dim=16, **vit.CLIP_VIT_LAYOUT
    )
    variables, x = init(tower)
    p = variables["params"]
    assert "ln_pre" in p and p["proj"]["kernel"].shape == (64, 16)
    assert "bias" not in p["patch_embed"] and "bias" not in p["proj"]
    assert tower.feature_dim == 16 and apply(tower, variables, x).shape == (2, 16)


def test_vit_scan_and_remat_match_unscanned(fully_optimised_xla):
    kw = dict(patch_size=8, width=32, depth=3, num_heads=2)
    plain = vit.ViT(**kw)
    variables, x = init(plain)
    ref = apply(plain, variables, x)
    params = dict(variables["params"])
    params["encoder"] = layers.stack_blocks(params["encoder"], 3)
    scanned = vit.ViT(**kw, scan_layers=True)
    v_scan = shapes(scanned)
    assert jax.tree.map(jnp.shape, v_scan) == jax.tree.map(jnp.shape, {"params": params})
    np.testing.assert_allclose(apply(scanned, {"params": params}, x), ref, rtol=1e-5, atol=1e-5)
    rt = layers.unstack_blocks(params["encoder"])
    for a, b in zip(jax.tree.leaves(rt), jax.tree.leaves(variables["params"]["encoder"])):
        np.testing.assert_array_equal(a, b)

    def loss(p, model):
        return jnp.sum(model.apply({"params": p}, x) ** 2)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g_ref = grad(params, scanned)
    g = grad(params, vit.ViT(**kw, scan_layers=True, remat=True))
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    unscanned_remat = vit.ViT(**kw, remat=True)
    np.testing.assert_allclose(apply(unscanned_remat, variables, x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["resnet_tiny", "clip_rn_tiny", "vit_tiny", "volo_tiny", "vgg_tiny"]
)
def test_bf16_compute_fp32_params(name):
    f32 = FACTORIES[name]()
    bf16 = FACTORIES[name](dtype=jnp.bfloat16)
    variables, x = init(f32)
    ref = apply(f32, variables, x)
    v16 = shapes(bf16)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v16))
    out = apply(bf16, variables, x)
    assert out.dtype == jnp.bfloat16
    out = np.asarray(out, np.float32)
    assert np.all(np.isfinite(out))
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert rel < 0.05, rel


def test_activations():
    x = jnp.linspace(-3, 3, 7)
    # exact (erf) GELU like torch.nn.GELU(), not flax's tanh default
    np.testing.assert_allclose(
        layers.ACTIVATIONS["gelu"](x),
        0.5 * x * (1 + jax.scipy.special.erf(x / np.sqrt(2))),
        1e-5,
        1e-7,
    )
    np.testing.assert_allclose(layers.quick_gelu(x), x / (1 + np.exp(-1.702 * x)), 1e-5, 1e-7)
    with pytest.raises(ValueError, match="unknown activation"):
        layers.get_activation("swish")


def test_resnet_padding_matches_torch_geometry():
    # 64 px: stem conv s2 -> 32, maxpool -> 16, stages -> 16, 8, 4, 2 (torchvision's sizes).
    tower = FACTORIES["resnet_tiny"]()
    variables, x = init(tower)
    _, state = tower.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    shapes = [inter[f"layer{s}_0"]["__call__"][0].shape[1] for s in (1, 2, 3, 4)]
    assert shapes == [16, 8, 4, 2]


def test_resize_posemb():
    rng = np.random.default_rng(0)
    pe = rng.normal(size=(1 + 4, 8)).astype(np.float32)
    np.testing.assert_array_equal(posemb.resize_posemb(pe, 2, 1), pe)
    up = posemb.resize_posemb(pe, 4, 1)
    assert up.shape == (17, 8)
    np.testing.assert_array_equal(up[0], pe[0])  # the class token row is kept
    # A constant field stays constant, and a grid's mean is kept (bilinear, half-pixel centres).
    const = np.ones((9, 3), np.float32)
    np.testing.assert_allclose(posemb.resize_posemb(const, 5, 0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(up[1:].mean(0), pe[1:].mean(0), rtol=1e-5, atol=1e-6)
    assert posemb.split_prefix(65) == (1, 8) and posemb.split_prefix(64) == (0, 8)
    assert posemb.split_prefix(2 + 14 * 14) == (2, 14)  # DeiT: class and distillation tokens
    with pytest.raises(ValueError, match="square grid"):
        posemb.split_prefix(7)
    with pytest.raises(ValueError, match="unknown resize method"):
        posemb.resize_posemb(pe, 4, 1, method="nearest")


@pytest.mark.parametrize(
    "name,rows",
    [("vit_tiny", 1 + 12 * 12), ("deit_tiny", 2 + 12 * 12), ("clip_rn_tiny", 1 + 3 * 3)],
)
def test_resize_posembs_moves_a_tower_to_another_resolution(name, rows):
    tower = FACTORIES[name]()
    variables, _ = init(tower, size=64)
    template = shapes(tower, size=96)["params"]
    params = posemb.resize_posembs(variables["params"], template)
    pos = params["attnpool"]["pos_embed"] if name == "clip_rn_tiny" else params["pos_embed"]
    assert pos.shape[0] == rows
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, template)
    x96 = jnp.ones((1, 96, 96, 3))
    out = jax.eval_shape(lambda: tower.apply({**variables, "params": params}, x96))
    assert out.shape == (1, tower.feature_dim)


# --- VOLO
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,stride", [(8, 2), (7, 2)])
def test_volo_fold_is_the_adjoint_of_unfold(size, stride):
    """fold sums every window back at its place: <unfold(x), y> == <x, fold(y)> for all x, y,
    i.e. fold is unfold's transpose (what torch's F.fold is to F.unfold)."""
    shape = (size, size + 1)
    h, w = -(-size // stride), -(-(size + 1) // stride)  # ceil: stride-s windows with padding 1

    @jax.jit
    def check(x, y):
        windows, transpose = jax.vjp(lambda x: volo.unfold(x, 3, 1, stride), x)
        folded = volo.fold(y, shape, 3, 1, stride)
        return windows, folded, transpose(y)[0]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *shape, 3)).astype(np.float32)
    y = rng.normal(size=(2, h, w, 9, 3)).astype(np.float32)
    windows, folded, transpose = check(x, y)
    assert windows.shape == y.shape
    np.testing.assert_allclose(np.vdot(windows, y), np.vdot(x, folded), rtol=1e-5)
    np.testing.assert_allclose(folded, transpose, rtol=1e-5, atol=1e-6)


def test_volo_layout():
    p = shapes(FACTORIES["volo_tiny"](), size=64)["params"]
    assert {"conv1", "bn1", "conv3", "patch_embed", "outlooker_0", "downsample"} <= set(p)
    # 64 px: stem /2, patch conv /4 -> 8x8 outlooker map; downsample -> 4x4 = 16 tokens.
    assert p["pos_embed"].shape == (16, 64) and p["cls"].shape == (64,)
    assert p["outlooker_0"]["attn"]["attn"]["kernel"].shape == (32, 2 * 81)
    assert "bias" not in p["outlooker_0"]["attn"]["v"]
    assert "bias" not in p["encoder"]["block_0"]["attn"]["qkv"]  # timm: qkv_bias=False
    assert set(p["class_block_1"]["attn"]) == {"q", "kv", "proj"}
    with pytest.raises(ValueError, match="divisible by 16"):
        shapes(FACTORIES["volo_tiny"](), size=56)


def test_volo_tokens_batchnorm_and_scan():
    """`tokens` gives the class token (= the features) and the patch tokens; train mode updates
    the stem's BatchNorm statistics; the scanned encoder computes the same function."""
    plain, scanned = FACTORIES["volo_tiny"](), FACTORIES["volo_tiny"](scan_layers=True)
    variables, x = init(plain, size=32)
    stacked = dict(variables["params"])
    stacked["encoder"] = layers.stack_blocks(stacked["encoder"], plain.depth)

    @jax.jit
    def run(v):
        tokens = plain.apply(v, x, method="tokens")
        _, updates = plain.apply(v, x, train=True, mutable=["batch_stats"])
        return tokens, updates, plain.apply(v, x), scanned.apply({**v, "params": stacked}, x)

    (cls, tokens), updates, features, features_scanned = run(variables)
    assert cls.shape == (2, 64) and tokens.shape == (2, 4, 64)  # 32 px -> 2x2 tokens
    np.testing.assert_array_equal(features, cls)
    assert not np.allclose(updates["batch_stats"]["bn1"]["mean"], 0.0)
    np.testing.assert_allclose(features_scanned, features, rtol=1e-5, atol=1e-5)


# --- DeiT, VGG, ConvNeXt
# ------------------------------------------------------------------------------


def test_deit_distillation_token():
    """The distilled DeiT layout: a second prefix token after the class token, and the features
    are both tokens after the final norm, concatenated."""
    tower = FACTORIES["deit_tiny"]()
    variables, x = init(tower)
    p = variables["params"]
    assert p["dist"].shape == (64,) and p["pos_embed"].shape == (2 + 64, 64)
    out = apply(tower, variables, x)
    assert out.shape == (2, 128) == (2, tower.feature_dim)
    assert not np.allclose(out[:, :64], out[:, 64:])
    with pytest.raises(ValueError, match="dist_token"):
        shapes(vit.ViT(patch_size=8, width=32, depth=1, num_heads=2, dist_token=True, pool="gap"))


def test_vgg_layout_and_dropout():
    tower = FACTORIES["vgg_tiny"]()
    variables, x = init(tower)
    p = variables["params"]
    # torchvision's features indices: conv, BatchNorm, ReLU per convolution, one per pool.
    assert vgg.feature_indices(vgg.VGG16)[:4] == [0, 3, 6, 7]
    assert {"features_0", "features_1", "features_4", "features_8"} <= set(p)
    assert p["classifier_0"]["kernel"].shape == (2 * 2 * 32, 64)
    assert set(variables["batch_stats"]) == {"features_1", "features_5", "features_9"}
    step = jax.jit(
        lambda v, x, k: tower.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": k})
    )
    a, _ = step(variables, x, jax.random.key(0))
    b, _ = step(variables, x, jax.random.key(1))
    assert not np.allclose(a, b)  # dropout 0.5 in train mode
    assert np.mean(np.asarray(a) == 0) > 0.4  # ReLU then half the units dropped
    np.testing.assert_array_equal(apply(tower, variables, x), apply(tower, variables, x))


def test_vgg16_bn_at_224_pools_to_7x7():
    p = shapes(FACTORIES["vgg16_bn"](), size=224)["params"]
    assert p["classifier_0"]["kernel"].shape == (7 * 7 * 512, 4096)
    assert p["features_40"]["kernel"].shape == (3, 3, 512, 512)  # the 13th convolution


def test_convnext_layout():
    p = shapes(FACTORIES["convnext_tiny"]())["params"]
    assert p["stem_conv"]["kernel"].shape == (4, 4, 3, 16)
    assert "stages0_downsample_conv" not in p  # stage 0 keeps the stem's width and size
    assert p["stages1_downsample_conv"]["kernel"].shape == (2, 2, 16, 32)
    block = p["stages3_blocks0"]
    assert block["conv_dw"]["kernel"].shape == (7, 7, 1, 128)  # depthwise
    assert block["mlp"]["fc1"]["kernel"].shape == (128, 512)
    block = convnext.ConvNeXtBlock()
    gamma = block.init(jax.random.key(0), jnp.ones((1, 4, 4, 8)))["params"]["gamma"]
    np.testing.assert_allclose(gamma, np.full(8, 1e-6), rtol=1e-6)  # timm's layer-scale init


def test_adaptive_avg_pool_bins():
    """torch's AdaptiveAvgPool2d bins: floor(i*n/s) .. ceil((i+1)*n/s) (checked against torch in
    test_convert.py); identity when the map already has the output size."""
    x = jnp.arange(2 * 3 * 3 * 1, dtype=jnp.float32).reshape(2, 3, 3, 1)
    assert layers.adaptive_avg_pool(x, 3) is x
    up = layers.adaptive_avg_pool(x[:, :2, :2], 3)  # 2 -> 3: bins [0], [0, 1], [1]
    np.testing.assert_allclose(up[0, :, 0, 0], [0.0, 1.5, 3.0])
    down = layers.adaptive_avg_pool(x, 2)  # 3 -> 2: bins [0, 1], [1, 2]
    np.testing.assert_allclose(down[0, 0, 0, 0], np.mean([0, 1, 3, 4]))
