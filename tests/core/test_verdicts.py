"""Judging an analysis round: failures, errors and the no-data policy."""

from __future__ import annotations

import pytest

from canaryd.api.constants import NoDataPolicy, Verdict
from canaryd.api.models import ThresholdRange
from canaryd.core.observations import MetricResult
from canaryd.core.promql import interpret_result, judge
from canaryd.core.verdicts import RoundOutcome, describe_round, round_outcome, worst_per_route

P, F, N, E = Verdict.PASS, Verdict.FAIL, Verdict.NO_DATA, Verdict.ERROR


def _round(*verdicts: Verdict) -> tuple[MetricResult, ...]:
    return tuple(MetricResult(name=f"m{i}", verdict=v) for i, v in enumerate(verdicts))


@pytest.mark.parametrize(
    ("verdicts", "policy", "outcome"),
    [
        ((), NoDataPolicy.HOLD, RoundOutcome.ADVANCE),
        ((P, P), NoDataPolicy.HOLD, RoundOutcome.ADVANCE),
        ((P, F), NoDataPolicy.HOLD, RoundOutcome.FAILED_CHECK),
        ((E, F), NoDataPolicy.PASS, RoundOutcome.FAILED_CHECK),
        ((P, E), NoDataPolicy.HOLD, RoundOutcome.ERROR),
        ((N, E), NoDataPolicy.HOLD, RoundOutcome.ERROR),
        ((N, E), NoDataPolicy.FAIL, RoundOutcome.FAILED_CHECK),
        ((P, N), NoDataPolicy.HOLD, RoundOutcome.HOLD),
        ((P, N), NoDataPolicy.FAIL, RoundOutcome.FAILED_CHECK),
        ((P, N), NoDataPolicy.PASS, RoundOutcome.ADVANCE),
    ],
)
def test_round_outcomes(verdicts: tuple[Verdict, ...], policy: NoDataPolicy, outcome: RoundOutcome) -> None:
    assert round_outcome(_round(*verdicts), policy) is outcome


@pytest.mark.parametrize("policy", list(NoDataPolicy))
def test_a_latency_beyond_the_highest_bucket_fails_the_round_whatever_the_no_data_policy(
    policy: NoDataPolicy,
) -> None:
    # histogram_quantile's +Inf used to count as no data: promoted under Pass, held under Hold.
    latency = judge(
        "latency-p99", interpret_result([{"metric": {}, "value": [1, "+Inf"]}]), ThresholdRange(max=500)
    )
    results = (MetricResult(name="success-rate", verdict=P, value=100.0), latency)
    assert round_outcome(results, policy) is RoundOutcome.FAILED_CHECK
    assert describe_round(results, F) == "latency-p99=+Inf (Fail: +Inf is above the maximum 500)"


def test_descriptions_name_the_metrics_that_matter() -> None:
    results = (
        MetricResult(name="success-rate", verdict=F, value=93.25, message="below min 99"),
        MetricResult(name="latency-p99", verdict=P, value=120.0),
    )
    assert describe_round(results, F) == "success-rate=93.25 (Fail: below min 99)"
    assert describe_round(results) == "success-rate=93.25 (Fail: below min 99), latency-p99=120 (Pass)"
    assert describe_round((), F) == "no metrics configured"


def _on(
    route: str, verdict: Verdict, value: float | None = None, message: str = ""
) -> tuple[str, MetricResult]:
    return route, MetricResult(name="success-rate", verdict=verdict, value=value, message=message)


def test_a_check_asked_once_is_that_answer_unchanged() -> None:
    only = _on("checkout", P, 99.5, "99.5 is within [99, +inf]")
    assert worst_per_route([only]) == only[1]


@pytest.mark.parametrize(
    ("verdicts", "worst"),
    [((P, F), F), ((E, F), F), ((N, E), E), ((P, N), N), ((P, P), P), ((N, N, F), F)],
)
def test_a_check_asked_per_route_takes_the_worst_verdict(
    verdicts: tuple[Verdict, ...], worst: Verdict
) -> None:
    per_route = [_on(f"r{i}", v, float(i), f"said {v.value}") for i, v in enumerate(verdicts)]
    result = worst_per_route(per_route)
    deciding = [i for i, v in enumerate(verdicts) if v is worst]
    assert result.verdict is worst and result.name == "success-rate"
    assert result.value == float(deciding[0])
    assert result.message == "; ".join(f"route r{i}: said {worst.value}" for i in deciding)
