"""The DALI loader (janus.data.input.dali_loader) yields the grain loader's batches.

Same seed, same batches: the same labels in the same order, the same crop boxes and flips, and
pixels within a stated tolerance. The images are gradients (red = x, green = y) with a textured blue
channel, so a crop's place shows in its mean colour and a wrong box or flip in every pixel.

Tolerances, measured on the gradients (rrc to 32 px from 160-344 px images, so PIL's draft mode
decodes most crops at 1/2 to 1/8 scale where DALI decodes them whole): antialiased, mean absolute
difference 0.5-0.7 grey levels per batch (at most 1.1 per image), max 11; the fast path
(antialias=False) within 1 level (OpenCV's bilinear and DALI's are the same filter). The bounds
below leave margin: mean < 1.5, per image < 2.5. A wrong box or flip differs by tens of levels.
On the real photographs of ../shared/real_jpegs, where present, the same at 224 px (mean 0.23).

`data.loader = "dali"` is a config choice: validation refuses what the loader cannot run, in one
line, and janus.main trains with it.

The DALI tests run in the peers' venv (requirements/lock-peers.txt); they skip where DALI is
absent, except in CI's peers stage (JANUS_PEERS_REQUIRED), where they fail.
"""

import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from janus.data import records, tfrecord
from janus.data.input import dali_loader, pipeline

N = 24
CHAIN = "decode|rrc(32)|flip|normalize"


def _require_dali():
    if os.environ.get("JANUS_PEERS_REQUIRED"):  # CI's peers venv: never skipped there
        import nvidia.dali  # noqa: F401
    else:
        pytest.importorskip("nvidia.dali", reason=dali_loader.INSTALL)


def _gradient_jpeg(i: int) -> bytes:
    w, h = 160 + 8 * i, 120 + 5 * (i % 7)
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(i).normal(0, 8, (h, w))
    texture = 128 + 60 * np.sin(x / 3 + i) * np.cos(y / 5) + noise
    pixels = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), texture.clip(0, 255)], -1)
    buf = io.BytesIO()  # 4:4:4, so the gradients survive the JPEG
    Image.fromarray(pixels.astype(np.uint8)).save(buf, "JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def _write_records(out: pathlib.Path, jpegs: list[bytes]) -> str:
    out.mkdir()
    name, manifest = records.shard_name("train", 0, 1), []
    with tfrecord.ShardWriter(out / name) as w:
        for i, data in enumerate(jpegs):
            key, labels = f"k{i:04d}", [i % 10]
            offset = w.write(
                records.encode_example({"image/encoded": data, "label": labels, "key": key})
            )
            row = {"key": key, "source": "s", "labels": labels, "label_source": "human"}
            manifest.append({**row, "split": "train", "shard": name, "offset": offset})
    records.write_manifest(out, manifest)
    records.write_info(out, {"name": out.name, "splits": {"train": len(jpegs)}})
    return str(out)


@pytest.fixture(scope="module")
def rdir(tmp_path_factory):
    return _write_records(
        tmp_path_factory.mktemp("dali") / "d", [_gradient_jpeg(i) for i in range(N)]
    )


def _args(**kw):
    return {
        "global_batch_size": 8,
        "pp": CHAIN,
        "seed": 3,
        "shard_index": 0,
        "shard_count": 1,
        **kw,
    }


def _batches(loader, d, k, **kw):
    it, _ = loader(d, **_args(**kw))
    return [next(it) for _ in range(k)]


def _diff(a, b) -> np.ndarray:
    return np.abs(a["image"].astype(int) - b["image"].astype(int))


def test_same_labels_and_pixels_within_tolerance(rdir):
    _require_dali()
    grain_batches = _batches(pipeline.train_loader, rdir, 3)
    dali_batches = _batches(dali_loader.train_loader, rdir, 3)
    for a, b in zip(grain_batches, dali_batches):
        assert a.keys() == b.keys()
        np.testing.assert_array_equal(a["label"], b["label"])
        assert a["image"].shape == b["image"].shape == (8, 32, 32, 3)
        assert b["image"].dtype == np.uint8
        diff = _diff(a, b)
        assert diff.mean() < 1.5, diff.mean()
        assert diff.mean(axis=(1, 2, 3)).max() < 2.5, diff.mean(axis=(1, 2, 3))
    other = _batches(pipeline.train_loader, rdir, 1, seed=4)[0]  # other crops: far off
    assert _diff(other, dali_batches[0]).mean() > 10


REAL_PHOTOS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "real_jpegs"


def test_real_photographs_within_tolerance(tmp_path):
    """64 ImageNet photographs (4:2:0 chroma, some grayscale) at rrc(224): measured mean absolute
    difference 0.23, worst image 1.38, max 32; asserted: mean < 1 per batch, per image < 2.5."""
    _require_dali()
    if not REAL_PHOTOS.is_dir():
        pytest.skip(f"{REAL_PHOTOS} is absent (the real photographs live outside the repository)")
    paths = sorted(REAL_PHOTOS.rglob("*.JPEG"))[:64]
    d = _write_records(tmp_path / "photos", [p.read_bytes() for p in paths])
    chain = "decode|rrc(224)|flip|normalize"
    a = _batches(pipeline.train_loader, d, 2, pp=chain, global_batch_size=32)
    b = _batches(dali_loader.train_loader, d, 2, pp=chain, global_batch_size=32)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["label"], y["label"])
        diff = _diff(x, y)
        assert diff.mean() < 1, diff.mean()
        assert diff.mean(axis=(1, 2, 3)).max() < 2.5, diff.mean(axis=(1, 2, 3))


def test_the_planned_boxes_are_the_grain_loaders_crops(rdir):
    """Each plan's box centre is where the grain loader's crop is: its mean red and green."""
    plans, _ = pipeline.train_loader(rdir, **_args(pp=dali_loader.CropPlanner(CHAIN)))
    images, _ = pipeline.train_loader(rdir, **_args())
    for _ in range(2):
        batch_plans, batch_images = next(plans), next(images)
        for (data, box, _), image in zip(batch_plans["image"], batch_images["image"]):
            w, h = Image.open(io.BytesIO(data)).size
            x0, y0, x1, y1 = box
            centre = ((x0 + x1 - 1) / 2 * 255 / (w - 1), (y0 + y1 - 1) / 2 * 255 / (h - 1))
            mean = image[..., :2].reshape(-1, 2).mean(0)  # a flip keeps the mean
            np.testing.assert_allclose(mean, centre, atol=2.5)


def test_flips_match(rdir):
    _require_dali()
    a = _batches(pipeline.train_loader, rdir, 2)
    b = _batches(dali_loader.train_loader, rdir, 2)
    for x, y in zip(a, b):
        slope = [
            np.sign(z["image"][:, :, -1, 0].astype(int) - z["image"][:, :, 0, 0]) for z in (x, y)
        ]
        rising = [s.mean(axis=1) > 0 for s in slope]  # red rises left to right unless flipped
        np.testing.assert_array_equal(*rising)
        assert 0 < rising[0].sum() < 16  # both kinds occur


def test_fast_path_within_one_level(rdir):
    _require_dali()
    pytest.importorskip("cv2", reason="OpenCV: requirements/lock-fast.txt")
    chain = "decode|rrc(32, antialias=False)|flip"
    a = _batches(pipeline.train_loader, rdir, 2, pp=chain)
    b = _batches(dali_loader.train_loader, rdir, 2, pp=chain)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["label"], y["label"])
        assert _diff(x, y).max() <= 1


def test_resume_from_state_gives_the_same_next_batch(rdir):
    _require_dali()
    it, _ = dali_loader.train_loader(rdir, **_args())
    next(it), next(it)
    state = it.get_state()
    expected = next(it)
    resumed, _ = dali_loader.train_loader(rdir, **_args())
    resumed.set_state(state)
    got = next(resumed)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)


@pytest.mark.parametrize(
    "chain, named",
    [
        ("decode|rrc(32)|color_jitter", "'color_jitter'"),
        ("decode|resize(32)", "'resize'"),
        ("decode|flip|rrc(32)", "decode|rrc"),
        ("decode|rrc(32, method='bicubic')", "'bicubic'"),
    ],
)
def test_unsupported_chain_is_refused_in_one_line(chain, named):
    with pytest.raises(ValueError) as e:
        dali_loader.CropPlanner(chain)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_captions_are_refused(rdir):
    with pytest.raises(ValueError, match="captions need the grain loader"):
        dali_loader.train_loader(rdir, **_args(captions=True))


def test_missing_dali_is_one_line_naming_the_install(rdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import fails as if absent
    with pytest.raises(ValueError, match="requirements/lock-peers.txt"):
        dali_loader.train_loader(rdir, **_args())


@pytest.mark.parametrize(
    "changes, named",
    [
        ({}, "'color_jitter'"),  # the recipe's SimCLR chain
        ({"input.pp": "decode|rrc(224)|flip|normalize", "data.loader": "nvdali"}, "grain, dali"),
        ({"input.pp": "decode|rrc(224)|flip|normalize", "loss": "infonce"}, "makes no captions"),
    ],
)
def test_config_data_loader_dali_refuses_what_it_cannot_run(changes, named):
    from janus import config as config_lib

    c = config_lib.paper_config()
    c.data.loader = "dali"
    for field, value in changes.items():
        parent, name = field.split(".") if "." in field else (None, field)
        setattr(c[parent] if parent else c, name, value)
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(c, num_devices=8, check_data=False)
    assert named in str(e.value) and "'data.loader'" in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
    c = config_lib.paper_config()
    c.data.loader, c.input.pp = "dali", "decode|rrc(224)|flip|normalize"
    config_lib.validate(c, num_devices=8, check_data=False)  # a chain it runs


@pytest.mark.slow
def test_main_trains_with_data_loader_dali(mini_v2, tmp_path):
    """`--config.data.loader=dali` through janus.main: DALI's CPU form here, "mixed" on a GPU."""
    _require_dali()
    root = pathlib.Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable, "-m", "janus.main",
        f"--config={root}/configs/mini.py:root={mini_v2},steps=4,res=32,batch=16",
        f"--workdir={tmp_path}/run", "--config.data.budget=200", "--config.data.loader=dali",
        "--config.input.pp=decode|rrc(32,scale=(0.35,1.0))|flip|normalize",
        "--config.checkpoint.every_steps=4",
    ]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "data_manifest.json").read_text())
    assert manifest["loader"] == "dali (cpu)"
