"""Notifications reach Slack-, Teams-, Discord-shaped and generic receivers, paced, never blocking."""

from __future__ import annotations

import asyncio
import itertools
import time

from prometheus_client import CollectorRegistry, generate_latest

from canaryd.adapters.delivery_metrics import DeliveryMetrics
from canaryd.adapters.notifier import Notifier, ProviderConfig
from canaryd.adapters.webhook_delivery import DeliveryPolicy
from canaryd.core.notifications import Notification, NotificationKind, Provider
from tests.core.world import T0
from tests.fixtures.chat_receivers import ChatReceivers

QUICK = DeliveryPolicy(timeout=1.0, retries=1, backoff=0.01, backoff_cap=0.05)


def _note(kind: NotificationKind = NotificationKind.ROLLED_BACK, n: int = 0) -> Notification:
    return Notification(
        kind=kind,
        name=f"api-{n}",
        namespace="shop",
        at=T0,
        revision="r2",
        weight=20,
        step=2,
        failed_metric="success-rate",
        failed_value=91.5,
        threshold="min 99",
    )


async def test_each_provider_gets_a_message_its_service_accepts(chat_receivers: ChatReceivers) -> None:
    providers = [
        ProviderConfig("team-slack", Provider.SLACK, chat_receivers.slack_url, policy=QUICK),
        ProviderConfig("team-teams", Provider.TEAMS, chat_receivers.teams_url, policy=QUICK),
        ProviderConfig("team-discord", Provider.DISCORD, chat_receivers.discord_url, policy=QUICK),
        ProviderConfig("audit", Provider.GENERIC, chat_receivers.generic_url, policy=QUICK, signing_key=b"k"),
    ]
    notifier = Notifier(providers, metrics=DeliveryMetrics(CollectorRegistry()))
    notifier.start()
    assert notifier.notify(_note()) == 4
    assert await notifier.flush(5)
    await notifier.stop()
    assert chat_receivers.receiver.violations == []
    for path in ("/slack", "/teams", "/discord", "/generic"):
        (call,) = chat_receivers.calls(path)
        assert "success-rate" in call.body.decode()
    assert chat_receivers.calls("/generic")[0].signed_with(b"k")
    assert {name: r.status for name, r in notifier.last_result.items()} == {
        "team-slack": 200,
        "team-teams": 200,
        "team-discord": 204,
        "audit": 202,
    }


async def test_notify_returns_at_once_even_when_the_service_hangs(chat_receivers: ChatReceivers) -> None:
    chat_receivers.receiver.be_slow(2.0)
    notifier = Notifier([ProviderConfig("slack", Provider.SLACK, chat_receivers.slack_url, policy=QUICK)])
    notifier.start()
    started = time.monotonic()
    for n in range(5):
        notifier.notify(_note(n=n))
    assert time.monotonic() - started < 0.05
    await notifier.stop(drain_timeout=0.1)


async def test_a_full_queue_drops_and_counts_instead_of_growing(chat_receivers: ChatReceivers) -> None:
    registry = CollectorRegistry()
    chat_receivers.receiver.be_slow(0.5)
    notifier = Notifier(
        [ProviderConfig("slack", Provider.SLACK, chat_receivers.slack_url, policy=QUICK)],
        metrics=DeliveryMetrics(registry),
        queue_size=3,
    )
    notifier.start()
    queued = [notifier.notify(_note(n=n)) for n in range(10)]
    await asyncio.sleep(0)
    assert queued[:3] == [1, 1, 1] and sum(queued) < 10
    assert notifier.pending("slack") <= 3
    await notifier.stop(drain_timeout=0.1)
    text = generate_latest(registry).decode()
    assert (
        f'canaryd_notifications_dropped_total{{provider="slack",reason="queue-full"}} {10 - sum(queued)}.0'
        in text
    )


async def test_messages_are_paced_by_the_providers_token_bucket(chat_receivers: ChatReceivers) -> None:
    notifier = Notifier(
        [ProviderConfig("slack", Provider.SLACK, chat_receivers.slack_url, rate=5, burst=2, policy=QUICK)]
    )
    notifier.start()
    for n in range(6):
        notifier.notify(_note(n=n))
    calls = await chat_receivers.receiver.wait_for(6, timeout=5)
    await notifier.stop()
    times = [c.received_at for c in calls]
    # 2 at once, then one every 0.2 s: the 6th no earlier than 4 x 0.2 s after the first.
    assert times[-1] - times[0] >= 0.75
    assert all(later - earlier >= 0.15 for earlier, later in itertools.pairwise(times[2:]))


async def test_a_slow_provider_does_not_delay_another(chat_receivers: ChatReceivers) -> None:
    slow = chat_receivers.receiver.route("/slow", None, chat_receivers.receiver._default.ok)
    notifier = Notifier(
        [
            ProviderConfig("slow", Provider.GENERIC, slow, policy=DeliveryPolicy(timeout=3, retries=0)),
            ProviderConfig("discord", Provider.DISCORD, chat_receivers.discord_url, policy=QUICK),
        ]
    )
    chat_receivers.receiver.be_slow(1.0, times=1)
    notifier.start()
    notifier.notify(_note(), providers=["slow"])
    await asyncio.sleep(0.05)
    started = time.monotonic()
    notifier.notify(_note(), providers=["discord"])
    await chat_receivers.receiver.wait_for(2, timeout=3)
    assert time.monotonic() - started < 0.8
    await notifier.stop()


async def test_failed_deliveries_are_counted_by_provider_and_outcome(chat_receivers: ChatReceivers) -> None:
    registry = CollectorRegistry()
    chat_receivers.receiver.fail_with(404, message="channel_not_found")
    notifier = Notifier(
        [ProviderConfig("slack", Provider.SLACK, chat_receivers.slack_url, policy=QUICK)],
        metrics=DeliveryMetrics(registry),
    )
    notifier.start()
    notifier.notify(_note())
    assert await notifier.flush(5)
    await notifier.stop()
    assert notifier.last_result["slack"].status == 404
    assert (
        'canaryd_notifications_total{outcome="http-error",provider="slack"} 1.0'
        in generate_latest(registry).decode()
    )


async def test_teams_throttling_reported_in_a_200_is_retried(chat_receivers: ChatReceivers) -> None:
    from tests.fixtures.webhook_receiver import Answer

    chat_receivers.receiver.answer_with(
        Answer(
            status=200, body=b"Microsoft Teams endpoint returned HTTP error 429", content_type="text/plain"
        ),
        times=1,
    )
    notifier = Notifier([ProviderConfig("teams", Provider.TEAMS, chat_receivers.teams_url, policy=QUICK)])
    notifier.start()
    notifier.notify(_note())
    assert await notifier.flush(5)
    await notifier.stop()
    assert len(chat_receivers.calls("/teams")) == 2 and notifier.last_result["teams"].ok


async def test_steps_go_only_to_providers_that_subscribed(chat_receivers: ChatReceivers) -> None:
    notifier = Notifier(
        [
            ProviderConfig(
                "all",
                Provider.GENERIC,
                chat_receivers.generic_url,
                policy=QUICK,
                kinds=list(NotificationKind),
            ),
            ProviderConfig("default", Provider.SLACK, chat_receivers.slack_url, policy=QUICK),
        ]
    )
    notifier.start()
    assert notifier.notify(_note(NotificationKind.STEP)) == 1
    assert await notifier.flush(5)
    await notifier.stop()
    assert len(chat_receivers.calls("/generic")) == 1 and chat_receivers.calls("/slack") == []


async def test_after_stop_nothing_is_queued_and_the_loss_is_counted(chat_receivers: ChatReceivers) -> None:
    registry = CollectorRegistry()
    notifier = Notifier(
        [ProviderConfig("slack", Provider.SLACK, chat_receivers.slack_url, policy=QUICK)],
        metrics=DeliveryMetrics(registry),
    )
    notifier.start()
    await notifier.stop()
    assert notifier.notify(_note()) == 0
    assert 'reason="shutdown"} 1.0' in generate_latest(registry).decode()
