"""Richer analysis and workload options: dry-run metrics, inconclusive ranges, initial delays, failure
limits, skipAnalysis, abortScaleDownDelay, primaryReadyThreshold and an autoscaled target."""

from __future__ import annotations

from datetime import timedelta

from canaryd.api.constants import Action, ConditionType, Phase, Reason, Verdict
from canaryd.api.models import Canary, ThresholdRange
from canaryd.core import schedule
from canaryd.core.effects import DeleteAutoscaler, MirrorAutoscaler, ScaleTarget
from canaryd.core.lifecycle import decide
from canaryd.core.observations import AutoscalerState, MetricResult, WorkloadState
from canaryd.core.promql import NoData, NoDataReason, Value, judge
from canaryd.core.readiness import replicas_text
from tests.core.world import World, actions, events, initialized_world, progressing_world


def canary(metrics: list[dict], **spec) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "payments-api", "namespace": "payments", "generation": 1},
            "spec": {
                "targetRef": {"name": "payments-api"},
                "service": {"port": 8080},
                "routeRefs": [{"kind": "HTTPRoute", "name": "payments-api"}],
                "analysis": {
                    "interval": "1m",
                    "threshold": 3,
                    "stepWeights": [10, 20, 50],
                    "metrics": metrics,
                },
                **spec,
            },
        }
    )


def metric(name: str, **fields) -> dict:
    return {"name": name, "query": f"{name}_q", "thresholdRange": {"min": 99}, **fields}


def emitted(world: World, since: int) -> list:
    return [e for d in world.history[since:] for e in events(d)]


def test_a_dry_run_metric_is_recorded_and_shown_but_never_fails_the_run():
    world = progressing_world(canary=canary([metric("success-rate"), metric("latency", dryRun=True)]))
    world.tick(61)
    mark = len(world.history)
    world.reconcile(
        (
            MetricResult("success-rate", Verdict.PASS, 99.9),
            MetricResult("latency", Verdict.FAIL, 900.0, "above the maximum 500"),
        )
    )
    assert world.status.step == 2 and world.status.failed_checks == 0
    recorded = {m.name: m for m in world.status.metrics}
    assert recorded["latency"].dry_run and recorded["latency"].verdict is Verdict.FAIL
    assert any("latency=900 (Fail, dry-run" in e.message for e in emitted(world, mark))
    assert world.status.condition(ConditionType.ANALYSIS_HEALTHY).status == "True"


def test_a_value_in_the_inconclusive_range_pauses_the_run_for_a_person():
    assert (
        judge("sr", Value(97.0), ThresholdRange(min=99), ThresholdRange(min=95)).verdict
        is Verdict.INCONCLUSIVE
    )
    assert judge("sr", Value(90.0), ThresholdRange(min=99), ThresholdRange(min=95)).verdict is Verdict.FAIL
    assert judge("sr", Value(99.5), ThresholdRange(min=99), ThresholdRange(min=95)).verdict is Verdict.PASS
    assert (
        judge("sr", NoData(NoDataReason.EMPTY), ThresholdRange(min=99), ThresholdRange(min=95)).verdict
        is Verdict.NO_DATA
    )

    world = progressing_world(canary=canary([metric("success-rate", inconclusiveRange={"min": 95})]))
    world.tick(61)
    world.reconcile(
        (MetricResult("success-rate", Verdict.INCONCLUSIVE, 97.0, "within the inconclusive range"),)
    )
    assert world.status.paused and world.status.step == 1 and world.status.failed_checks == 0
    paused = world.status.condition(ConditionType.PAUSED)
    assert paused.reason == Reason.ANALYSIS_INCONCLUSIVE and "success-rate=97" in paused.message
    world.request(Action.PROMOTE)
    world.reconcile()
    assert world.status.phase is Phase.PROMOTING

    world = progressing_world(canary=canary([metric("success-rate", inconclusiveRange={"min": 95})]))
    world.tick(61)
    world.reconcile((MetricResult("success-rate", Verdict.INCONCLUSIVE, 97.0),))
    world.request(Action.ABORT)
    world.reconcile()
    assert world.status.phase is Phase.FAILED


def test_initial_delay_holds_the_first_check_after_each_step():
    world = progressing_world(canary=canary([metric("latency", initialDelay="150s"), metric("success-rate")]))
    stepped = world.status.last_step_time
    assert schedule.next_analysis_at(world.canary, world.status) == stepped + timedelta(seconds=150)
    world.tick(61)
    assert not world.due()
    world.tick(90)
    assert world.due()


def test_a_metric_that_reaches_its_failure_limit_fails_the_run_before_the_threshold():
    world = progressing_world(canary=canary([metric("success-rate", failureLimit=2), metric("latency")]))
    for _ in range(2):
        world.tick(61)
        world.reconcile(
            (MetricResult("success-rate", Verdict.FAIL, 90.0), MetricResult("latency", Verdict.PASS, 10.0))
        )
    assert world.status.phase is Phase.FAILED and world.status.failed_checks == 2
    progressing = world.status.condition(ConditionType.PROGRESSING)
    assert (
        progressing.reason == Reason.FAILURE_LIMIT_REACHED
        and "success-rate failed 2 checks" in progressing.message
    )


def test_skip_analysis_promotes_a_ready_revision_with_an_event():
    world = initialized_world(canary=canary([metric("success-rate")], skipAnalysis=True))
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    mark = len(world.history)
    world.reconcile()
    assert world.status.phase in (Phase.PROMOTING, Phase.FINALIZING, Phase.SUCCEEDED)
    assert world.route_weights == (100, 0), "no traffic ever went to the canary"
    assert Reason.ANALYSIS_SKIPPED in [e.reason for e in emitted(world, mark)]
    assert not world.due()


def test_a_rolled_back_canary_stays_up_for_inspection_for_abort_scale_down_delay():
    world = progressing_world(canary=canary([metric("success-rate")], abortScaleDownDelay="10m"))
    world.request(Action.ABORT)
    decision = world.reconcile()
    assert world.status.phase is Phase.FAILED and world.route_weights == (100, 0)
    assert world.target_replicas > 0, "kept up for inspection"
    assert decision.next_wakeup == world.status.rolled_back_at + timedelta(minutes=10)
    world.tick(599)
    world.reconcile()
    assert world.target_replicas > 0
    world.tick(2)
    world.reconcile()
    assert world.target_replicas == 0


def test_the_primary_counts_as_serving_when_its_ready_share_is_reached():
    def promoted_with(threshold: int, ready: int) -> Phase | None:
        world = initialized_world(canary=canary([], primaryReadyThreshold=threshold))
        world.new_revision("rev2")
        world.reconcile()
        world.roll_out()
        world.reconcile()
        world.request(Action.PROMOTE)
        world.reconcile()
        world.primary_ready = True
        state = world.primary_state()
        assert state is not None
        partial = state.__class__(**{**state.__dict__, "ready_replicas": ready, "available_replicas": ready})
        observations = world.observations()
        observations = observations.__class__(**{**observations.__dict__, "primary": partial})
        return decide(world.canary, observations, world.now).status.phase

    assert promoted_with(100, 2) is Phase.PROMOTING, "3 replicas, 2 ready: not yet at 100 %"
    assert promoted_with(60, 2) is Phase.FINALIZING, "2 of 3 ready is 60 % or more"


def test_pods_of_the_previous_revision_never_count_as_the_primary_serving_the_new_one():
    def primary(replicas: int, ready: int) -> WorkloadState:
        return WorkloadState(
            "payments-api-primary", "rev2", desired_replicas=4, ready_replicas=ready, updated_replicas=4,
            available_replicas=ready, replicas=replicas, generation=2, observed_generation=2,
        )  # fmt: skip

    # 4 new pods none ready, 4 old ones ready: readyReplicas is 4, yet nothing serves rev2
    assert not primary(replicas=8, ready=4).rolled_out_at(50)
    assert not primary(replicas=5, ready=3).rolled_out_at(50), "one old pod left"
    assert primary(replicas=4, ready=2).rolled_out_at(50)
    assert not primary(replicas=4, ready=2).rolled_out_at(75)
    assert replicas_text(primary(replicas=5, ready=3), 75) == (
        "3/4 ready, 4/4 updated, 1 of the previous revision still running; "
        "3 ready needed (primaryReadyThreshold 75%)"
    )
    assert replicas_text(primary(replicas=4, ready=4)) == "4/4 ready, 4/4 updated"


def test_an_autoscaled_target_is_mirrored_for_the_primary_and_left_to_its_hpa_during_a_run():
    world = progressing_world(canary=canary([metric("success-rate")]))
    observations = world.observations()
    scaled = observations.__class__(
        **{
            **observations.__dict__,
            "autoscaler": AutoscalerState(source="payments-api", mirror_in_step=False),
        }
    )
    assert MirrorAutoscaler("payments-api") in actions(decide(world.canary, scaled, world.now))
    # The HPA scaled the canary to 5 while the primary runs 3: canaryd leaves it there.
    world.target_replicas = 5
    observations = world.observations()
    scaled = observations.__class__(
        **{**observations.__dict__, "autoscaler": AutoscalerState(source="payments-api", mirror_in_step=True)}
    )
    assert not [e for e in actions(decide(world.canary, scaled, world.now)) if isinstance(e, ScaleTarget)]
    plain = decide(world.canary, world.observations(), world.now)
    assert ScaleTarget(replicas=3) in actions(plain), "without an HPA the canary matches the primary"
    stale = observations.__class__(**{**observations.__dict__, "stale_autoscalers": ("old-primary",)})
    assert DeleteAutoscaler("old-primary") in actions(decide(world.canary, stale, world.now))
