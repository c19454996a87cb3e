"""Weight import: parameter counts against the PyTorch references, numerical parity of converted
randomly-initialised torchvision / timm / open_clip models, safe loading, and the checkpoint round
trip.

Needs torch (the ``torch`` extra); skipped with a reason where it is absent. Parity inputs are batch
2 at 64 px (the real CLIP ViT-B/32 count check is shape-only).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="weight conversion/parity tests need the torch extra")
torchvision = pytest.importorskip("torchvision", reason="needs torchvision (torch extra)")
timm = pytest.importorskip("timm", reason="needs timm (torch extra)")
open_clip = pytest.importorskip("open_clip", reason="needs open_clip_torch (torch extra)")

from janus.convert import KeyMismatchError, convert_file, convert_state_dict  # noqa: E402
from janus.convert.__main__ import main as convert_main  # noqa: E402
from janus.convert.assemble import at_resolution, build_checked, clip_eval_pp  # noqa: E402
from janus.convert.loading import load_state_dict  # noqa: E402
from janus.models import create_model  # noqa: E402
from janus.models import registry as model_registry  # noqa: E402

pytestmark = pytest.mark.torch
RTOL = 1e-4


def n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def torch_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def janus_count(name, loss, size=224, **kw) -> int:
    model = create_model(name, loss, **kw)
    v = jax.eval_shape(lambda: model_registry.init_variables(model, 0, size))
    return n_params(v["params"])


def state_dict(module, copy: bool = True) -> dict:
    """NumPy copies of the tensors (`copy=False`: views sharing the torch model's memory)."""
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    return {k: v.copy() for k, v in sd.items()} if copy else sd


def randomize_bn(module):
    """Non-trivial BatchNorm statistics, so parity exercises the running mean/var mapping."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g) * 0.2 + 1)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module.eval()


def images(size=64, batch=2):
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    return x, jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def assert_close(got, want, rtol=RTOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < rtol, f"max relative error {err:.2e} >= {rtol}"


def run_classifier(converted, x):
    model, variables = build_checked(converted)
    return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)


# --- parameter counts (references instantiated here, never from memory)
# ----------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_counts_torchvision_resnets(arch):
    with torch.device("meta"):  # shapes only
        ref = getattr(torchvision.models, arch)()
    assert janus_count(arch, "ce") == torch_count(ref), arch
    if arch == "resnet50":
        assert torch_count(ref) == 25_557_032  # the figure


TIMM_NAMES = [
    ("vit_tiny_patch16_224", "vit_ti16"),
    ("vit_small_patch16_224", "vit_s16"),
    ("vit_small_patch32_224", "vit_s32"),
    ("vit_base_patch16_224", "vit_b16"),
    ("vit_base_patch32_224", "vit_b32"),
    ("vit_large_patch16_224", "vit_l16"),
    ("resnet26", "resnet26"),
]


@pytest.mark.parametrize("timm_name,name", TIMM_NAMES)
def test_counts_timm(timm_name, name):
    with torch.device("meta"):
        ref = timm.create_model(timm_name, pretrained=False)
    assert janus_count(name, "ce") == torch_count(ref), name


def meta_open_clip(oc_name):
    """An open_clip model with shapes only (no memory, no init time)."""
    with torch.device("meta"):
        return open_clip.create_model(oc_name, pretrained=None, device="meta")


def zero_state_dict(module) -> dict:
    """Zero-stride arrays of the module's shapes: a full-size state dict without the memory."""
    zero = np.zeros((), np.float32)
    return {k: np.broadcast_to(zero, tuple(v.shape)) for k, v in module.state_dict().items()}


OPEN_CLIP_LAYOUTS = [
    ("RN50", "clip_rn50", 224),
    ("RN101", "clip_rn101", 224),
    ("RN50x4", "clip_rn50x4", 288),
    ("ViT-B-32", "clip_vit_b32", 224),
    ("ViT-B-16", "clip_vit_b16", 224),
]


@pytest.mark.parametrize("oc_name,name,size", OPEN_CLIP_LAYOUTS)
def test_counts_and_layout_open_clip(oc_name, name, size):
    """Registry widths equal open_clip's configs: parameter counts (tower and whole CLIP) and the
    full-size state dict converting onto the registry model with every key used."""
    ref = meta_open_clip(oc_name)
    tower = model_registry.build_tower(name)
    x = jnp.zeros((1, size, size, 3))
    v = jax.eval_shape(lambda: tower.init(jax.random.key(0), x))
    assert n_params(v["params"]) == torch_count(ref.visual), oc_name
    assert janus_count(name, "infonce", size) == torch_count(ref), oc_name
    converted = convert_state_dict("open_clip", zero_state_dict(ref))
    assert (converted.name, converted.tower_kwargs, converted.image_size) == (name, {}, size)
    build_checked(converted)  # every leaf's shape checked against create_model's


# --- parity
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_parity_torchvision_resnet(arch):
    ref = randomize_bn(getattr(torchvision.models, arch)())
    x, xj = images()
    converted = convert_state_dict("torchvision", state_dict(ref))
    assert converted.name == arch and converted.loss == "ce"
    with torch.no_grad():
        want = ref(x).numpy()
    assert_close(run_classifier(converted, xj), want)


def test_parity_timm_resnet26():
    ref = randomize_bn(timm.create_model("resnet26", pretrained=False, num_classes=10))
    x, xj = images()
    converted = convert_state_dict("timm", state_dict(ref))
    assert converted.name == "resnet26"
    with torch.no_grad():
        want = ref(x).numpy()
    assert_close(run_classifier(converted, xj), want)


@pytest.mark.parametrize(
    "kwargs,scan",
    [
        (dict(), False),
        (dict(), True),
        (dict(global_pool="avg", class_token=False), False),
        (dict(global_pool="avg"), False),
    ],
)
def test_parity_timm_vit(kwargs, scan):
    ref = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=64, depth=2, num_classes=10, **kwargs
    ).eval()
    x, xj = images()
    converted = convert_state_dict("timm", state_dict(ref), num_heads=3, scan_layers=scan)
    assert converted.image_size == 64
    with torch.no_grad():
        want = ref(x).numpy()
    assert_close(run_classifier(converted, xj), want)


def test_parity_timm_vit_registry_size():
    """A registry-size ViT (vit_ti16) converts without num_heads, at 64 px."""
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    x, xj = images()
    converted = convert_state_dict("timm", state_dict(ref))
    assert converted.name == "vit_ti16" and converted.tower_kwargs == {}
    with torch.no_grad():
        want = ref(x).numpy()
    assert_close(run_classifier(converted, xj), want)


def test_volo_unfold_and_fold_match_torch():
    """janus.models.volo's unfold / fold equal torch's F.unfold / F.fold (kernel 3, padding 1,
    stride 2, as outlook attention uses them), on an even and an odd map."""
    from janus.models.volo import fold, unfold

    for h, w in [(8, 8), (7, 5)]:
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        cols = torch.nn.functional.unfold(x, 3, padding=1, stride=2)  # [B, C*9, L]
        ours = unfold(jnp.asarray(x.permute(0, 2, 3, 1).numpy()), 3, 1, 2)  # [B, h, w, 9, C]
        b, oh, ow, kk, c = ours.shape
        want = cols.reshape(b, c, kk, oh, ow).permute(0, 3, 4, 2, 1).numpy()
        np.testing.assert_array_equal(np.asarray(ours), want)
        back = torch.nn.functional.fold(cols, (h, w), 3, padding=1, stride=2)
        got = fold(ours, (h, w), 3, 1, 2)
        np.testing.assert_allclose(got, back.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)


def test_parity_timm_volo_d1():
    """timm volo_d1_224 (random weights, eval mode, at 64 px) converts to the volo_d1 registry
    tower, scanned, and its default forward (class head + 0.5 * max of the aux head) matches."""
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model("volo_d1_224", pretrained=False, img_size=64))
    x, xj = images()
    converted = convert_state_dict("timm", state_dict(ref), scan_layers=True)
    assert converted.name == "volo_d1" and converted.tower_kwargs == {"scan_layers": True}
    assert converted.image_size == 64 and converted.aux_head is not None
    with torch.no_grad():
        want = ref(x).numpy()
    assert_close(run_classifier(converted, xj), want)


def test_parity_timm_volo_small_without_aux_head():
    """A non-registry VOLO (three transformer stages, no aux head) converts with num_heads onto
    volo_tiny's kwargs, unscanned, and matches; --image-size then moves it to 96 px."""
    from timm.models.volo import VOLO

    torch.manual_seed(0)
    ref = VOLO(
        layers=(1, 1, 2, 1), img_size=32, embed_dims=(32, 64, 64, 64), num_heads=(2, 4, 4, 4),
        stem_hidden_dim=16, use_aux_head=False, num_classes=10,
    )  # fmt: skip
    ref = randomize_bn(ref)
    sd = state_dict(ref)
    with pytest.raises(ValueError, match="pass num_heads"):
        convert_state_dict("timm", sd)
    converted = convert_state_dict("timm", sd, num_heads=4)
    assert converted.name == "volo_tiny" and converted.aux_head is None
    assert converted.tower_kwargs == {"depth": 4, "num_heads": 4, "aux_head_scale": 0.0}
    x, xj = images(size=32)
    with torch.no_grad():
        want = ref(x).numpy()
    assert_close(run_classifier(converted, xj), want)
    moved = at_resolution(converted, 96)
    assert moved.tower["params"]["pos_embed"].shape == (36, 64)
    build_checked(moved)


def small_open_clip(vision: str, activation: str = "quick_gelu"):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    if vision == "resnet":  # = the clip_rn_tiny registry tower
        vcfg = CLIPVisionCfg(layers=[1, 1, 1, 1], width=8, image_size=64)
        embed = 64
    else:  # a 2-block, 128-wide CLIP ViT (2 heads of 64) on 16 px patches
        vcfg = CLIPVisionCfg(layers=2, width=128, patch_size=16, image_size=64)
        embed = 32
    tcfg = CLIPTextCfg(context_length=77, vocab_size=1000, width=128, heads=2, layers=2)
    torch.manual_seed(0)
    ref = CLIP(embed, vcfg, tcfg, quick_gelu=activation == "quick_gelu")
    with torch.no_grad():
        ref.logit_scale.fill_(2.5)
    return randomize_bn(ref)


def tokens(batch=2, vocab=1000):
    rng = np.random.default_rng(0)
    t = np.zeros((batch, 77), np.int64)
    for i, n in enumerate([5, 12][:batch]):
        t[i, : n - 1] = rng.integers(1, vocab - 2, n - 1)
        t[i, n - 1] = vocab - 1  # EOT: the highest id, found by argmax
    return t


def assert_clip_parity(ref, converted, size=64):
    """Converted CLIP vs the open_clip reference on the same images and tokens."""
    x, xj = images(size=size)
    tok = tokens(vocab=ref.vocab_size)
    with torch.no_grad():
        img, txt, scale = ref(x, torch.from_numpy(tok))
    model, variables = build_checked(converted)
    out = jax.jit(lambda v, x, t: model.apply(v, x, t, train=False))(
        variables, xj, jnp.asarray(tok)
    )
    assert_close(out["image_emb"], img.numpy())
    assert_close(out["text_emb"], txt.numpy())
    np.testing.assert_allclose(float(out["logit_scale"]), float(scale), rtol=1e-6)


@pytest.mark.parametrize("vision,activation", [("resnet", "quick_gelu"), ("vit", "gelu")])
def test_parity_open_clip(vision, activation):
    ref = small_open_clip(vision, activation)
    converted = convert_state_dict("open_clip", state_dict(ref), activation=activation)
    assert converted.loss == "infonce"
    assert_clip_parity(ref, converted)


def randomize_params(module, names=("gamma", "bias")):
    """Non-trivial layer scales and biases (timm initialises ConvNeXt's gamma to 1e-6 and biases
    to 0, which would hide a wrong mapping of the residual branch)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.rsplit(".", 1)[-1] in names:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module.eval()


def assert_parity(ref, family, name, size=64, **convert_kw):
    """Reference logits vs the converted janus classifier's, from views of the torch model's
    tensors rather than copies (VGG-16 is 138M parameters)."""
    x, xj = images(size=size)
    with torch.no_grad():
        want = ref(x).numpy()
    converted = convert_state_dict(family, state_dict(ref, copy=False), **convert_kw)
    del ref  # the converted arrays still hold its memory, but not twice
    assert converted.name == name and converted.loss == "ce"
    assert_close(run_classifier(converted, xj), want)


def test_parity_torchvision_vgg16_bn():
    """The full VGG-16-BN at 64 px: 2x2 maps before torch's AdaptiveAvgPool2d(7), so the pool
    repeats cells and fc6's (C, H, W) -> (H, W, C) row permutation is exercised."""
    ref = randomize_bn(randomize_params(torchvision.models.vgg16_bn(), names=("bias",)))
    assert_parity(ref, "torchvision", "vgg16_bn")


def test_parity_timm_convnext_t():
    ref = randomize_params(timm.create_model("convnext_tiny", pretrained=False))
    assert_parity(ref, "timm", "convnext_t")


def test_parity_timm_deit_s16_distilled():
    """DeiT-S distilled (scanned, 64 px): timm's inference output is the mean of its two heads."""
    ref = timm.create_model("deit_small_distilled_patch16_224", pretrained=False, img_size=64)
    ref = randomize_params(ref, names=("bias",))
    assert_parity(ref, "timm", "deit_s16_distilled", scan_layers=True)


@pytest.mark.parametrize("size", [7, 10, 13])
def test_adaptive_avg_pool_matches_torch(size):
    from janus.models.layers import adaptive_avg_pool

    x = torch.randn(2, 4, size, size + 2, generator=torch.Generator().manual_seed(0))
    want = torch.nn.AdaptiveAvgPool2d(7)(x).permute(0, 2, 3, 1).numpy()
    got = adaptive_avg_pool(jnp.asarray(x.permute(0, 2, 3, 1).numpy()), 7)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "timm_name,name",
    [
        ("convnext_base", "convnext_b"),  # convnext_s: ConvNeXt-T's widths, ConvNeXt-B's depths
        ("deit_small_patch16_224", "vit_s16"),  # the same module as deit_s16
        ("deit_base_distilled_patch16_224", "deit_b16_distilled"),
    ],
)
def test_layout_timm_large(timm_name, name):
    """Full-size timm state dicts (shapes only) convert onto the registry tower with every key
    used and every leaf's shape checked against create_model's."""
    with torch.device("meta"):
        ref = timm.create_model(timm_name, pretrained=False)
    converted = convert_state_dict("timm", zero_state_dict(ref))
    assert (converted.name, converted.tower_kwargs, converted.image_size) == (name, {}, 224)
    build_checked(converted)


def test_unsupported_vgg_and_convnext_are_named():
    with torch.device("meta"):
        plain_vgg = torchvision.models.vgg16()  # no BatchNorm: other features indices
        small = timm.create_model("convnext_atto", pretrained=False)
    with pytest.raises(ValueError, match="not a janus VGG.*without BatchNorm"):
        convert_state_dict("torchvision", zero_state_dict(plain_vgg))
    with pytest.raises(ValueError, match=r"ConvNeXt with depths \(2, 2, 6, 2\)"):
        convert_state_dict("timm", zero_state_dict(small))


# --- safe loading, errors, checkpoint round trip
# -----------------------------------------------------


def test_load_formats_and_prefixes(tmp_path):
    from safetensors.numpy import save_file

    sd = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    np.testing.assert_array_equal(
        load_state_dict(tmp_path / "w.safetensors")["a.weight"], sd["a.weight"]
    )
    torch.save(
        {"state_dict": {"module.a.weight": torch.ones(2, dtype=torch.bfloat16)}}, tmp_path / "w.pt"
    )
    loaded = load_state_dict(tmp_path / "w.pt")
    assert list(loaded) == ["a.weight"] and loaded["a.weight"].dtype == np.float32
    with pytest.raises(ValueError, match="unknown weights format"):
        (tmp_path / "w.npz").write_bytes(b"")
        load_state_dict(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "nope.pt")


class Evil:  # unpickling this would run code; weights_only loading must refuse it
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"w": torch.ones(1), "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_state_dict(tmp_path / "evil.pt")


def test_key_mismatch_lists_keys():
    sd = state_dict(torchvision.models.resnet18())
    del sd["layer2.0.conv1.weight"]
    sd["extra.thing"] = np.zeros(1, np.float32)
    with pytest.raises(KeyMismatchError) as e:
        convert_state_dict("torchvision", sd)
    assert "layer2.0.conv1.weight" in str(e.value) and "extra.thing" in str(e.value)
    assert e.value.missing == ["layer2.0.conv1.weight"] and e.value.unexpected == ["extra.thing"]
    with pytest.raises(ValueError, match="not a torchvision-layout ResNet"):
        convert_state_dict("torchvision", {"x": np.zeros(1)})
    with pytest.raises(ValueError, match="unknown weights family"):
        convert_state_dict("keras", sd)


@pytest.mark.slow
def test_parity_open_clip_vit_b16_layout():
    """open_clip's ViT-B/16 image tower (12 blocks of 768, 16 px patches; at 64 px to stay fast)
    with a small text tower converts to the clip_vit_b16 registry tower, scanned, and matches."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    vcfg = CLIPVisionCfg(layers=12, width=768, patch_size=16, image_size=64)
    tcfg = CLIPTextCfg(context_length=77, vocab_size=1000, width=64, heads=1, layers=1)
    ref = CLIP(512, vcfg, tcfg, quick_gelu=True).eval()
    converted = convert_state_dict("open_clip", state_dict(ref), scan_layers=True)
    assert converted.name == "clip_vit_b16" and converted.tower_kwargs == {"scan_layers": True}
    assert_clip_parity(ref, converted)


def test_convert_at_another_resolution_matches_timm_resampling():
    """--image-size: position embeddings interpolated like timm's resample_abs_pos_embed."""
    from timm.layers import resample_abs_pos_embed

    kw = dict(pretrained=False, depth=1, num_classes=10)
    ref32 = timm.create_model("vit_tiny_patch16_224", img_size=32, **kw).eval()
    ref64 = timm.create_model("vit_tiny_patch16_224", img_size=64, **kw).eval()
    sd = ref32.state_dict()
    sd["pos_embed"] = resample_abs_pos_embed(
        sd["pos_embed"], (4, 4), num_prefix_tokens=1, interpolation="bilinear", antialias=False
    )
    ref64.load_state_dict(sd)
    converted = convert_state_dict("timm", state_dict(ref32), num_heads=3)
    assert converted.image_size == 32
    converted = at_resolution(converted, 64)
    assert converted.image_size == 64
    x, xj = images(size=64)
    with torch.no_grad():
        want = ref64(x).numpy()
    assert_close(run_classifier(converted, xj), want)


@pytest.mark.slow
def test_cli_checkpoint_round_trip(tmp_path):
    from safetensors.torch import save_file

    from janus.checkpoint import load_for_inference

    ref = small_open_clip("resnet")
    weights = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(weights))
    run = str(tmp_path / "run")
    assert convert_main(["open_clip", str(weights), "--workdir", run, "--image-size", "96"]) == 0
    config, variables, step = load_for_inference(tmp_path / "run")
    assert config["input"]["resolution"] == 96
    # Zero-shot evaluation defaults to CLIP's own preprocessing, recorded in the config.
    assert config["input"]["eval_pp"] == clip_eval_pp(96)
    assert "BICUBIC" in config["input"]["eval_pp_source"]
    assert step == 0 and config["loss"] == "infonce" and config["label_set"] == "in1000"
    assert config["model"]["name"] == "clip_rn_tiny" and config["model"]["dtype"] == "float32"
    assert config["model"]["text"]["vocab_size"] == 1000
    m = dict(config["model"])
    model = create_model(
        m.pop("name"), config["loss"], dtype=m.pop("dtype"), text=m.pop("text"), **m
    )
    # The reference at 96 px: its attention-pool position embedding (2x2 grid + mean token)
    # resized to 3x3 with torch's bilinear interpolation.
    pos = ref.visual.attnpool.positional_embedding.data
    grid = pos[1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(3, 3), mode="bilinear", align_corners=False)
    resized = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(9, -1)])
    ref.visual.attnpool.positional_embedding = torch.nn.Parameter(resized)
    x, xj = images(size=96)
    tok = tokens()
    out = jax.jit(lambda v, x, t: model.apply(v, x, t, train=False))(
        variables, xj, jnp.asarray(tok)
    )
    with torch.no_grad():
        img, txt, _ = ref(x, torch.from_numpy(tok))
    assert_close(out["image_emb"], img.numpy())
    assert_close(out["text_emb"], txt.numpy())
    # The same file through convert_file gives the same tree.
    assert convert_file("open_clip", weights).name == "clip_rn_tiny"


@pytest.mark.slow
@pytest.mark.parametrize(
    "oc_name,name", [("RN50-quickgelu", "clip_rn50"), ("ViT-B-32-quickgelu", "clip_vit_b32")]
)
def test_parity_open_clip_full_size(oc_name, name):
    """The real OpenAI layouts (registry names, 224 px, batch 2) give matching embeddings."""
    torch.manual_seed(0)
    ref = randomize_bn(open_clip.create_model(oc_name, pretrained=None))
    converted = convert_state_dict("open_clip", state_dict(ref))
    assert converted.name == name and converted.tower_kwargs == {}
    assert_clip_parity(ref, converted, size=224)


def test_clip_eval_pp_matches_open_clips_preprocess():
    """The chain recorded for converted open_clip checkpoints reproduces open_clip's eval
    transform for OpenAI weights (bicubic short-side resize, centre crop, CLIP mean/std)."""
    import io

    from PIL import Image

    from janus.data.input.pixel_scaling import scale_pixels
    from janus.data.input.preprocess import build_pp

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    pp = build_pp(clip_eval_pp(224))
    ours = scale_pixels(pp({"image/encoded": buf.getvalue()}, rng)["image"], pp.scaling)
    ref = open_clip.image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN,
                                    std=open_clip.OPENAI_DATASET_STD)(image)  # fmt: skip
    ref = ref.permute(1, 2, 0).numpy()
    assert ours.shape == ref.shape == (224, 224, 3)
    # PIL's bicubic in both; the only difference is uint8 rounding on the way.
    assert np.abs(ours - ref).mean() < 0.02
