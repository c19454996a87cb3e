"""create_model / init_variables: names, wrappers, shapes, dtypes, logit scale, errors."""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus.models import CLIP, TOWERS, Classifier, create_model, image_tower_names, init_variables

TINY_TEXT = dict(width=32, layers=1, heads=2, context_length=8, vocab_size=64)
DESIGN_NAMES = [
    *(f"resnet{d}" for d in (18, 26, 34, 50, 101, 152)),
    "clip_rn50",
    "clip_rn101",
    "clip_rn50x4",
    *(f"vit_{s}" for s in ("ti16", "s16", "s32", "b16", "b32", "l16")),
    # The architectures the paper names (issue 12).
    "vgg16_bn",
    *(f"convnext_{s}" for s in ("t", "s", "b")),
    *(f"deit_{s}16{d}" for s in ("s", "b") for d in ("", "_distilled")),
    "resnet_tiny",
    "clip_rn_tiny",
    "vit_tiny",
    "vgg_tiny",
    "convnext_tiny",
    "deit_tiny",
]
# Parameter counts of the CE models (tower + 1000-way head) against the PyTorch references that
# define them, instantiated in the test (never from memory). timm's distilled DeiTs have two
# heads (`head`, `head_dist`); janus has one head over both tokens' features, so one bias fewer.
REFERENCES = [
    ("vgg16_bn", "torchvision", "vgg16_bn", 0),
    ("convnext_t", "timm", "convnext_tiny", 0),
    ("convnext_s", "timm", "convnext_small", 0),
    ("convnext_b", "timm", "convnext_base", 0),
    ("deit_s16", "timm", "deit_small_patch16_224", 0),
    ("deit_b16", "timm", "deit_base_patch16_224", 0),
    ("deit_s16_distilled", "timm", "deit_small_distilled_patch16_224", 1000),
    ("deit_b16_distilled", "timm", "deit_base_distilled_patch16_224", 1000),
]
VOLO_NAMES = ["volo_d1", "volo_tiny"]


def fast_key(seed):
    """rbg keys: XLA compiles threefry initialisers for every parameter ~3-5x slower on a 2-core
    CPU than the tiny models themselves; the tests only need some initialisation."""
    return jax.random.key(seed, impl="unsafe_rbg")


def _tokens(b=4, n=8, vocab=64, seed=0):
    t = np.random.default_rng(seed).integers(1, vocab - 1, size=(b, n)).astype(np.int32)
    t[:, -2] = vocab - 1  # EOT
    return t


def _images(b=4, size=32, seed=0):
    return np.random.default_rng(seed).normal(size=(b, size, size, 3)).astype(np.float32)


def test_all_design_names_registered():
    assert set(DESIGN_NAMES + VOLO_NAMES) <= set(image_tower_names())
    assert image_tower_names() == sorted(TOWERS)


@pytest.mark.parametrize("name", DESIGN_NAMES + VOLO_NAMES)
def test_every_tower_builds_for_both_objectives(name):
    ce = create_model(name, "ce")
    vl = create_model(name, "infonce")
    assert isinstance(ce, Classifier) and ce.num_classes == 1000
    assert isinstance(vl, CLIP)
    assert vl.image_tower.feature_dim > 0
    # clip_* towers end in CLIP's own projection; others get one to 512.
    assert vl.project_image == (not name.startswith("clip_"))
    assert vl.text_tower.output_dim == vl.embed_dim


@pytest.mark.parametrize("name,library,ref_name,fewer", REFERENCES)
def test_parameter_counts_match_references(name, library, ref_name, fewer):
    torch = pytest.importorskip("torch", reason="the references need the torch extra")
    lib = pytest.importorskip(library, reason=f"the reference needs {library} (torch extra)")
    with torch.device("meta"):  # shapes only
        ref = (
            lib.models.__dict__[ref_name]()
            if library == "torchvision"
            else lib.create_model(ref_name, pretrained=False)
        )
    want = sum(p.numel() for p in ref.parameters()) - fewer
    model = create_model(name, "ce")
    shapes = jax.eval_shape(lambda: init_variables(model, 0, 224))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == want


@pytest.mark.parametrize("name", ["vgg_tiny", "convnext_tiny", "deit_tiny"])
def test_new_towers_train_with_both_objectives(name):
    """One training-mode forward of each paper architecture (test size) with the CE head and as
    the image tower of a CLIP two-tower model (projection to embed_dim)."""
    x, t = _images(size=32), _tokens()
    ce = create_model(name, "ce", num_classes=10)
    vl = create_model(name, "infonce", text=TINY_TEXT, embed_dim=32)

    @jax.jit  # one compile for both inits and both forwards
    def run(key):
        v_ce = init_variables(ce, key, 32)
        v_vl = init_variables(vl, key, 32, context_length=8)
        train = dict(train=True, mutable=["batch_stats"], rngs={"dropout": key})
        projection = v_vl["params"]["image_projection"]["kernel"]
        return ce.apply(v_ce, x, **train)[0], vl.apply(v_vl, x, t, **train)[0], projection

    logits, out, projection = run(fast_key(0))
    assert projection.shape == (vl.image_tower.feature_dim, 32)
    assert logits.shape == (4, 10) and np.all(np.isfinite(logits))
    assert out["image_emb"].shape == out["text_emb"].shape == (4, 32)
    np.testing.assert_allclose(jnp.linalg.norm(out["image_emb"], axis=-1), 1.0, rtol=1e-5)


def test_clip_rn50_matches_openai_layout_without_init():
    vl = create_model("clip_rn50", "infonce")
    assert vl.embed_dim == 1024 and vl.text_tower.width == 512 and vl.text_tower.heads == 8
    assert vl.text_tower.activation == "quick_gelu"
    x4 = create_model("clip_rn50x4", "infonce")
    assert (x4.embed_dim, x4.text_tower.width, x4.text_tower.heads) == (640, 640, 10)
    shapes = jax.eval_shape(
        lambda: create_model("clip_rn50", "siglip").text_tower.init(
            jax.random.key(0), jnp.zeros((1, 77), jnp.int32)
        )
    )
    assert shapes["params"]["text_projection"].shape == (512, 1024)


@pytest.fixture(scope="module")
def ce_model():
    model = create_model("resnet_tiny", "ce", num_classes=10)
    return model, init_variables(model, fast_key(0), 16)


def test_classifier_shapes(ce_model):
    model, variables = ce_model
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["params"]) == {"image_tower", "head"}
    x = _images(size=16)

    @jax.jit
    def run(variables):
        return (
            model.apply(variables, x),
            model.apply(variables, x, method="image_features"),
            model.apply(variables, x, train=True, mutable=["batch_stats"]),
        )

    logits, feats, (logits_t, updates) = run(variables)
    assert logits.shape == (4, 10) and logits.dtype == jnp.float32
    assert feats.shape == (4, model.image_tower.feature_dim) and feats.dtype == jnp.float32
    assert logits_t.shape == (4, 10) and "batch_stats" in updates
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))


def test_bf16_compute_keeps_fp32_params_and_outputs(ce_model):
    model, variables = ce_model
    bf = create_model("resnet_tiny", "ce", num_classes=10, dtype="bfloat16")
    shapes = jax.eval_shape(lambda: init_variables(bf, jax.random.key(0), 16))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes))
    x = _images(size=16)
    out16 = jax.jit(bf.apply)(variables, x)
    out32 = jax.jit(model.apply)(variables, x)
    assert out16.dtype == jnp.float32
    scale = float(jnp.abs(out32).max())
    np.testing.assert_allclose(out16, out32, atol=0.05 * scale + 1e-3)


@pytest.mark.parametrize(
    "name,loss,size",
    [("clip_rn_tiny", "infonce", 32), ("vit_tiny", "siglip", 16), ("volo_tiny", "infonce", 32)],
)
def test_clip_outputs(name, loss, size):
    model = create_model(name, loss, text=TINY_TEXT)
    variables = init_variables(model, fast_key(0), size, context_length=8)
    params = variables["params"]
    assert {"image_tower", "text_tower", "logit_scale"} <= set(params)
    assert ("image_projection" in params) == (not name.startswith("clip_"))
    x, t = _images(size=size), _tokens()
    hot = {**variables, "params": {**params, "logit_scale": jnp.float32(math.log(1e4))}}

    @jax.jit  # one compile for every entry point (eager apply of a real tower is slow)
    def run(variables, hot):
        return (
            model.apply(variables, x, t),
            model.apply(variables, x, method="encode_image"),
            model.apply(variables, t, method="encode_text"),
            model.apply(variables, x, method="image_features"),
            model.apply(hot, x, t)["logit_scale"],
        )

    out, enc_img, enc_txt, feats, hot_scale = run(variables, hot)
    d = model.embed_dim
    assert out["image_emb"].shape == (4, d) and out["text_emb"].shape == (4, d)
    for k in ("image_emb", "text_emb"):
        assert out[k].dtype == jnp.float32
        np.testing.assert_allclose(jnp.linalg.norm(out[k], axis=-1), 1.0, rtol=1e-5)
    if loss == "infonce":
        np.testing.assert_allclose(params["logit_scale"], math.log(1 / 0.07), rtol=1e-6)
        np.testing.assert_allclose(out["logit_scale"], 1 / 0.07, rtol=1e-5)
        assert "logit_bias" not in out
    else:
        np.testing.assert_allclose(out["logit_scale"], 10.0, rtol=1e-5)
        np.testing.assert_allclose(out["logit_bias"], -10.0)
    np.testing.assert_allclose(enc_img, out["image_emb"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(enc_txt, out["text_emb"], rtol=1e-5, atol=1e-6)
    assert feats.shape == (4, model.image_tower.feature_dim)
    assert float(hot_scale) == pytest.approx(100.0)  # the temperature is clamped at 100


def n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_volo_d1_parameter_counts_match_timm():
    """volo_d1 as a CE model (head + token-labelling aux head), as a bare tower (the CLIP image
    tower) and without the aux head has timm volo_d1_224's parameter counts (shapes only)."""
    torch = pytest.importorskip("torch", reason="the timm reference needs the torch extra")
    timm = pytest.importorskip("timm", reason="needs timm (torch extra)")

    def timm_count(**kw):
        with torch.device("meta"):
            ref = timm.create_model("volo_d1_224", pretrained=False, **kw)
        return sum(p.numel() for p in ref.parameters())

    def janus_count(model):
        return n_params(jax.eval_shape(lambda: init_variables(model, 0, 224))["params"])

    ce = create_model("volo_d1", "ce")
    assert janus_count(ce) == timm_count() == 26_632_040  # timm: "Params: 27M"
    assert janus_count(create_model("volo_d1", "ce", aux_head_scale=0.0)) == timm_count(
        use_aux_head=False
    )
    vl = create_model("volo_d1", "infonce")
    images = jnp.zeros((1, 224, 224, 3))
    tower = jax.eval_shape(lambda: vl.image_tower.init(jax.random.key(0), images))
    assert n_params(tower["params"]) == timm_count(num_classes=0)
    assert vl.project_image and vl.image_tower.feature_dim == 384


def test_volo_classifier_adds_the_aux_head_like_timm():
    """CE logits = head(class token) + 0.5 * max over patch tokens of aux_head(token)."""
    model = create_model("volo_tiny", "ce", num_classes=10)
    variables = init_variables(model, fast_key(0), 32)
    assert set(variables["params"]) == {"image_tower", "head", "aux_head"}
    x = _images(size=32)

    @jax.jit
    def run(variables):
        cls, tokens = model.image_tower.apply(
            {"params": variables["params"]["image_tower"],
             "batch_stats": variables["batch_stats"]["image_tower"]},
            x, method="tokens",
        )  # fmt: skip
        return model.apply(variables, x), cls, tokens

    logits, cls, tokens = run(variables)
    dense = lambda p, v: v @ p["kernel"] + p["bias"]
    want = dense(variables["params"]["head"], cls)
    want += 0.5 * dense(variables["params"]["aux_head"], tokens).max(axis=1)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    plain = create_model("volo_tiny", "ce", num_classes=10, aux_head_scale=0.0)
    assert "aux_head" not in jax.eval_shape(lambda: init_variables(plain, 0, 32))["params"]


def test_errors():
    with pytest.raises(ValueError, match="unknown image tower 'resnet7'"):
        create_model("resnet7", "ce")
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        create_model("resnet_tiny", "mse")
    with pytest.raises(ValueError, match=r"unknown model.text keys \['depth'\]"):
        create_model("resnet_tiny", "infonce", text={"depth": 3})
    with pytest.raises(ValueError, match="embed_dim=256"):
        create_model("clip_rn50", "infonce", embed_dim=256)
    with pytest.raises(ValueError, match="bad kwargs"):
        create_model("resnet_tiny", "ce", no_such_field=1)
    with pytest.raises(ValueError, match="unknown model dtype"):
        create_model("resnet_tiny", "ce", dtype="float8")
    assert create_model("resnet_tiny", "infonce", embed_dim=64).embed_dim == 64


def test_models_never_import_data():
    code = (
        "import sys, janus.models, janus.losses, janus.sharding; "
        "bad = [m for m in sys.modules if m.startswith('janus.data') or m == 'tensorflow']; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
