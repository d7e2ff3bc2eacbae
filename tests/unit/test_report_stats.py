"""Seed aggregation, the four claim verdicts, and the power analysis behind them."""

import math

import numpy as np
import pytest

from common.report.stats import (
    CONVERGED,
    INCONCLUSIVE,
    NO_EFFECT,
    REPRODUCED,
    REVERSED,
    STILL_CHANGING,
    UNDECIDED,
    Interval,
    below_verdict,
    convergence_verdict,
    interval_verdict,
    judge_claim,
    mean_ci,
    paired_correlation,
    power_at_margin,
    seeds_for_power,
)


def test_mean_ci_matches_a_hand_computed_t_interval():
    # values 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.302653, half-width = 4.302653 / sqrt(3)
    interval = mean_ci([1.0, 2.0, 3.0])
    assert interval.mean == pytest.approx(2.0)
    assert interval.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert interval.n == 3


def test_degenerate_inputs():
    assert mean_ci([]).n == 0 and mean_ci([]).format() == "n/a"
    one = mean_ci([0.5])
    assert one.mean == 0.5 and math.isnan(one.half_width) and one.format() == "50.0 (n=1)"
    assert mean_ci([0.2, 0.2, 0.2]).half_width == 0.0


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        ([0.05, 0.06, 0.07], REPRODUCED),
        ([-0.05, -0.06, -0.07], REVERSED),
        ([0.05, -0.04, 0.01], INCONCLUSIVE),
        ([0.05], INCONCLUSIVE),
    ],
)
def test_interval_verdict_reads_the_difference_interval_against_zero(diffs, expected):
    assert interval_verdict(mean_ci(diffs)) == expected


# Differences of a claim with margin 0.01 (1 point), positive in the claimed direction.
@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        ([0.05, 0.06, 0.07, 0.05, 0.06], REPRODUCED),
        ([0.002, 0.003, 0.002, 0.003, 0.0025], REPRODUCED),  # above 0, if smaller than the margin
        ([-0.05, -0.06, -0.07, -0.05, -0.06], REVERSED),
        ([0.001, -0.002, 0.0005, 0.001, -0.001], NO_EFFECT),  # 90% interval well inside ± 0.01
        ([0.03, -0.03, 0.02, -0.025, 0.01], INCONCLUSIVE),  # straddles 0 and reaches past the margin
        ([0.004, -0.006, 0.003, -0.002, 0.0], NO_EFFECT),
        ([0.02], INCONCLUSIVE),  # one seed decides nothing
    ],
)
def test_four_verdicts_against_the_margin(diffs, expected):
    assert judge_claim(diffs, margin=0.01).verdict == expected


def test_no_effect_needs_the_90_percent_interval_inside_the_margin():
    diffs = [0.004, -0.006, 0.003, -0.002, 0.0]
    test = judge_claim(diffs, margin=0.01)
    ninety = mean_ci(diffs, confidence=0.90)
    assert (test.low90, test.high90) == pytest.approx((ninety.low, ninety.high))
    assert -0.01 < test.low90 and test.high90 < 0.01
    # the same differences with a margin that the 90% interval reaches past: not "no effect"
    assert judge_claim(diffs, margin=abs(test.low90) * 0.9).verdict == INCONCLUSIVE
    # a margin between the 90% and the 95% interval's reach: the 90% one decides (two one-sided 5% tests)
    reach90 = max(abs(test.low90), abs(test.high90))
    reach95 = max(abs(test.difference.low), abs(test.difference.high))
    assert judge_claim(diffs, margin=(reach90 + reach95) / 2).verdict == NO_EFFECT


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        ([0.0, 0.001, -0.001, 0.002, -0.002], REPRODUCED),  # lower end above -0.01: non-inferior
        ([-0.005, -0.004, -0.006, -0.005, -0.005], REPRODUCED),  # worse, but by less than the margin
        ([-0.05, -0.06, -0.04, -0.05, -0.05], REVERSED),  # worse by more than the margin
        ([-0.01, 0.02, -0.03, 0.01, -0.02], INCONCLUSIVE),
    ],
)
def test_non_inferiority(diffs, expected):
    assert judge_claim(diffs, margin=0.01, non_inferiority=True).verdict == expected


def test_a_margin_must_be_positive():
    with pytest.raises(ValueError, match="margin must be positive"):
        judge_claim([0.1, 0.2], margin=0.0)


def test_power_matches_a_simulation_of_the_paired_t_test():
    # Power of "the 95% interval's lower end above 0" when the true effect is the margin, by simulation.
    rng = np.random.default_rng(0)
    n, sd, margin, trials = 6, 0.02, 0.015, 40_000
    samples = rng.normal(margin, sd, size=(trials, n))
    from scipy import stats

    t_crit = stats.t.ppf(0.975, n - 1)
    lower = samples.mean(1) - t_crit * samples.std(1, ddof=1) / math.sqrt(n)
    simulated = float((lower > 0).mean())
    assert power_at_margin(n, sd, margin) == pytest.approx(simulated, abs=0.01)


def test_seeds_for_power_is_the_fewest_that_reach_80_percent():
    sd, margin = 0.03, 0.01
    n = seeds_for_power(sd, margin)
    assert power_at_margin(n, sd, margin) >= 0.8 > power_at_margin(n - 1, sd, margin)
    # near the normal approximation (z_0.975 + z_0.8)^2 (sd / margin)^2 = 70.6, a little above it (t, not z)
    assert 71 <= n <= 75
    assert seeds_for_power(100.0, 0.001) is None  # past any number of seeds we would run
    assert seeds_for_power(math.nan, 0.01) is None


def test_an_inconclusive_check_says_how_many_seeds_would_decide_it():
    diffs = [0.03, -0.03, 0.02, -0.025, 0.01]
    test = judge_claim(diffs, margin=0.01)
    assert test.verdict == INCONCLUSIVE
    assert test.seeds_needed == seeds_for_power(float(np.std(diffs, ddof=1)), 0.01)
    assert test.power == pytest.approx(power_at_margin(5, float(np.std(diffs, ddof=1)), 0.01))


def test_paired_correlation():
    assert paired_correlation([1.0, 2.0, 3.0], [2.0, 4.0, 6.5]) == pytest.approx(0.9986, abs=1e-3)
    assert math.isnan(paired_correlation([1.0, 2.0], [1.0, 2.0]))  # too few seeds
    assert math.isnan(paired_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_format_in_percent():
    assert Interval(0.1234, 0.0101, 3).format() == "12.3 ± 1.0"


@pytest.mark.parametrize(
    ("low", "high", "threshold", "expected"),
    [
        (-0.9, -0.2, 0.0, REPRODUCED),
        (0.1, 0.7, 0.0, REVERSED),
        (-0.5, 0.5, 0.0, INCONCLUSIVE),
        (0.2, 0.9, 1.0, REPRODUCED),
        (1.1, 3.0, 1.0, REVERSED),
        (math.nan, math.nan, 0.0, INCONCLUSIVE),
    ],
)
def test_below_verdict_reads_the_interval_against_the_threshold(low, high, threshold, expected):
    assert below_verdict(low, high, threshold) == expected


@pytest.mark.parametrize("sign", [1.0, -1.0])  # a longer budget that helps, or one that hurts (overfitting)
def test_a_budget_check_is_converged_inside_the_margin_and_still_changing_beyond_it(sign):
    margin = 0.01
    inside = [sign * d for d in (0.002, 0.004, 0.001, 0.003, 0.0025)]
    verdict, diff95, diff90 = convergence_verdict(inside, margin)
    assert verdict == CONVERGED and -margin < diff90.low and diff90.high < margin
    assert diff90.half_width < diff95.half_width
    beyond = [sign * d for d in (0.03, 0.032, 0.028, 0.031, 0.029)]
    assert convergence_verdict(beyond, margin)[0] == STILL_CHANGING
    # significantly above 0 but not beyond the margin: neither converged nor still changing by the rule
    straddling = [sign * d for d in (0.008, 0.014, 0.006, 0.012, 0.010)]
    verdict, diff95, _ = convergence_verdict(straddling, margin)
    low, high = sorted((sign * diff95.low, sign * diff95.high))
    assert 0 < low < margin < high  # significant, yet the interval reaches inside the margin
    assert verdict == UNDECIDED
    assert convergence_verdict([0.001], margin)[0] == UNDECIDED  # one seed decides nothing


def test_the_convergence_boundary_is_the_90_percent_interval():
    # 5 differences whose 90% interval ends just inside the margin while the 95% one crosses it
    diffs = [0.0, 0.004, 0.008, 0.002, 0.006]
    _, diff95, diff90 = convergence_verdict(diffs, 1.0)
    margin = (diff90.high + diff95.high) / 2
    assert convergence_verdict(diffs, margin)[0] == CONVERGED
    with pytest.raises(ValueError, match="margin must be positive"):
        convergence_verdict(diffs, 0.0)
