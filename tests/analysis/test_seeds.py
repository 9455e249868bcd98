"""The claims study's statistics: mean ± std over seeds and Welch's interval, checked by hand."""

import math

import pytest

from sknet.analysis.seeds import (
    Spread,
    exact_t_quantile,
    regularized_beta,
    student_t_cdf,
    t_quantile,
    welch_interval,
)
from sknet.errors import ConfigError


def test_welch_interval_by_hand():
    """a = 90, 91, 92 (mean 91, s² = 1); b = 89, 89.5, 90 (mean 89.5, s² = 0.25).
    se² = 1/3 + 0.25/3 = 5/12; ν = (5/12)² / ((1/3)²/2 + (1/12)²/2) = (25/144) / (17/288) = 50/17;
    t(0.975, 50/17) = 3.2187586145 (the root of 1 − I_{ν/(ν+t²)}(ν/2, 1/2)/2 = 0.975, to 10 digits);
    interval 1.5 ± 3.2187586145 · √(5/12) = 1.5 ± 2.0776997516."""
    d = welch_interval([90.0, 91.0, 92.0], [89.0, 89.5, 90.0])
    assert d.diff == pytest.approx(1.5, abs=1e-12)
    assert d.se == pytest.approx(math.sqrt(5 / 12), rel=1e-12)
    assert d.df == pytest.approx(50 / 17, rel=1e-12)
    assert d.low == pytest.approx(1.5 - 2.0776997516, abs=1e-9)
    assert d.high == pytest.approx(1.5 + 2.0776997516, abs=1e-9)
    assert d.verdict == "within noise"
    assert welch_interval([90.0, 91.0, 92.0], [85.0, 85.5, 86.0]).verdict == "a better"
    assert welch_interval([85.0, 85.5, 86.0], [90.0, 91.0, 92.0]).verdict == "b better"


@pytest.mark.parametrize(
    ("df", "quantile"),  # t(0.975, ν), the two-sided 95% quantiles of every statistics table
    [(1, 12.7062047362), (2, 4.3026527297), (4, 2.7764451052), (10, 2.2281388520), (math.inf, 1.9599639845)],
)
def test_t_quantile_against_the_tables(df, quantile):
    assert exact_t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-9)
    assert t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-9)  # scipy's where installed
    assert exact_t_quantile(0.025, df) == pytest.approx(-quantile, abs=1e-9)


@pytest.mark.parametrize("df", [1.0, 1.7, 2.94, 6.5, 33.0])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_against_mpmath(p, df):
    """An independent reference (mpmath's incomplete beta, 30 digits) at fractional degrees of freedom."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    cdf = lambda t: 1 - mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True) / 2  # noqa: E731
    t = exact_t_quantile(p, df)
    assert float(cdf(t)) == pytest.approx(p, abs=1e-12)


def test_cdf_and_incomplete_beta_basics():
    assert student_t_cdf(0.0, 3.0) == pytest.approx(0.5)
    assert student_t_cdf(1.0, 1.0) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/π
    assert student_t_cdf(-1.0, 1.0) == pytest.approx(0.25)
    assert regularized_beta(0.3, 1.0, 1.0) == pytest.approx(0.3)  # uniform
    assert regularized_beta(0.0, 2.0, 3.0) == 0.0 and regularized_beta(1.0, 2.0, 3.0) == 1.0


def test_spread_and_edge_cases():
    s = Spread.of([1.0, 2.0, 4.0])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3) and s.std == pytest.approx(math.sqrt(7 / 3))
    assert math.isnan(Spread.of([1.0]).std)
    exact = welch_interval([2.0, 2.0], [1.0, 1.0])
    assert (exact.diff, exact.low, exact.high, exact.se) == (1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="at least 2 values on each side"):
        welch_interval([1.0], [1.0, 2.0])
    with pytest.raises(ConfigError, match="level"):
        welch_interval([1.0, 2.0], [1.0, 2.0], level=1.0)
    with pytest.raises(ConfigError, match="degrees of freedom"):
        t_quantile(0.9, 0)
    with pytest.raises(ConfigError, match="no values"):
        Spread.of([])
