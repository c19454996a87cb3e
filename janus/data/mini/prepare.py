"""JANuS-mini v2 on demand: generate the raw sources, then build one records dir per source with
the real builder from the spec files in `janus/data/mini/specs/` (shipped in the package), once.

    python -m janus.data.mini.prepare [--out data/mini] [--raw data/mini_raw]

`janus.main` calls `prepare` when the config says `data.prepare = "mini"`: the records dirs of
`data.train` live under one root (`data/mini/<source>`), the raw data beside it (`data/mini_raw`).
An exclusive lock (`<root>.lock`, flock) makes a second process wait for the first build and then
reuse it; `<root>/BUILT.json` records what was built, and a build for other settings (seed,
sizes, generator version) replaces it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import shutil
import time

from janus.data.mini import SUITE_FILE, generate

SPEC_DIR = str(pathlib.Path(__file__).resolve().parent / "specs")
DEFAULT_RAW = "data/mini_raw"  # the raw dir the spec files name
SOURCE_NAMES = ("curated", "web", "flickr", "oi")
BUILT_FILE = "BUILT.json"


def layout(train_dir: str) -> tuple[str, str]:
    """`data/mini/curated` -> (records root `data/mini`, raw dir `data/mini_raw`)."""
    root = os.path.dirname(os.path.normpath(train_dir)) or "."
    return root, f"{root}_raw"


@contextlib.contextmanager
def _locked(path: str, log):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[mini] another process is building JANuS-mini ({path}); waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _recipe(spec_dir: str) -> dict:
    specs = {
        n: json.loads(pathlib.Path(spec_dir, f"mini_{n}.json").read_text()) for n in SOURCE_NAMES
    }
    return {"generator_version": generate.GENERATOR_VERSION, "specs": specs}


def _matches(have: dict, want: dict) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def _spec_for(spec: dict, raw: str) -> dict:
    """The spec with its raw-data paths moved from DEFAULT_RAW to `raw`."""
    spec = json.loads(json.dumps(spec))
    for src in spec["sources"]:
        for k in ("path", "root"):
            if isinstance(src.get(k), str) and src[k].startswith(DEFAULT_RAW):
                src[k] = raw + src[k][len(DEFAULT_RAW) :]
    return spec


def prepare(
    root: str = "data/mini",
    raw: str | None = None,
    *,
    seed: int | None = None,
    sizes: generate.Sizes | None = None,
    spec_dir: str = SPEC_DIR,
    workers: int = 2,
    log=print,
) -> dict:
    """Makes sure `root/<source>` hold the records of JANuS-mini v2; returns BUILT.json.

    What is there is reused when the generator version and the spec files are the same, and the
    seed and sizes too where they are given (None: whatever was built; seed 0 and `Sizes()` for a
    new build)."""
    from janus.data.ingest import cli
    from janus.fileio import atomic_write

    raw = raw or f"{os.path.normpath(root)}_raw"
    recipe = _recipe(spec_dir)
    wanted = {"generator_version": recipe["generator_version"]}
    if seed is not None:
        wanted["seed"] = seed
    if sizes is not None:
        wanted["sizes"] = dataclasses.asdict(sizes)
    built = pathlib.Path(root, BUILT_FILE)
    with _locked(f"{os.path.normpath(root)}.lock", log):
        if built.is_file():
            done = json.loads(built.read_text())
            if done.get("specs") == recipe["specs"] and _matches(done.get("raw_info", {}), wanted):
                return done
        t0 = time.time()
        marker = pathlib.Path(raw, SUITE_FILE)
        raw_info = json.loads(marker.read_text()) if marker.is_file() else {}
        if not _matches(raw_info, wanted) or not raw_info.get("counts"):
            raw_info = generate.generate(
                raw,
                seed=0 if seed is None else seed,
                sizes=sizes or generate.Sizes(),
                workers=workers,
                log=log,
            )
        built.unlink(missing_ok=True)
        commands = {}
        for name in SOURCE_NAMES:
            # The builder resumes a build with the same config by keeping its finished shards,
            # without looking at the images: after new raw data that would keep stale records.
            shutil.rmtree(pathlib.Path(root, name), ignore_errors=True)
            spec_path = pathlib.Path(spec_dir, f"mini_{name}.json")
            if os.path.normpath(raw) != os.path.normpath(DEFAULT_RAW):
                moved = pathlib.Path(root, "specs", spec_path.name)
                moved.parent.mkdir(parents=True, exist_ok=True)
                moved.write_text(json.dumps(_spec_for(recipe["specs"][name], raw), indent=1))
                spec_path = moved
            argv = ["--spec", str(spec_path), "--out", f"{root}/{name}", "--overwrite"]
            argv += ["--workers", str(workers), "--quiet"]
            if cli.main(argv) != 0:
                cmd = "python -m janus.data.build " + " ".join(argv)
                raise RuntimeError(f"building {root}/{name} failed: {cmd}")
            commands[name] = "python -m janus.data.build " + " ".join(argv)
        out = {
            "raw": raw,
            "raw_info": raw_info,
            "specs": recipe["specs"],
            "commands": commands,
            "seconds": round(time.time() - t0, 1),
        }
        atomic_write(built, json.dumps(out, indent=1, sort_keys=True) + "\n")
        log(f"[mini] JANuS-mini v2 ready in {root} ({out['seconds']} s)")
        return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m janus.data.mini.prepare", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", default="data/mini", help="records root (one dir per source)")
    p.add_argument("--raw", default=None, help="raw data dir (default <out>_raw)")
    p.add_argument("--seed", type=int, default=None, help="default: reuse what is built, else 0")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)
    prepare(args.out, args.raw, seed=args.seed, workers=args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
