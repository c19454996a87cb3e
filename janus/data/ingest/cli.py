"""The builder's command line: `python -m janus.data.build [build] ...` and `... synthetic`.

Examples::

    # 1,000 class-balanced samples of the JANuS IN100 classes from an ImageNet-style folder tree
    python -m janus.data.build --out data/in100_1k --label-set in100 --budget 1000 \
        --class-balanced --source kind=folder,name=in100,path=/data/imagenet,split=train

    # a mixture: half ImageNet, half LAION tar shards labelled by caption matching
    python -m janus.data.build --out data/mix --label-set in100 --budget 20000 \
        --source kind=folder,name=in100,path=/data/imagenet \
        --source kind=webdataset,name=laion100,path=/data/laion/shards \
        --source-weights in100=1,laion100=1 --matching single --workers 8

    # the same from a JSON spec file (flags given on the command line override it)
    python -m janus.data.build --spec mix.json --out data/mix

    # the offline JANuS-mini dataset
    python -m janus.data.build synthetic --out data/mini
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys

from janus import exit_codes
from janus.data.ingest import matching, scan
from janus.data.ingest import sources as sources_lib
from janus.data.ingest.builder import build_dataset
from janus.data.ingest.config import BuildConfig

_SOURCE_HELP = """\
source spec: comma-separated key=value (list values joined with '+'). Kinds and options:
  kind=folder      name, path, split (default train; '' = path holds the wnid folders),
                   captions (sidecar CSV), caption_key_col (file), caption_cols (caption)
  kind=manifest    name, path (.csv/.tsv/.parquet), root (default: the file's folder),
                   image_col (filepath), caption_cols (title; e.g. title+caption),
                   label_cols (none = match captions; e.g. idx), key_col, format
  kind=webdataset  name, path (tar, folder of .tar, or glob), caption_field (json key, caption),
                   label_field (json key holding labels, or 'cls' for <key>.cls files)
  kind=openimages  name, path (CSV of MIDs), root, image_col (ImageID), label_col (LabelName),
                   caption_cols, ext (.jpg)
Keys are '<name>/<key within the source>'. Samples with no label in the label set are skipped.

spec file (--spec, JSON): {"sources": [{"kind": ..., "name": ..., "path": ...}, ...],
  "label_set": ..., "budget": ..., "seed": ..., "class_balanced": ..., "source_weights": {...},
  "source_counts": {...}, "matching": ..., "num_shards": ..., "split": ...}
"""


def _mapping(cast):
    """argparse type for `name=value,name=value` (values converted by `cast`)."""

    def parse(text: str) -> dict:
        out = {}
        for part in text.split(","):
            k, sep, v = part.partition("=")
            try:
                out[k.strip()] = cast(v)
            except ValueError:
                sep = ""
            if not sep or not k.strip():
                raise argparse.ArgumentTypeError(
                    f"{text!r}: expected name=value,name=value with {cast.__name__} values"
                )
        return out

    return parse


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m janus.data.build",
        description=(
            "Build one split of a records directory from raw sources (resumes an interrupted "
            "build of the same config). `python -m janus.data.build synthetic --out DIR` builds "
            "the offline JANuS-mini dataset instead (see `synthetic --help`)."
        ),
        epilog=_SOURCE_HELP + "\n\n" + exit_codes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="records directory to create or extend")
    p.add_argument("--source", action="append", default=[], help="a source spec (repeatable)")
    p.add_argument("--spec", help="JSON spec file (sources and build options)")
    p.add_argument("--split", help="split name (default train)")
    p.add_argument(
        "--label-set", help="in1000 (default), in100, in100_dogs, in100_rand_0N, mini10 or a file"
    )
    p.add_argument("--budget", type=int, help="exactly this many samples (default: all usable)")
    p.add_argument("--seed", type=int, help="budget and shard-order seed (default 0)")
    p.add_argument(
        "--class-balanced",
        action="store_true",
        default=None,
        help="equal counts per class (first label) within each source",
    )
    p.add_argument(
        "--source-weights", type=_mapping(float), help="name=w,name=w: budget split by weights"
    )
    p.add_argument(
        "--source-counts",
        type=_mapping(int),
        help="name=n,name=n: exact per-source counts (sum = budget)",
    )
    p.add_argument(
        "--matching",
        choices=matching.MODES,
        help="caption->label matching mode for caption-only sources (default single)",
    )
    p.add_argument(
        "--matching-compat",
        action="store_true",
        default=None,
        help="the original JANuS code's matching order (shortest n-gram first), to regenerate "
        "the paper's labels exactly",
    )
    p.add_argument("--class-names", help="class names for matching: clip, wordnet or a file")
    p.add_argument("--num-shards", type=int, help="number of shards (default 8)")
    p.add_argument(
        "--keep-unlabeled",
        action="store_true",
        default=None,
        help="keep samples with no label in the label set (label empty; for caption-only runs)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes for scanning, matching, verifying and writing (default: CPU count, at "
        "most 8)",
    )
    p.add_argument(
        "--scan-chunk",
        type=int,
        default=scan.CHUNK,
        help=f"rows per worker task while scanning and matching (default {scan.CHUNK}; "
        "the output does not depend on it)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a different earlier build")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def config_from_args(args) -> BuildConfig:
    spec = {}
    if args.spec:
        with open(args.spec) as f:
            try:
                spec = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"spec file {args.spec}: not valid JSON ({e})") from None
    srcs = list(spec.get("sources", [])) + [sources_lib.parse_source_arg(s) for s in args.source]
    if not srcs:
        raise SystemExit("error: give at least one --source (or a --spec with sources)")
    for s in srcs:
        sources_lib.make_source(s)  # validate early, before any scanning
    overrides = {
        "split": args.split,
        "label_set": args.label_set,
        "budget": args.budget,
        "seed": args.seed,
        "class_balanced": args.class_balanced,
        "source_weights": args.source_weights,
        "source_counts": args.source_counts,
        "matching": args.matching,
        "matching_compat": args.matching_compat,
        "class_names": args.class_names,
        "num_shards": args.num_shards,
        "keep_unlabeled": args.keep_unlabeled,
    }
    fields = {k: v for k, v in spec.items() if k != "sources"}
    known = set(BuildConfig.__dataclass_fields__) - {"sources", "out"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise SystemExit(
            f"error: {args.spec}: unknown spec field(s) {unknown}; known {sorted(known)}"
        )
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return BuildConfig(sources=srcs, out=args.out, **fields)


def _remove_unfinished(out: str, existed: bool) -> None:
    """After a failed build: removes the --out dir this command created when it holds nothing
    finished (no shard with its .done marker, no info.json), so no empty dir is left behind."""
    if existed or not os.path.isdir(out):
        return
    for _, _, files in os.walk(out):
        if any(f.endswith(".done") or f == "info.json" for f in files):
            return  # finished shards: kept for the resume
    shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m janus.data.build " + shlex.join(argv)
    if argv and argv[0] == "synthetic":
        from janus.data.ingest import synthetic

        return synthetic.main(argv[1:], command=command)
    if argv and argv[0] == "build":
        argv = argv[1:]
    args = _build_parser().parse_args(argv)
    existed = os.path.exists(args.out)
    try:
        cfg = config_from_args(args)
        build_dataset(
            cfg,
            workers=args.workers,
            progress=not args.quiet,
            overwrite=args.overwrite,
            command=command,
            scan_chunk=args.scan_chunk,
        )
    except (ValueError, FileNotFoundError) as e:
        _remove_unfinished(args.out, existed)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception:
        _remove_unfinished(args.out, existed)
        raise
    except KeyboardInterrupt:
        # Finished shards are kept (each has its .done marker); the same command resumes.
        print("\ninterrupted: rerun the same command to resume the build", file=sys.stderr)
        return exit_codes.INTERRUPTED
    return 0
