"""Manual actions, deletion, and the metav1 condition rules."""

from __future__ import annotations

from datetime import timedelta

from canaryd.api.constants import Action, Phase, Reason
from canaryd.api.models import Condition
from canaryd.core.conditions import DesiredCondition, merge_condition
from canaryd.core.effects import (
    EnsurePrimary,
    ReleaseOwned,
    RemoveFinalizer,
    ScaleTarget,
    SetRouteWeights,
)
from tests.core.world import (
    REPLICAS,
    T0,
    World,
    actions,
    events,
    failing,
    initialized_world,
    make_canary,
    passing,
    progressing_world,
)


def _failed_world() -> World:
    world = progressing_world(canary=make_canary(threshold=1))
    world.tick(60)
    world.decide(failing())
    world.reconcile()
    assert world.status.phase is Phase.FAILED
    return world


def test_promote_skips_the_remaining_steps() -> None:
    world = progressing_world()
    request = world.request(Action.PROMOTE, by="alice")
    decision = world.decide()
    assert decision.status.phase is Phase.PROMOTING
    assert EnsurePrimary(template_hash="rev2") in actions(decision)
    assert decision.status.last_action is not None
    assert decision.status.last_action.id == request.id
    assert decision.status.last_action.result == "promoting revision rev2"
    assert decision.status.last_action.at == world.now
    [event] = events(decision)
    assert event.reason == Reason.PROMOTED_MANUALLY
    assert "promote requested by alice" in event.message and "2 remaining step(s)" in event.message


def test_promote_is_acknowledged_but_ignored_without_a_run() -> None:
    world = initialized_world()
    world.request(Action.PROMOTE)
    decision = world.decide()
    assert decision.status.phase is Phase.INITIALIZED
    assert decision.status.last_action is not None
    assert decision.status.last_action.result.startswith("ignored: no run in progress")
    assert [e.reason for e in events(decision)] == [Reason.ACTION_IGNORED]
    assert "promote" in events(decision)[0].message


def test_promote_is_ignored_while_the_canary_is_not_ready() -> None:
    world = initialized_world()
    world.new_revision("rev2")
    world.decide()
    world.request(Action.PROMOTE)
    decision = world.decide()
    assert decision.status.phase is Phase.PROGRESSING
    assert decision.status.last_action is not None
    assert "not ready" in decision.status.last_action.result


def test_promote_step_advances_one_step_without_analysis() -> None:
    world = progressing_world()
    world.tick(5)
    world.request(Action.PROMOTE_STEP)
    decision = world.decide()
    assert (decision.status.step, decision.status.canary_weight) == (2, 20)
    assert SetRouteWeights(primary=80, canary=20) in actions(decision)
    assert decision.status.metrics == []
    assert decision.status.last_step_time == world.now
    assert [e.reason for e in events(decision)] == [Reason.STEPPED_MANUALLY]


def test_promote_step_at_the_final_step_promotes() -> None:
    world = progressing_world(canary=make_canary(step_weights=[10]))
    world.request(Action.PROMOTE_STEP)
    assert world.decide().status.phase is Phase.PROMOTING


def test_abort_rolls_back_with_reason_aborted() -> None:
    world = progressing_world()
    world.request(Action.ABORT, by="bob")
    decision = world.decide()
    assert decision.status.phase is Phase.FAILED
    assert decision.status.canary_weight == 0
    assert actions(decision) == [SetRouteWeights(primary=100, canary=0)]
    condition = decision.status.condition("Progressing")
    assert condition is not None and condition.reason == Reason.ABORTED
    assert "abort requested by bob" in condition.message
    assert [e.reason for e in events(decision)] == [Reason.ABORTED]
    assert actions(world.decide()) == [ScaleTarget(replicas=0)]


def test_abort_is_ignored_once_promotion_is_under_way() -> None:
    world = progressing_world(canary=make_canary(step_weights=[10]))
    world.tick(60)
    world.decide(passing())
    world.request(Action.ABORT)
    decision = world.decide()
    assert decision.status.phase is Phase.PROMOTING
    assert decision.status.last_action is not None
    assert decision.status.last_action.result.startswith("ignored:")


def test_pause_freezes_the_run_and_resume_waits_an_interval() -> None:
    world = progressing_world()
    world.request(Action.PAUSE)
    paused = world.decide()
    assert paused.status.paused
    condition = paused.status.condition("Paused")
    assert condition is not None and condition.status == "True"
    progressing = paused.status.condition("Progressing")
    assert progressing is not None and progressing.reason == Reason.PAUSED
    assert "kubectl canary resume payments-api" in progressing.message
    assert paused.next_wakeup is None
    world.tick(3600)
    assert not world.due()
    still = world.decide()
    assert still.status.phase is Phase.PROGRESSING and still.status.canary_weight == 10

    world.request(Action.RESUME)
    resumed = world.decide()
    assert not resumed.status.paused
    condition = resumed.status.condition("Paused")
    assert condition is not None and condition.status == "False" and condition.reason == Reason.RESUMED
    assert resumed.next_wakeup == world.now + timedelta(minutes=1)
    assert not world.due()
    world.tick(60)
    assert world.due()


def test_pause_before_a_run_holds_the_next_run_at_weight_zero() -> None:
    world = initialized_world()
    world.request(Action.PAUSE)
    world.decide()
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    decision = world.reconcile()
    assert decision.status.phase is Phase.PROGRESSING and decision.status.paused
    assert decision.status.canary_weight == 0 and world.route_weights == (100, 0)


def test_resume_without_pause_is_ignored() -> None:
    world = progressing_world()
    world.request(Action.RESUME)
    decision = world.decide()
    assert decision.status.last_action is not None
    assert decision.status.last_action.result == "ignored: not paused"


def test_retry_reruns_a_failed_revision_without_touching_the_deployment_template() -> None:
    world = _failed_world()
    world.request(Action.RETRY)
    decision = world.decide()
    status = decision.status
    assert status.phase is Phase.PROGRESSING and status.revision == "rev2"
    assert (status.failed_checks, status.step) == (0, 0)
    assert not any(isinstance(e, EnsurePrimary) for e in decision.effects)
    assert ScaleTarget(replicas=REPLICAS) in actions(decision)  # as many as the primary
    assert [e.reason for e in events(decision)] == [Reason.RETRIED]


def test_retry_is_ignored_unless_failed() -> None:
    world = progressing_world()
    world.request(Action.RETRY)
    decision = world.decide()
    assert decision.status.last_action is not None
    assert decision.status.last_action.result.startswith("ignored: nothing to retry")


def test_an_answered_action_is_not_handled_twice() -> None:
    world = progressing_world()
    request = world.request(Action.PROMOTE_STEP)
    world.decide()
    world.pending_action = request
    world.tick(1)
    again = world.decide()
    assert again.status.step == 2
    assert events(again) == []


def test_deletion_returns_traffic_and_releases_the_primary_and_services_before_the_finalizer_goes() -> None:
    world = progressing_world()
    spec = world.canary.spec.model_copy(update={"revert_on_deletion": False})  # the target stays at 0
    world.canary = world.canary.model_copy(update={"spec": spec})
    assert world.owned
    world.deleting = True
    first = world.decide()
    assert first.status.phase is Phase.TERMINATING
    assert actions(first) == [SetRouteWeights(primary=100, canary=0)]
    assert world.finalizer
    second = world.decide()
    assert actions(second) == [ScaleTarget(replicas=0), ReleaseOwned(), RemoveFinalizer()]
    assert not world.finalizer and not world.owned
    assert [e.reason for e in events(first)] == [Reason.DELETING]
    assert events(first)[0].message.startswith(
        "the Canary is being deleted: all traffic returns to payments-api-primary, then Deployment "
        "payments-api-primary and Services payments-api-primary, payments-api-canary are released and "
        "left in place: traffic stays on payments-api-primary until you point your routes at your own "
        "Service; delete them after that"
    )
    assert events(second) == []


def test_deletion_releases_nothing_twice() -> None:
    world = progressing_world()
    world.deleting = True
    world.decide()
    world.decide()
    # The finalizer removal failed after the release landed: the next decision only retries the finalizer.
    world.finalizer = True
    again = world.decide()
    assert actions(again) == [RemoveFinalizer()]
    assert events(again) == []


def test_deletion_before_canaryd_created_anything_leaves_the_target_running() -> None:
    world = World(finalizer=True)
    world.deleting = True
    decision = world.decide()
    assert actions(decision) == [RemoveFinalizer()]
    assert world.target_replicas == 3
    assert "left in place" not in events(decision)[0].message


def test_deletion_with_the_route_gone_removes_the_finalizer_at_once() -> None:
    world = progressing_world()
    world.route_exists = False
    world.deleting = True
    decision = world.decide()
    assert RemoveFinalizer() in actions(decision)
    assert not any(isinstance(e, SetRouteWeights) for e in decision.effects)


def test_actions_during_deletion_are_ignored() -> None:
    world = progressing_world()
    world.deleting = True
    world.request(Action.PROMOTE)
    decision = world.decide()
    assert decision.status.phase is Phase.TERMINATING
    assert decision.status.last_action is not None
    assert decision.status.last_action.result == "ignored: the Canary is being deleted"


def test_condition_transition_time_moves_only_when_its_status_changes() -> None:
    earlier = Condition(
        type="Ready", status="True", reason="Initialized", message="a", last_transition_time=T0
    )
    later = T0 + timedelta(minutes=5)
    same = merge_condition(earlier, DesiredCondition("Ready", "True", "Initialized", "b"), later, 2)
    assert same.last_transition_time == T0 and same.message == "b" and same.observed_generation == 2
    flipped = merge_condition(earlier, DesiredCondition("Ready", "False", "TargetNotFound", "c"), later, 2)
    assert flipped.last_transition_time == later


def test_lifecycle_conditions_keep_their_transition_time_while_messages_change() -> None:
    world = progressing_world()
    before = world.status.condition("Progressing")
    world.tick(60)
    world.decide(passing())
    after = world.status.condition("Progressing")
    assert before is not None and after is not None
    assert after.message != before.message
    assert after.last_transition_time == before.last_transition_time


def test_a_retry_that_has_to_wait_for_a_slot_is_still_acknowledged_by_name() -> None:
    world = _failed_world()
    world.slot = False
    world.request(Action.RETRY, by="carol")
    decision = world.decide()
    assert decision.status.phase is Phase.WAITING
    assert decision.status.last_action is not None
    assert decision.status.last_action.result == "revision rev2 waits for a free run slot"
    reasons = [e.reason for e in events(decision)]
    assert reasons == [Reason.WAITING_FOR_SLOT, Reason.RETRIED]
    assert "retry requested by carol" in events(decision)[1].message


def _suspend(world: World, suspend: bool = True) -> None:
    spec = world.canary.spec.model_copy(update={"suspend": suspend})
    world.canary = world.canary.model_copy(update={"spec": spec})


def test_a_suspended_canary_leaves_its_deployments_and_routes_alone() -> None:
    world = progressing_world()
    _suspend(world)
    world.route_weights = (100, 0)
    world.new_revision("rev3")
    world.tick(600)
    world.request(Action.PROMOTE)
    decision = world.decide()
    assert actions(decision) == []
    assert (decision.status.phase, decision.status.revision, decision.status.canary_weight) == (
        Phase.PROGRESSING,
        "rev2",
        10,
    )
    assert decision.next_wakeup is None
    assert not world.due()
    assert decision.status.last_action is not None
    assert decision.status.last_action.result.startswith("ignored: spec.suspend is true")
    condition = decision.status.condition("Progressing")
    assert condition is not None and "spec.suspend is true" in condition.message
    assert (condition.status, condition.reason) == ("False", Reason.SUSPENDED)
    _suspend(world, False)
    assert world.decide().status.revision == "rev3"


def test_deleting_a_suspended_canary_still_returns_traffic_before_the_finalizer_goes() -> None:
    world = progressing_world()
    _suspend(world)
    world.deleting = True
    assert actions(world.decide()) == [SetRouteWeights(primary=100, canary=0)]
    # The target already runs the primary's replicas (it was mid-run): it keeps them.
    assert actions(world.decide()) == [ReleaseOwned(), RemoveFinalizer()]
    assert world.target_replicas == 3
