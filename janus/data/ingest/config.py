"""What a build is asked to make (`BuildConfig`), and the builder's version.

Its own module so that the stages (`labeling`, `scan`, `builder`) and the CLI can all read it
without importing one another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

# Bump when the records a config produces change; it is part of every build's fingerprint.
BUILDER_VERSION = 1


@dataclasses.dataclass
class BuildConfig:
    sources: list[dict]
    out: str
    split: str = "train"
    label_set: str = "in1000"
    budget: int | None = None
    seed: int = 0
    class_balanced: bool = False
    source_weights: dict[str, float] | None = None
    source_counts: dict[str, int] | None = None
    matching: str = "single"
    matching_compat: bool = False
    class_names: str = "clip"
    num_shards: int = 8
    keep_unlabeled: bool = False
    name: str | None = None

    def fingerprint(self) -> str:
        d = dataclasses.asdict(self)
        d.pop("out")
        d.pop("name")
        d["builder_version"] = BUILDER_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
