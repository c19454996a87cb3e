"""Pipeline throughput: train images/s per core at 224 px from JPEG records; tokenizer speed.

Builds a temporary records dir of random-size (256-500 px) JPEGs with janus.data.records, then times
``train_loader`` with the standard train chain for worker_count 0, 1, 2 (peer: worker_count=0, the
in-process pipeline) and the CLIP tokenizer against open_clip's (peer; skipped without torch).
Prints one JSON object per line.

    python benchmarks/data_pipeline.py [--images 600] [--batches 12] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from janus.data import pipeline, records
from janus.data.tokenizer import Tokenizer

TRAIN_PP = "decode|rrc(224, scale=(0.08, 1.0))|flip|normalize('clip')"
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


def build_records(out: pathlib.Path, n: int, seed: int = 0, shards: int = 4) -> tuple[int, float]:
    rng = np.random.default_rng(seed)
    manifest, total_bytes, per = [], 0, -(-n // shards)
    for s in range(shards):
        name = records.shard_name("train", s, shards)
        with records.ShardWriter(out / name) as w:
            for i in range(s * per, min(n, (s + 1) * per)):
                h, wd = (int(x) for x in rng.integers(256, 501, 2))
                buf = io.BytesIO()
                Image.fromarray(_photo_like(rng, h, wd)).save(buf, "JPEG", quality=90)
                total_bytes += buf.tell()
                key = f"img{i:06d}"
                ex = {"image/encoded": buf.getvalue(), "label": [i % 100], "key": key}
                ex["caption"] = [f"a photo of object number {i % 100}"]
                offset = w.write(records.encode_example(ex))
                manifest.append(
                    {"key": key, "source": "bench", "labels": [i % 100], "split": "train"}
                    | {"shard": name, "offset": offset}
                )
    records.write_manifest(out, manifest)
    records.write_info(out, {"name": "bench", "splits": {"train": n}})
    return n, total_bytes / n


def time_train(records_dir, pp: str, workers: int, batches: int, batch_size: int) -> dict:
    it, _ = pipeline.train_loader(
        records_dir,
        global_batch_size=batch_size,
        pp=pp,
        seed=0,
        worker_count=workers,
        shard_index=0,
        shard_count=1,
    )
    try:
        next(it)  # warm-up: worker start-up, first reads
        next(it)
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
        seconds = time.perf_counter() - start
    finally:
        it.close()
    assert batch["image"].shape == (batch_size, 224, 224, 3)
    rate = batches * batch_size / seconds
    return {"images_per_s": round(rate, 1), "seconds": round(seconds, 2)}


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
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        n, mean_bytes = build_records(pathlib.Path(tmp), args.images)
        build_s = time.perf_counter() - start
        info = {"bench": "records", "images": n, "mean_jpeg_kb": round(mean_bytes / 1e3, 1)}
        print(json.dumps(info | {"build_s": round(build_s, 1), "cores": cores}), flush=True)
        for name, pp in (("train", TRAIN_PP), ("simclr", SIMCLR_PP)):
            base = None
            for workers in (int(w) for w in args.workers.split(",")):
                r = time_train(tmp, pp, workers, args.batches, args.batch_size)
                base = base or r["images_per_s"]
                r |= {
                    "bench": f"pipeline_{name}_224",
                    "pp": pp,
                    "worker_count": workers,
                    "images_per_s_per_core": round(r["images_per_s"] / cores, 1),
                    "ratio_vs_workers0": round(r["images_per_s"] / base, 2),
                }
                print(json.dumps(r), flush=True)
    for kind in ("ascii", "mixed"):
        print(json.dumps(time_tokenizer(kind)), flush=True)


if __name__ == "__main__":
    main()
