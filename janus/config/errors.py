"""The config's error type, and the "did you mean" hint its messages carry."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A config field is wrong; the message names the field."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the valid name closest to `name` ("" when none is close)."""
    import difflib

    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if not close and "." in name:  # compare the last part: optimizer.lrr -> optimizer.lr
        leaf = name.rsplit(".", 1)
        same_parent = [v for v in valid if v.rsplit(".", 1)[0] == leaf[0]]
        tails = difflib.get_close_matches(leaf[1], [v.rsplit(".", 1)[-1] for v in same_parent])
        close = [f"{leaf[0]}.{tails[0]}"] if tails else []
    return f"; did you mean {close[0]!r}?" if close else ""
