"""A run: steps, analysis verdicts, thresholds, the progress deadline, promotion and rollback."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from canaryd.api.constants import Phase, Reason, Verdict
from canaryd.api.models import Canary
from canaryd.core.effects import EnsurePrimary, ScaleTarget, SetRouteWeights
from canaryd.core.lifecycle import analysis_due, decide
from tests.core.world import (
    actions,
    erroring,
    events,
    failing,
    initialized_world,
    make_canary,
    no_data,
    passing,
    progressing_world,
    results,
    with_status,
)


def test_the_first_step_waits_for_the_canary_to_be_ready_and_needs_no_analysis() -> None:
    world = initialized_world()
    world.new_revision("rev2")
    world.decide()
    waiting = world.decide()
    assert waiting.status.step == 0 and world.route_weights == (100, 0)
    condition = waiting.status.condition("Progressing")
    assert condition is not None and condition.reason == Reason.CANARY_NOT_READY
    assert "0/3 ready" in condition.message
    assert waiting.next_wakeup == world.now + timedelta(seconds=10)

    world.roll_out()
    step = world.decide()
    assert (step.status.step, step.status.canary_weight) == (1, 10)
    assert SetRouteWeights(primary=90, canary=10) in actions(step)
    assert step.status.last_step_time == world.now
    assert step.next_wakeup == world.now + timedelta(minutes=1)
    assert [e.reason for e in events(step)] == [Reason.STEP_ADVANCED]


def test_no_traffic_moves_through_a_route_that_is_not_accepted() -> None:
    world = initialized_world()
    world.route_accepted = False
    world.new_revision("rev2")
    world.decide()
    world.roll_out()
    decision = world.decide()
    assert decision.status.canary_weight == 0 and world.route_weights == (100, 0)
    routes = decision.status.condition("RoutesReady")
    assert routes is not None and routes.status == "False" and routes.reason == Reason.ROUTE_NOT_ACCEPTED
    assert "NotAllowedByListeners" in routes.message
    assert not analysis_due(world.canary, world.observations(), world.now + timedelta(hours=1))
    world.route_accepted = True
    assert world.decide().status.canary_weight == 10


def test_a_new_route_problem_is_announced_once_with_a_warning() -> None:
    world = initialized_world()
    world.route_accepted = False
    first = world.decide()
    warnings = [e for e in events(first) if e.type == "Warning"]
    assert [(e.reason, e.message) for e in warnings] == [
        (Reason.ROUTE_NOT_ACCEPTED, world.route_state().problem)
    ]
    assert events(world.decide()) == [], "the same problem is announced once"
    world.route_backends = False
    assert [e.reason for e in events(world.decide())] == [Reason.ROUTE_MISSING_BACKENDS]


def test_weight_steps_do_not_wait_for_the_gateway_but_an_edit_of_the_route_does() -> None:
    world = progressing_world()
    assert world.gateway_generation == 1 and world.route_generation == 2, "the first step made generation 2"
    world.tick(60)
    world.decide(passing())
    assert world.route_weights == (80, 20) and world.route_generation == 3
    record = world.status.route_record("HTTPRoute", "payments-api")
    assert record is not None and (record.first, record.last) == (1, 3)
    assert world.route_state().accepted, "two weight changes cannot make a route unacceptable"

    world.edit_route()  # generation 4: the app team adds a filter; the Gateway has seen only generation 1
    world.tick(60)
    held = world.decide()
    assert not world.due() and held.status.canary_weight == 20 and world.route_weights == (80, 20)
    routes = held.status.condition("RoutesReady")
    assert routes is not None and routes.reason == Reason.ROUTE_NOT_ACCEPTED
    world.gateway_catches_up()
    assert world.decide(passing()).status.canary_weight == 50


def test_a_route_edited_while_idle_carries_no_traffic_until_the_gateway_processed_it() -> None:
    world = initialized_world()
    world.edit_route()
    world.set_route_weights((60, 40))  # someone edited the route and its weights
    assert actions(world.decide()) == [SetRouteWeights(primary=100, canary=0)]
    world.new_revision("rev2")
    world.decide()
    world.roll_out()
    waiting = world.decide()
    assert waiting.status.canary_weight == 0, "the Gateway has not processed the edit yet"
    world.gateway_catches_up()
    assert world.decide().status.canary_weight == 10


def test_drift_is_reported_for_weights_canaryd_did_not_write() -> None:
    world = progressing_world()
    world.set_route_weights((100, 0))
    world.gateway_catches_up()  # a change canaryd did not make waits for the Gateway, weights or not
    (write,) = actions(world.decide())
    assert isinstance(write, SetRouteWeights) and (write.primary, write.canary) == (90, 10)
    (drift,) = write.drifted
    assert (drift.kind, drift.name, drift.event.type, drift.event.reason) == (
        "HTTPRoute",
        "payments-api",
        "Warning",
        Reason.ROUTE_WEIGHTS_DRIFTED,
    )
    assert "(primary 100, canary 0); put back to primary 90, canary 10" in drift.event.message
    world.tick(60)
    step = world.decide(passing())
    (own,) = [e for e in actions(step) if isinstance(e, SetRouteWeights)]
    assert own.drifted == (), "canaryd's own last weights are not drift"


def test_a_run_scales_the_canary_like_the_primary_and_never_to_zero() -> None:
    world = initialized_world()
    world.primary_replicas = 0  # an autoscaler or a person scaled the primary down
    world.new_revision("rev2")
    assert ScaleTarget(replicas=1) in actions(world.decide())


def test_a_route_without_both_backends_is_reported_as_such() -> None:
    world = initialized_world()
    world.route_backends = False
    decision = world.decide()
    routes = decision.status.condition("RoutesReady")
    assert routes is not None and routes.reason == Reason.ROUTE_MISSING_BACKENDS
    assert routes.message == world.route_state().problem


def test_route_problems_are_described_even_when_the_runtime_gives_no_text() -> None:
    world = initialized_world()
    world.route_backends = False
    bare = replace(world.route_state(), problem="")
    decision = decide(world.canary, replace(world.observations(), routes=(bare,)), world.now)
    routes = decision.status.condition("RoutesReady")
    assert routes is not None
    assert routes.message == (
        "HTTPRoute payments-api has no rule listing both the -primary and -canary Services"
    )


def test_analysis_is_due_one_interval_after_the_step() -> None:
    world = progressing_world()
    assert not world.due()
    world.tick(59)
    assert not world.due()
    world.tick(1)
    assert world.due()


def test_analysis_results_given_before_they_are_due_are_not_used() -> None:
    world = progressing_world()
    world.tick(10)
    decision = world.decide(failing())
    assert decision.status.failed_checks == 0 and decision.status.step == 1


def test_passing_rounds_walk_the_step_weights_and_promote_at_the_end() -> None:
    world = progressing_world()
    weights = [world.status.canary_weight]
    while world.status.phase is Phase.PROGRESSING:
        world.tick(60)
        assert world.due()
        world.decide(passing())
        weights.append(world.status.canary_weight)
    assert weights == [10, 20, 50, 50]
    assert world.status.phase is Phase.PROMOTING
    assert world.history[-1].status.metrics[0].verdict is Verdict.PASS
    assert EnsurePrimary(template_hash="rev2") in actions(world.history[-1])
    assert world.route_weights == (50, 50)


def test_step_weight_and_max_weight_schedule() -> None:
    world = progressing_world(canary=make_canary(step_weight=20, max_weight=50))
    weights = [world.status.canary_weight]
    for _ in range(2):
        world.tick(60)
        world.decide(passing())
        weights.append(world.status.canary_weight)
    assert weights == [20, 40, 50]
    assert world.route_weights == (50, 50)


def test_promotion_waits_for_the_primary_then_returns_traffic_then_scales_the_canary_down() -> None:
    world = progressing_world(canary=make_canary(step_weights=[50]))
    world.tick(60)
    promoting = world.decide(passing())
    assert promoting.status.phase is Phase.PROMOTING and world.primary_hash == "rev2"
    assert not world.primary_ready
    again = world.decide()
    assert again.status.phase is Phase.PROMOTING and events(again) == []
    assert world.route_weights == (50, 50)

    world.roll_out()
    finalizing = world.decide()
    assert finalizing.status.phase is Phase.FINALIZING
    assert actions(finalizing) == [SetRouteWeights(primary=100, canary=0)]
    assert finalizing.status.canary_weight == 0
    scaling = world.decide()
    assert scaling.status.phase is Phase.FINALIZING
    assert actions(scaling) == [ScaleTarget(replicas=0)]
    done = world.decide()
    assert done.status.phase is Phase.SUCCEEDED
    assert done.status.last_promoted_revision == "rev2"
    assert done.next_wakeup is None
    assert [e.reason for e in events(done)] == [Reason.SUCCEEDED]


def test_failed_checks_count_until_the_threshold_rolls_back() -> None:
    world = progressing_world()
    for expected in (1, 2):
        world.tick(60)
        decision = world.decide(failing())
        assert decision.status.failed_checks == expected
        assert decision.status.step == 1 and decision.status.canary_weight == 10
        assert [e.reason for e in events(decision)] == [Reason.ANALYSIS_FAILED]
        assert "success-rate=81" in events(decision)[0].message
        healthy = decision.status.condition("AnalysisHealthy")
        assert healthy is not None and healthy.status == "False"
    world.tick(60)
    failed = world.decide(failing())
    assert failed.status.phase is Phase.FAILED
    assert failed.status.canary_weight == 0
    assert actions(failed) == [SetRouteWeights(primary=100, canary=0)]
    assert [e.reason for e in events(failed)] == [Reason.ANALYSIS_FAILED, Reason.THRESHOLD_REACHED]
    assert all(e.type == "Warning" for e in events(failed))
    condition = failed.status.condition("Progressing")
    assert condition is not None and condition.reason == Reason.THRESHOLD_REACHED
    assert actions(world.decide()) == [ScaleTarget(replicas=0)]
    assert world.decide().next_wakeup is None


def test_analysis_errors_are_counted_apart_with_their_own_limit() -> None:
    world = progressing_world()
    world.tick(60)
    first = world.decide(erroring())
    assert (first.status.failed_checks, first.status.analysis_errors) == (0, 1)
    assert [e.reason for e in events(first)] == [Reason.ANALYSIS_ERROR]
    world.tick(60)
    second = world.decide(erroring())
    assert second.status.phase is Phase.FAILED
    condition = second.status.condition("Progressing")
    assert condition is not None and condition.reason == Reason.ERROR_LIMIT_REACHED


def test_a_failing_metric_outweighs_an_erroring_one() -> None:
    world = progressing_world()
    world.tick(60)
    decision = world.decide(results(Verdict.ERROR, Verdict.FAIL))
    assert (decision.status.failed_checks, decision.status.analysis_errors) == (1, 0)


def test_no_data_holds_by_default_neither_advancing_nor_counting() -> None:
    world = progressing_world()
    world.tick(60)
    decision = world.decide(no_data())
    status = decision.status
    assert (status.step, status.failed_checks, status.analysis_errors) == (1, 0, 0)
    assert [e.reason for e in events(decision)] == [Reason.ANALYSIS_NO_DATA]
    healthy = status.condition("AnalysisHealthy")
    assert healthy is not None and healthy.status == "Unknown"
    assert not world.due()
    assert decision.next_wakeup == world.now + timedelta(minutes=1)


def test_no_data_policy_fail_counts_a_failed_check() -> None:
    world = progressing_world(canary=make_canary(no_data_policy="Fail"))
    world.tick(60)
    assert world.decide(no_data()).status.failed_checks == 1


def test_no_data_policy_pass_advances() -> None:
    world = progressing_world(canary=make_canary(no_data_policy="Pass"))
    world.tick(60)
    decision = world.decide(no_data())
    assert decision.status.step == 2 and decision.status.failed_checks == 0


def test_a_canary_without_metrics_advances_on_an_empty_round() -> None:
    world = progressing_world(canary=make_canary(metrics=()))
    world.tick(60)
    assert world.due()
    assert world.decide(()).status.step == 2


def test_holding_on_no_data_ends_at_the_progress_deadline() -> None:
    world = progressing_world(canary=make_canary(progress_deadline_seconds=300))
    for _ in range(5):
        world.tick(60)
        assert world.decide(no_data()).status.phase is Phase.PROGRESSING
    world.tick(59)
    assert world.decide().status.phase is Phase.PROGRESSING
    world.tick(1)
    failed = world.decide()
    assert failed.status.phase is Phase.FAILED
    condition = failed.status.condition("Progressing")
    assert condition is not None and condition.reason == Reason.DEADLINE_EXCEEDED
    assert "300s" in condition.message


def test_a_canary_that_never_gets_ready_fails_at_the_progress_deadline() -> None:
    world = initialized_world(canary=make_canary(progress_deadline_seconds=120))
    world.new_revision("rev2")
    start = world.decide()
    assert start.next_wakeup is not None
    world.tick(119)
    waiting = world.decide()
    assert waiting.status.phase is Phase.PROGRESSING
    assert waiting.next_wakeup == start.status.run_started_at + timedelta(seconds=120)
    world.tick(1)
    failed = world.decide()
    assert failed.status.phase is Phase.FAILED
    assert "payments-api to be ready" in failed.status.conditions[1].message


def test_an_interval_longer_than_the_deadline_does_not_fail_a_healthy_run() -> None:
    world = progressing_world(canary=make_canary(interval="15m", progress_deadline_seconds=60))
    world.tick(15 * 60)
    assert world.due()
    assert world.decide(passing()).status.step == 2


def test_a_new_revision_mid_run_restarts_the_analysis() -> None:
    world = progressing_world()
    world.tick(60)
    world.decide(failing())
    world.tick(5)
    world.new_revision("rev3")
    decision = world.decide()
    status = decision.status
    assert status.phase is Phase.PROGRESSING and status.revision == "rev3"
    assert (status.step, status.canary_weight, status.failed_checks) == (0, 0, 0)
    assert status.run_started_at == world.now
    assert SetRouteWeights(primary=100, canary=0) in actions(decision)
    assert [e.reason for e in events(decision)] == [Reason.REVISION_CHANGED]
    world.roll_out()
    assert world.decide().status.canary_weight == 10


def test_reverting_the_target_mid_run_stops_the_run() -> None:
    world = progressing_world()
    world.new_revision("rev1")
    decision = world.decide()
    assert decision.status.phase is Phase.INITIALIZED
    assert decision.status.canary_weight == 0
    assert actions(decision) == [SetRouteWeights(primary=100, canary=0)]


def test_a_canary_losing_readiness_mid_run_holds_its_weight_without_analysis() -> None:
    world = progressing_world()
    world.target_ready = False
    world.tick(120)
    assert not world.due()
    decision = world.decide()
    assert decision.status.canary_weight == 10 and actions(decision) == []
    condition = decision.status.condition("Progressing")
    assert condition is not None and condition.reason == Reason.CANARY_NOT_READY


def test_weights_changed_by_someone_else_are_put_back() -> None:
    world = progressing_world()
    world.route_weights = (100, 0)
    decision = world.decide()
    assert actions(decision) == [SetRouteWeights(primary=90, canary=10)]
    assert events(decision) == []


def test_status_records_the_last_metric_results_with_their_time() -> None:
    world = progressing_world()
    world.tick(60)
    decision = world.decide(results(Verdict.PASS, Verdict.PASS, value=12.5))
    assert [(m.name, m.value, m.checked_at) for m in decision.status.metrics] == [
        ("m0", 12.5, world.now),
        ("m1", 12.5, world.now),
    ]


def test_a_shortened_schedule_caps_the_weight_at_the_new_max_weight() -> None:
    world = progressing_world(canary=make_canary(step_weights=[10, 40, 60]))
    world.tick(60)
    world.decide(passing())
    world.tick(60)
    world.decide(passing())
    assert world.status.canary_weight == 60
    world.canary = world.canary.model_copy(
        update={"spec": make_canary(step_weights=[10, 30]).spec, "status": world.status}
    )
    decision = world.decide()
    assert (decision.status.step, decision.status.canary_weight) == (2, 30)
    assert SetRouteWeights(primary=70, canary=30) in actions(decision)


def test_the_target_disappearing_mid_run_rolls_back() -> None:
    world = progressing_world()
    world.target_hash = None
    decision = world.decide()
    assert decision.status.phase is Phase.FAILED
    assert decision.status.canary_weight == 0
    assert actions(decision) == [SetRouteWeights(primary=100, canary=0)]


def test_a_restarted_controller_resumes_from_the_stored_status_without_replaying_a_step() -> None:
    world = progressing_world()
    world.tick(60)
    world.decide(passing())
    world.canary = Canary.model_validate_json(json.dumps(world.canary.dump()))
    world.tick(30)
    resumed = world.decide()
    assert resumed.status.step == 2 and resumed.effects == ()
    assert resumed.next_wakeup == world.now + timedelta(seconds=30)
    world.tick(30)
    assert world.due()


def test_a_promotion_whose_copy_is_done_completes_even_if_the_target_disappears() -> None:
    world = progressing_world(canary=make_canary(step_weights=[50]))
    world.tick(60)
    world.decide(passing())
    assert world.primary_hash == "rev2"
    world.target_hash = None
    world.roll_out()
    decision = world.reconcile()
    assert decision.status.phase is Phase.SUCCEEDED
    assert world.route_weights == (100, 0)


def test_a_step_whose_weight_never_reached_the_routes_restarts_its_interval_when_it_goes_on() -> None:
    world = progressing_world()
    world.tick(60)
    stepped = decide(world.canary, world.observations(passing()), world.now)
    assert (stepped.status.step, stepped.status.canary_weight) == (2, 20)
    # The replica that decided this wrote the status and died before the route patch.
    world.canary = with_status(world.canary, stepped.status)
    assert world.route_weights == (90, 10)
    world.tick(75)  # another replica takes over after the step's interval has passed
    assert not world.due(), "no round judges an interval in which the step's weight carried no traffic"
    resumed = world.decide()
    assert SetRouteWeights(primary=80, canary=20) in actions(resumed)
    assert (resumed.status.step, resumed.status.last_step_time) == (2, world.now)
    assert resumed.next_wakeup == world.now + timedelta(minutes=1)
    world.tick(60)
    assert world.due()
    assert world.decide(passing()).status.step == 3


def test_a_weight_written_promptly_keeps_the_step_clock() -> None:
    world = progressing_world()
    stepped_at = world.status.last_step_time
    world.tick(1)
    assert world.decide().status.last_step_time == stepped_at
