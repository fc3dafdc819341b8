"""Deleting a Canary: the app team's Deployment is serving again before canaryd lets go of anything."""

from __future__ import annotations

from canaryd.api.constants import ConditionType, Phase, Reason
from canaryd.core.effects import ReleaseOwned, RemoveFinalizer, ScaleTarget, SetRouteWeights
from tests.core.world import World, actions, events, initialized_world, progressing_world


def promoted_world() -> World:
    """A Canary at rest after its first revision: the primary serves 3 replicas, the target runs 0."""
    world = initialized_world()
    assert world.target_replicas == 0 and world.primary_replicas == 3
    return world


def without_revert(world: World) -> None:
    spec = world.canary.spec.model_copy(update={"revert_on_deletion": False})
    world.canary = world.canary.model_copy(update={"spec": spec})


def progressing_condition(world: World) -> str:
    condition = world.status.condition(ConditionType.PROGRESSING)
    assert condition is not None
    return condition.message


def test_deleted_at_rest_the_target_is_scaled_back_and_ready_before_anything_is_released() -> None:
    world = promoted_world()
    world.deleting = True
    first = world.decide()
    assert first.status.phase is Phase.TERMINATING
    assert actions(first) == [ScaleTarget(replicas=3)]
    (deleting,) = events(first)
    assert deleting.reason == Reason.DELETING
    assert "then Deployment payments-api is scaled back to 3 replicas, and once they are ready" in (
        deleting.message
    )
    assert "released and left in place" in deleting.message

    # Pods starting: nothing is released, traffic stays on the primary, the condition says why.
    waiting = world.decide()
    assert actions(waiting) == [] and world.finalizer and world.owned
    assert world.route_weights == (100, 0)
    note = progressing_condition(world)
    assert "waiting for Deployment payments-api to be ready at 3 replicas (0/3 ready" in note
    assert """kubectl patch canary payments-api -n payments --type merge""" in note
    assert waiting.next_wakeup is None  # the target's own status changes wake it up

    world.roll_out()
    done = world.decide()
    assert actions(done) == [ReleaseOwned(), RemoveFinalizer()]
    assert world.target_replicas == 3 and not world.finalizer
    assert events(done) == []


def test_deleted_mid_run_traffic_returns_first_and_the_target_keeps_its_replicas() -> None:
    world = progressing_world()
    world.deleting = True
    first = world.decide()
    assert actions(first) == [SetRouteWeights(primary=100, canary=0)]
    assert "(it runs revision rev2, not rev1 which payments-api-primary serves)" in events(first)[0].message
    second = world.decide()
    assert actions(second) == [ReleaseOwned(), RemoveFinalizer()]
    assert world.target_replicas == 3


def test_a_primary_scaled_to_zero_still_gives_the_target_one_replica() -> None:
    world = promoted_world()
    world.primary_replicas = 0
    world.deleting = True
    assert actions(world.decide()) == [ScaleTarget(replicas=1)]


def test_without_revert_on_deletion_the_target_stays_at_zero() -> None:
    world = promoted_world()
    without_revert(world)
    world.deleting = True
    decision = world.decide()
    assert actions(decision) == [ReleaseOwned(), RemoveFinalizer()]
    assert world.target_replicas == 0
    assert "scaled back" not in events(decision)[0].message


def test_a_target_that_never_gets_ready_holds_the_deletion_until_revert_is_turned_off() -> None:
    world = promoted_world()
    world.deleting = True
    world.decide()
    for _ in range(3):
        assert actions(world.decide()) == []  # pods never ready
    assert world.finalizer
    without_revert(world)
    assert actions(world.decide()) == [ScaleTarget(replicas=0), ReleaseOwned(), RemoveFinalizer()]


def test_a_target_gone_with_its_namespace_is_not_waited_for() -> None:
    world = promoted_world()
    world.deleting = True
    world.decide()
    world.target_hash = None  # the Deployment was deleted too
    assert actions(world.decide()) == [ReleaseOwned(), RemoveFinalizer()]
