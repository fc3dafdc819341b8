"""Which chat notifications a run sends, with what in them, and the Secret format they are configured in."""

from __future__ import annotations

from canaryd.api.constants import Action, NotificationKind, Verdict
from canaryd.core.notifications import DEFAULT_KINDS, Provider, effective_kinds, parse_destinations
from canaryd.core.observations import MetricResult
from tests.core.world import initialized_world, make_canary, notifications, passing


def sent(world, since: int) -> list:
    return [n.notification for d in world.history[since:] for n in notifications(d)]


def test_a_run_tells_its_start_each_step_the_gate_and_the_promotion_once_each():
    world = initialized_world(
        canary=make_canary(step_weights=[10, 50], webhooks=(("ship", "confirm-promotion"),))
    )
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    world.reconcile()
    world.tick(61)
    world.reconcile(passing())
    world.tick(61)
    world.reconcile(passing())
    world.hook_round({})
    world.roll_out()
    world.reconcile()
    kinds = [n.kind for n in sent(world, 0)]
    assert kinds == [
        NotificationKind.RUN_STARTED,
        NotificationKind.STEP,
        NotificationKind.STEP,
        NotificationKind.WAITING_ON_GATE,
        NotificationKind.PROMOTED,
    ]
    notes = sent(world, 0)
    assert (notes[1].weight, notes[1].step, notes[2].weight) == (10, 1, 50)
    assert (notes[3].gate, notes[3].gate_type) == ("ship", "confirm-promotion")
    assert all(n.revision == "rev2" for n in notes)


def test_a_rollback_names_the_failing_metric_its_value_and_its_range():
    world = initialized_world(canary=make_canary(threshold=1))
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    world.tick(61)
    mark = len(world.history)
    world.reconcile((MetricResult("success-rate", Verdict.FAIL, 93.25, "93.25 is below the minimum 99"),))
    (rollback,) = sent(world, mark)
    assert rollback.kind is NotificationKind.ROLLED_BACK
    assert (rollback.failed_metric, rollback.failed_value, rollback.threshold) == (
        "success-rate",
        93.25,
        ">= 99",
    )
    assert "threshold" in rollback.message


def test_an_abort_is_a_rollback_without_a_failing_metric():
    world = initialized_world()
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    world.request(Action.ABORT)
    mark = len(world.history)
    world.reconcile()
    (rollback,) = sent(world, mark)
    assert rollback.kind is NotificationKind.ROLLED_BACK and rollback.failed_metric is None
    assert "abort requested by alice" in rollback.message


def test_a_notification_secret_lists_destinations_by_provider_and_the_kinds_to_send():
    found = parse_destinations(
        {
            "slack": "https://hooks.slack.com/services/T/B/X",
            "slack.oncall": "https://hooks.slack.com/services/T/B/Y",
            "msteams": "https://example.webhook.office.com/x",
            "discord": "https://discord.com/api/webhooks/1/abc",
            "generic": "http://relay.ops:8080/",
            "kinds": "rolled-back, promoted,step",
            "pagerduty": "https://events.pagerduty.com/",
            "discord.bad": "not a url",
        }
    )
    assert [(d.key, d.provider) for d in found.destinations] == [
        ("discord", Provider.DISCORD),
        ("generic", Provider.GENERIC),
        ("msteams", Provider.TEAMS),
        ("slack", Provider.SLACK),
        ("slack.oncall", Provider.SLACK),
    ]
    assert found.kinds == (NotificationKind.ROLLED_BACK, NotificationKind.PROMOTED, NotificationKind.STEP)
    assert len(found.problems) == 2
    assert any("'pagerduty'" in p for p in found.problems) and any(
        "'discord.bad'" in p for p in found.problems
    )
    assert "unknown kind 'deployed'" in parse_destinations({"kinds": "deployed"}).problems[0]


def test_a_canary_s_kinds_override_its_secret_s_which_override_the_default():
    assert effective_kinds(None, None) == DEFAULT_KINDS and NotificationKind.STEP not in DEFAULT_KINDS
    assert effective_kinds(None, (NotificationKind.STEP,)) == (NotificationKind.STEP,)
    assert effective_kinds([NotificationKind.PROMOTED], (NotificationKind.STEP,)) == (
        NotificationKind.PROMOTED,
    )
    assert effective_kinds([], (NotificationKind.STEP,)) == ()
