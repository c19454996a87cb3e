"""randaug and erase: timm's pixels for the same draws, determinism, bad arguments, workers."""

import pathlib
import pickle
import re
import types

import numpy as np
import pytest
from PIL import Image

from janus.data.input import erasing, pipeline, pixel_scaling, randaugment
from janus.data.input.preprocess import build_pp

_BICUBIC = Image.Resampling.BICUBIC
_NEEDS_TIMM = "timm (the torch extra) is not installed: the parity tests with timm are skipped"


def _photo(h=29, w=37, seed=0) -> Image.Image:
    """Gradients plus noise: a spread histogram (equalize, autocontrast, solarize all act) and odd
    sizes (rotation centres and translations that are not whole pixels)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 200 / w + 20, y * 180 / h + 40, (x + y) * 90 / (w + h) + 100], -1)
    noise = np.random.default_rng(seed).normal(0, 25, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


class _RandomFrom:
    """Python's ``random`` API, drawing from a numpy Generator the way janus' ops draw: patched
    into timm, it makes timm take the same decisions as janus does for the same seed."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def random(self):
        return self.rng.random()

    def gauss(self, mu, sigma):
        return self.rng.normal(mu, sigma)

    def uniform(self, a, b):
        return self.rng.uniform(a, b)

    def randint(self, a, b):
        return int(self.rng.integers(a, b + 1))

    def choice(self, seq, size=None, **_):  # also numpy's ``np.random.choice(ops, n)``
        if size is None:
            return seq[int(self.rng.integers(len(seq)))]
        return [seq[i] for i in self.rng.integers(len(seq), size=size)]


def _timm_op(timm_aa, name):
    """timm's op function; its Posterize at 0 bits (magnitude < 2.5) raises on Pillow 13, which
    refuses 0 bits: there the reference is the older Pillow's result, no bits kept (black)."""
    op = timm_aa.NAME_TO_OP[name]
    if name != "Posterize":
        return op
    return lambda img, bits, **kw: Image.new("RGB", img.size) if bits == 0 else op(img, bits, **kw)


class _Fixed:
    """``random`` whose every ``random()`` is ``value``: forces timm's sign draw."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


# ---------------------------------------------------------------- against timm


@pytest.fixture(scope="module")
def timm_aa():
    return pytest.importorskip("timm.data.auto_augment", reason=_NEEDS_TIMM)


def test_the_op_list_is_timms(timm_aa):
    assert list(randaugment.OPS) == timm_aa._RAND_TRANSFORMS


@pytest.mark.parametrize("negate", [False, True])
def test_level_arguments_match_timm(timm_aa, monkeypatch, negate):
    """Each op's argument at integer magnitudes and at those that mstd noise gives."""
    monkeypatch.setattr(timm_aa, "random", _Fixed(0.9 if negate else 0.1))
    for name in randaugment.OPS:
        for magnitude in [0, 1, 2.5, 3, 5, 7, 8.99, 9, 9.37, 10]:
            ours = randaugment.level_arg(name, magnitude, negate=negate)
            level_fn = timm_aa.LEVEL_TO_ARG[name]
            theirs = level_fn(magnitude, timm_aa._HPARAMS_DEFAULT) if level_fn else None
            assert (ours,) == theirs or ours is theirs is None, (name, magnitude)


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("name", list(randaugment.OPS))
def test_each_op_matches_timm_pixel_for_pixel(timm_aa, name, method):
    """Exact: both call PIL with the same arguments (SolarizeAdd is a lookup table in both)."""
    img = _photo()
    resample = Image.Resampling[method.upper()]
    kwargs = dict(fillcolor=randaugment.DEIT_FILL, resample=resample)
    for magnitude in (0, 3, 9, 10):
        for negate in (False, True):
            arg = randaugment.level_arg(name, magnitude, negate)
            ours = randaugment.apply_op(name, img, arg, method=method)
            theirs = _timm_op(timm_aa, name)(img, *(() if arg is None else (arg,)), **kwargs)
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), (name, magnitude))


@pytest.mark.parametrize(
    "timm_config, ours, hparams",
    [
        ("rand-m9-n2-mstd0.5", "randaug(2, 9, mstd=0.5)", {"interpolation": _BICUBIC}),  # DeiT's
        (
            "rand-m5-n3-p0.8",
            "randaug(3, 5, p=0.8, fill=128)",
            {"img_mean": (128,) * 3, "interpolation": _BICUBIC},
        ),
        ("rand-m7-n2-mstd101", "randaug(2, 7, mstd=101, method='random')", {}),  # uniform m
        ("rand-m10-n4-p1.0", "randaug(4, 10, p=1.0, method='random')", {}),
    ],
)
def test_randaug_matches_timm_for_the_same_draws(timm_aa, monkeypatch, timm_config, ours, hparams):
    """Whole transform: timm's ``random`` and ``np.random.choice`` draw from a Generator seeded
    as janus' is, so both choose the same ops, signs, magnitudes and filters; pixels are equal."""
    hparams = {"img_mean": randaugment.DEIT_FILL, **hparams}
    theirs = timm_aa.rand_augment_transform(timm_config, hparams)
    for op in theirs.ops:
        op.aug_fn = _timm_op(timm_aa, op.name)
    pp = build_pp(ours)
    for seed in range(25):
        rng = np.random.default_rng(seed)
        monkeypatch.setattr(timm_aa, "random", _RandomFrom(rng))
        monkeypatch.setattr(timm_aa, "np", types.SimpleNamespace(random=_RandomFrom(rng)))
        img = _photo(seed=seed)
        expected = np.asarray(theirs(img))
        got = pp({"image": np.asarray(img)}, np.random.default_rng(seed))["image"]
        np.testing.assert_array_equal(got, expected, f"seed {seed}")


def _fill_from(rng, mode, torch):
    """timm's ``_get_pixels``, drawing the fill from ``rng`` as janus does ([h, w, 3] order)."""

    def get_pixels(per_pixel, rand_color, shape, **_):
        c, h, w = shape
        if mode == "pixel":
            return torch.tensor(rng.standard_normal((h, w, c)).transpose(2, 0, 1))
        if mode == "rand":
            return torch.tensor(rng.standard_normal(c)[:, None, None])
        return torch.zeros((c, 1, 1))

    return get_pixels


@pytest.mark.parametrize("mode", erasing.MODES)
@pytest.mark.parametrize("norm", ["imagenet", "clip"])
def test_erase_matches_timm_for_the_same_box_and_fill(monkeypatch, mode, norm):
    """timm erases the normalised tensor; janus the uint8 image, normalised afterwards on the
    device. Outside the box: equal to float rounding (1e-5). Inside: timm's fill clipped to what
    uint8 can hold, within half a uint8 step (0.5 / (255 std)) plus that rounding."""
    torch = pytest.importorskip("torch", reason=_NEEDS_TIMM)
    timm_re = pytest.importorskip("timm.data.random_erasing", reason=_NEEDS_TIMM)
    scaling = pixel_scaling.normalization(norm)
    mean, std = pixel_scaling.NORMALIZATION[norm]
    theirs = timm_re.RandomErasing(probability=0.7, mode=mode, device="cpu")
    pp = build_pp(f"erase(0.7, mode={mode!r}, norm={norm!r})|normalize({norm!r})")
    erased = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        monkeypatch.setattr(timm_re, "random", _RandomFrom(rng))
        monkeypatch.setattr(timm_re, "_get_pixels", _fill_from(rng, mode, torch))
        img = np.asarray(_photo(seed=seed))
        tensor = torch.tensor(img.transpose(2, 0, 1) / 255.0, dtype=torch.float32)
        tensor = (tensor - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        expected = theirs(tensor).numpy().transpose(1, 2, 0)
        got = pp({"image": img}, np.random.default_rng(seed))["image"]
        ours = pixel_scaling.scale_pixels(got, scaling)
        lo = pixel_scaling.scale_pixels(np.zeros(3, np.uint8), scaling)
        hi = pixel_scaling.scale_pixels(np.full(3, 255, np.uint8), scaling)
        changed = np.any(got != img, axis=-1)
        np.testing.assert_allclose(ours[~changed], expected[~changed], atol=1e-5)
        half_step = 0.5 * np.asarray(scaling.mul, np.float32) + 1e-5
        assert np.all(np.abs(ours - np.clip(expected, lo, hi)) <= half_step), seed
        erased += bool(changed.any())
    assert 12 <= erased <= 28  # about 0.7 of 30: the probability is applied


# ---------------------------------------------------------------- without timm


def _run(spec: str, seed: int, img: Image.Image | None = None) -> np.ndarray:
    img = _photo() if img is None else img
    return build_pp(spec)({"image": np.asarray(img)}, np.random.default_rng(seed))["image"]


@pytest.mark.parametrize(
    "spec", ["randaug(2, 9, mstd=0.5)", "erase(1.0)|normalize", "randaug|erase|normalize"]
)
def test_same_seed_same_pixels_and_seeds_differ(spec):
    runs = [_run(spec, seed) for seed in (0, 0, 1, 2, 3)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert any(not np.array_equal(runs[0], r) for r in runs[2:])


def test_zero_ops_or_zero_probability_leave_the_image_alone():
    img = np.asarray(_photo())
    for spec in ["randaug(0, 9)", "randaug(3, 9, p=0.0)", "erase(0.0)|normalize"]:
        for seed in range(5):
            np.testing.assert_array_equal(_run(spec, seed), img, spec)


def test_magnitude_zero_changes_only_the_magnitude_free_ops():
    """At m=0 shear, translate, rotate are the identity: only a few ops still act."""
    img = _photo()
    for name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
        out = randaugment.apply_op(name, img, randaugment.level_arg(name, 0))
        np.testing.assert_array_equal(np.asarray(out), np.asarray(img), name)
    assert not np.array_equal(_run("randaug(1, 0, p=1.0, ops=('Invert',))", 0), np.asarray(img))


def test_erase_box_stays_inside_and_respects_the_area():
    eraser = erasing.RandomErasing(pixel_scaling.IDENTITY, 1.0, "pixel", (0.02, 1 / 3), (0.3, 3.3))
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = eraser.box(29, 37, rng)
        assert 0 <= top and top + h <= 29 and 0 <= left and left + w <= 37
        assert 0.01 <= h * w / (29 * 37) <= 0.4  # 0.02..1/3 up to rounding the sides


def test_const_erase_fills_the_normalisation_mean():
    out = _run("erase(1.0, mode='const', norm='imagenet')|normalize('imagenet')", 0)
    filled = out[np.any(out != np.asarray(_photo()), axis=-1)]
    assert len(filled) and np.all(filled == np.array(randaugment.DEIT_FILL))  # 255 * mean


@pytest.mark.parametrize(
    "spec, message",
    [
        ("randaug(2, 11)", r"randaug m=11: the magnitude must be in \[0, 10\]"),
        ("randaug(-1, 9)", r"randaug n=-1"),
        ("randaug(2, 9, p=2)", r"randaug p=2"),
        ("randaug(2, 9, mstd=-1)", r"randaug mstd=-1"),
        ("randaug(2, 9, ops=('Rotate', 'Cutout'))", r"randaug ops: unknown op\(s\) \['Cutout'\]"),
        ("randaug(2, 9, ops=())", r"randaug ops: unknown op\(s\) none given"),
        ("randaug(2, 9, fill=(1, 2))", r"randaug fill=\(1, 2\)"),
        ("randaug(2, 9, method='lanczos')", r"randaug method='lanczos'"),
        ("randaug(2, 9, magnitude=3)", r"randaug\(2, 9, magnitude=3\).*'magnitude'"),
        ("erase(1.5)", r"erase p=1.5"),
        ("erase(mode='noise')", r"erase mode='noise'"),
        ("erase(area=(0.5, 0.1))", r"erase area=\(0.5, 0.1\)"),
        ("erase(aspect=(0, 1))", r"erase aspect=\(0, 1\)"),
        ("erase(norm='imagenet21k')", r"erase norm='imagenet21k': unknown normalisation"),
    ],
)
def test_bad_arguments_are_one_line_naming_op_and_argument(spec, message):
    with pytest.raises(ValueError, match=message) as e:
        build_pp(f"decode|{spec}|normalize")  # (erase's default norm is normalize's)
    assert "\n" not in str(e.value)


def test_erase_must_fill_for_the_chains_normalisation():
    build_pp("decode|erase(0.25)|normalize")  # both default to CLIP's constants
    build_pp("decode|erase(norm='imagenet')|normalize('imagenet')")
    build_pp("decode|erase(mean=0.5, std=0.5)|value_range(-1, 1)")  # the same map
    for spec, chain in [
        ("decode|erase(0.25)|normalize('imagenet')", "normalize('imagenet')"),
        ("decode|erase(0.25)|value_range(-1, 1)", "value_range(-1, 1)"),
        ("decode|erase(0.25)", "none"),
    ]:
        with pytest.raises(ValueError, match=rf"'erase\(0.25\)'.*chain's \({re.escape(chain)}\)"):
            build_pp(spec)


def test_chains_pickle_and_give_the_same_pixels():
    pp = build_pp("randaug(2, 9, mstd=0.5)|erase(0.5, norm='imagenet')|normalize('imagenet')")
    again = pickle.loads(pickle.dumps(pp))
    img = np.asarray(_photo())
    for seed in range(3):
        a = pp({"image": img}, np.random.default_rng(seed))["image"]
        b = again({"image": img}, np.random.default_rng(seed))["image"]
        np.testing.assert_array_equal(a, b)


def test_grain_workers_give_the_in_process_batches(tmp_path):
    """The ops run in grain worker processes (spawned: the chain pickles) with the same pixels."""
    from test_pipeline import _assert_same, _take, make_records

    rdir = make_records(tmp_path / "rec", 16)
    pp = "decode|rrc(16, scale=(0.3, 1.0))|flip|randaug(2, 9, mstd=0.5)|erase(0.5)|normalize"
    kw = dict(global_batch_size=4, pp=pp, seed=3, shard_index=0, shard_count=1)
    ref, _ = pipeline.train_loader(rdir, **kw)
    expected = _take(ref, 2)
    it, _ = pipeline.train_loader(rdir, worker_count=1, **kw)
    try:
        _assert_same(_take(it, 2), expected)
    finally:
        it.close()
    assert expected[0]["image"].shape == (4, 16, 16, 3) and expected[0]["image"].dtype == np.uint8
    plain, _ = pipeline.train_loader(rdir, **{**kw, "pp": "decode|rrc(16, scale=(0.3, 1.0))|flip"})
    assert any(
        not np.array_equal(a["image"], b["image"]) for a, b in zip(_take(plain, 2), expected)
    )


def test_the_docs_chains_build():
    """Every chain in docs/data.md that names randaug or erase builds as written."""
    text = (pathlib.Path(__file__).parents[1] / "docs" / "data.md").read_text()
    chains = [c for c in re.findall(r"`(decode\|[^`]+)`", text) if "randaug" in c or "erase" in c]
    assert chains
    for chain in chains:
        pp = build_pp(chain)
        assert {"randaug", "erase"} & set(pp.names)
