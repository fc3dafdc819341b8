"""Credentials never reach logs, Events, status or /metrics, even when an error or an answer quotes them.

A template's ``provider.address`` may carry a password or a token in its
query string, and the Secret named by ``provider.auth`` holds a bearer token;
webhook and chat notification URLs carry theirs in the path (Slack, Teams,
Discord) or the query.
Error messages from HTTP clients and from Prometheus (or a proxy before it)
quote URLs and sometimes headers; logs, Events and status are read by many
more people than the Secret, so none of these may show them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp import web

from canaryd.runtime.controller import running_controller
from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world
from tests.runtime.test_controller import NS, settings_for

PASSWORD = "pa55w0rd-xyzzy"
URL_TOKEN = "t0ken-in-the-url"
BEARER = "bearer-s3cr3t-token"
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, URL_TOKEN, BEARER, BASIC)


class EchoingPrometheus:
    """A misbehaving Prometheus (or proxy) whose error repeats the request, credentials and all."""

    def __init__(self) -> None:
        self.seen_authorization: list[str] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.seen_authorization.append(request.headers.get("Authorization", ""))
        echo = f"bad request {request.url} Authorization: {request.headers.get('Authorization', '')}"
        return web.json_response({"status": "error", "errorType": "bad_data", "error": echo}, status=400)


@pytest.fixture
async def echoing_prometheus():
    server = EchoingPrometheus()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield server
    await runner.cleanup()


@pytest.fixture
async def cluster():
    async with SandboxCluster(ready_delay=0.05, tick_interval=0.5) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        yield sandbox


def template(name: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "MetricTemplate",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "query": 'sum(rate(requests{service="{{ service }}"}[1m]))',
            "provider": {"address": address, "auth": {"secretRef": {"name": "prometheus-token"}}},
        },
    }


def everything_written(store: Any, name: str) -> str:
    canary = store.get("canaries.canaryd.io", name, NS)
    events = world.events(store, NS, name)
    return json.dumps({"status": canary.get("status"), "events": events})


@pytest.mark.parametrize("reachable", [True, False], ids=["echoing-prometheus", "unreachable"])
async def test_no_credential_reaches_status_events_or_logs(cluster, echoing_prometheus, capfd, reachable):
    store = cluster.store
    store.ensure_namespace(NS)
    token = base64.b64encode(BEARER.encode()).decode()
    store.create(
        "secrets", {"metadata": {"name": "prometheus-token", "namespace": NS}, "data": {"token": token}}, NS
    )
    port = echoing_prometheus.port if reachable else 9
    address = f"http://alice:{PASSWORD}@127.0.0.1:{port}/prom?access_token={URL_TOKEN}"
    store.create("metrictemplates.canaryd.io", template("rate", address), NS)
    metric = [{"name": "rate", "templateRef": {"name": "rate"}, "thresholdRange": {"min": 0}}]
    world.app(store, NS, "web", metrics=metric, interval="1s")
    async with running_controller(settings_for(cluster, log_format="json")):
        await world.wait_until(
            lambda: world.status(store, NS, "web").get("phase") == "Initialized", timeout=15
        )
        world.new_revision(store, NS, "web", "app:2")
        await world.wait_until(
            lambda: world.status(store, NS, "web").get("analysisErrors", 0) >= 2, timeout=30
        )
    written = everything_written(store, "web")
    logs = capfd.readouterr()
    # Credentials were sent (the Secret's win over the address's user and password); the error quoted them.
    if reachable:
        sent = echoing_prometheus.seen_authorization
        assert sent and any(BEARER in header or BASIC in header for header in sent), sent
    assert "REDACTED" in written or "127.0.0.1" in written  # the errors are reported, only without secrets
    for secret in SECRETS:
        assert secret not in written, (secret, written)
        assert secret not in logs.out and secret not in logs.err, secret


# -- webhook and notification URLs -----------------------------------------------------------------------

#: Tokens where chat services put them: in the path (Slack, Teams, Discord) or the query (generic hooks).
SLACK_TOKEN = "slackPathT0ken4f9e1c"
TEAMS_TOKEN = "teamsPathT0ken77ab2d"
DISCORD_TOKEN = "discordPathT0ken0c3f5e"
QUERY_TOKEN = "queryT0ken9d8e7f"
HOOK_TOKEN = "hookPathT0ken31415"
URL_SECRETS = (SLACK_TOKEN, TEAMS_TOKEN, DISCORD_TOKEN, QUERY_TOKEN, HOOK_TOKEN)


class EchoingReceiver:
    """A webhook or chat endpoint (or a proxy before it) whose every error answer repeats the request URL."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path_qs)
        echo = f"no route for POST {request.url} (path {request.path_qs})"
        return web.json_response({"message": echo, "error": echo}, status=500)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def chat_urls(base: str) -> dict[str, str]:
    return {
        "slack": f"{base}/services/T0001/B0002/{SLACK_TOKEN}",
        "msteams": f"{base}/webhookb2/{TEAMS_TOKEN}@tenant/IncomingWebhook/{TEAMS_TOKEN}/owner",
        "discord": f"{base}/api/webhooks/1234567/{DISCORD_TOKEN}",
        "generic": f"{base}/notify?token={QUERY_TOKEN}",
    }


@pytest.mark.parametrize("reachable", [True, False], ids=["echoing-receiver", "unreachable"])
async def test_no_webhook_or_notification_url_reaches_status_events_logs_or_metrics(
    cluster, capfd, reachable
):
    from tests.runtime.test_webhooks_sandbox import metrics_text

    store = cluster.store
    store.ensure_namespace(NS)
    store.ensure_namespace("canaryd-system")
    receiver = EchoingReceiver()
    await receiver.start()
    try:
        base = f"http://127.0.0.1:{receiver.port if reachable else 9}"
        store.create(
            "secrets",
            {
                "metadata": {"name": "chat", "namespace": "canaryd-system"},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in chat_urls(base).items()},
            },
            "canaryd-system",
        )
        hooks = [
            {"name": "started", "type": "event", "url": f"{base}/hooks/{HOOK_TOKEN}?sig={QUERY_TOKEN}"},
            {"name": "check", "type": "rollout", "url": f"{base}/services/T0001/B0002/{SLACK_TOKEN}"},
            {"name": "after", "type": "post-rollout", "url": f"{base}/api/webhooks/1/{DISCORD_TOKEN}"},
        ]
        metric = [{"name": "ok", "query": "vector(1)", "thresholdRange": {"min": 0}}]
        world.app(store, NS, "web", metrics=metric, interval="1s", step_weights=[50], threshold=1)
        canary = store.get("canaries.canaryd.io", "web", NS)
        canary["spec"]["analysis"]["webhooks"] = hooks
        store.update("canaries.canaryd.io", canary, NS)
        settings = settings_for(cluster, log_format="json", notification_secret="canaryd-system/chat")
        async with running_controller(settings) as controller:
            await world.wait_until(
                lambda: world.status(store, NS, "web").get("phase") == "Initialized", timeout=15
            )
            world.new_revision(store, NS, "web", "app:2")
            await world.wait_until(
                lambda: world.status(store, NS, "web").get("phase") in ("Failed", "Succeeded"), timeout=60
            )
            assert controller.notifications is not None
            await controller.notifications.flush(20)
            metrics = await metrics_text(controller)
        written = everything_written(store, "web")
        logs = capfd.readouterr()
    finally:
        await receiver.stop()
    if reachable:  # the URLs were used, tokens and all, and the answers quoted them
        assert any(SLACK_TOKEN in p for p in receiver.paths) and any(QUERY_TOKEN in p for p in receiver.paths)
        assert any(DISCORD_TOKEN in p for p in receiver.paths), receiver.paths
    assert "webhook" in written.lower()  # the failures are reported, only without the tokens
    for secret in URL_SECRETS:
        assert secret not in written, (secret, written)
        assert secret not in metrics, secret
        assert secret not in logs.out and secret not in logs.err, secret
