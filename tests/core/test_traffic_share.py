"""Traffic-share checks: a weight step counts only once the data plane carries it, and holds until then."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from canaryd.api.constants import Phase, Reason
from canaryd.api.models import Canary
from canaryd.core.lifecycle import analysis_due, decide, traffic_share_due
from canaryd.core.observations import ShareReading
from tests.core.world import World, events, failing, make_canary, passing, progressing_world


def share_checked(canary: Canary, *, tolerance: float = 5, affinity: bool = False) -> Canary:
    analysis = canary.spec.analysis.model_dump(by_alias=True, exclude_none=True, mode="json")
    analysis["trafficShare"] = {"templateRef": {"name": "traffic-share"}, "tolerance": tolerance}
    if affinity:
        analysis["sessionAffinity"] = {"cookieName": "canary", "maxAge": "1h"}
    spec = canary.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    spec["analysis"] = analysis
    return Canary.model_validate({"metadata": canary.metadata.model_dump(by_alias=True), "spec": spec})


def world_at_first_step(**canary: object) -> World:
    affinity = bool(canary.pop("affinity", False))
    tolerance = float(canary.pop("tolerance", 5))  # type: ignore[arg-type]
    return progressing_world(
        canary=share_checked(make_canary(**canary), tolerance=tolerance, affinity=affinity)  # type: ignore[arg-type]
    )


def measure(world: World, *values: float | None) -> None:
    """One reconcile at which the runtime measured the share (as it does when ``traffic_share_due``)."""
    observations = world.observations()
    assert traffic_share_due(world.canary, observations, world.now)
    readings = tuple(ShareReading("payments-api", v, "" if v is not None else "empty result") for v in values)
    decision = decide(world.canary, replace(observations, traffic_share=readings), world.now)
    world.apply(decision.effects)
    world.canary = world.canary.model_copy(update={"status": decision.status})
    world.history.append(decision)


def test_no_analysis_round_counts_until_the_share_is_measured_a_full_window_after_the_step() -> None:
    world = world_at_first_step()
    assert world.status.canary_weight == 10
    world.tick(59)
    assert not traffic_share_due(world.canary, world.observations(), world.now)
    assert not analysis_due(world.canary, world.observations(), world.now)
    shifted = world.status.condition("TrafficShifted")
    assert shifted is not None and (shifted.status, shifted.reason) == ("Unknown", "MeasuringTrafficShare")
    world.tick(1)
    assert not analysis_due(world.canary, world.observations(), world.now)
    measure(world, 10.4)
    shifted = world.status.condition("TrafficShifted")
    assert shifted is not None and (shifted.status, shifted.reason) == ("True", "TrafficShifted")
    assert "10.4%" in shifted.message and "10% ± 5" in shifted.message
    assert world.status.traffic is not None and world.status.traffic.share is not None
    assert (world.status.traffic.share.measured, world.status.traffic.share.expected) == (10.4, 10)
    assert [e.reason for e in events(world.history[-1])] == [Reason.TRAFFIC_SHIFTED]
    world.tick(60)
    assert analysis_due(world.canary, world.observations(), world.now)


def test_a_share_off_the_weight_holds_the_step_without_a_failed_check_and_says_so() -> None:
    world = world_at_first_step()
    world.tick(60)
    measure(world, 0.0)
    status = world.status
    shifted = status.condition("TrafficShifted")
    assert shifted is not None and (shifted.status, shifted.reason) == ("False", "TrafficNotShifted")
    assert "0%" in shifted.message and "expected 10% ± 5" in shifted.message
    progressing = status.condition("Progressing")
    assert progressing is not None and "does not carry the new weight" in progressing.message
    assert status.failed_checks == 0 and status.step == 1
    assert [(e.type, e.reason) for e in events(world.history[-1])] == [("Warning", "TrafficNotShifted")]
    # Rechecked later, without another Warning, until it is carried; then the step's analysis counts.
    world.tick(60)
    assert not analysis_due(world.canary, world.observations(), world.now)
    measure(world, 3.0)
    assert events(world.history[-1]) == []
    world.tick(60)
    measure(world, 9.0)
    assert world.status.condition("TrafficShifted").status == "True"  # type: ignore[union-attr]
    world.tick(60)
    decision = world.decide(passing())
    assert decision.status.step == 2 and decision.status.canary_weight == 20


def test_a_share_never_carried_fails_the_run_at_the_progress_deadline_with_that_reason() -> None:
    world = world_at_first_step(progress_deadline_seconds=300)
    for _ in range(5):  # the deadline counts from when the next step was due: the step + 1m + 300s
        world.tick(60)
        measure(world, 0.0)
    assert world.status.phase is Phase.PROGRESSING
    world.tick(61)
    decision = world.decide()
    assert decision.status.phase is Phase.FAILED
    progressing = decision.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "TrafficNotShifted"
    assert "does not carry the new weight" in progressing.message
    assert world.route_weights == (100, 0)


def test_no_data_is_not_verified_and_a_failing_analysis_still_waits_for_the_share() -> None:
    world = world_at_first_step()
    world.tick(60)
    measure(world, None)
    shifted = world.status.condition("TrafficShifted")
    assert shifted is not None and shifted.status == "False" and "could not be measured" in shifted.message
    world.tick(60)
    decision = world.decide(failing())  # not due: the round is not used
    assert decision.status.failed_checks == 0


def test_with_session_affinity_only_the_lower_bound_applies() -> None:
    world = world_at_first_step(affinity=True)
    world.tick(60)
    measure(world, 35.0)  # clients the canary kept add to its weight
    shifted = world.status.condition("TrafficShifted")
    assert shifted is not None and shifted.status == "True" and "at least 5%" in shifted.message
    world.tick(60)
    measure_again = world.decide(passing())
    assert measure_again.status.step == 2
    world.tick(60)
    measure(world, 12.0)
    assert world.status.condition("TrafficShifted").status == "False"  # type: ignore[union-attr]


def test_a_tolerance_of_zero_needs_the_exact_weight() -> None:
    world = world_at_first_step(tolerance=0)
    world.tick(60)
    measure(world, 10.5)
    assert world.status.condition("TrafficShifted").status == "False"  # type: ignore[union-attr]
    world.tick(60)
    measure(world, 10.0)
    assert world.status.condition("TrafficShifted").status == "True"  # type: ignore[union-attr]
    assert timedelta(0) < world.now - world.status.last_step_time  # type: ignore[operator]
