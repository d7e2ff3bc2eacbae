"""Seed aggregation (means with Student-t 95% intervals) and the four claim verdicts.

A claim "A > B" is judged on the paired per-seed difference d = A - B (signed so that positive is the claimed
direction) against its declared margin, the smallest effect of interest:

- reproduced: the 95% interval of mean(d) lies above 0;
- reversed: it lies below 0;
- no effect: the 90% interval lies inside (-margin, +margin) (two one-sided tests at 5%): whatever the
  difference is, it is smaller than the effect the claim is about;
- inconclusive: none of these; the report then says how many seeds would give 80% power at the margin.

A non-inferiority claim ("A is comparable to or better than B") is reproduced when the 95% interval's lower end
lies above -margin and reversed when its upper end lies below -margin (A worse by more than the margin).

A budget check (is a baseline trained long enough?) reads the paired difference "twice the budget - the budget"
the same way: converged when its 90% interval lies inside (-margin, +margin), still changing when its 95%
interval lies wholly outside them, else undecided.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

REPRODUCED = "reproduced"
REVERSED = "reversed"
NO_EFFECT = "no effect"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, REVERSED, NO_EFFECT, INCONCLUSIVE)

POWER_TARGET = 0.8  # the power a paper's number of seeds is chosen for, at each claim's margin
MAX_SEEDS = 10_000  # the power search stops here: "more than 10000 seeds" is answer enough


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


# Metrics shown as they are (not in %), with three decimals.
RAW_METRICS = frozenset({"nll", "sharpness_rho", "hessian_top_eigenvalue", "alignment", "uniformity"})


def format_interval(metric: str, interval: Interval | dict[str, float]) -> str:
    """``mean ± half-width`` of a metric: in % (one decimal), or as it is for the metrics in RAW_METRICS."""
    interval = interval if isinstance(interval, Interval) else Interval(**interval)
    if metric in RAW_METRICS:
        return interval.format(scale=1.0, digits=3)
    return interval.format()


def format_margin(metric: str, margin: float) -> str:
    """A claim's margin in the units its metric is shown in: points, or as it is (RAW_METRICS)."""
    return f"{margin if metric in RAW_METRICS else 100 * margin:g}"


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


def interval_verdict(difference: Interval) -> str:
    """Verdict on "A > B" from the 95% interval of the difference alone (no margin): reproduced above 0,
    reversed below 0, else inconclusive. For a paper's secondary checks that declare no smallest effect."""
    if difference.n < 2 or math.isnan(difference.half_width):
        return INCONCLUSIVE
    if difference.low > 0:
        return REPRODUCED
    if difference.high < 0:
        return REVERSED
    return INCONCLUSIVE


def power_at_margin(n: int, sd: float, margin: float) -> float:
    """Probability that n paired seeds whose differences have standard deviation ``sd`` decide a claim whose
    true effect is exactly ``margin``: the lower end of the 95% t interval of the mean lands above 0.

    The same number is the power of the non-inferiority test (lower end above -margin) when the true
    difference is 0. From the noncentral t distribution with n - 1 degrees of freedom."""
    if n < 2 or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 1.0
    t_crit = float(stats.t.ppf(0.975, n - 1))
    return float(stats.nct.sf(t_crit, n - 1, margin * math.sqrt(n) / sd))


def seeds_for_power(sd: float, margin: float, target: float = POWER_TARGET) -> int | None:
    """The fewest seeds (at least 2) with ``power_at_margin`` of at least ``target``; None past MAX_SEEDS or
    without a standard deviation."""
    if math.isnan(sd):
        return None
    if power_at_margin(MAX_SEEDS, sd, margin) < target:
        return None
    low, high = 2, MAX_SEEDS  # power grows with n: bisect for the first n that reaches the target
    while low < high:
        mid = (low + high) // 2
        if power_at_margin(mid, sd, margin) >= target:
            high = mid
        else:
            low = mid + 1
    return low


@dataclass(frozen=True)
class ClaimTest:
    """A claim's verdict from its paired per-seed differences (positive: the claimed direction)."""

    verdict: str
    difference: Interval  # mean paired difference with its 95% interval
    low90: float  # the 90% interval, the one the no-effect test reads
    high90: float
    margin: float
    non_inferiority: bool
    sd: float  # of the per-seed differences
    power: float  # at the margin with these seeds (see power_at_margin)
    seeds_needed: int | None  # for 80% power at the margin, given sd; None past MAX_SEEDS

    @property
    def n(self) -> int:
        return self.difference.n


def judge_claim(differences: Sequence[float], margin: float, non_inferiority: bool = False) -> ClaimTest:
    """The verdict on a claim from its paired per-seed ``differences`` (see the module's docstring)."""
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    diff95, diff90 = mean_ci(differences), mean_ci(differences, confidence=0.90)
    n = len(differences)
    sd = statistics.stdev(differences) if n >= 2 else math.nan
    verdict = INCONCLUSIVE
    if n >= 2:
        if non_inferiority:
            if diff95.low > -margin:
                verdict = REPRODUCED
            elif diff95.high < -margin:
                verdict = REVERSED
        elif diff95.low > 0:
            verdict = REPRODUCED
        elif diff95.high < 0:
            verdict = REVERSED
        elif -margin < diff90.low and diff90.high < margin:
            verdict = NO_EFFECT
    return ClaimTest(
        verdict=verdict,
        difference=diff95,
        low90=diff90.low,
        high90=diff90.high,
        margin=margin,
        non_inferiority=non_inferiority,
        sd=sd,
        power=power_at_margin(n, sd, margin),
        seeds_needed=seeds_for_power(sd, margin),
    )


def paired_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation of two methods' per-seed values (nan with fewer than 3 seeds or a constant one):
    how much of the seed-to-seed noise the pairing removes."""
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(statistics.correlation(a, b))


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
    interval is below, reversed if it is wholly above, inconclusive otherwise (or with no interval)."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if high < threshold:
        return REPRODUCED
    if low > threshold:
        return REVERSED
    return INCONCLUSIVE


def spread_verdict(ratio: SpreadRatio) -> str:
    """Verdict on "a varies less than b": whether the interval of sd(a)/sd(b) lies below 1."""
    return below_verdict(ratio.low, ratio.high, 1.0)


CONVERGED = "converged"
STILL_CHANGING = "still changing"
UNDECIDED = "undecided"


def convergence_verdict(differences: Sequence[float], margin: float) -> tuple[str, Interval, Interval]:
    """``(verdict, 95% interval, 90% interval)`` of the paired differences "doubled budget - budget"."""
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    diff95, diff90 = mean_ci(differences), mean_ci(differences, confidence=0.90)
    verdict = UNDECIDED
    if len(differences) >= 2:
        if -margin < diff90.low and diff90.high < margin:
            verdict = CONVERGED
        elif diff95.low > margin or diff95.high < -margin:
            verdict = STILL_CHANGING
    return verdict, diff95, diff90
