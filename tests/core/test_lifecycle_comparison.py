"""A run judged by comparison metrics: decisive failures, inconclusive rounds held or paused, the score."""

from __future__ import annotations

from datetime import timedelta

from canaryd.api.constants import Classification, CompareJudge, Phase, Reason, Verdict
from canaryd.api.models import Canary, ComparisonStatus
from canaryd.core.observations import MetricResult
from tests.core.world import events, make_canary, progressing_world


def _canary(*, judge: str = "MannWhitney", critical: bool = False, policy: str = "Hold",
            threshold: int = 3, deadline: int = 600) -> Canary:  # fmt: skip
    base = make_canary(threshold=threshold, progress_deadline_seconds=deadline)
    document = base.model_dump(by_alias=True, mode="json")
    document["spec"]["analysis"]["inconclusivePolicy"] = policy
    document["spec"]["analysis"]["metrics"] = [
        {
            "name": "error-rate",
            "query": "error_rate_query",
            "compare": {"judge": judge, "critical": critical, "tolerance": 0.25},
        }
    ]
    return Canary.model_validate(document)


def _result(verdict: Verdict, judge: CompareJudge = CompareJudge.MANN_WHITNEY,
            critical: bool = False) -> tuple[MetricResult, ...]:  # fmt: skip
    classification = {
        Verdict.PASS: Classification.PASS,
        Verdict.FAIL: Classification.HIGH,
        Verdict.INCONCLUSIVE: Classification.INCONCLUSIVE,
    }[verdict]
    return (
        MetricResult(
            "error-rate",
            verdict,
            2.0,
            "canary 2 vs primary 1",
            comparison=ComparisonStatus(
                judge=judge, classification=classification, canary=2.0, primary=1.0, shift=1.0,
                shift_lower=0.5, shift_upper=1.5, critical=critical,
            ),
        ),
    )  # fmt: skip


def _round(world, results):  # type: ignore[no-untyped-def]
    world.tick(60)
    assert world.due()
    return world.decide(results)


def test_a_passing_comparison_takes_the_next_step_and_keeps_its_explanation() -> None:
    world = progressing_world(canary=_canary())
    decision = _round(world, _result(Verdict.PASS))
    assert decision.status.step == 2
    (metric,) = decision.status.metrics
    assert metric.comparison is not None and metric.comparison.score == 100.0
    assert metric.comparison.primary == 1.0 and metric.comparison.shift_lower == 0.5


def test_a_failed_fixed_sample_comparison_counts_toward_the_threshold() -> None:
    world = progressing_world(canary=_canary(threshold=2))
    first = _round(world, _result(Verdict.FAIL))
    assert first.status.phase is Phase.PROGRESSING and first.status.failed_checks == 1
    second = _round(world, _result(Verdict.FAIL))
    assert second.status.phase is Phase.FAILED
    assert Reason.THRESHOLD_REACHED in [e.reason for e in events(second)]


def test_a_failed_sequential_or_critical_comparison_fails_the_run_at_once() -> None:
    for canary, results in (
        (_canary(judge="Sequential", threshold=5), _result(Verdict.FAIL, CompareJudge.SEQUENTIAL)),
        (_canary(critical=True, threshold=5), _result(Verdict.FAIL, critical=True)),
    ):
        world = progressing_world(canary=canary)
        decision = _round(world, results)
        assert decision.status.phase is Phase.FAILED
        assert decision.status.failed_checks == 1
        failure = [e for e in events(decision) if e.reason == Reason.CRITICAL_METRIC_FAILED]
        assert failure
        assert "error-rate=2 (Fail: canary 2 vs primary 1) fails the run at once" in failure[0].message
        progressing = decision.status.condition("Progressing")
        assert progressing is not None and progressing.reason == Reason.CRITICAL_METRIC_FAILED


def test_an_inconclusive_round_holds_without_a_failed_check_until_the_deadline() -> None:
    world = progressing_world(canary=_canary(deadline=100))
    decision = _round(world, _result(Verdict.INCONCLUSIVE))
    assert (decision.status.step, decision.status.failed_checks) == (1, 0)
    assert [e.reason for e in events(decision)] == [Reason.ANALYSIS_INCONCLUSIVE]
    assert "holding at 10% without counting a failed check" in events(decision)[0].message
    progressing = decision.status.condition("Progressing")
    assert progressing is not None and progressing.reason == Reason.ANALYSIS_INCONCLUSIVE
    assert "waiting for enough evidence" in progressing.message
    healthy = decision.status.condition("AnalysisHealthy")
    assert healthy is not None
    assert (healthy.status, healthy.reason) == ("Unknown", Reason.ANALYSIS_INCONCLUSIVE)
    assert decision.next_wakeup == world.now + timedelta(minutes=1)
    again = _round(world, _result(Verdict.INCONCLUSIVE))
    assert again.status.phase is Phase.PROGRESSING
    world.tick(60)
    late = world.decide()
    assert late.status.phase is Phase.FAILED
    assert Reason.DEADLINE_EXCEEDED in [e.reason for e in events(late)]


def test_an_inconclusive_round_pauses_for_a_person_when_asked_to() -> None:
    world = progressing_world(canary=_canary(policy="Pause"))
    decision = _round(world, _result(Verdict.INCONCLUSIVE))
    assert decision.status.paused and decision.status.phase is Phase.PROGRESSING
    assert "paused at 10% for a person to decide" in events(decision)[0].message
    paused = decision.status.condition("Paused")
    assert paused is not None and paused.reason == Reason.ANALYSIS_INCONCLUSIVE
    assert "kubectl canary promote, abort or resume payments-api -n payments" in paused.message
    world.tick(3600)
    assert not world.due()
    assert world.reconcile().status.phase is Phase.PROGRESSING  # no deadline while a person decides
