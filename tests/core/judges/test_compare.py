"""From Prometheus' answers for both sides to a comparison metric's verdict and its explanation."""

from __future__ import annotations

import math
from typing import Any

from canaryd.api.constants import Classification, CompareJudge, Verdict
from canaryd.api.models import MetricCheck
from canaryd.core.judges.compare import SideData, judge_comparison
from canaryd.core.promql import NoData, NoDataReason, QueryError, QueryErrorKind, RangeSeries


def _check(**compare: Any) -> MetricCheck:
    return MetricCheck.model_validate({"name": "error-rate", "query": "q", "compare": compare})


def _series(values: list[float], start: float = 1000.0, step: float = 20.0) -> RangeSeries:
    return RangeSeries(tuple((start + i * step, v) for i, v in enumerate(values)))


def test_a_clear_rise_fails_with_the_explanation_in_status() -> None:
    check = _check(judge="MannWhitney", tolerance=0.25)
    primary = [100.0 + (i % 7) for i in range(15)]
    canary = [v * 2 for v in primary]
    result = judge_comparison(check, SideData(_series(canary)), SideData(_series(primary)), samples=15)
    assert result.verdict is Verdict.FAIL
    assert result.comparison is not None
    assert result.comparison.classification is Classification.HIGH
    assert result.comparison.judge is CompareJudge.MANN_WHITNEY
    assert result.value == result.comparison.canary == sum(canary) / 15
    assert result.comparison.primary == sum(primary) / 15
    assert result.comparison.shift is not None and 0.9 < result.comparison.shift < 1.1
    assert result.comparison.shift_lower is not None and result.comparison.shift_lower > 0.25
    assert "above the tolerance of +25%" in result.message
    assert "canary 205.6 vs primary 102.8 (means of 15 and 15 samples): shift +100%" in result.message


def test_an_inconclusive_comparison_says_so() -> None:
    check = _check(judge="MannWhitney")
    result = judge_comparison(check, SideData(_series([1.0, 9.0])), SideData(_series([5.0, 4.0])), samples=2)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "not yet clear" in result.message


def test_a_failed_query_on_either_side_is_an_error_naming_it() -> None:
    check = _check()
    down = QueryError(QueryErrorKind.UNREACHABLE, "cannot connect")
    result = judge_comparison(check, SideData(_series([1.0])), SideData(down), samples=1)
    assert result.verdict is Verdict.ERROR
    assert result.message == "primary query: unreachable: cannot connect"
    assert result.comparison is None


def test_no_series_for_the_canary_is_no_data() -> None:
    check = _check()
    empty = SideData(NoData(NoDataReason.EMPTY))
    result = judge_comparison(check, empty, SideData(_series([1.0] * 5)), samples=5)
    assert result.verdict is Verdict.NO_DATA
    assert "no canary samples" in result.message and "no series" in result.message


def test_a_window_shorter_than_the_resolution_is_no_data() -> None:
    result = judge_comparison(_check(resolution="1m"), SideData(), SideData(), samples=0)
    assert result.verdict is Verdict.NO_DATA
    assert "shorter than one resolution (1m)" in result.message


def test_sequential_windows_are_paired_by_time() -> None:
    check = _check(judge="Sequential", tolerance=0.25)
    times = range(30)
    canary = RangeSeries(tuple((1000.0 + 20 * t, 100.0 + t % 3) for t in times if t % 5))  # gaps
    primary = RangeSeries(tuple((1000.0 + 20 * t, 100.0 + t % 3) for t in times))
    result = judge_comparison(check, SideData(canary), SideData(primary), samples=30)
    assert result.comparison is not None
    assert result.comparison.canary_samples == 24  # the windows where both sides have a value
    assert result.verdict is Verdict.PASS


def test_counts_without_a_matching_series_count_as_no_matching_event() -> None:
    check = _check(judge="Sequential", tolerance=0.25)
    totals = _series([1000.0] * 40)
    primary_failures = _series([20.0] * 40)
    canary = SideData(total=totals, matching=NoData(NoDataReason.EMPTY))
    result = judge_comparison(check, canary, SideData(total=totals, matching=primary_failures), samples=40)
    assert result.verdict is Verdict.PASS
    assert result.comparison is not None
    assert result.comparison.canary == 0.0 and result.comparison.primary == 2.0  # percent of events
    assert result.comparison.shift == -1.0
    assert "0% vs primary 2%" in result.message


def test_counts_without_traffic_are_no_data() -> None:
    check = _check(judge="Sequential")
    empty = SideData(total=NoData(NoDataReason.EMPTY), matching=NoData(NoDataReason.EMPTY))
    primary = SideData(total=_series([5.0]), matching=_series([0.0]))
    result = judge_comparison(check, empty, primary, samples=1)
    assert result.verdict is Verdict.NO_DATA


def test_nan_windows_are_what_no_traffic_looks_like_and_are_dropped() -> None:
    check = _check(judge="MannWhitney")
    canary = _series([math.nan] * 10 + [100.0 + i for i in range(10)])
    primary = _series([100.0 + i for i in range(20)])
    result = judge_comparison(check, SideData(canary), SideData(primary), samples=20)
    assert result.comparison is not None and result.comparison.canary_samples == 10
