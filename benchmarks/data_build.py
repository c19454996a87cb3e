"""Builder throughput (samples/s) against its peer: a bare read+decode loop over the same files.

Writes N random-texture JPEGs in an ImageNet-style folder tree (tmp dir), then times
1. the peer: read every file and fully decode it with PIL (the least any verifying builder must do);
2. `build_dataset` end to end (scan, verify, budget, write shards, manifest) with 1 and 2 workers;
3. reading the result back: random access through `RecordsDataSource` (CRC checked) vs a
   sequential `iter_tfrecord` pass.
Prints one JSON line per measurement, with ratios to the peer.

    python benchmarks/data_build.py --n 1000 --size 256
"""

import argparse
import io
import json
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from janus.data import labelsets, records, tfrecord
from janus.data.ingest.builder import build_dataset
from janus.data.ingest.config import BuildConfig


def make_raw(root: pathlib.Path, n: int, size: int, classes: int = 10) -> list[pathlib.Path]:
    wnids = labelsets.imagenet_wnids()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        d = root / "train" / wnids[i % classes]
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        p = d / f"img_{i:06d}.JPEG"
        img.save(p, format="JPEG", quality=90)
        paths.append(p)
    return paths


def peer_decode(paths) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with Image.open(io.BytesIO(p.read_bytes())) as im:
            im.load()
    return len(paths) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        paths = make_raw(tmp / "raw", args.n, args.size)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        peer = peer_decode(paths)
        print(
            json.dumps(
                {
                    "bench": "peer_read_decode",
                    "n": args.n,
                    "size": args.size,
                    "mb": round(mb, 1),
                    "samples_per_s": round(peer, 1),
                }
            )
        )
        for w in args.workers:
            out = tmp / f"out{w}"
            cfg = BuildConfig(
                sources=[{"kind": "folder", "name": "bench", "path": str(tmp / "raw")}],
                out=str(out),
                label_set="in1000",
                num_shards=8,
                seed=0,
            )
            t0 = time.perf_counter()
            build_dataset(cfg, workers=w, progress=False)
            rate = args.n / (time.perf_counter() - t0)
            print(
                json.dumps(
                    {
                        "bench": "build",
                        "workers": w,
                        "n": args.n,
                        "samples_per_s": round(rate, 1),
                        "ratio_to_peer": round(rate / peer, 3),
                    }
                )
            )
        ds = records.RecordsDataSource(tmp / f"out{args.workers[0]}")
        order = np.random.default_rng(0).permutation(len(ds))
        t0 = time.perf_counter()
        for i in order:
            ds[int(i)]
        rand = len(ds) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        k = sum(
            1
            for s in records.list_shards(ds.records_dir, "train")
            for _ in tfrecord.iter_tfrecord(s)
        )
        seq = k / (time.perf_counter() - t0)
        print(
            json.dumps(
                {
                    "bench": "read",
                    "random_access_per_s": round(rand, 1),
                    "sequential_per_s": round(seq, 1),
                    "random_over_sequential": round(rand / seq, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
