"""Status says a weight only once the routes carry it; until then it says which weight it is moving to."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from canaryd.api.constants import HookType, Phase
from canaryd.api.models import CanaryStatus
from canaryd.core.effects import CallWebhooks, EnsurePrimary, RecordEvent, ScaleTarget, SetRouteWeights
from canaryd.core.inflight import (
    carried_weight,
    confirmed,
    intended,
    routed_at,
    routes_carry,
    stage,
    weights_first,
)
from canaryd.core.lifecycle import analysis_due
from canaryd.core.observations import RouteState
from tests.core.world import progressing_world, with_status


def route(canary: int | None, *, exists: bool = True) -> RouteState:
    primary = None if canary is None else 100 - canary
    return RouteState(
        "HTTPRoute", "web", exists=exists, has_backends=exists, accepted=True,
        primary_weight=primary, canary_weight=canary,
    )  # fmt: skip


def at(weight: int, step: int = 2) -> CanaryStatus:
    return CanaryStatus(phase=Phase.PROGRESSING, canary_weight=weight, step=step)


def test_a_step_is_written_as_moving_to_and_confirmed_only_after_the_weight_write() -> None:
    staged = stage(at(30), 10, (route(10),), [SetRouteWeights(70, 30)])
    assert (staged.before_routes.canary_weight, staged.before_routes.moving_to_weight) == (10, 30)
    assert staged.before_routes.step == 2  # the step itself is recorded at once: never taken twice
    assert staged.once_routed is not None
    assert (staged.once_routed.canary_weight, staged.once_routed.moving_to_weight) == (30, None)


def test_without_a_write_of_that_weight_status_keeps_saying_it_is_moving() -> None:
    staged = stage(at(30), 10, (route(10),), [ScaleTarget(2)])
    assert staged.before_routes.moving_to_weight == 30 and staged.before_routes.canary_weight == 10
    assert staged.once_routed is None


def test_a_pass_after_a_crash_between_the_patch_and_the_status_settles_the_move() -> None:
    written = CanaryStatus(phase=Phase.PROGRESSING, canary_weight=10, moving_to_weight=30, step=2)
    resumed = intended(written)
    assert (resumed.canary_weight, resumed.moving_to_weight) == (30, None)
    staged = stage(resumed, written.canary_weight, (route(30),), [])
    assert staged.once_routed is None
    assert (staged.before_routes.canary_weight, staged.before_routes.moving_to_weight) == (30, None)


def test_a_pass_after_a_failed_patch_moves_again_from_the_same_confirmed_weight() -> None:
    written = CanaryStatus(phase=Phase.PROGRESSING, canary_weight=10, moving_to_weight=30, step=2)
    staged = stage(intended(written), written.canary_weight, (route(10),), [SetRouteWeights(70, 30)])
    assert staged.before_routes == written
    assert staged.once_routed is not None and staged.once_routed.canary_weight == 30


def test_a_rollback_keeps_the_old_weight_until_the_primary_has_it_all() -> None:
    failed = CanaryStatus(phase=Phase.FAILED, canary_weight=0)
    staged = stage(failed, 50, (route(50),), [SetRouteWeights(100, 0)])
    assert (staged.before_routes.canary_weight, staged.before_routes.moving_to_weight) == (50, 0)
    assert staged.once_routed is not None and staged.once_routed.canary_weight == 0


def test_a_rollback_after_a_crash_that_left_a_move_landed_but_unconfirmed_waits_for_the_primary() -> None:
    # Killed after patching the route to 15 and before the status write that confirms it.
    written = CanaryStatus(phase=Phase.PROGRESSING, canary_weight=0, moving_to_weight=15, step=1)
    assert confirmed(written, (route(15),)) == 15
    failed = CanaryStatus(phase=Phase.FAILED, canary_weight=0, step=1)
    staged = stage(failed, confirmed(written, (route(15),)), (route(15),), [SetRouteWeights(100, 0)])
    # Status may not say 0 while the route still carries 15: it says it is moving there.
    assert (staged.before_routes.canary_weight, staged.before_routes.moving_to_weight) == (15, 0)
    assert staged.once_routed is not None and staged.once_routed.canary_weight == 0


def test_a_move_the_routes_do_not_carry_leaves_the_confirmed_weight_where_status_said() -> None:
    written = CanaryStatus(phase=Phase.PROGRESSING, canary_weight=10, moving_to_weight=30, step=2)
    assert confirmed(written, (route(10),)) == 10
    assert confirmed(written, (route(None, exists=False),)) == 10  # no route: nothing is known to carry 30
    assert confirmed(at(10), (route(30),)) == 10  # no move in flight: a foreign weight confirms nothing


def test_routes_that_do_not_exist_carry_nothing_and_mixed_rules_carry_no_single_weight() -> None:
    assert routes_carry((route(None, exists=False),), 40)
    assert not routes_carry((route(None),), 40)  # rules with different weights
    assert routes_carry((route(40), route(None, exists=False)), 40)


def test_no_round_judges_a_step_whose_weight_the_route_does_not_carry_yet() -> None:
    world = progressing_world()
    status = world.status
    assert status.canary_weight > 0
    later = world.now + timedelta(hours=1)
    assert analysis_due(world.canary, world.observations(), later)
    lost_patch = replace(world.route_state(), primary_weight=100, canary_weight=0)
    observations = replace(world.observations(), routes=(lost_patch,))
    assert not analysis_due(with_status(world.canary, status), observations, later)


STEP_EVENT = RecordEvent(type="Normal", reason="Progressing", message="advanced to 30 %")


def test_an_ordinary_step_patches_its_one_route_first_and_writes_status_once() -> None:
    effects = [STEP_EVENT, SetRouteWeights(70, 30), CallWebhooks(type=HookType.ROLLOUT)]
    staged = stage(at(30), 10, (route(10),), effects)
    assert weights_first(at(10, step=1), staged, effects, route_count=1)


def test_two_routes_a_phase_change_or_another_write_keep_the_two_step_write() -> None:
    step = [SetRouteWeights(70, 30)]
    staged = stage(at(30), 10, (route(10),), step)
    assert not weights_first(at(10, step=1), staged, step, route_count=2)  # the second patch may fail
    promoting = CanaryStatus(phase=Phase.PROMOTING, canary_weight=10, step=2)
    assert not weights_first(promoting, staged, step, route_count=1)
    with_primary = [*step, EnsurePrimary("abc")]
    assert not weights_first(at(10, step=1), stage(at(30), 10, (route(10),), with_primary), with_primary, 1)
    settled = stage(at(30), 30, (route(30),), [])
    assert not weights_first(at(30), settled, [], route_count=1)  # nothing to confirm


def test_a_route_left_ahead_of_status_is_said_to_carry_its_weight_while_it_is_moved_back() -> None:
    # The controller stopped after a step's route patch (30 %) and before its status write (still 10 %);
    # the pass after it holds the run at 10 %: status must not say 10 % before the route carries it.
    staged = stage(at(10), 10, (route(30),), [SetRouteWeights(90, 10)])
    assert (staged.before_routes.canary_weight, staged.before_routes.moving_to_weight) == (30, 10)
    assert staged.once_routed is not None and staged.once_routed.canary_weight == 10
    # Deciding the same step again finds the route there already: one write, the step taken once.
    again = stage(at(30), 10, (route(30),), [])
    assert again.once_routed is None and again.before_routes.canary_weight == 30


def test_a_route_someone_else_moved_is_said_to_carry_what_it_carries_until_it_is_put_back() -> None:
    staged = stage(at(30), 30, (route(0),), [SetRouteWeights(70, 30)])
    assert (staged.before_routes.canary_weight, staged.before_routes.moving_to_weight) == (0, 30)
    # Without a weight write (a suspended Canary), status stays as it was decided.
    untouched = stage(at(30), 30, (route(0),), [])
    assert (untouched.before_routes.canary_weight, untouched.before_routes.moving_to_weight) == (30, None)


def test_the_weight_carried_is_the_one_all_routes_agree_on() -> None:
    assert carried_weight((route(30), route(30))) == 30
    assert carried_weight((route(30), route(10))) is None
    assert carried_weight((route(None),)) is None
    assert carried_weight((route(30, exists=False),)) is None


def test_a_step_counts_its_interval_from_when_its_route_carried_the_weight() -> None:
    decided_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    before = at(10, step=1).model_copy(update={"last_step_time": decided_at - timedelta(minutes=1)})
    stepped = at(30).model_copy(update={"last_step_time": decided_at})
    routed = decided_at + timedelta(seconds=6)  # the route patch waited out an API server restart
    assert routed_at(stepped, before, routed).last_step_time == routed
    held = before.model_copy(update={"failed_checks": 1})  # no step: its clock stays
    assert routed_at(held, before, routed).last_step_time == before.last_step_time
