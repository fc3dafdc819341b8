"""Initialization, bad input, the finalizer and new-revision detection."""

from __future__ import annotations

from datetime import timedelta

from canaryd.api.constants import Phase, Reason
from canaryd.core.effects import (
    AddFinalizer,
    EnsurePrimary,
    EnsureServices,
    ScaleTarget,
    SetRouteWeights,
)
from canaryd.core.lifecycle import decide
from canaryd.core.observations import Observations
from tests.core.world import REPLICAS, T0, World, actions, events, initialized_world, make_canary


def test_a_new_canary_gets_the_finalizer_before_anything_else() -> None:
    world = World()
    decision = world.decide()
    assert actions(decision)[0] == AddFinalizer()
    assert world.finalizer


def test_missing_target_gives_ready_false_with_an_actionable_message_and_no_crash() -> None:
    world = World(target_hash=None, finalizer=True)
    decision = world.decide()
    ready = decision.status.condition("Ready")
    assert ready is not None and ready.status == "False"
    assert ready.reason == Reason.TARGET_NOT_FOUND
    assert "payments/payments-api" in ready.message and "spec.targetRef" in ready.message
    assert actions(decision) == []
    assert decision.next_wakeup is None


def test_configuration_problems_show_in_ready_and_block_a_run() -> None:
    world = initialized_world()
    world.config_problems = ('MetricTemplate canaryd-system/success-rate not found (metric "success-rate")',)
    world.new_revision("rev2")
    decision = world.decide()
    ready = decision.status.condition("Ready")
    assert ready is not None and ready.status == "False"
    assert ready.reason == Reason.TEMPLATE_NOT_FOUND
    assert "success-rate not found" in ready.message
    assert decision.status.phase is Phase.INITIALIZED
    progressing = decision.status.condition("Progressing")
    assert progressing is not None and "rev2 cannot start" in progressing.message
    world.config_problems = ()
    assert world.decide().status.phase is Phase.PROGRESSING


def test_initialization_creates_services_and_primary_then_scales_the_target_down() -> None:
    world = World(finalizer=True)
    first = world.decide()
    assert first.status.phase is Phase.INITIALIZING
    assert EnsureServices() in actions(first)
    assert EnsurePrimary(template_hash="rev1") in actions(first)
    assert first.status.revision == "rev1"
    ready = first.status.condition("Ready")
    assert ready is not None and ready.status == "False"

    waiting = world.decide()
    assert waiting.status.phase is Phase.INITIALIZING
    ready = waiting.status.condition("Ready")
    assert ready is not None and ready.reason == Reason.PRIMARY_NOT_READY and "0/3 ready" in ready.message
    assert waiting.next_wakeup == T0 + timedelta(seconds=10)
    assert events(waiting) == []

    world.roll_out()
    done = world.decide()
    assert done.status.phase is Phase.INITIALIZED
    assert done.status.last_promoted_revision == "rev1"
    assert actions(done) == [ScaleTarget(replicas=0)]
    assert [e.reason for e in events(done)] == [Reason.INITIALIZED]


def test_initialization_puts_drifted_weights_back_on_the_primary_before_scaling_the_target() -> None:
    world = World(finalizer=True, route_weights=(70, 30))
    world.decide()
    world.roll_out()
    decision = world.decide()
    assert decision.status.phase is Phase.INITIALIZED
    assert actions(decision) == [SetRouteWeights(primary=100, canary=0)]
    assert world.target_replicas == 3
    assert actions(world.decide()) == [ScaleTarget(replicas=0)]


def test_an_idle_canary_costs_no_wakeups() -> None:
    world = initialized_world()
    decision = world.decide()
    assert decision.next_wakeup is None
    assert decision.effects == ()


def test_a_new_template_hash_starts_a_run() -> None:
    world = initialized_world()
    world.tick(30)
    world.new_revision("rev2")
    decision = world.decide()
    status = decision.status
    assert status.phase is Phase.PROGRESSING
    assert (status.revision, status.step, status.canary_weight) == ("rev2", 0, 0)
    assert (status.failed_checks, status.analysis_errors) == (0, 0)
    assert status.run_started_at == world.now
    assert ScaleTarget(replicas=REPLICAS) in actions(decision)  # as many as the primary
    assert not any(isinstance(e, SetRouteWeights) for e in decision.effects)
    assert [e.reason for e in events(decision)] == [Reason.NEW_REVISION]


def test_the_promoted_hash_starts_no_run() -> None:
    world = initialized_world()
    world.new_revision("rev1")
    decision = world.decide()
    assert decision.status.phase is Phase.INITIALIZED
    assert events(decision) == []


def test_without_a_run_slot_the_run_waits_and_starts_when_a_slot_frees() -> None:
    world = initialized_world(slot=False)
    world.new_revision("rev2")
    decision = world.decide()
    assert decision.status.phase is Phase.WAITING
    assert decision.status.revision == "rev2"
    assert [e.reason for e in events(decision)] == [Reason.WAITING_FOR_SLOT]
    progressing = decision.status.condition("Progressing")
    assert progressing is not None and progressing.reason == Reason.WAITING_FOR_SLOT
    assert decision.next_wakeup == world.now + timedelta(minutes=1)
    assert not any(isinstance(e, ScaleTarget) and e.replicas > 0 for e in decision.effects)
    world.slot = True
    assert world.decide().status.phase is Phase.PROGRESSING


def test_a_waiting_revision_reverted_to_the_promoted_one_needs_no_run() -> None:
    world = initialized_world(slot=False)
    world.new_revision("rev2")
    world.decide()
    world.new_revision("rev1")
    decision = world.decide()
    assert decision.status.phase is Phase.INITIALIZED
    assert decision.status.revision == "rev1"


def test_a_failed_revision_is_not_retried_automatically_but_a_new_one_runs() -> None:
    world = initialized_world()
    world.canary = world.canary.model_copy(
        update={"status": world.status.model_copy(update={"phase": Phase.FAILED, "revision": "rev2"})}
    )
    world.new_revision("rev2")
    assert world.decide().status.phase is Phase.FAILED
    world.new_revision("rev3")
    decision = world.decide()
    assert decision.status.phase is Phase.PROGRESSING
    assert decision.status.revision == "rev3"


def test_a_failed_canary_whose_target_is_reverted_returns_to_initialized() -> None:
    world = initialized_world()
    world.canary = world.canary.model_copy(
        update={"status": world.status.model_copy(update={"phase": Phase.FAILED, "revision": "rev2"})}
    )
    world.new_revision("rev1")
    decision = world.decide()
    assert decision.status.phase is Phase.INITIALIZED
    assert [e.reason for e in events(decision)] == [Reason.NO_NEW_REVISION]


def test_observed_generation_follows_metadata_generation() -> None:
    canary = make_canary(generation=7)
    decision = decide(canary, Observations(target=None), T0)
    assert decision.status.observed_generation == 7
    assert all(c.observed_generation == 7 for c in decision.status.conditions)


def test_a_missing_primary_after_initialization_is_recreated_with_a_warning() -> None:
    world = initialized_world()
    world.primary_hash = None
    decision = world.decide()
    assert decision.status.phase is Phase.INITIALIZING
    assert EnsurePrimary(template_hash="rev1") in actions(decision)
    assert events(decision)[0].type == "Warning"
