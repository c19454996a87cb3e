"""Checks, inside an install, that janus runs on its own copies of its data files.

    python tests/installs/check_paths.py --repo CHECKOUT --expect editable|wheel [--no-torch]

- janus is imported from the checkout (editable) or from site-packages (wheel);
- the CLIP BPE vocabulary and every reference file resolve inside that janus package, and are
  byte-identical to the checkout's `janus/vendored/` (a copy from another package, e.g. open_clip's
  vocabulary, is refused even when it holds the same bytes);
- JANuS-mini's build specs ship with the package;
- the JPEG region decoder's C source ships with it and builds here (a C compiler and libjpeg-turbo's
  headers are on CI's machines; it is built into a fresh JANUS_CACHE_DIR);
- `--no-torch`: torch and open_clip are not installed (the README's step 1 has neither);
- importing janus's entrypoints loads no TensorFlow.
Exit status 0, or 1 with one line per failed check.
"""

import argparse
import hashlib
import importlib.util
import os
import pathlib
import sys
import sysconfig
import tempfile


def _sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, type=pathlib.Path)
    parser.add_argument("--expect", required=True, choices=("editable", "wheel"))
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    repo = args.repo.resolve()

    import janus
    import janus.evaluate.runner  # noqa: F401  (the entrypoints' imports)
    import janus.main  # noqa: F401
    from janus.data import reference
    from janus.data.input import jpeg_region, tokenizer
    from janus.data.mini import prepare

    failures = []
    package = pathlib.Path(janus.__file__).resolve().parent
    site = pathlib.Path(sysconfig.get_paths()["purelib"]).resolve()
    where = repo / "janus" if args.expect == "editable" else site / "janus"
    if package != where:
        failures.append(f"janus imported from {package}, expected {where}")

    shipped = {pathlib.Path("clip_bpe", tokenizer._BPE_NAME): tokenizer.default_bpe_path()}
    for name in sorted(p.name for p in (repo / "janus/vendored/reference").glob("*.*")):
        shipped[pathlib.Path("reference", name)] = reference.reference_path(name)
    for rel, got in shipped.items():
        got = pathlib.Path(got).resolve()
        if not got.is_relative_to(package / "vendored"):
            failures.append(f"{rel} resolved to {got}, outside janus' own {package / 'vendored'}")
        elif _sha(got) != _sha(repo / "janus/vendored" / rel):
            failures.append(f"{got} differs from the checkout's janus/vendored/{rel}")
    specs = pathlib.Path(prepare.SPEC_DIR).resolve()
    for name in prepare.SOURCE_NAMES:
        if not (specs / f"mini_{name}.json").is_file() or not specs.is_relative_to(package):
            failures.append(f"JANuS-mini spec mini_{name}.json not shipped in {package}")
    if not jpeg_region.SOURCE.resolve().is_relative_to(package):
        failures.append(f"{jpeg_region.SOURCE} is not inside {package}")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["JANUS_CACHE_DIR"] = cache
        if jpeg_region.status() != "on":
            failures.append(f"JPEG region decoding: {jpeg_region.status()}")
    if args.no_torch:
        installed = [m for m in ("torch", "open_clip") if importlib.util.find_spec(m)]
        failures += [f"{m} is installed" for m in installed]
    if "tensorflow" in sys.modules:
        failures.append("importing janus loaded tensorflow")

    for line in failures:
        print(f"check_paths: {line}", file=sys.stderr)
    if not failures:
        print(f"check_paths: janus ({args.expect}) at {package}: {len(shipped)} own data files")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
