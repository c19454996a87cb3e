"""Numbers as a person reads them on the console; files (JSON, metrics.jsonl) keep full precision.

- metrics (losses, accuracies, norms): 4 significant digits, `0.6547`, `2.301`, `0.08510`;
- rates and times (images/s, s/step, MFU, fractions): 3 significant figures, `449`, `0.237`;
- epochs: 2 decimals; FLOPs: `6.15 GFLOP`; durations: `3m12s`, `2h03m`.
"""

from __future__ import annotations

import math

_RATE_SUFFIXES = ("_per_s", "per_s_per_device", "_time_s", "_s", "mfu", "_fraction")
_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def significant(value: float, digits: int) -> str:
    """`value` to `digits` significant digits, in plain notation from 1e-4 up to any size
    (`12345` with 3 digits is `12300`, not `1.23e+04`)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    rounded = float(f"{value:.{digits - 1}e}")  # first, so that 9.9996 -> 10.00, not 10.000
    exponent = math.floor(math.log10(abs(rounded)))
    if exponent < -4:
        return f"{rounded:.{digits - 1}e}"
    return f"{rounded:.{max(digits - 1 - exponent, 0)}f}"


def metric(value: float | None) -> str:
    return "n/a" if value is None else significant(float(value), 4)


def rate(value: float | None) -> str:
    return "n/a" if value is None else significant(float(value), 3)


def flops(value: float | None) -> str:
    """`6152614400.0` -> `6.15 GFLOP`."""
    if value is None:
        return "n/a FLOP"
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{significant(value / scale, 3)} {prefix}FLOP"
    return f"{significant(value, 3)} FLOP"


def duration(seconds: float) -> str:
    """`192` -> `3m12s`, `7384` -> `2h03m`."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def scalar(key: str, value) -> str:
    """One logged scalar, by what its key says it is."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if key.endswith("eta_s"):
        return duration(value)
    if isinstance(value, int):
        return str(value)
    if key == "epoch":
        return f"{value:.2f}"
    if key.endswith(_RATE_SUFFIXES) or key == "learning_rate":
        return rate(value)
    return metric(value)
