"""The report's uncertainty: intervals per run (binomial, over a set's images) and per cell (over
seeds), and the difference of two cells; numpy only (scipy is not a janus dependency).

- `clopper_pearson(k, n)`: the exact binomial interval of a top-1 of k hits in n images, by
  bisection on the binomial tail probabilities. The eval JSON keeps only (top1, n) per set, not
  per-image correctness, so there is no bootstrap over images and no per-image pairing of runs.
- `t_quantile(p, df)`: Student's t quantile for any real df > 0, by bisection on the CDF written
  with the regularised incomplete beta function (continued fraction, Numerical Recipes 6.4).
- `seed_interval(values)`: mean over seeds with the 95% t-interval (df = seeds - 1).
- `difference(a, b)`: mean(b) - mean(a) with its t-interval: paired by seed when both sides hold
  the same seeds (>= 2), else Welch (Welch-Satterthwaite df).
- `protocol(result)` / `protocol_difference(a, b)`: what an eval result was measured on (suite,
  label set, classifier, templates, and per set n, classes, protocol, suite), so that results of
  different sets or protocols are refused, never averaged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from janus import display

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    value: float
    lo: float | None = None
    hi: float | None = None
    method: str = ""  # 'clopper-pearson', 't', 'paired t', 'welch t', 'normal'
    df: float | None = None
    n: int = 1  # images (binomial) or seeds

    @property
    def half(self) -> float | None:
        """Half the interval's width (the '±' of a table; a binomial interval is asymmetric)."""
        return None if self.lo is None else (self.hi - self.lo) / 2

    def excludes(self, x: float = 0.0) -> bool | None:
        return None if self.lo is None else not self.lo <= x <= self.hi

    def __str__(self) -> str:
        text = display.metric(self.value)
        return text if self.half is None else f"{text} ± {display.metric(self.half)}"


def _log_binom_pmf(n: int, p: float) -> np.ndarray:
    """log P(X = i), i = 0..n, X ~ Binomial(n, p), for 0 < p < 1."""
    i = np.arange(n + 1)
    log_comb = np.concatenate([[0.0], np.cumsum(np.log((n - i[1:] + 1) / i[1:]))])
    return log_comb + i * math.log(p) + (n - i) * math.log1p(-p)


def _bisect(f, lo: float, hi: float, iters: int = 200) -> float:
    """The root of an increasing f on [lo, hi]."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion k/n: lo solves P(X >= k | lo) = a/2, hi
    solves P(X <= k | hi) = a/2 (a = 1 - level); lo = 0 for k = 0, hi = 1 for k = n."""
    if not 0 <= k <= n or n <= 0:
        raise ValueError(f"clopper_pearson: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    a = (1 - level) / 2

    def at_least(p):  # P(X >= k), increasing in p
        return float(np.exp(_log_binom_pmf(n, p)[k:]).sum())

    def at_most(p):  # P(X <= k), decreasing in p
        return float(np.exp(_log_binom_pmf(n, p)[: k + 1]).sum())

    lo = 0.0 if k == 0 else _bisect(lambda p: at_least(p) - a, 0.0, 1.0)
    hi = 1.0 if k == n else _bisect(lambda p: a - at_most(p), 0.0, 1.0)
    return lo, hi


def top1_interval(top1: float | None, n: int | None, level: float = LEVEL) -> Interval | None:
    """A set's top-1 with its Clopper-Pearson interval (hits = round(top1 * n))."""
    if top1 is None:
        return None
    if not n:
        return Interval(float(top1))
    k = int(round(float(top1) * int(n)))
    lo, hi = clopper_pearson(k, int(n), level)
    return Interval(float(top1), lo, hi, "clopper-pearson", n=int(n))


def mean_interval(parts: Sequence[tuple[float, int]], level: float = LEVEL) -> Interval | None:
    """The mean of several sets' top-1 (e.g. average robustness) with a normal-approximation
    interval from the sets' binomial variances (independent sets): var = sum p(1-p)/n / m^2."""
    if not parts or any(p is None or not n for p, n in parts):
        return None
    m = len(parts)
    mean = sum(p for p, _ in parts) / m
    se = math.sqrt(sum(p * (1 - p) / n for p, n in parts)) / m
    z = t_quantile(1 - (1 - level) / 2, math.inf)
    return Interval(mean, max(0.0, mean - z * se), min(1.0, mean + z * se), "normal")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # fmt: skip
            d = 1 + aa * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
        + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1 - math.exp(log_front) * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t CDF; df = inf: the standard normal."""
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2))
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df > 0 degrees of freedom (real df allowed)."""
    if not 0 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    hi = 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    return _bisect(lambda t: t_cdf(t, df) - p, 0.0, hi)


def seed_interval(values: Sequence[float], level: float = LEVEL) -> Interval | None:
    """Mean over seeds with the t-interval mean ± t(1 - a/2, k - 1) s / sqrt(k) (k seeds, s the
    sample standard deviation); one seed: the value without an interval."""
    vals = [float(v) for v in values if v is not None]
    if not vals or len(vals) < len(values):  # a seed without the value: no mean of the rest
        return None
    k, mean = len(vals), float(np.mean(vals))
    if k < 2:
        return Interval(mean, n=1)
    half = t_quantile(1 - (1 - level) / 2, k - 1) * float(np.std(vals, ddof=1)) / math.sqrt(k)
    return Interval(mean, mean - half, mean + half, "t", df=k - 1, n=k)


def difference(a: dict[int, float], b: dict[int, float], level: float = LEVEL) -> Interval | None:
    """mean(b) - mean(a) over seeds ({seed: value} each side), with its t-interval: paired by
    seed when both sides have the same >= 2 seeds, else Welch's; None without a value."""
    if not a or not b or None in a.values() or None in b.values():
        return None
    q = 1 - (1 - level) / 2
    if set(a) == set(b) and len(a) >= 2:
        d = [b[s] - a[s] for s in sorted(a)]
        i = seed_interval(d, level)
        return dataclasses.replace(i, method="paired t")
    va, vb = list(a.values()), list(b.values())
    diff = float(np.mean(vb) - np.mean(va))
    if len(va) < 2 or len(vb) < 2:
        return Interval(diff, method="welch t", n=min(len(va), len(vb)))
    sa, sb = np.var(va, ddof=1) / len(va), np.var(vb, ddof=1) / len(vb)
    se = math.sqrt(sa + sb)
    if se == 0:
        return Interval(diff, diff, diff, "welch t", df=math.inf, n=min(len(va), len(vb)))
    df = (sa + sb) ** 2 / (sa**2 / (len(va) - 1) + sb**2 / (len(vb) - 1))
    half = t_quantile(q, df) * se
    return Interval(diff, diff - half, diff + half, "welch t", df=df, n=min(len(va), len(vb)))


PROTOCOL_KEYS = ("suite", "label_set", "classifier", "alpha", "templates", "v2_variant")
SET_PROTOCOL_KEYS = ("n", "classes", "protocol", "suite")


def protocol(result: dict) -> dict:
    """What an eval result was measured on: {field: value}, per set 'set <name> <field>'."""
    out = {k: result.get(k) for k in PROTOCOL_KEYS}
    for name, s in sorted((result.get("sets") or {}).items()):
        if isinstance(s, dict):
            out.update({f"set {name} {k}": s.get(k) for k in SET_PROTOCOL_KEYS})
    return out


def protocol_difference(a: dict, b: dict, ignore: Sequence[str] = ()) -> list[str]:
    """The fields two protocols (`protocol`) differ in, as 'field: A vs B', less `ignore`."""
    return [
        f"{k}: {a.get(k, 'not evaluated')!r} vs {b.get(k, 'not evaluated')!r}"
        for k in sorted(set(a) | set(b))
        if k not in ignore and a.get(k, "not evaluated") != b.get(k, "not evaluated")
    ]
