"""Webhooks in the lifecycle: which are called when, what their answers do, and what a person can still do.

Each test follows one Canary through a modelled cluster (``tests.core.world``)
and answers the webhooks the core asks for, as the runtime's webhook round
would, with the answers a receiver can give.
"""

from __future__ import annotations

from canaryd.api.constants import Action, ConditionType, HookOutcome, HookType, Phase, Reason
from canaryd.core import hooks
from canaryd.core.effects import CallWebhooks
from canaryd.core.lifecycle import decide
from tests.core.world import (
    World,
    actions,
    events,
    failing,
    initialized_world,
    make_canary,
    passing,
    progressing_world,
)

OK, NO, GONE = HookOutcome.OK, HookOutcome.HTTP_ERROR, HookOutcome.NOT_SENT


def reasons(decision) -> list[str]:
    return [e.reason for e in events(decision)]


def emitted(world: World, since: int) -> list:
    """Every Event of the decisions since history position ``since``."""
    return [e for d in world.history[since:] for e in events(d)]


def condition(world: World, kind: ConditionType):
    return world.status.condition(kind)


def canary_with(*webhooks: tuple[str, str], **options):
    return make_canary(webhooks=webhooks, **options)


# -- confirm-rollout ---------------------------------------------------------------------------------------


def test_confirm_rollout_holds_a_new_revision_until_its_webhook_answers_2xx():
    world = initialized_world(canary=canary_with(("approve", "confirm-rollout")))
    world.new_revision("rev2")
    mark = len(world.history)
    world.reconcile()
    assert world.status.phase is Phase.WAITING and world.status.gate is not None
    assert Reason.WAITING_FOR_CONFIRMATION in [e.reason for e in emitted(world, mark)]
    assert world.target_replicas == 0, "the canary stays at 0 until the run may start"
    gated = condition(world, ConditionType.GATED)
    assert gated is not None and gated.status == "True" and "approve" in gated.message
    assert condition(world, ConditionType.PROGRESSING).reason == Reason.WAITING_FOR_CONFIRMATION
    assert world.due_hooks() == ["approve"]

    mark = len(world.history)
    world.hook_round({"approve": NO})
    assert world.status.phase is Phase.WAITING
    assert any("answered http-error 403" in e.message for e in emitted(world, mark))
    assert "http-error 403" in condition(world, ConditionType.GATED).message
    assert world.due_hooks() == [], "a gate that said no is asked again one interval later"
    world.tick(30)
    assert world.due_hooks() == []
    world.tick(31)
    mark = len(world.history)
    world.hook_round({"approve": NO})
    assert not emitted(world, mark), "the same answer again is no news"

    world.tick(61)
    mark = len(world.history)
    world.hook_round({"approve": OK})
    assert world.status.phase is Phase.PROGRESSING and world.status.gate is None
    assert any("confirmed the rollout" in e.message for e in emitted(world, mark))
    assert condition(world, ConditionType.GATED).status == "False"


def test_a_person_can_start_abort_or_pause_a_revision_held_at_confirm_rollout():
    for action, phase in ((Action.PROMOTE, Phase.PROGRESSING), (Action.ABORT, Phase.FAILED)):
        world = initialized_world(canary=canary_with(("approve", "confirm-rollout")))
        world.new_revision("rev2")
        world.reconcile()
        world.request(action)
        assert world.due_hooks() == [], "a pending action goes first"
        world.reconcile()
        assert world.status.phase is phase
    world = initialized_world(canary=canary_with(("approve", "confirm-rollout")))
    world.new_revision("rev2")
    world.reconcile()
    world.request(Action.PAUSE)
    world.reconcile()
    assert world.status.paused and world.due_hooks() == [], "a paused Canary asks no gate"


def test_a_newer_revision_is_asked_about_afresh():
    world = initialized_world(canary=canary_with(("approve", "confirm-rollout")))
    world.new_revision("rev2")
    world.reconcile()
    world.hook_round({"approve": NO})
    world.tick(5)
    world.new_revision("rev3")
    world.reconcile()
    assert world.status.revision == "rev3" and world.due_hooks() == ["approve"]


def test_a_missing_signing_secret_holds_the_gate_with_a_warning():
    world = initialized_world(canary=canary_with(("approve", "confirm-rollout")))
    world.new_revision("rev2")
    world.reconcile()
    decision = world.decide(
        hooks=(
            hooks.HookResult(
                "approve", HookType.CONFIRM_ROLLOUT, GONE, world.now, message="Secret payments/key not found"
            ),
        )
    )
    warning = [e for e in events(decision) if e.type == "Warning"]
    assert warning and "Secret payments/key not found" in warning[0].message
    assert world.status.phase is Phase.WAITING
    assert "Secret payments/key not found" in condition(world, ConditionType.GATED).message


# -- pre-rollout -------------------------------------------------------------------------------------------


def test_pre_rollout_runs_before_traffic_moves_and_a_failure_is_a_failed_check():
    world = initialized_world(canary=canary_with(("smoke", "pre-rollout"), threshold=2))
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    assert world.status.step == 0 and world.route_weights == (100, 0), "no traffic before pre-rollout"
    assert world.due_hooks() == ["smoke"]
    mark = len(world.history)
    world.hook_round({"smoke": NO})
    assert world.status.failed_checks == 1 and world.route_weights == (100, 0)
    failures = [e for e in emitted(world, mark) if e.reason == Reason.ANALYSIS_FAILED]
    assert failures and "webhook/smoke" in failures[0].message
    healthy = condition(world, ConditionType.ANALYSIS_HEALTHY)
    assert healthy is not None and healthy.status == "False"
    assert world.due_hooks() == []
    world.tick(61)
    assert world.due_hooks() == ["smoke"]
    world.hook_round({"smoke": OK})
    assert world.status.step == 1 and world.route_weights == (90, 10)
    assert world.due_hooks() == [], "pre-rollout runs once per run"


def test_pre_rollout_failures_reach_the_threshold_and_roll_back_with_rollback_and_post_rollout_hooks():
    world = initialized_world(
        canary=canary_with(
            ("smoke", "pre-rollout"), ("undo", "rollback"), ("after", "post-rollout"), threshold=1
        )
    )
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    mark = len(world.history)
    world.hook_round({"smoke": HookOutcome.TIMEOUT})
    assert world.status.phase is Phase.FAILED
    calls = [e for d in world.history[mark:] for e in d.effects if isinstance(e, CallWebhooks)]
    assert calls == [CallWebhooks(HookType.ROLLBACK), CallWebhooks(HookType.POST_ROLLOUT)]
    assert Reason.THRESHOLD_REACHED in [e.reason for e in emitted(world, mark)]


# -- confirm-traffic-increase ----------------------------------------------------------------------------


def test_every_weight_increase_waits_for_confirm_traffic_increase():
    world = initialized_world(canary=canary_with(("allow", "confirm-traffic-increase")))
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    assert world.status.step == 0 and world.status.gate is not None, "the first step waits too"
    assert world.due_hooks() == ["allow"]
    world.hook_round({"allow": NO})
    assert world.status.step == 0 and world.route_weights == (100, 0)
    world.tick(61)
    world.hook_round({"allow": OK})
    assert world.status.step == 1 and world.route_weights == (90, 10) and world.status.gate is None

    world.tick(61)
    world.reconcile(passing())
    assert world.status.step == 1 and world.status.gate is not None, "a passed round waits at the gate"
    assert world.due_hooks() == ["allow"]
    world.hook_round({"allow": OK})
    assert world.status.step == 2 and world.route_weights == (80, 20)


def test_the_analysis_goes_on_while_a_gate_holds_and_a_failure_closes_the_gate():
    world = initialized_world(canary=canary_with(("allow", "confirm-traffic-increase"), threshold=3))
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    world.hook_round({"allow": OK})
    world.tick(61)
    world.reconcile(passing())
    world.hook_round({"allow": NO})
    world.tick(61)
    assert world.due()
    world.reconcile(failing())
    assert world.status.failed_checks == 1 and world.status.gate is None
    assert world.status.step == 1


def test_a_gate_holds_past_the_progress_deadline_and_a_person_can_still_decide():
    canary = canary_with(("allow", "confirm-traffic-increase"), progress_deadline_seconds=30)
    world = initialized_world(canary=canary)
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    for _ in range(5):
        world.tick(61)
        world.hook_round({"allow": NO})
    assert world.status.phase is Phase.PROGRESSING and world.status.gate is not None
    world.request(Action.PROMOTE_STEP)
    world.reconcile()
    assert world.status.step == 1 and world.status.gate is None
    world.tick(61)
    world.reconcile(passing())
    world.request(Action.PROMOTE)
    world.reconcile()
    assert world.status.phase is Phase.PROMOTING


# -- confirm-promotion -------------------------------------------------------------------------------------


def test_promotion_waits_for_confirm_promotion():
    world = progressing_world(canary=canary_with(("ship", "confirm-promotion"), step_weights=[10]))
    world.tick(61)
    world.reconcile(passing())
    assert world.status.phase is Phase.PROGRESSING and world.status.gate is not None
    assert world.status.gate.type == "confirm-promotion"
    world.hook_round({"ship": NO})
    assert world.status.phase is Phase.PROGRESSING
    world.tick(61)
    world.hook_round({"ship": OK})
    assert world.status.phase is Phase.PROMOTING


# -- rollout -----------------------------------------------------------------------------------------------


def test_rollout_hooks_are_called_at_the_start_of_each_interval_and_judged_with_its_round():
    world = progressing_world(canary=canary_with(("load", "rollout"), threshold=3))
    assert world.due_hooks() == ["load"], "called as soon as a step is taken"
    world.hook_round({"load": NO})
    assert world.status.failed_checks == 0, "a rollout call is judged with the round of its interval"
    assert world.due_hooks() == []
    world.tick(61)
    world.reconcile(passing())
    assert world.status.failed_checks == 1 and world.status.step == 1, "its failure fails the round"
    assert any(m.name == "webhook/load" for m in world.status.metrics)
    assert world.due_hooks() == ["load"], "called again for the next interval"
    world.hook_round({"load": OK})
    world.tick(61)
    world.reconcile(passing())
    assert world.status.step == 2
    assert world.due_hooks() == ["load"]


def test_post_rollout_is_sent_once_when_a_run_succeeds():
    world = progressing_world(canary=canary_with(("after", "post-rollout"), step_weights=[10]))
    world.tick(61)
    world.reconcile(passing())
    world.roll_out()
    world.reconcile()
    assert world.status.phase is Phase.SUCCEEDED
    calls = [e for d in world.history for e in d.effects if isinstance(e, CallWebhooks)]
    assert calls == [CallWebhooks(HookType.POST_ROLLOUT)]


def test_decide_ignores_answers_of_webhooks_that_are_not_due():
    world = progressing_world(canary=canary_with(("ship", "confirm-promotion")))
    stale = (hooks.HookResult("ship", HookType.CONFIRM_PROMOTION, OK, world.now),)
    decision = decide(world.canary, world.observations(hooks=stale), world.now)
    assert decision.status.webhooks == world.status.webhooks


def test_background_hooks_and_notifications_do_not_change_the_cluster():
    world = progressing_world(canary=canary_with(("undo", "rollback")))
    world.request(Action.ABORT)
    decision = world.reconcile()
    assert world.status.phase is Phase.FAILED
    assert all(not isinstance(e, CallWebhooks) for e in actions(decision))


def test_with_a_traffic_gate_rollout_hooks_are_called_once_per_step_and_through_a_hold():
    canary = canary_with(
        ("load", "rollout"),
        ("allow", "confirm-traffic-increase"),
        threshold=3,
        step_weights=[10, 20, 30, 40, 50],
    )
    world = initialized_world(canary=canary)
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    calls: list[list[str]] = []
    for _ in range(3):  # each step: the gate is asked and opens at once, then the interval starts
        calls.append(world.due_hooks())
        world.hook_round()
        calls.append(world.due_hooks())
        world.hook_round()
        world.tick(61)
        world.reconcile(passing())
    assert calls == [["allow"], ["load"]] * 3, "one rollout call per step, after the step"
    assert world.status.step == 3 and world.status.gate is not None

    world.hook_round({"allow": NO})
    assert world.due_hooks() == ["load"], "a closed gate's interval gets its load"
    world.hook_round()
    world.tick(61)
    assert world.due_hooks() == ["allow"]
    world.hook_round()
    assert world.status.step == 4
