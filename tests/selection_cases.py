"""Records dirs and selection calls whose results were recorded before the columnar manifest.

`tests/data/selection_golden.json` holds `select_examples` results computed by the row-by-row
selection at commit 362a483 (the code before the columnar manifest); test_manifest checks that the
columnar and the jsonl paths still give exactly those items and counts.
"""

import pathlib

from test_pipeline import make_records


def make_dirs(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Three small dirs: mixed sources with unlabeled rows, a one-source dir, and a val split."""
    return {
        "mixed": make_records(
            root / "mixed",
            240,
            shards=3,
            classes=12,
            source=("x", "y", "z"),
            unlabeled=set(range(0, 240, 17)),
        ),
        "plain": make_records(root / "plain", 120, shards=2, classes=5, source="b"),
        "val": make_records(root / "val", 60, shards=1, classes=4, split="val"),
    }


# (case name, dirs as names or (name, weight), select_examples keyword arguments)
CASES = [
    ("all", "mixed", {}),
    ("all_captions", "mixed", {"captions": True}),
    ("label_set", "mixed", {"label_set": [2, 7, 3]}),
    ("label_set_captions", "mixed", {"label_set": [2, 7, 3], "captions": True}),
    ("split_val", "val", {"split": "val"}),
    *[
        (f"budget{n}_seed{s}", "mixed", {"budget": n, "seed": s})
        for s in (0, 5)
        for n in (10, 25, 60, 100, 217)
    ],
    *[
        (f"balanced{n}_seed{s}", "mixed", {"budget": n, "seed": s, "class_balanced": True})
        for s in (0, 5)
        for n in (12, 25, 61, 120)
    ],
    *[
        (
            f"in_set_balanced{n}",
            "mixed",
            {"budget": n, "seed": 2, "class_balanced": True, "label_set": [2, 7, 3]},
        )
        for n in (6, 31, 45)
    ],
    ("captions_budget", "mixed", {"budget": 150, "seed": 1, "captions": True}),
    *[
        (f"mixture{n}", [("mixed", 3.0), ("plain", 1.0)], {"budget": n, "seed": 4})
        for n in (20, 80)
    ],
    (
        "mixture_balanced",
        [("mixed", 1.0), ("plain", 2.0)],
        {"budget": 90, "seed": 4, "class_balanced": True},
    ),
    ("two_dirs_all", ["mixed", "plain"], {}),
]


def resolve(dirs, paths: dict[str, pathlib.Path]):
    if isinstance(dirs, str):
        return paths[dirs]
    return [(paths[d[0]], d[1]) if isinstance(d, tuple) else paths[d] for d in dirs]


def comparable(items, manifest) -> dict:
    """What must not change: the items and the manifest without machine-specific paths."""
    dirs = [{k: v for k, v in d.items() if k != "dir"} for d in manifest["dirs"]]
    return {"items": [[int(a), int(b)] for a, b in items], "manifest": {**manifest, "dirs": dirs}}
