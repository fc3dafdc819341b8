"""The sequential judge: anytime-valid verdicts on counts and on paired windows."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryd.api.constants import Classification, CompareDirection
from canaryd.core.judges.sequential import (
    MIN_PAIRED_WINDOWS,
    WindowCounts,
    classify_counts,
    judge_counts,
    judge_means,
    log_e_value,
    rate_bound,
    usable_windows,
)

INCREASE, DECREASE, EITHER = CompareDirection.INCREASE, CompareDirection.DECREASE, CompareDirection.EITHER
#: The usual question: may the canary's rate be up to 25 % higher, at 95 %?
EDGE = {"direction": INCREASE, "tolerance": 0.25, "confidence": 0.95}


def _poisson(rng: random.Random, mean: float) -> int:
    if mean > 40:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _windows(rng: random.Random, count: int, canary_rate: float, primary_rate: float,
             canary_requests: float = 300, primary_requests: float = 2000) -> list[WindowCounts]:  # fmt: skip
    found = []
    for _ in range(count):
        canary, primary = _poisson(rng, canary_requests), _poisson(rng, primary_requests)
        found.append(
            WindowCounts(
                _poisson(rng, canary * canary_rate), canary, _poisson(rng, primary * primary_rate), primary
            )
        )
    return found


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(1, 10_000)), min_size=1, max_size=30),
    st.sampled_from(list(CompareDirection)),
    st.floats(0, 1),
    st.floats(0.5, 0.999),
)
def test_identical_counts_never_fail(windows, direction, tolerance, confidence) -> None:
    same = [WindowCounts(min(m, n), n, min(m, n), n) for m, n in windows]
    result = judge_counts(same, direction=direction, tolerance=tolerance, confidence=confidence)
    assert result.classification in (Classification.PASS, Classification.INCONCLUSIVE)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(3.0, 20.0))
def test_a_regression_well_beyond_tolerance_fails_with_enough_data(seed, factor) -> None:
    rng = random.Random(seed)
    windows = _windows(rng, 30, 0.01 * factor, 0.01, canary_requests=1000, primary_requests=5000)
    result = judge_counts(windows, **EDGE)
    assert result.classification is Classification.HIGH
    assert result.shift_lower > 0.25


def test_a_healthy_canary_passes_once_the_evidence_suffices_and_not_before() -> None:
    rng = random.Random(3)
    windows = _windows(rng, 60, 0.01, 0.01, canary_requests=3000, primary_requests=6000)
    early = judge_counts(windows[:1], **EDGE)
    late = judge_counts(windows, **EDGE)
    assert early.classification is Classification.INCONCLUSIVE
    assert late.classification is Classification.PASS
    assert late.shift_upper < 0.25 and late.shift_lower < 0 < late.shift_upper + 1
    assert late.canary == pytest.approx(1.0, abs=0.15)  # percent


def test_the_traffic_split_may_change_from_window_to_window() -> None:
    """Equal error rates with the canary's share going from 5 % to 50 %: nothing to see."""
    rng = random.Random(4)
    windows = []
    for share in (0.05, 0.1, 0.2, 0.3, 0.5) * 8:
        windows += _windows(rng, 1, 0.02, 0.02, 4000 * share, 4000 * (1 - share))
    result = judge_counts(windows, **EDGE)
    assert result.classification is Classification.PASS
    assert abs(result.shift) < 0.15


def test_a_drift_that_hits_both_sides_cancels() -> None:
    rng = random.Random(6)
    windows = _windows(rng, 20, 0.01, 0.01, 2000, 4000) + _windows(rng, 20, 0.05, 0.05, 2000, 4000)
    result = judge_counts(windows, **EDGE)
    assert result.classification is Classification.PASS


def test_direction_decides_which_move_fails() -> None:
    rng = random.Random(7)
    fewer = _windows(rng, 30, 0.002, 0.01, 2000, 4000)  # e.g. successful logins dropped by 80 %
    assert judge_counts(fewer, direction=DECREASE, tolerance=0.25, confidence=0.95).classification is (
        Classification.LOW
    )
    assert judge_counts(fewer, direction=EITHER, tolerance=0.25, confidence=0.95).classification is (
        Classification.LOW
    )
    assert judge_counts(fewer, **EDGE).classification is (
        Classification.PASS
    )


def test_windows_without_traffic_on_a_side_add_nothing_and_none_left_is_no_data() -> None:
    windows = [WindowCounts(0, 0, 5, 100), WindowCounts(3, 50, 1, 0), WindowCounts(math.nan, 10, 1, 10)]
    assert usable_windows(windows) == []
    result = judge_counts(windows, **EDGE)
    assert result.classification is None
    assert usable_windows([WindowCounts(12, 10, -1, 10)]) == [WindowCounts(10, 10, 0, 10)]


def test_no_matching_event_on_either_side_is_inconclusive() -> None:
    result = judge_counts([WindowCounts(0, 500, 0, 5000)] * 20, **EDGE)
    assert result.classification is Classification.INCONCLUSIVE
    assert "no matching events" in result.detail


def test_the_e_value_falls_as_the_null_ratio_rises() -> None:
    rng = random.Random(8)
    windows = usable_windows(_windows(rng, 10, 0.02, 0.01))
    values = [log_e_value(windows, ratio, upward=True) for ratio in (0.5, 1.0, 1.5, 2.0, 3.0)]
    assert values == sorted(values, reverse=True)


def test_the_false_alarm_rate_under_the_null_stays_below_alpha_however_often_it_looks() -> None:
    """A canary exactly at the tolerance edge, checked after every window for 40 windows, 300 times."""
    rng = random.Random(14)
    alpha = 0.05
    alarms = 0
    runs = 300
    for _ in range(runs):
        windows: list[WindowCounts] = []
        for _ in range(40):
            windows += _windows(rng, 1, 0.0125, 0.01, canary_requests=800, primary_requests=3000)
            verdict = classify_counts(windows, direction=INCREASE, tolerance=0.25, confidence=1 - alpha)
            if verdict is Classification.HIGH:
                alarms += 1
                break
    assert alarms / runs <= alpha


def test_a_fixed_sample_test_looked_at_as_often_would_alarm_far_more() -> None:
    """The reason for the sequential judge: a z-test on the same data at every look inflates alarms."""
    rng = random.Random(14)
    alarms = 0
    runs = 300
    for _ in range(runs):
        canary_events = primary_events = canary_total = primary_total = 0.0
        for _ in range(40):
            (window,) = _windows(rng, 1, 0.01, 0.01, canary_requests=800, primary_requests=3000)
            canary_events += window.canary_matching
            primary_events += window.primary_matching
            canary_total += window.canary_total
            primary_total += window.primary_total
            if canary_events and primary_events:
                log_ratio = math.log((canary_events / canary_total) / (primary_events / primary_total))
                if log_ratio / math.sqrt(1 / canary_events + 1 / primary_events) > 1.645:  # one-sided 5 %
                    alarms += 1
                    break
    assert alarms / runs > 0.15


def _pairs(
    rng: random.Random, count: int, canary_factor: float, spread: float = 0.2
) -> list[tuple[float, float]]:
    return [
        (rng.lognormvariate(math.log(200 * canary_factor), spread), rng.lognormvariate(math.log(200), spread))
        for _ in range(count)
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(1, 1000), min_size=1, max_size=60),
    st.sampled_from(list(CompareDirection)),
    st.floats(0, 1),
    st.floats(0.5, 0.999),
)
def test_identical_windows_never_fail(samples, direction, tolerance, confidence) -> None:
    same = [(v, v) for v in samples]
    result = judge_means(same, direction=direction, tolerance=tolerance, confidence=confidence)
    assert result.classification in (Classification.PASS, Classification.INCONCLUSIVE)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(2.0, 5.0))
def test_a_latency_regression_well_beyond_tolerance_fails_with_enough_windows(seed, factor) -> None:
    result = judge_means(_pairs(random.Random(seed), 40, factor), **EDGE)
    assert result.classification is Classification.HIGH


def test_the_means_test_waits_for_enough_paired_windows() -> None:
    rng = random.Random(9)
    few = judge_means(_pairs(rng, MIN_PAIRED_WINDOWS - 1, 5.0), **EDGE)
    assert few.classification is Classification.INCONCLUSIVE
    assert f"needs {MIN_PAIRED_WINDOWS}" in few.detail
    gappy = [(math.nan, 1.0), (2.0, math.nan)]
    assert judge_means(gappy, **EDGE).classification is None


def test_the_means_false_alarm_rate_at_the_tolerance_edge_stays_below_alpha() -> None:
    rng = random.Random(15)
    alpha = 0.05
    alarms = 0
    runs = 300
    for _ in range(runs):
        pairs: list[tuple[float, float]] = []
        for _ in range(20):
            pairs += [(rng.gauss(125, 30), rng.gauss(100, 10)) for _ in range(3)]
            verdict = judge_means(pairs, direction=INCREASE, tolerance=0.25, confidence=1 - alpha)
            if verdict.classification is Classification.HIGH:
                alarms += 1
                break
    assert alarms / runs <= alpha


def test_a_healthy_latency_passes_and_reports_its_interval() -> None:
    result = judge_means(_pairs(random.Random(10), 40, 1.0, 0.1), **EDGE)
    assert result.classification is Classification.PASS
    assert result.shift_lower < result.shift < result.shift_upper < 0.25


def test_without_any_error_a_ratio_says_nothing_but_an_absolute_allowance_passes() -> None:
    """A service without errors: 0 of 20,000 canary requests against 0 of 60,000."""
    clean = [WindowCounts(0, 500, 0, 1500)] * 40
    assert judge_counts(clean, **EDGE).classification is Classification.INCONCLUSIVE
    allowed = judge_counts(clean, **EDGE, absolute_tolerance=0.001)  # 0.1 percentage point
    assert allowed.classification is Classification.PASS
    early = judge_counts(clean[:2], **EDGE, absolute_tolerance=0.001)  # 1,000 requests cannot tell yet
    assert early.classification is Classification.INCONCLUSIVE


def test_errors_on_the_canary_alone_fail_it_even_with_an_allowance() -> None:
    broken = [WindowCounts(25, 500, 0, 1500)] * 10  # 5 % against 0
    assert judge_counts(broken, **EDGE).classification is Classification.HIGH
    assert judge_counts(broken, **EDGE, absolute_tolerance=0.001).classification is Classification.HIGH


def test_an_allowance_keeps_a_relative_rise_of_a_tiny_rate_from_failing() -> None:
    """0.02 % against 0.01 %: twice the rate, but a tenth of the 0.1 point allowed."""
    rng = random.Random(11)
    windows = _windows(rng, 60, 0.0002, 0.0001, canary_requests=50_000, primary_requests=50_000)
    assert judge_counts(windows, **EDGE).classification is Classification.HIGH
    assert judge_counts(windows, **EDGE, absolute_tolerance=0.001).classification is Classification.PASS


def test_poisson_rate_bounds_hold_the_observed_rate_and_narrow_with_exposure() -> None:
    assert rate_bound(0, 1000, 0.05, upper=False) == 0.0
    small = rate_bound(10, 1000, 0.05, upper=True), rate_bound(10, 1000, 0.05, upper=False)
    large = rate_bound(1000, 100_000, 0.05, upper=True), rate_bound(1000, 100_000, 0.05, upper=False)
    assert small[1] < 0.01 < small[0] and large[1] < 0.01 < large[0]
    assert large[0] - large[1] < small[0] - small[1]
    assert rate_bound(0, 10_000, 0.05, upper=True) < 0.001


def test_an_absolute_allowance_widens_the_band_of_the_means_test() -> None:
    pairs = [(1.0 + 0.01 * (i % 3), 0.0 + 0.01 * (i % 3)) for i in range(30)]  # +1 against a primary at 0
    assert judge_means(pairs, **EDGE).classification is Classification.HIGH
    assert judge_means(pairs, **EDGE, absolute_tolerance=2.0).classification is Classification.PASS
