"""Counted skips: why samples were dropped, with the first few offending keys of each reason."""

from __future__ import annotations

from collections.abc import Mapping


class SkipCounter:
    """Counts skipped samples per reason; keeps the first `keep` keys (with details) per reason."""

    def __init__(self, keep: int = 5):
        self.keep = keep
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, key: str, detail: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.keep:
            shown.append(f"{key} ({detail})" if detail else str(key))

    def merge(self, other: SkipCounter | Mapping) -> None:
        d = other.to_dict() if isinstance(other, SkipCounter) else other
        for reason, rec in d.items():
            self.counts[reason] = self.counts.get(reason, 0) + int(rec["count"])
            shown = self.examples.setdefault(reason, [])
            shown.extend(rec["first"][: max(0, self.keep - len(shown))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {
            r: {"count": self.counts[r], "first": list(self.examples.get(r, []))}
            for r in sorted(self.counts)
        }

    def report(self) -> str:
        if not self.counts:
            return "skipped: none"
        lines = [f"skipped {self.total} sample(s):"]
        for r, rec in self.to_dict().items():
            lines.append(f"  {r}: {rec['count']} (first: {', '.join(rec['first'])})")
        return "\n".join(lines)
