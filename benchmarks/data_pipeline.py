"""Input pipeline images/s per core against a plain PIL loop on the same JPEG bytes; tokenizer.

Builds a temporary records dir with janus.data.records from real photographs (`--images DIR`, an
ImageFolder tree; default ../shared/real_jpegs where it exists) or from random-size (256-500 px)
synthetic JPEGs (`--synthetic N`). Then, in rounds, on the same JPEG bytes:

- peer: a plain single-process PIL loop doing what the train chain does (decode,
  RandomResizedCrop(224) with torchvision's sampling, random flip, float32 mean/std normalise), on
  one core;
- janus: ``train_loader`` with ``decode|rrc(224)|flip|normalize`` for each ``--workers`` count,
  and (chain ``train_fast``) the same with ``rrc(224, antialias=False)``, the fast path. It emits
  uint8 (the normalisation runs in the jitted step, on the device), so this times the host's
  whole share;
- peers (`--peers`, benchmarks/input_peers.py): tf.data as big_vision builds it (region decode,
  bilinear resize without and with antialias; from memory, and from janus' TFRecord shards) and
  DALI's CPU pipeline, each on one core, each where its package is installed (else a row says it
  was skipped).

"Cores used" is measured, not assumed: CPU seconds (this process' threads plus its worker
processes) over wall seconds, so a busy shared machine does not flatter or punish either side.
Per-core images/s = images / CPU seconds. The ratio is janus per core over the peer per core; the
sides alternate within each round; the summary line gives each side's median and range over
rounds, and its ratio to the PIL loop. Refuses to run on a loaded machine unless `--allow-load`
(machine.require_quiet). Also times the CLIP tokenizer
against open_clip's (peer; skipped without torch). Prints one JSON object per line.

    python benchmarks/data_pipeline.py [--images DIR | --synthetic 600] [--batches 15] \
        [--batch-size 32] [--workers 0,2] [--rounds 3] [--chains train,simclr] \
        [--peers tfdata,tfdata_aa,tfdata_records,dali] [--allow-load]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pathlib
import statistics
import tempfile
import time

import input_peers  # benchmarks/input_peers.py, beside this script
import machine
import numpy as np
import psutil
from PIL import Image

from janus.data import manifest as manifest_lib
from janus.data import records, tfrecord
from janus.data.ingest.images import prepare_image
from janus.data.input import pipeline
from janus.data.input.pixel_scaling import NORMALIZATION
from janus.data.input.tokenizer import Tokenizer

TRAIN_PP = "decode|rrc(224, scale=(0.08, 1.0))|flip|normalize('clip')"
# The fast path: the same crops, resized without antialias (as tf.data in big_vision); needs OpenCV.
FAST_PP = "decode|rrc(224, scale=(0.08, 1.0), antialias=False)|flip|normalize('clip')"
SIMCLR_PP = (
    "decode|rrc(224, scale=(0.08, 1.0))|flip|color_jitter(0.4, 0.4, 0.4, 0.1, p=0.8)"
    "|grayscale(p=0.2)|blur(p=0.5)|normalize('clip')"
)


def _photo_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random colour fields plus mild noise (JPEG sizes like photos, not like noise)."""
    coarse = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.int16)
    img = img + rng.integers(-12, 13, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


REAL_PHOTOS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "real_jpegs"
PHOTO_SUFFIXES = {".jpeg", ".jpg"}


def photo_jpegs(folder: pathlib.Path) -> list[bytes]:
    """The JPEG files under an ImageFolder tree (any depth), in path order."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not paths:
        raise SystemExit(f"--images {folder}: no .jpg/.jpeg files under it")
    return [p.read_bytes() for p in paths]


def synthetic_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """`n` photo-like JPEGs of random size (256-500 px a side), quality 90."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, wd = (int(x) for x in rng.integers(256, 501, 2))
        buf = io.BytesIO()
        Image.fromarray(_photo_like(rng, h, wd)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def build_records(out: pathlib.Path, jpegs: list[bytes], shards: int = 4) -> None:
    """Records of ``jpegs``, in order, each with its own key. Each distinct image gets the
    builder's check (decoded whole) first, so info.json says ``images_verified``, as a build's."""
    for data in {id(d): d for d in jpegs}.values():
        prepare_image(data)  # BadImageError names the problem
    manifest, n = [], len(jpegs)
    per = -(-n // shards)
    for s in range(shards):
        name = records.shard_name("train", s, shards)
        with tfrecord.ShardWriter(out / name) as w:
            for i in range(s * per, min(n, (s + 1) * per)):
                key = f"img{i:06d}"
                ex = {"image/encoded": jpegs[i], "label": [i % 100], "key": key}
                ex["caption"] = [f"a photo of object number {i % 100}"]
                offset = w.write(records.encode_example(ex))
                manifest.append(
                    {"key": key, "source": "bench", "labels": [i % 100], "split": "train"}
                    | {"shard": name, "offset": offset}
                )
    manifest_lib.write_manifest(out, manifest)  # with manifest.arrow, as the builder writes
    records.write_info(out, {"name": "bench", "splits": {"train": n}, "images_verified": True})


def repeat_to_size(jpegs: list[bytes], min_records: int) -> list[bytes]:
    """``jpegs`` repeated to at least ``min_records``: grain's index shuffle costs 87 us an element
    at 334 items against 8-10 us from 10,000 up (this VM), and real training sets are large."""
    return jpegs * max(1, -(-min_records // len(jpegs)))


class CpuClock:
    """Wall and CPU seconds of this process' threads and of its live worker processes."""

    def __init__(self):
        self._me = psutil.Process()

    def _cpu(self) -> dict[int, float]:
        procs = [self._me, *self._me.children(recursive=True)]
        out = {}
        for p in procs:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return out

    def start(self) -> None:
        self._wall, self._cpu0 = time.perf_counter(), self._cpu()

    def stop(self) -> tuple[float, float]:
        """-> (wall s, CPU s) since start; a worker that exits meanwhile is counted up to its
        last sample (its share before exiting is lost, so CPU is if anything undercounted)."""
        wall = time.perf_counter() - self._wall
        cpu1 = self._cpu()
        return wall, sum(cpu1[p] - self._cpu0.get(p, 0.0) for p in cpu1)


def _settle(timeout: float = 10.0) -> None:
    """Waits until this process is idle: a closed loader's threads finish the chunks they were
    making, and the next side's clock would count them (the SimCLR chain's PIL loop showed 1.08
    cores used after janus' rounds before this)."""
    me = psutil.Process()
    deadline = time.monotonic() + timeout
    last = sum(me.cpu_times()[:2])
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = sum(me.cpu_times()[:2])
        if now - last < 0.005:
            return
        last = now


def _rates(images: int, wall: float, cpu: float) -> dict:
    return {
        "images": images,
        "images_per_s": round(images / wall, 1),
        "cores_used": round(cpu / wall, 2),
        "images_per_s_per_core": round(images / cpu, 1),
    }


def read_jpegs(records_dir) -> list[bytes]:
    source = records.RecordsDataSource(records_dir, "train")
    return [records.decode_example(source[i])["image/encoded"] for i in range(len(source))]


_MEAN = np.float32(NORMALIZATION["clip"][0]) * 255.0
_INV_STD = 1.0 / (np.float32(NORMALIZATION["clip"][1]) * 255.0)


def pil_loop_one(data: bytes, rng: np.random.Generator) -> np.ndarray:
    """The peer: what a plain loop does per image (torchvision's RandomResizedCrop sampling)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    box = (0, 0, w, h)
    for _ in range(10):
        target = w * h * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            box = (x, y, x + cw, y + ch)
            break
    img = img.resize((224, 224), Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = np.array(img, dtype=np.float32)
    x -= _MEAN
    x *= _INV_STD
    return x


def time_pil_loop(jpegs: list[bytes], images: int) -> dict:
    rng = np.random.default_rng(0)
    for data in jpegs[:8]:  # warm-up
        pil_loop_one(data, rng)
    clock = CpuClock()
    clock.start()
    for i in range(images):
        out = pil_loop_one(jpegs[i % len(jpegs)], rng)
    wall, cpu = clock.stop()
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    return _rates(images, wall, cpu)


def time_train(
    records_dir, pp: str, workers: int, batches: int, batch_size: int, loader=None, **options
) -> dict:
    """``loader`` (default ``pipeline.train_loader``; benchmarks/dali_loader.py passes the DALI
    loader, with its ``options``) over `batches` batches after two warm-up batches."""
    it, _ = (loader or pipeline.train_loader)(
        records_dir,
        global_batch_size=batch_size,
        pp=pp,
        seed=0,
        worker_count=workers,
        shard_index=0,
        shard_count=1,
        **options,
    )
    clock = CpuClock()
    try:
        next(it)  # warm-up: worker start-up, first reads
        next(it)
        clock.start()
        for _ in range(batches):
            batch = next(it)
        wall, cpu = clock.stop()
    finally:
        it.close()
        _settle()
    assert batch["image"].shape == (batch_size, 224, 224, 3) and batch["image"].dtype == np.uint8
    return _rates(batches * batch_size, wall, cpu)


def time_peer(peer: str, jpegs: list[bytes], image_dir, records_dir, batches: int, size: int):
    """A peer's rates over `batches` batches after two warm-up batches (its start-up, tracing)."""
    it = input_peers.batches(peer, jpegs, image_dir, records_dir, size)
    next(it)
    next(it)
    clock = CpuClock()
    clock.start()
    for _ in range(batches):
        batch = next(it)
    wall, cpu = clock.stop()
    assert batch.shape == (size, 224, 224, 3) and batch.dtype == np.uint8, batch.shape
    return _rates(batches * size, wall, cpu)


def write_image_folder(out: pathlib.Path, jpegs: list[bytes]) -> pathlib.Path:
    """The JPEGs as a one-class ImageFolder tree (DALI's file reader reads files, not records)."""
    folder = out / "images" / "all"
    folder.mkdir(parents=True)
    for i, data in enumerate(jpegs):
        (folder / f"{i:06d}.jpg").write_bytes(data)
    return folder.parent


def summarize(per_core: dict[str, list[float]], peer: str = "pil_loop") -> dict:
    """Median and range per side, and each side's median over the peer's (the PIL loop's;
    benchmarks/dali_loader.py: the grain loader's)."""
    peer_med = statistics.median(per_core[peer])
    out = {"bench": "summary_per_core", "rounds": len(per_core[peer])}
    for side, rates in per_core.items():
        med = statistics.median(rates)
        out[f"{side}_images_per_s_per_core"] = med
        out[f"{side}_range"] = [min(rates), max(rates)]
        if side != peer and not side.startswith("janus_simclr"):
            out[f"{side}_vs_{peer}"] = round(med / peer_med, 2)
        if side.startswith("janus_train") and "tfdata" in per_core:  # the goal: >= 1
            out[f"{side}_vs_tfdata"] = round(med / statistics.median(per_core["tfdata"]), 2)
    return out


def time_tokenizer(kind: str, n: int = 20000) -> dict:
    """Captions of 4-20 words: ``ascii`` (the fast path) or ``mixed`` (unicode/HTML -> ftfy)."""
    rng = np.random.default_rng(0)
    words = ["dog", "cat", "a", "photo", "of", "the", "golden", "retriever", "on", "grass", "red"]
    if kind == "mixed":
        words += ["Café", "naïve", "🐶", "&amp;", "NEW!", "2023", "“quoted”", "日本"]
    captions = [" ".join(rng.choice(words, int(rng.integers(4, 20)))) for _ in range(n)]
    tok = Tokenizer()
    start = time.perf_counter()
    ours = tok(captions)
    ours_s = time.perf_counter() - start
    out = {"bench": f"tokenizer_{kind}", "captions": n, "janus_captions_per_s": round(n / ours_s)}
    try:
        import open_clip
    except ImportError:
        return out | {"open_clip": "not installed"}
    start = time.perf_counter()
    ref = open_clip.tokenize(captions).numpy()
    ref_s = time.perf_counter() - start
    assert (ref == ours).all(), "tokenizer disagrees with open_clip"
    return out | {"open_clip_captions_per_s": round(n / ref_s), "ratio": round(ref_s / ours_s, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=pathlib.Path,
        default=REAL_PHOTOS if REAL_PHOTOS.is_dir() else None,
        help="an ImageFolder tree of JPEGs (default: ../shared/real_jpegs where it exists, "
        "else synthetic JPEGs)",
    )
    parser.add_argument("--synthetic", type=int, default=600, help="synthetic JPEGs, without DIR")
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chains", default="train,train_fast,simclr")
    parser.add_argument(
        "--peers",
        default=",".join(input_peers.PEERS),
        help="comma-separated, from " + ", ".join(input_peers.PEERS) + " ('' for none)",
    )
    parser.add_argument(
        "--min-records",
        type=int,
        default=10_000,
        help="janus' records repeat the images to at least this many (grain's index shuffle is "
        "slow on tiny datasets); the peers read each image once",
    )
    parser.add_argument("--allow-load", action="store_true", help="report under load, marked")
    args = parser.parse_args()
    quiet = machine.require_quiet(args.allow_load)
    workers = [int(w) for w in args.workers.split(",")]
    chains = {"train": TRAIN_PP, "train_fast": FAST_PP, "simclr": SIMCLR_PP}
    peers = []
    for peer in filter(None, args.peers.split(",")):
        why = input_peers.missing(peer)
        if why:
            print(json.dumps({"bench": f"{peer}_224", "skipped": why}), flush=True)
        else:
            peers.append(peer)
            print(json.dumps({"bench": f"{peer}_224", "version": input_peers.version(peer)}))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.images is not None:
            jpegs, kind = photo_jpegs(args.images), str(args.images)
        else:
            jpegs, kind = synthetic_jpegs(args.synthetic), "synthetic"
        repeated = repeat_to_size(jpegs, args.min_records)
        build_records(pathlib.Path(tmp), repeated)
        image_dir = write_image_folder(pathlib.Path(tmp), jpegs)
        build_s = time.perf_counter() - start
        mean_kb = round(sum(map(len, jpegs)) / len(jpegs) / 1e3, 1)
        info = {"bench": "records", "images": len(jpegs), "records": len(repeated), "jpegs": kind}
        info |= {"mean_jpeg_kb": mean_kb, "build_s": round(build_s, 1)} | quiet
        print(json.dumps(info), flush=True)
        assert read_jpegs(tmp) == repeated  # the records hold the very bytes the peer decodes
        per_core: dict[str, list[float]] = {}
        images = args.batches * args.batch_size
        for r in range(args.rounds):
            peer = time_pil_loop(jpegs, images)
            print(json.dumps({"bench": "pil_loop_224", "round": r} | peer), flush=True)
            per_core.setdefault("pil_loop", []).append(peer["images_per_s_per_core"])
            for name in args.chains.split(","):
                for w in workers if name.startswith("train") else workers[-1:]:
                    res = time_train(tmp, chains[name], w, args.batches, args.batch_size)
                    res |= {"bench": f"janus_{name}_224", "round": r, "worker_count": w}
                    res |= {"pp": chains[name]}
                    print(json.dumps(res), flush=True)
                    side = f"janus_{name}_w{w}"
                    per_core.setdefault(side, []).append(res["images_per_s_per_core"])
            for other in peers:
                res = time_peer(other, jpegs, image_dir, tmp, args.batches, args.batch_size)
                print(json.dumps({"bench": f"{other}_224", "round": r} | res), flush=True)
                per_core.setdefault(other, []).append(res["images_per_s_per_core"])
        summary = summarize(per_core)
        summary["load_average_1m_after"] = machine.facts()["load_average_1m"]
        print(json.dumps(summary), flush=True)
    for kind in ("ascii", "mixed"):
        print(json.dumps(time_tokenizer(kind)), flush=True)


if __name__ == "__main__":
    main()
