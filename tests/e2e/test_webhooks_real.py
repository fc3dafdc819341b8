"""Webhooks and chat notifications on the real control plane, judged on real requests through Traefik.

The sandbox tests (tests/runtime/test_webhooks_sandbox.py, test_notifications_sandbox.py) show every rule
with scripted analysis; this one shows the same contract where it has to hold in the end: `canaryd run`
as a process against a real kube-apiserver, reading a real Secret for the signing key and for the chat
destinations, the analysis from a real Prometheus scraping Traefik. The receivers are the recording ones
from tests/fixtures on loopback (each payload checked against the documented schema, each Slack-shaped
body against what Slack's incoming webhooks accept), served from a thread of their own so that the
test's blocking API calls never delay an answer.

What is asserted is what a team would see at its receivers: a confirm-rollout gate holding the run
until it answers 2xx (status and condition say so), the hooks of a promoted run in order with valid,
signed payloads, the rollback hook and the chat message of a rolled-back run naming the failing metric
and its value. The per-step overhead of a rollout and a confirm-traffic-increase hook is measured and
printed (two otherwise identical Canaries under the same controller).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.backends import REAL, Backend, backend
from tests.fixtures.chat_receivers import ChatReceivers
from tests.fixtures.webhook_receiver import RecordedRequest, WebhookReceiver
from tests.runtime import world

pytestmark = [pytest.mark.e2e, pytest.mark.realcluster]

KEY = b"the team's webhook key"
BROKEN = {"sandbox.canaryd.io/error-rate": "0.6"}
OVERHEAD_STEPS = [10, 20, 30, 40, 50]
ALWAYS_PASSES = [{"name": "ok", "query": "vector(1)", "thresholdRange": {"min": 0}}]


class ReceiverThread:
    """Webhook and chat receivers on an event loop in their own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="receivers")
        self.thread.start()
        self.started: list[Any] = []

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def webhooks(self) -> WebhookReceiver:
        receiver: WebhookReceiver = self._run(self._make(WebhookReceiver))
        return receiver

    def chat(self) -> ChatReceivers:
        receivers: ChatReceivers = self._run(self._make(ChatReceivers))
        return receivers

    async def _make(self, kind: Any) -> Any:
        receiver = kind()
        await receiver.start()
        self.started.append(receiver)
        return receiver

    def call(self, function: Any, *args: Any, **kwargs: Any) -> None:
        """Run a receiver command (fail_with, behave) on the receivers' loop."""

        async def run() -> None:
            function(*args, **kwargs)

        self._run(run())

    def stop(self) -> None:
        async def stop_all() -> None:
            for receiver in self.started:
                await receiver.stop()

        self._run(stop_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def hook(receiver: WebhookReceiver, name: str, kind: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "url": receiver.url_for(name),
        "metadata": {"team": "shop"},
        "signingKeySecretRef": {"name": "hook-key"},
    }


def secret(env: Backend, name: str, data: dict[str, bytes]) -> None:
    env.store.create(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": env.ns},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        },
    )


def app(env: Backend, name: str, webhooks: list[dict[str, Any]], *, steps: list[int], interval: str,
        metrics: list[dict[str, Any]]) -> None:  # fmt: skip
    env.store.create("deployments", world.deployment(env.ns, name))
    env.store.create("httproutes.gateway.networking.k8s.io", env.route(name))
    canary = world.canary(env.ns, name, step_weights=steps, interval=interval, metrics=metrics, deadline=180)
    canary["spec"]["analysis"]["webhooks"] = webhooks
    env.store.create("canaries.canaryd.io", canary)


def phase(env: Backend, name: str) -> str | None:
    return world.status(env.store, env.ns, name).get("phase")


async def until_phase(env: Backend, name: str, wanted: str, timeout: float = 90) -> None:
    def reached() -> bool:
        return phase(env, name) == wanted

    try:
        await world.wait_until(reached, timeout=timeout, interval=0.1)
    except AssertionError:
        events = [f"{e['reason']}: {e.get('note', '')}" for e in world.events(env.store, env.ns, name)]
        raise AssertionError(
            f"{name} not {wanted} within {timeout}s: {world.status(env.store, env.ns, name)}; {events}"
        ) from None


def calls(receiver: WebhookReceiver, prefix: str) -> list[RecordedRequest]:
    return [r for r in list(receiver.requests) if r.path.strip("/").startswith(prefix)]


def kinds(requests: list[RecordedRequest], prefix: str) -> list[str]:
    return [r.path.strip("/").removeprefix(prefix) for r in requests]


async def test_webhooks_gates_and_notifications_on_the_real_cluster(request, tmp_path: Path) -> None:
    receivers = ReceiverThread()
    try:
        async with backend(REAL, request) as env:
            await run_scenario(env, receivers, tmp_path, request)
    finally:
        receivers.stop()


async def run_scenario(env: Backend, receivers: ReceiverThread, tmp_path: Path, request: Any) -> None:
    hooks, gate, chat = receivers.webhooks(), receivers.webhooks(), receivers.chat()
    secret(env, "hook-key", {"key": KEY})
    secret(env, "chat", {"slack": chat.slack_url.encode(), "generic": chat.generic_url.encode()})
    # good: a confirm-rollout gate (on a receiver of its own, saying no at first) and the hooks of a
    # promoted run; bad: a broken revision, its rollback hook; plain/hooked: the overhead pair.
    gated = [hook(gate, "good-confirm-rollout", "confirm-rollout")] + [
        hook(hooks, f"good-{kind}", kind)
        for kind in ("pre-rollout", "rollout", "confirm-promotion", "post-rollout", "event")
    ]
    app(env, "good", gated, steps=[20, 50], interval="3s", metrics=env.metrics())
    failing = [hook(hooks, f"bad-{kind}", kind) for kind in ("rollback", "post-rollout")]
    app(env, "bad", failing, steps=[20, 50], interval="3s", metrics=env.metrics())
    app(env, "plain", [], steps=OVERHEAD_STEPS, interval="1s", metrics=ALWAYS_PASSES)
    measured = [hook(hooks, "hooked-load", "rollout"), hook(hooks, "hooked-more", "confirm-traffic-increase")]
    app(env, "hooked", measured, steps=OVERHEAD_STEPS, interval="1s", metrics=ALWAYS_PASSES)
    names = ("good", "bad", "plain", "hooked")

    notify = ["--notification-secret", f"{env.ns}/chat", "--cluster-name", "real-1"]
    controller = env.controller(tmp_path, "controller", *notify).start()
    try:
        for name in names:
            await until_phase(env, name, "Initialized", timeout=60)
        await asyncio.gather(env.carry_traffic("good"), env.carry_traffic("bad"))
        receivers.call(gate.fail_with, 403, message="change freeze")
        world.new_revision(env.store, env.ns, "good", "shop:2.0")
        world.new_revision(env.store, env.ns, "bad", "shop:2.0-broken", BROKEN)

        # The gate says no: the run waits, says why, the canary stays at 0 replicas; it is asked again.
        def held() -> bool:
            status = world.status(env.store, env.ns, "good")
            condition = world.condition(env.store, env.ns, "good", "Gated") or {}
            return (
                status.get("phase") == "Waiting"
                and (status.get("gate") or {}).get("type") == "confirm-rollout"
                and "change freeze" in condition.get("message", "")
                and len(gate.requests) >= 2
            )

        await world.wait_until(held, timeout=60, interval=0.1, message="good held by confirm-rollout")
        assert env.store.get("deployments", "good", env.ns)["spec"]["replicas"] == 0
        assert not [r for r in calls(hooks, "good-") if r.path != "/good-event"], (
            "nothing of the run happened while the gate said no"
        )

        # The overhead pair runs meanwhile (no gate): the difference per step is the two hooks' cost.
        started = time.monotonic()
        for name in ("plain", "hooked"):
            world.new_revision(env.store, env.ns, name, "shop:2.0")
        done: dict[str, float] = {}

        def finished() -> bool:
            for name in ("plain", "hooked"):
                if name not in done and phase(env, name) == "Succeeded":
                    done[name] = time.monotonic() - started
            return len(done) == 2

        await world.wait_until(finished, timeout=120, interval=0.05, message="overhead pair promoted")

        opened_at = time.monotonic()
        receivers.call(gate.behave)
        await until_phase(env, "good", "Succeeded", timeout=120)
        await until_phase(env, "bad", "Failed", timeout=120)
        await world.wait_until(
            lambda: calls(hooks, "good-post-rollout") and calls(hooks, "bad-post-rollout"),
            timeout=30,
            message="post-rollout of both runs",
        )
        await world.wait_until(
            lambda: sum("rolled back" in r.body.decode().lower() for r in chat.calls("/slack")) >= 1
            and sum(r.json and r.json.get("type") == "promoted" for r in chat.calls("/generic")) >= 3,
            timeout=30,
            message="chat messages for the promotions and the rollback",
        )

        def emitted() -> set[str]:
            return {e["reason"] for e in world.events(env.store, env.ns, "good")}

        def reported() -> set[str]:
            return {r.json["event"]["reason"] for r in calls(hooks, "good-event")}

        await world.wait_until(
            lambda: emitted() <= reported(), timeout=30, message="an event call for every Event"
        )
        assert reported() <= emitted(), "the event hook reports Events canaryd emitted, nothing else"
    finally:
        code = controller.stop()
    assert code == 0, controller.log()[-3000:]

    for receiver in (hooks, gate, chat.receiver):
        assert receiver.violations == [], receiver.violations
    signed = hooks.requests + gate.requests
    assert signed and all(r.signed_with(KEY) for r in signed), "every call signed with the Secret's key"

    # The promoted run: the gate's 2xx first, then the hooks in the documented order.
    answered = [r for r in gate.requests if r.received_at >= opened_at]
    assert answered, "the gate was asked again once it could say yes"
    good = [r for r in calls(hooks, "good-") if r.path != "/good-event"]
    assert min(r.received_at for r in good) > answered[0].received_at, "nothing before the gate's yes"
    order = kinds(good, "good-")
    firsts = sorted(set(order), key=order.index)
    assert firsts == ["pre-rollout", "rollout", "confirm-promotion", "post-rollout"], order
    assert order.count("pre-rollout") == 1 and order.count("post-rollout") == 1, order
    rollout = next(r.json for r in good if r.path == "/good-rollout")
    assert (rollout["name"], rollout["namespace"], rollout["type"]) == ("good", env.ns, "rollout")
    assert (rollout["weight"], rollout["step"], rollout["metadata"]) == (20, 1, {"team": "shop"})
    post = next(r.json for r in good if r.path == "/good-post-rollout")
    assert post["phase"] == "Succeeded" and post["webhook"] == "good-post-rollout"
    assert "failedMetrics" not in post

    # The rolled-back run: rollback once, naming the failing metric and its value, then post-rollout.
    bad = calls(hooks, "bad-")
    assert kinds(bad, "bad-") == ["rollback", "post-rollout"], kinds(bad, "bad-")
    rollback = bad[0].json
    assert rollback["phase"] == "Failed" and rollback["failedChecks"] == 2
    failing = {m["name"]: m for m in rollback["failedMetrics"]}
    assert "success-rate" in failing and failing["success-rate"]["value"] < 95, rollback["failedMetrics"]

    # Chat: run started and promoted for good, the rollback naming the metric for bad, the gate's wait.
    slack = [r.body.decode() for r in chat.calls("/slack")]
    assert any("good" in t and "real-1" in t for t in slack), slack
    generic = [r.json for r in chat.calls("/generic")]
    heard = {(g["name"], g["type"]) for g in generic}
    assert {("good", "run-started"), ("good", "waiting-on-gate"), ("good", "promoted")} <= heard, heard
    assert {("bad", "run-started"), ("bad", "rolled-back")} <= heard, heard
    rolled_back = next(g for g in generic if g["type"] == "rolled-back")
    assert rolled_back["failedMetric"]["name"] == "success-rate", rolled_back
    assert rolled_back["failedMetric"]["value"] < 95, rolled_back
    bad_slack = [t for t in slack if "bad" in t and "success-rate" in t]
    assert bad_slack, slack

    # The overhead of a rollout and a confirm-traffic-increase hook per step.
    per_step = (done["hooked"] - done["plain"]) / len(OVERHEAD_STEPS)
    hooked = calls(hooks, "hooked-")
    request.node.user_properties.append(("webhook_overhead_per_step_seconds", round(per_step, 3)))
    print(
        f"\nreal cluster: run without webhooks {done['plain']:.2f}s, with {done['hooked']:.2f}s over "
        f"{len(OVERHEAD_STEPS)} steps: {per_step * 1000:.0f} ms per step "
        f"({len(hooked)} webhook calls: {kinds(hooked, 'hooked-').count('load')} rollout, "
        f"{kinds(hooked, 'hooked-').count('more')} confirm-traffic-increase)"
    )
    assert kinds(hooked, "hooked-").count("more") >= len(OVERHEAD_STEPS) - 1
