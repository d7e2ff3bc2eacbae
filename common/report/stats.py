"""Seed aggregation: means with Student-t 95% confidence intervals, and claim verdicts from them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float  # nan with fewer than two values
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        if self.n == 0:
            return "n/a"
        if math.isnan(self.half_width):
            return f"{self.mean * scale:.{digits}f} (n=1)"
        return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and half-width of the two-sided Student-t interval over seeds."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, math.nan, 1)
    sd = statistics.stdev(values)
    return Interval(mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n), n)


def verdict(difference: Interval) -> str:
    """Verdict on a claim "A > B" from the interval of the per-seed difference A - B.

    Reproduced if the whole interval is above zero, not reproduced if it is wholly below (the
    opposite ordering, also significant), inconclusive if it contains zero or has too few seeds.
    """
    if difference.n < 2 or math.isnan(difference.half_width):
        return INCONCLUSIVE
    if difference.low > 0:
        return REPRODUCED
    if difference.high < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


@dataclass(frozen=True)
class SpreadRatio:
    """``sd(a) / sd(b)`` over seeds with its two-sided interval (the F distribution of the variance ratio of
    two independent normal samples)."""

    ratio: float
    low: float
    high: float

    def format(self) -> str:
        if math.isnan(self.ratio):
            return "n/a"
        return f"{self.ratio:.2f} [{self.low:.2f}, {self.high:.2f}]"


def spread_ratio(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> SpreadRatio:
    """Standard deviation of ``a`` over that of ``b``, with the F-based interval (nan with < 2 values each)."""
    if len(a) < 2 or len(b) < 2:
        return SpreadRatio(math.nan, math.nan, math.nan)
    var_a, var_b = statistics.variance(a), statistics.variance(b)
    if var_b == 0:
        return SpreadRatio(math.nan, math.nan, math.nan)
    ratio = var_a / var_b
    tail = (1 - confidence) / 2
    f_high = float(stats.f.ppf(1 - tail, len(a) - 1, len(b) - 1))
    f_low = float(stats.f.ppf(tail, len(a) - 1, len(b) - 1))
    return SpreadRatio(math.sqrt(ratio), math.sqrt(ratio / f_high), math.sqrt(ratio / f_low))


def below_verdict(low: float, high: float, threshold: float) -> str:
    """Verdict on "the quantity lies below ``threshold``" from its interval [low, high]: reproduced if the whole
    interval is below, not reproduced if it is wholly above, inconclusive otherwise (or with no interval)."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if high < threshold:
        return REPRODUCED
    if low > threshold:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def spread_verdict(ratio: SpreadRatio) -> str:
    """Verdict on "a varies less than b": whether the interval of sd(a)/sd(b) lies below 1."""
    return below_verdict(ratio.low, ratio.high, 1.0)
    if ratio.high < 1:
        return REPRODUCED
    if ratio.low > 1:
        return NOT_REPRODUCED
    return INCONCLUSIVE
