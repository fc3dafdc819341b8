"""How comparison metrics weigh in a round: the score, its thresholds, critical and sequential failures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from canaryd.api.constants import Classification, CompareJudge, NoDataPolicy, Verdict
from canaryd.api.models import ComparisonStatus, ScoreThresholds
from canaryd.core.observations import MetricResult
from canaryd.core.verdicts import (
    RoundOutcome,
    comparison_score,
    decisive_failure,
    metric_statuses,
    round_outcome,
)

P, F, U, N, E = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.NO_DATA, Verdict.ERROR
_CLASS = {P: Classification.PASS, F: Classification.HIGH, U: Classification.INCONCLUSIVE}


def _compared(name: str, verdict: Verdict, *, weight: float = 1.0, critical: bool = False,
              judge: CompareJudge = CompareJudge.MANN_WHITNEY) -> MetricResult:  # fmt: skip
    if verdict in (N, E):
        return MetricResult(name, verdict)
    return MetricResult(
        name,
        verdict,
        1.0,
        comparison=ComparisonStatus(
            judge=judge, classification=_CLASS[verdict], weight=weight, critical=critical
        ),
    )


def test_the_score_weighs_decided_metrics_only() -> None:
    results = (
        _compared("a", P, weight=3),
        _compared("b", F, weight=1),
        _compared("c", U, weight=10),
        MetricResult("threshold", F),
    )
    assert comparison_score(results) == 75.0
    assert comparison_score((_compared("c", U),)) is None
    assert comparison_score(()) is None


def test_a_failed_critical_metric_zeroes_the_score() -> None:
    assert comparison_score((_compared("a", P, weight=99), _compared("b", F, critical=True))) == 0.0


@pytest.mark.parametrize(
    ("results", "outcome"),
    [
        ((_compared("a", P), _compared("b", P)), RoundOutcome.ADVANCE),
        ((_compared("a", P), _compared("b", F)), RoundOutcome.FAILED_CHECK),  # 50 < 75
        ((_compared("a", P, weight=4), _compared("b", F)), RoundOutcome.INCONCLUSIVE),  # 80: marginal
        ((_compared("a", P, weight=19), _compared("b", F)), RoundOutcome.ADVANCE),  # 95
        ((_compared("a", P, weight=19), _compared("b", F, critical=True)), RoundOutcome.FAILED_CHECK),
        ((_compared("a", P), _compared("b", U)), RoundOutcome.INCONCLUSIVE),
        ((_compared("a", U),), RoundOutcome.INCONCLUSIVE),
        ((_compared("a", U), MetricResult("t", F)), RoundOutcome.FAILED_CHECK),
        ((_compared("a", U), MetricResult("t", E)), RoundOutcome.ERROR),
        ((_compared("a", U), _compared("b", N)), RoundOutcome.HOLD),
        ((_compared("a", P), _compared("b", E)), RoundOutcome.ERROR),
        ((_compared("a", P), MetricResult("t", P)), RoundOutcome.ADVANCE),
    ],
)
def test_round_outcomes_with_comparisons(results: tuple[MetricResult, ...], outcome: RoundOutcome) -> None:
    assert round_outcome(results, NoDataPolicy.HOLD) is outcome


def test_score_thresholds_are_the_canarys() -> None:
    results = (_compared("a", P, weight=4), _compared("b", F))  # 80
    assert round_outcome(results, NoDataPolicy.HOLD, ScoreThresholds(pass_=80, marginal=50)) is (
        RoundOutcome.ADVANCE
    )
    assert round_outcome(results, NoDataPolicy.HOLD, ScoreThresholds(pass_=90, marginal=85)) is (
        RoundOutcome.FAILED_CHECK
    )
    critical = (_compared("a", P), _compared("b", F, critical=True))
    assert round_outcome(critical, NoDataPolicy.HOLD, ScoreThresholds(pass_=0, marginal=0)) is (
        RoundOutcome.FAILED_CHECK
    )


def test_a_decisive_failure_is_a_critical_one_or_a_sequential_one_that_fails_the_round() -> None:
    critical = _compared("c", F, critical=True)
    assert decisive_failure((_compared("a", P), critical)) is critical
    sequential = _compared("s", F, judge=CompareJudge.SEQUENTIAL)
    assert decisive_failure((sequential,)) is sequential
    assert decisive_failure((_compared("a", P, weight=19), sequential)) is None  # the score still passes
    assert decisive_failure((_compared("m", F),)) is None  # fixed-sample: counted against threshold


def test_status_records_the_round_score_on_each_comparison() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    statuses = metric_statuses((_compared("a", P, weight=3), _compared("b", F), MetricResult("t", P)), now)
    assert [s.comparison.score if s.comparison else None for s in statuses] == [75.0, 75.0, None]
    assert round_outcome(statuses, NoDataPolicy.HOLD) is round_outcome(
        (_compared("a", P, weight=3), _compared("b", F), MetricResult("t", P)), NoDataPolicy.HOLD
    )
