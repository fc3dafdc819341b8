"""Chat notifications end to end: the controller in-process, the sandbox cluster, local chat receivers.

The receivers (``tests.fixtures.chat_receivers``) check each body the way
Slack, Microsoft Teams and Discord check their incoming webhooks' (and the
generic one against docs/notification-v1.schema.json), so a message that
would be refused in production fails here. The cluster's destinations come
from the Secret named by ``--notification-secret``; a Canary may name its
own. The analysis is scripted.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from canaryd.api.constants import Verdict
from canaryd.core.observations import MetricResult
from canaryd.runtime.controller import running_controller
from tests.fixtures.chat_receivers import ChatReceivers
from tests.fixtures.webhook_receiver import WebhookReceiver
from tests.runtime import world
from tests.runtime.test_controller import settings_for
from tests.runtime.test_webhooks_sandbox import app, metrics_text, notes, until_phase

NS = "shop"


class Analysis:
    """Passes every Canary's round, except the ones named in ``failing`` (error rate 7.5)."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    async def __call__(self, canary: Any, metrics: Any, now: Any) -> tuple[MetricResult, ...]:
        bad = canary.metadata.name in self.failing
        return tuple(
            MetricResult(
                name=m.check.name,
                verdict=Verdict.FAIL if bad else Verdict.PASS,
                value=7.5 if bad else 0.1,
                message="7.5 is above the maximum 1" if bad else "0.1 is within [-inf, 1]",
            )
            for m in metrics
        )


@pytest.fixture
async def cluster():
    from canaryd.sandbox.cluster import SandboxCluster

    async with SandboxCluster(ready_delay=0.05, tick_interval=0.25) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        sandbox.store.ensure_namespace(NS)
        sandbox.store.ensure_namespace("canaryd-system")
        yield sandbox


def chat_secret(store: Any, namespace: str, name: str, data: dict[str, str]) -> None:
    store.create(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


@contextlib.asynccontextmanager
async def chat_receivers() -> AsyncIterator[ChatReceivers]:
    receivers = ChatReceivers()
    await receivers.start()
    try:
        yield receivers
    finally:
        await receivers.stop()


def texts(receivers: ChatReceivers, path: str) -> list[str]:
    return [r.body.decode() for r in receivers.calls(path)]


async def test_each_provider_hears_the_run_start_gate_promotion_and_rollback(cluster):
    store = cluster.store
    async with chat_receivers() as chat, chat_receivers() as team:
        chat_secret(
            store,
            "canaryd-system",
            "chat",
            {
                "slack": chat.slack_url,
                "msteams": chat.teams_url,
                "discord": chat.discord_url,
                "generic": chat.generic_url,
            },
        )
        chat_secret(store, NS, "team-chat", {"generic.team": team.generic_url})
        approve = team.receiver.url_for("approve")
        # cart: promoted through a confirm-promotion gate; pay: rolled back; own: its own Secret and kinds.
        app(store, "cart", [{"name": "approve", "type": "confirm-promotion", "url": approve}], steps=[50])
        app(store, "pay", [], steps=[50], threshold=1)
        app(
            store,
            "own",
            [],
            steps=[50],
            notifications={"secretRef": {"name": "team-chat"}, "kinds": ["promoted"]},
        )
        app(store, "lost", [], steps=[50], notifications={"secretRef": {"name": "no-such-secret"}})
        analysis = Analysis()
        analysis.failing.add("pay")
        settings = settings_for(cluster, notification_secret="canaryd-system/chat", cluster_name="sandbox-1")
        async with running_controller(settings, analyzer=analysis) as controller:
            for name in ("cart", "pay", "own", "lost"):
                await until_phase(store, name, "Initialized")
            for name in ("cart", "pay", "own", "lost"):
                world.new_revision(store, NS, name, "app:2.0")
            for name, final in (
                ("cart", "Succeeded"),
                ("pay", "Failed"),
                ("own", "Succeeded"),
                ("lost", "Succeeded"),
            ):
                await until_phase(store, name, final, timeout=40)
            assert controller.notifications is not None
            assert await controller.notifications.flush(20)
            text = await metrics_text(controller)

    assert chat.receiver.violations == [] and team.receiver.violations == []
    for path in ("/slack", "/teams", "/discord", "/generic"):
        cart = [t for t in texts(chat, path) if "cart" in t]
        assert len(cart) == 3, (path, cart)  # started, waiting on the gate, promoted (no step by default)
        pay = [t for t in texts(chat, path) if "pay" in t]
        assert len(pay) == 2, (path, pay)  # started, rolled back
        assert any("7.5" in t and "ok" in t for t in pay), "the rollback names the failing metric and value"
        assert any("sandbox-1" in t for t in cart), "the cluster's name is in the message"
    generic = [r.json for r in chat.calls("/generic")]
    by_canary = {(g["name"], g["type"]) for g in generic}
    assert {("cart", "run-started"), ("cart", "waiting-on-gate"), ("cart", "promoted")} <= by_canary
    assert ("pay", "rolled-back") in by_canary
    failed = next(g for g in generic if g["type"] == "rolled-back")
    assert failed["failedMetric"]["name"] == "ok" and failed["failedMetric"]["value"] == 7.5
    gate = next(g for g in generic if g["type"] == "waiting-on-gate")
    assert gate["gate"]["type"] == "confirm-promotion"
    assert not {g["name"] for g in generic} & {"own", "lost"}, "a Canary's own Secret replaces the cluster's"
    # own: only what it asked for, at its own destination.
    assert [(r.json["name"], r.json["type"]) for r in team.calls("/generic")] == [("own", "promoted")]
    # lost: its Secret is missing: a Warning Event says so, and the run went on regardless.
    warnings = [n for n in notes(store, "lost") if "no-such-secret" in n]
    assert warnings, notes(store, "lost")
    assert 'canaryd_notifications_total{outcome="ok",provider="canaryd-system/chat/slack"}' in text
    assert 'reason="secret-unreadable"' in text


async def test_notifications_are_paced_never_block_and_failures_are_counted(cluster):
    """Every step to a Slack that answers slowly and a Discord that is down: the run takes as long
    as one without notifications, Slack gets at most its rate, Discord's failures are on /metrics."""
    store = cluster.store
    steps = [10, 20, 30, 40, 50, 60]
    async with chat_receivers() as chat, WebhookReceiver(validator=None) as down:
        chat.receiver.be_slow(1.5)
        down.fail_with(503, message="unavailable")
        chat_secret(store, NS, "chat", {"slack": chat.slack_url, "kinds": "run-started,step,promoted"})
        chat_secret(store, NS, "down", {"discord": down.url_for("discord"), "kinds": "step"})
        app(store, "loud", [], steps=steps, notifications={"secretRef": {"name": "chat"}})
        app(store, "broken", [], steps=steps, notifications={"secretRef": {"name": "down"}})
        app(store, "quiet", [], steps=steps)
        async with running_controller(settings_for(cluster), analyzer=Analysis()) as controller:
            for name in ("loud", "broken", "quiet"):
                await until_phase(store, name, "Initialized")
            started = time.monotonic()
            for name in ("loud", "broken", "quiet"):
                world.new_revision(store, NS, name, "app:2.0")
            done: dict[str, float] = {}

            def finished() -> bool:
                for name in ("loud", "broken", "quiet"):
                    if name not in done and world.status(store, NS, name).get("phase") == "Succeeded":
                        done[name] = time.monotonic() - started
                return len(done) == 3

            await world.wait_until(finished, timeout=60, interval=0.02)
            assert controller.notifications is not None
            await controller.notifications.flush(60)
            text = await metrics_text(controller)
    assert abs(done["loud"] - done["quiet"]) < 1.0 and abs(done["broken"] - done["quiet"]) < 1.0, done
    slack = chat.calls("/slack")
    assert len(slack) == 1 + len(steps) + 1  # started, each step, promoted: none lost
    arrivals = [r.received_at - slack[0].received_at for r in slack]
    # Slack's pace: a burst of 3, then one a second (the slow answers space them further still).
    for index, arrived in enumerate(arrivals):
        assert arrived >= (index - 3) * 1.0 - 0.05, arrivals
    assert chat.receiver.violations == []
    assert 'provider="shop/down/discord"' in text and 'outcome="http-error"' in text
