"""Comparing trained variants over seeds: mean ± standard deviation, and the difference of two means with a
Welch t interval (unequal variances, Welch–Satterthwaite degrees of freedom).

The t quantile comes from scipy when it is installed, otherwise from :func:`student_t_cdf` inverted by
bisection; that CDF is the regularised incomplete beta function, computed with its continued fraction
(Numerical Recipes §6.4), accurate to ~1e-12 for any real number of degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sknet.errors import ConfigError


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (n − 1) of one variant's values over seeds."""

    n: int
    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        values = [float(v) for v in values]
        if not values:
            raise ConfigError("no values to summarise")
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
        return cls(n, mean, std)


@dataclass(frozen=True)
class Difference:
    """mean(a) − mean(b) with its standard error, Welch's degrees of freedom and a two-sided interval."""

    diff: float
    se: float
    df: float
    level: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """The outcome: "a better" (the interval lies above 0), "b better" (below 0) or "within noise" (it
        contains 0)."""
        if self.low > 0:
            return "a better"
        if self.high < 0:
            return "b better"
        return "within noise"

    def to_dict(self) -> dict[str, float | str]:
        return {**asdict(self), "verdict": self.verdict}


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Difference:
    """The `level` interval of mean(a) − mean(b) (Welch): diff ± t(1 − (1 − level)/2, ν) · se, with
    se² = s_a²/n_a + s_b²/n_b and ν = se⁴ / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))."""
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    sa, sb = Spread.of(a), Spread.of(b)
    if sa.n < 2 or sb.n < 2:
        raise ConfigError(f"a Welch interval needs at least 2 values on each side, got {sa.n} and {sb.n}")
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    se = math.sqrt(va + vb)
    diff = sa.mean - sb.mean
    if se == 0:  # both sides constant: the difference is exact
        return Difference(diff, 0.0, math.inf, level, diff, diff)
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    half = t_quantile(1 - (1 - level) / 2, df) * se
    return Difference(diff, se, df, level, diff - half, diff + half)


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile of Student's t with `df` > 0 degrees of freedom (real; inf: the normal's)."""
    if not 0 < p < 1:
        raise ConfigError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ConfigError(f"degrees of freedom must be > 0, got {df}")
    try:
        from scipy.stats import t as student_t
    except ImportError:
        return exact_t_quantile(p, df)
    return float(student_t.ppf(p, df))


def exact_t_quantile(p: float, df: float) -> float:
    """:func:`t_quantile` without scipy: :func:`student_t_cdf` inverted by bisection."""
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -exact_t_quantile(1 - p, df)
    if math.isinf(df):
        lo, hi = 0.0, 40.0
    else:
        lo, hi = 0.0, 1.0
        while student_t_cdf(hi, df) < p:  # bracket the quantile (t(0.9999999, 1) is ~3e6)
            lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * max(1.0, hi):
            break
    return (lo + hi) / 2


def student_t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with `df` degrees of freedom: 1 − I_x(df/2, 1/2)/2 for t ≥ 0, x = df/(df + t²)."""
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2))
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2, 0.5)
    return 1 - tail if t >= 0 else tail


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, by its continued fraction."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1 - math.exp(log_front) * _beta_fraction(1 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h
