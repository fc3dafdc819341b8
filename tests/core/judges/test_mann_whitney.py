"""The fixed-sample judge: what a Mann-Whitney comparison of one interval concludes."""

from __future__ import annotations

import math
import random
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryd.api.constants import Classification, CompareDirection, OutlierStrategy
from canaryd.core.judges import mann_whitney
from canaryd.core.judges.mann_whitney import (
    _cut,
    _u_cumulative,
    hodges_lehmann,
    judge,
    tied_share,
    u_test_p_value,
    without_outliers,
)

INCREASE, DECREASE, EITHER = CompareDirection.INCREASE, CompareDirection.DECREASE, CompareDirection.EITHER

values = st.lists(st.floats(1, 1000, allow_nan=False), min_size=1, max_size=40)
directions = st.sampled_from(list(CompareDirection))


def _judge(canary, primary, direction=INCREASE, tolerance=0.25, confidence=0.95, **kwargs):
    return judge(canary, primary, direction=direction, tolerance=tolerance, confidence=confidence, **kwargs)


@settings(max_examples=200, deadline=None)
@given(values, directions, st.floats(0, 2), st.floats(0.5, 0.999))
def test_identical_samples_never_fail(samples, direction, tolerance, confidence) -> None:
    result = _judge(samples, list(samples), direction, tolerance, confidence)
    assert result.classification in (Classification.PASS, Classification.INCONCLUSIVE)
    assert result.shift == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(50, 150), min_size=20, max_size=40, unique=True),
    st.floats(1.0, 5.0),
    st.sampled_from([INCREASE, EITHER]),
)
def test_a_shift_well_beyond_tolerance_the_bad_way_fails_with_enough_samples(
    primary, factor, direction
) -> None:
    """Every canary sample above every primary one by more than the tolerance band: High."""
    top = max(primary)
    mean = sum(primary) / len(primary)
    canary = [v + top * factor + 0.25 * mean for v in primary]
    result = _judge(canary, primary, direction)
    assert result.classification is Classification.HIGH


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(50, 150), min_size=20, max_size=40, unique=True), st.floats(1.0, 5.0))
def test_a_drop_fails_only_a_metric_that_must_not_decrease(primary, factor) -> None:
    canary = [v - max(primary) * factor for v in primary]
    assert _judge(canary, primary, DECREASE).classification is Classification.LOW
    assert _judge(canary, primary, EITHER).classification is Classification.LOW
    assert _judge(canary, primary, INCREASE).classification is Classification.PASS


def test_a_small_shift_within_tolerance_passes_and_its_estimate_is_the_shift() -> None:
    rng = random.Random(1)
    primary = [rng.gauss(100, 3) for _ in range(30)]
    canary = [v + 5 for v in primary]  # +5 % with a 25 % tolerance
    result = _judge(canary, primary)
    assert result.classification is Classification.PASS
    assert result.shift == pytest.approx(0.05, rel=0.05)
    assert result.shift_lower < result.shift < result.shift_upper
    assert result.canary_samples == result.primary_samples == 30


def test_a_shift_straddling_the_tolerance_edge_is_inconclusive() -> None:
    rng = random.Random(2)
    primary = [rng.gauss(100, 20) for _ in range(12)]
    canary = [rng.gauss(125, 20) for _ in range(12)]
    result = _judge(canary, primary)
    assert result.classification is Classification.INCONCLUSIVE
    assert result.shift_lower < 0.25 < result.shift_upper


def test_too_few_samples_for_the_confidence_asked_give_an_infinite_interval() -> None:
    result = _judge([200.0, 210.0], [100.0, 101.0])  # the smallest two-sided p-value is 1/3
    assert result.classification is Classification.INCONCLUSIVE
    assert math.isinf(result.shift_lower) and math.isinf(result.shift_upper)
    assert "too few samples" in result.detail


def test_nan_and_infinite_samples_are_dropped_and_no_sample_is_no_data() -> None:
    result = _judge([math.nan, 100.0, math.inf] * 10, [100.0, math.nan] * 10)
    assert (result.canary_samples, result.primary_samples) == (10, 10)
    empty = _judge([math.nan, math.nan], [1.0, 2.0])
    assert empty.classification is None
    assert "no canary samples" in empty.detail


def test_outliers_are_removed_only_when_asked_and_never_with_a_zero_spread() -> None:
    base = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]
    assert without_outliers([*base, 1000.0]) == base
    assert without_outliers([0.0, 0.0, 0.0, 0.0, 0.0, 20.0]) == [0.0, 0.0, 0.0, 0.0, 0.0, 20.0]
    primary = [10.0 + i % 5 for i in range(20)]
    canary = [10.0 + i % 5 for i in range(19)] + [10_000.0]
    kept = _judge(canary, primary, outliers=OutlierStrategy.KEEP)
    removed = _judge(canary, primary, outliers=OutlierStrategy.REMOVE)
    assert kept.canary_samples == 20 and removed.canary_samples == 19
    assert removed.canary == pytest.approx(sum(canary[:19]) / 19)


def test_mostly_equal_samples_never_pass() -> None:
    """Windows without a single error: the median shift is 0 whatever the error rate does."""
    primary = [0.0] * 10 + [1.0, 2.0, 1.5, 0.5]
    canary = [0.0] * 14
    result = _judge(canary, primary)
    assert tied_share(primary) == 10 / 14 and tied_share(canary) == 0.0
    assert result.classification is Classification.INCONCLUSIVE
    assert "equal" in result.detail
    constant = _judge([10.0] * 14, [20.0] * 14)  # all equal on each side: nothing hidden
    assert constant.classification is Classification.PASS


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 3), (4, 4), (5, 7)])
def test_the_exact_u_distribution_counts_every_arrangement(n: int, m: int) -> None:
    cumulative = _u_cumulative(n, m)
    assert cumulative[-1] == math.comb(n + m, n)
    # Brute force: U of the first sample = pairs (x from it, y from the other) with x > y.
    counts = [0] * (n * m + 1)
    for chosen in combinations(range(n + m), n):
        u = sum(1 for x in chosen for y in set(range(n + m)) - set(chosen) if x > y)
        counts[u] += 1
    running = 0
    for u, count in enumerate(counts):
        running += count
        assert cumulative[u] == running


def test_the_exact_and_the_normal_cut_agree_where_they_meet() -> None:
    exact = _cut(50, 50, 0.05)
    sigma = math.sqrt(2500 * 101 / 12)
    normal = math.floor(1250 + 0.5 - 1.959964 * sigma)
    assert abs(exact - normal) <= 2
    assert _cut(60, 60, 0.05) == math.floor(1800 + 0.5 - 1.959964 * math.sqrt(3600 * 121 / 12))


def test_the_interval_covers_the_true_shift_about_as_often_as_asked() -> None:
    rng = random.Random(5)
    covered = 0
    trials = 300
    for _ in range(trials):
        primary = [rng.gauss(0, 1) for _ in range(15)]
        canary = [rng.gauss(0.7, 1) for _ in range(15)]
        _, lower, upper = hodges_lehmann(canary, primary, 0.9)
        covered += lower <= 0.7 <= upper
    assert 0.85 <= covered / trials <= 0.96


def test_the_p_value_separates_shifted_samples_and_not_equal_ones() -> None:
    assert u_test_p_value(list(range(20)), list(range(20))) == pytest.approx(1.0, abs=0.05)
    assert u_test_p_value([v + 30.0 for v in range(20)], [float(v) for v in range(20)]) < 1e-6
    assert mann_whitney.finite([1.0, math.nan, -math.inf]) == [1.0]


def test_an_absolute_allowance_widens_the_band_around_a_primary_at_zero() -> None:
    primary = [0.0] * 20
    canary = [0.2, 0.3] * 10  # e.g. 0.25 percentage point more errors, against none
    assert _judge(canary, primary).classification is Classification.HIGH
    assert _judge(canary, primary, absolute_tolerance=0.5).classification is Classification.PASS
