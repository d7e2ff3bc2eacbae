"""Seed aggregation and claim verdicts."""

import math

import pytest

from common.report.stats import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Interval,
    below_verdict,
    mean_ci,
    verdict,
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
        ([-0.05, -0.06, -0.07], NOT_REPRODUCED),
        ([0.05, -0.04, 0.01], INCONCLUSIVE),
        ([0.05], INCONCLUSIVE),
    ],
)
def test_verdict_from_the_difference_interval(diffs, expected):
    assert verdict(mean_ci(diffs)) == expected


def test_format_in_percent():
    assert Interval(0.1234, 0.0101, 3).format() == "12.3 ± 1.0"


@pytest.mark.parametrize(
    ("low", "high", "threshold", "expected"),
    [
        (-0.9, -0.2, 0.0, REPRODUCED),
        (0.1, 0.7, 0.0, NOT_REPRODUCED),
        (-0.5, 0.5, 0.0, INCONCLUSIVE),
        (0.2, 0.9, 1.0, REPRODUCED),
        (1.1, 3.0, 1.0, NOT_REPRODUCED),
        (math.nan, math.nan, 0.0, INCONCLUSIVE),
    ],
)
def test_below_verdict_reads_the_interval_against_the_threshold(low, high, threshold, expected):
    assert below_verdict(low, high, threshold) == expected
