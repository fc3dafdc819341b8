"""Judging an analysis round: failures, errors and the no-data policy."""

from __future__ import annotations

import pytest

from canaryd.api.constants import NoDataPolicy, Verdict
from canaryd.core.observations import MetricResult
from canaryd.core.verdicts import RoundOutcome, describe_round, round_outcome

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


def test_descriptions_name_the_metrics_that_matter() -> None:
    results = (
        MetricResult(name="success-rate", verdict=F, value=93.25, message="below min 99"),
        MetricResult(name="latency-p99", verdict=P, value=120.0),
    )
    assert describe_round(results, F) == "success-rate=93.25 (Fail: below min 99)"
    assert describe_round(results) == "success-rate=93.25 (Fail: below min 99), latency-p99=120 (Pass)"
    assert describe_round((), F) == "no metrics configured"
