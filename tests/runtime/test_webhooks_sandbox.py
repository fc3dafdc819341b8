"""A Canary's webhooks end to end: the controller in-process, the sandbox cluster, a real local receiver.

Every call crosses a real socket to ``tests.fixtures.webhook_receiver``,
which checks each body against docs/webhook-payload-v1.schema.json and each
signature against the key in the Canary's Secret. What is asserted is what a
user sees: the order the receiver was called in, the weights on the route,
the Canary's status, conditions and Events, and /metrics. The analysis is
scripted (always passing): these tests are about the webhooks around it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import pytest

from canaryd.runtime.controller import running_controller
from tests.cli.test_canaryctl import run_ctl
from tests.fixtures.webhook_receiver import WebhookReceiver
from tests.runtime import world
from tests.runtime.test_controller import ScriptedAnalysis, settings_for

NS = "shop"
METRIC = [{"name": "ok", "query": "vector(1)", "thresholdRange": {"min": 0}}]
KEY = b"a shared secret of the team"
ALL_TYPES = (
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
    "event",
)


@pytest.fixture
async def cluster():
    from canaryd.sandbox.cluster import SandboxCluster

    async with SandboxCluster(ready_delay=0.05, tick_interval=0.25) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        sandbox.store.ensure_namespace(NS)
        yield sandbox


def hook(receiver: WebhookReceiver, name: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "url": receiver.url_for(name), **extra}


def app(
    store: Any,
    name: str,
    webhooks: list[dict[str, Any]],
    *,
    steps: list[int] | None = None,
    interval: str = "1s",
    threshold: int = 2,
    **spec: Any,
) -> None:
    store.create("deployments", world.deployment(NS, name))
    store.create("httproutes.gateway.networking.k8s.io", world.route(NS, name))
    canary = world.canary(
        NS, name, step_weights=steps or [20, 50], interval=interval, threshold=threshold, metrics=METRIC
    )
    canary["spec"]["analysis"]["webhooks"] = webhooks
    canary["spec"].update(spec)
    store.create("canaries.canaryd.io", canary)


def signing_secret(store: Any, name: str = "hook-key", key: bytes = KEY) -> None:
    store.create(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "data": {"key": base64.b64encode(key).decode()},
        },
    )


def phase(store: Any, name: str) -> str | None:
    return world.status(store, NS, name).get("phase")


async def until_phase(store: Any, name: str, wanted: str, timeout: float = 30) -> None:
    await world.wait_until(
        lambda: phase(store, name) == wanted,
        timeout=timeout,
        message=f"{name} {wanted} (is {phase(store, name)})",
    )


def paths(receiver: WebhookReceiver, prefix: str = "") -> list[str]:
    return [r.path.strip("/") for r in receiver.requests if r.path.strip("/").startswith(prefix)]


def notes(store: Any, name: str) -> list[str]:
    return [f"{e['reason']}: {e.get('note', '')}" for e in world.events(store, NS, name)]


async def ctl(cluster: Any, *argv: str) -> Any:
    return await asyncio.to_thread(run_ctl, "--kubeconfig", str(cluster.kubeconfig_path), "-n", NS, *argv)


async def metrics_text(controller: Any) -> str:
    host, port = controller.endpoints.bound["metrics"]
    async with aiohttp.ClientSession() as http:
        return await (await http.get(f"http://{host}:{port}/metrics")).text()


async def test_every_hook_fires_in_the_documented_order_signed_and_valid(cluster):
    """All eight types on one Canary that promotes, one that rolls back; both signed with the Secret's key."""
    store = cluster.store
    signing_secret(store)
    async with WebhookReceiver() as receiver:
        signed = {"signingKeySecretRef": {"name": "hook-key"}}
        for name in ("cart", "pay"):
            app(
                store,
                name,
                [
                    hook(receiver, f"{name}-{kind}", kind, metadata={"team": name}, **signed)
                    for kind in ALL_TYPES
                ],
            )
        analysis = ScriptedAnalysis()
        async with running_controller(settings_for(cluster), analyzer=analysis) as controller:
            for name in ("cart", "pay"):
                await until_phase(store, name, "Initialized")
            recorder = world.WeightRecorder(store, NS, "cart")
            world.new_revision(store, NS, "cart", "app:2.0")
            await until_phase(store, "cart", "Succeeded")
            await world.wait_until(lambda: "cart-post-rollout" in paths(receiver), timeout=10)

            analysis.verdict = analysis.verdict.FAIL
            world.new_revision(store, NS, "pay", "app:bad")
            await until_phase(store, "pay", "Failed")
            await world.wait_until(lambda: "pay-rollback" in paths(receiver), timeout=10)
            text = await metrics_text(controller)
        recorder.close()

    assert receiver.violations == [], "every payload is valid against the schema"
    assert all(r.signed_with(KEY) for r in receiver.requests), "every call is signed with the Secret's key"
    assert not any(r.signed_with(b"another key") for r in receiver.requests)

    # The gates and checks of the promoted run, in order (event calls interleave; shown apart below).
    calls = [p.removeprefix("cart-") for p in paths(receiver, "cart-") if p != "cart-event"]
    firsts = sorted(set(calls), key=calls.index)
    assert firsts == [
        "confirm-rollout",
        "pre-rollout",
        "confirm-traffic-increase",
        "rollout",
        "confirm-promotion",
        "post-rollout",
    ], calls
    assert "rollback" not in calls
    # Every weight increase was confirmed first: one confirm-traffic-increase per step.
    assert calls.count("confirm-traffic-increase") == 2 and calls.count("confirm-promotion") == 1
    # One rollout call per step, after it (the gates opened at once: no interval was held).
    assert calls.count("rollout") == 2, calls
    assert calls.count("post-rollout") == 1 and calls.count("confirm-rollout") == 1
    assert recorder.sequence == [(80, 20), (50, 50), (100, 0)]

    bodies = {r.path.strip("/"): r.json for r in receiver.requests}
    post = bodies["cart-post-rollout"]
    assert (post["name"], post["namespace"], post["phase"]) == ("cart", NS, "Succeeded")
    assert post["metadata"] == {"team": "cart"} and post["webhook"] == "cart-post-rollout"
    rollout = next(r.json for r in receiver.requests if r.path.strip("/") == "cart-rollout")
    assert rollout["type"] == "rollout" and rollout["weight"] == 20 and rollout["step"] == 1

    # The rolled-back run: rollback sent once with the failed checks, then post-rollout (it ends every run).
    pay = [p.removeprefix("pay-") for p in paths(receiver, "pay-") if p != "pay-event"]
    assert pay.count("rollback") == 1 and "confirm-promotion" not in pay, pay
    assert pay.count("post-rollout") == 1 and pay.index("rollback") < pay.index("post-rollout"), pay
    assert bodies["pay-rollback"]["phase"] == "Failed" and bodies["pay-rollback"]["failedChecks"] == 2

    # event: every Event canaryd emitted about the Canary, its reason and message in the payload.
    event_reasons = [
        r.json["event"]["reason"] for r in receiver.requests if r.path.strip("/") == "cart-event"
    ]
    emitted = [e["reason"] for e in world.events(store, NS, "cart")]
    assert sorted(event_reasons) == sorted(emitted)
    assert 'canaryd_webhook_deliveries_total{outcome="ok",type="confirm-rollout"}' in text


async def test_gates_hold_until_2xx_and_a_person_can_still_decide(cluster):
    store = cluster.store
    async with WebhookReceiver() as receiver:
        app(store, "cart", [hook(receiver, "approve", "confirm-promotion")], steps=[50], interval="1s")
        app(store, "pay", [hook(receiver, "start", "confirm-rollout")], steps=[50], interval="1s")
        async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
            await until_phase(store, "cart", "Initialized")
            await until_phase(store, "pay", "Initialized")
            receiver.fail_with(403, message="change freeze")
            world.new_revision(store, NS, "cart", "app:2.0")
            world.new_revision(store, NS, "pay", "app:2.0")

            # confirm-promotion says no: the run holds at its last step, the gate in status and a condition.
            await world.wait_until(
                lambda: (
                    (world.status(store, NS, "cart").get("gate") or {}).get("type") == "confirm-promotion"
                    and any(r.path == "/approve" for r in receiver.requests)
                ),
                timeout=20,
            )
            await world.wait_until(
                lambda: (
                    "change freeze" in (world.condition(store, NS, "cart", "Gated") or {}).get("message", "")
                ),
                timeout=10,
            )
            gated = world.condition(store, NS, "cart", "Gated")
            assert gated is not None and gated["status"] == "True" and "approve" in gated["message"]
            # confirm-rollout says no: the new revision waits, the canary stays at 0 replicas.
            await world.wait_until(lambda: any(r.path == "/start" for r in receiver.requests), timeout=20)
            assert phase(store, "pay") == "Waiting"
            assert store.get("deployments", "pay", NS)["spec"]["replicas"] == 0
            await asyncio.sleep(3)  # well past the interval: asked again, still no
            assert phase(store, "cart") == "Progressing" and world.weights(store, NS, "cart") == (50, 50)
            assert phase(store, "pay") == "Waiting"
            assert sum(r.path == "/approve" for r in receiver.requests) >= 2, (
                "a gate that said no is asked again"
            )

            # A person decides for pay; the receiver's yes opens cart's gate.
            assert (await ctl(cluster, "abort", "pay")).code == 0
            await until_phase(store, "pay", "Failed")
            receiver.behave()
            await until_phase(store, "cart", "Succeeded")
            gated = world.condition(store, NS, "cart", "Gated")
            assert gated is not None and gated["status"] == "False"
            assert any("confirmed the promotion" in n for n in notes(store, "cart"))
    assert receiver.violations == []


async def test_failing_slow_and_malformed_receivers_and_a_missing_secret(cluster):
    """Each bad receiver gets a clear Event and status; nothing crashes; fixing it lets the run go on."""
    store = cluster.store
    async with WebhookReceiver() as receiver, WebhookReceiver() as slow, WebhookReceiver() as broken:
        slow.be_slow(5)
        broken.answer_malformed("close")
        # pre-rollout slower than its timeout: a failed check each time, the run rolls back at the threshold.
        app(
            store,
            "slow",
            [
                {
                    "name": "pre",
                    "type": "pre-rollout",
                    "url": slow.url_for("pre"),
                    "timeout": "1s",
                    "retries": 0,
                }
            ],
            threshold=2,
        )
        # A confirm gate that closes the connection: the gate holds and says why.
        app(
            store,
            "broken",
            [
                {
                    "name": "ok-to-go",
                    "type": "confirm-traffic-increase",
                    "url": broken.url_for("go"),
                    "timeout": "2s",
                    "retries": 1,
                }
            ],
        )
        # A signed gate whose Secret does not exist: never sent unsigned, the gate holds until it is created.
        app(
            store,
            "unsigned",
            [hook(receiver, "sign", "confirm-rollout", signingKeySecretRef={"name": "missing-key"})],
        )
        # post-rollout and event webhooks that fail: reported, the run still succeeds.
        app(
            store,
            "noisy",
            [
                hook(receiver, "after", "post-rollout", retries=0),
                hook(receiver, "events", "event", retries=0),
            ],
        )
        async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()) as controller:
            for name in ("slow", "broken", "unsigned", "noisy"):
                await until_phase(store, name, "Initialized")
            receiver.fail_with(500, message="receiver down")
            for name in ("slow", "broken", "unsigned", "noisy"):
                world.new_revision(store, NS, name, "app:2.0")

            await until_phase(store, "slow", "Failed", timeout=40)
            assert world.status(store, NS, "slow")["failedChecks"] == 2
            assert any("pre-rollout webhook: timeout" in n for n in notes(store, "slow")), notes(
                store, "slow"
            )
            assert world.weights(store, NS, "slow") == (100, 0), "no traffic moved before pre-rollout passed"

            await world.wait_until(
                lambda: (
                    "ok-to-go" in (world.condition(store, NS, "broken", "Gated") or {}).get("message", "")
                ),
                timeout=20,
            )
            gated = world.condition(store, NS, "broken", "Gated")
            assert gated is not None and gated["status"] == "True"
            assert "unreachable" in gated["message"] or "malformed" in gated["message"], gated["message"]
            assert world.weights(store, NS, "broken") == (100, 0)

            await world.wait_until(
                lambda: any("missing-key" in n for n in notes(store, "unsigned")), timeout=20
            )
            assert phase(store, "unsigned") == "Waiting"
            assert not any(r.path == "/sign" for r in receiver.requests), (
                "a signed webhook is never sent unsigned"
            )
            warning = [e for e in world.events(store, NS, "unsigned") if "missing-key" in e.get("note", "")]
            assert warning and warning[0]["type"] == "Warning"

            await until_phase(store, "noisy", "Succeeded")
            await world.wait_until(lambda: any(r.path == "/after" for r in receiver.requests), timeout=10)
            await world.wait_until(
                lambda: any(
                    "after" in n and "post-rollout" in n
                    for n in notes(store, "noisy")
                    if n.startswith("WebhookFailed")
                ),
                timeout=10,
            )

            # The fixes: the gate answers, the Secret appears; both runs go on to the end.
            broken.behave()
            receiver.behave()
            signing_secret(store, "missing-key")
            await until_phase(store, "broken", "Succeeded", timeout=40)
            await until_phase(store, "unsigned", "Succeeded", timeout=40)
            assert receiver.requests[-1].path != "/sign" or receiver.requests[-1].signed_with(KEY)
            assert all(r.signed_with(KEY) for r in receiver.requests if r.path == "/sign")
            text = await metrics_text(controller)
    assert 'canaryd_webhook_deliveries_total{outcome="timeout",type="pre-rollout"}' in text
    assert 'outcome="http-error",type="post-rollout"' in text
    assert receiver.violations == [] and broken.violations == [] and slow.violations == []


async def test_webhook_latency_overhead_per_step(cluster, record_property):
    """Two identical Canaries under one controller, one with a rollout and a confirm-traffic-increase
    webhook at every step: the difference in their run times per step is the webhooks' overhead."""
    store = cluster.store
    steps = [10, 20, 30, 40, 50]
    async with WebhookReceiver() as receiver:
        app(store, "plain", [], steps=steps)
        app(
            store,
            "hooked",
            [hook(receiver, "load", "rollout"), hook(receiver, "more", "confirm-traffic-increase")],
            steps=steps,
        )
        async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()) as controller:
            for name in ("plain", "hooked"):
                await until_phase(store, name, "Initialized")
            started = time.monotonic()
            for name in ("plain", "hooked"):
                world.new_revision(store, NS, name, "app:2.0")
            done: dict[str, float] = {}

            def finished() -> bool:
                for name in ("plain", "hooked"):
                    if name not in done and phase(store, name) == "Succeeded":
                        done[name] = time.monotonic() - started
                return len(done) == 2

            await world.wait_until(finished, timeout=60, interval=0.02)
            text = await metrics_text(controller)
    per_step = (done["hooked"] - done["plain"]) / len(steps)
    calls = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("canaryd_webhook_delivery_duration_seconds_")
        and 'type="rollout"' in line
        and ("_sum" in line or "_count" in line)
    }
    mean_call = (
        calls["canaryd_webhook_delivery_duration_seconds_sum"]
        / calls["canaryd_webhook_delivery_duration_seconds_count"]
    )
    record_property("webhook_overhead_per_step_seconds", round(per_step, 3))
    record_property("rollout_webhook_mean_call_seconds", round(mean_call, 4))
    print(
        f"run without webhooks {done['plain']:.2f}s, with {done['hooked']:.2f}s over {len(steps)} steps: "
        f"{per_step * 1000:.0f} ms per step; a rollout call took {mean_call * 1000:.1f} ms on average"
    )
    assert receiver.violations == []
    assert mean_call < 1.0, "a local receiver answers well within a second"
