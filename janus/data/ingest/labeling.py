"""Labels and captions for build candidates: caption matching, label-set restriction, templates.

Used by `janus.data.ingest.builder`: `Labeler` labels caption-only samples with
`janus.data.ingest.matching.Matcher` and writes template captions for labelled samples without one;
`label_candidates` applies it and the label set to every scanned candidate, counting what it drops.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Collection, Sequence

from janus.data import labelsets
from janus.data.ingest import matching
from janus.data.ingest.config import BuildConfig
from janus.data.ingest.skips import SkipCounter
from janus.data.ingest.sources import Candidate


class Labeler:
    """Labels for caption-only samples (`match`) and captions for label-only ones (`template`).

    The Matcher is built on first use, once per process: only caption-only sources need it, and
    it takes a moment. `coverage` collects every matched or rejected caption, per class and per
    source.
    """

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        self.coverage = matching.CoverageReport()

    def template(self, label: int) -> str:
        return _template(int(label), self.cfg.class_names)

    def match(self, captions: Sequence[str], source: str) -> list[int]:
        """Labels from the first caption that matches; [] when none does."""
        cfg = self.cfg
        matcher = _matcher(cfg.class_names, cfg.label_set, cfg.matching, cfg.matching_compat)
        first = None
        for caption in captions:
            result = matcher.match_detail(caption)
            first = first or result
            if result.labels:
                self.coverage.add(source, caption, result.labels)
                return [int(x) for x in result.labels]
        self.coverage.add(source, captions[0], [], first.reason)
        return []


@functools.cache
def _matcher(class_names: str, label_set: str, mode: str, compat: bool) -> matching.Matcher:
    return matching.Matcher(class_names=class_names, label_set=label_set, mode=mode, compat=compat)


@functools.cache
def _template(label: int, class_names: str) -> str:
    return matching.template_caption(label, class_names=class_names)


def label_candidates(
    candidates: Sequence[Candidate],
    cfg: BuildConfig,
    skips: SkipCounter,
    labeler: Labeler,
    duplicates: Collection[int] = (),
) -> list[Candidate]:
    """Labels restricted to the label set, captions filled in; unusable candidates are counted.

    `duplicates`: positions in `candidates` whose key came earlier in the build (found by the
    caller, who sees every key); they are counted as duplicates before anything else.
    """
    in_set = labelsets.class_mask(labelsets.resolve_label_set(cfg.label_set))
    out = []
    for pos, c in enumerate(candidates):
        if pos in duplicates:
            skips.add("duplicate key", c.key)
            continue
        labels, label_source = c.labels, c.label_source
        if labels is None:
            if not c.captions:
                skips.add("empty caption", c.key)
                continue
            labels, label_source = labeler.match(c.captions, c.source), f"matched:{cfg.matching}"
            if not labels and not cfg.keep_unlabeled:
                skips.add("caption matched no class", c.key, c.captions[0][:60])
                continue
        bad = [x for x in labels if not 0 <= x < len(in_set)]
        if bad:
            skips.add("label outside ImageNet-1k", c.key, str(bad[:3]))
            continue
        kept = tuple(int(x) for x in labels if in_set[x])
        if labels and not kept and not cfg.keep_unlabeled:
            skips.add("no label in label set", c.key, str(list(labels)[:3]))
            continue
        captions = c.captions
        if not captions:
            if not kept:
                skips.add("empty caption", c.key)
                continue
            captions = (labeler.template(kept[0]),)
        out.append(
            dataclasses.replace(c, labels=kept, captions=captions, label_source=label_source)
        )
    return out
