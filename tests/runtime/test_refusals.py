"""Dangerous Canaries are refused on the sandbox: nothing of anyone's is touched, and status says why.

Each test is one of the defects found by trying canaryd as a hostile user:
a Canary of another Canary's primary scaled the live primary to 0 (an
outage); two Canaries on one Deployment or one route rule both acted; a
target too long for the names canaryd derives got a 422 retried for ever;
a backendRef on another port was promoted although its traffic went nowhere.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from canaryd.runtime.controller import running_controller
from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world
from tests.runtime.test_controller import METRIC, NS, ScriptedAnalysis, settings_for

HTTP = "httproutes.gateway.networking.k8s.io"
CANARIES = "canaries.canaryd.io"


@pytest.fixture
async def cluster():
    async with SandboxCluster(ready_delay=0.05, tick_interval=0.5) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        yield sandbox


class Writes:
    """Every change the store saw to the named objects, as (resource, name, spec.replicas or None)."""

    def __init__(self, store: Any, names: set[str]) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self._names = names
        self._unsubscribe = store.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        obj = event.obj if isinstance(event.obj, dict) else {}
        name = (obj.get("metadata") or {}).get("name")
        if name in self._names:
            self.seen.append((event.storage_key[1], name, event.type))

    def close(self) -> None:
        self._unsubscribe()


def ready(store, name):
    return world.condition(store, NS, name, "Ready") or {}


async def initialized(store, name):
    await world.wait_until(
        lambda: world.status(store, NS, name).get("phase") == "Initialized", timeout=15, message=name
    )


def canary_of(name: str, target: str, route: str | None = None) -> dict:
    body = world.canary(NS, name, metrics=METRIC, interval="1s")
    body["spec"]["targetRef"]["name"] = target
    body["spec"]["routeRefs"] = [{"kind": "HTTPRoute", "name": route or target}]
    return body


async def test_a_canary_of_another_canarys_primary_is_refused_and_the_primary_keeps_serving(cluster):
    store = cluster.store
    world.app(store, NS, "web", metrics=METRIC)
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await initialized(store, "web")
        replicas = store.get("deployments", "web-primary", NS)["spec"]["replicas"]
        writes = Writes(store, {"web-primary", "web-primary-primary", "web-primary-canary"})
        store.create(CANARIES, canary_of("evil", "web-primary", route="web"))
        condition = await world.wait_until(lambda: ready(store, "evil").get("reason"), timeout=10)
        assert condition == "TargetManagedByCanaryd"
        assert "primary of Canary web" in ready(store, "evil")["message"]
        await world.wait_until(
            lambda: "TargetManagedByCanaryd" in [e["reason"] for e in world.events(store, NS, "evil")],
            timeout=5,
        )
        await asyncio.sleep(2)
        writes.close()
        assert writes.seen == []  # web-primary untouched, nothing created after it
        assert store.get("deployments", "web-primary", NS)["spec"]["replicas"] == replicas
        assert world.weights(store, NS, "web") == (100, 0)
        evil = store.get(CANARIES, "evil", NS)
        assert "phase" not in (evil.get("status") or {}) and not evil["metadata"].get("finalizers")
        # The Canary that owns the primary is not disturbed: its next run goes through.
        world.new_revision(store, NS, "web", "app:2")
        await world.wait_until(lambda: world.status(store, NS, "web").get("phase") == "Succeeded", timeout=30)
        store.delete(CANARIES, "evil", NS)
        await world.wait_until(lambda: world.find(store, CANARIES, NS, "evil") is None, timeout=10)


async def test_of_two_canaries_on_one_deployment_only_the_first_acts_until_it_goes(cluster):
    store = cluster.store
    world.app(store, NS, "api", metrics=METRIC)
    store.create(CANARIES, canary_of("api-again", "api"))
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await initialized(store, "api")
        await world.wait_until(lambda: ready(store, "api-again").get("reason") == "TargetClaimed", timeout=10)
        assert "Canary api already acts on Deployment api" in ready(store, "api-again")["message"]
        recorder = world.WeightRecorder(store, NS, "api")
        world.new_revision(store, NS, "api", "app:2")
        await world.wait_until(lambda: world.status(store, NS, "api").get("phase") == "Succeeded", timeout=30)
        recorder.close()
        # One schedule of steps, written once each, by the Canary that came first.
        assert recorder.sequence == [(90, 10), (70, 30), (50, 50), (100, 0)]
        assert "phase" not in world.status(store, NS, "api-again")
        owners = store.get("deployments", "api-primary", NS)["metadata"]["ownerReferences"]
        assert [o["name"] for o in owners] == ["api"]
        # Once the first is gone, the other one may act, and says so.
        store.delete(CANARIES, "api", NS)
        await initialized(store, "api-again")
        assert ready(store, "api-again")["status"] == "True"


async def test_two_canaries_on_one_route_rule_the_newer_is_refused(cluster):
    store = cluster.store
    store.ensure_namespace(NS)
    for name in ("cart", "pay"):
        store.create("deployments", world.deployment(NS, name))
    shared = world.route(NS, "shop")
    shared["spec"]["rules"][0]["backendRefs"] = [
        {"name": "cart-primary", "port": 8080, "weight": 100},
        {"name": "cart-canary", "port": 8080, "weight": 0},
        {"name": "pay-primary", "port": 8080, "weight": 100},
        {"name": "pay-canary", "port": 8080, "weight": 0},
    ]
    store.create(HTTP, shared)
    store.create(CANARIES, canary_of("cart", "cart", route="shop"))
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await initialized(store, "cart")
        store.create(CANARIES, canary_of("pay", "pay", route="shop"))
        await world.wait_until(lambda: ready(store, "pay").get("reason") == "RouteRuleClaimed", timeout=10)
        assert "HTTPRoute shop" in ready(store, "pay")["message"]
        assert world.find(store, "deployments", NS, "pay-primary") is None
        assert store.get("deployments", "pay", NS)["spec"]["replicas"] == 2


@pytest.mark.parametrize("length", [56, 60, 253])
async def test_a_target_whose_derived_names_cannot_exist_is_refused_before_any_write(cluster, length):
    store = cluster.store
    store.ensure_namespace(NS)
    name = "a" * length
    store.create("deployments", world.deployment(NS, name))
    body = canary_of("long", name, route="long")
    store.create(HTTP, world.route(NS, "long"))
    store.create(CANARIES, body)
    audit_from = cluster.api_server.audit.now()
    settings = settings_for(cluster)
    async with running_controller(settings, analyzer=ScriptedAnalysis(), user_agent="canaryd-long"):
        await world.wait_until(lambda: ready(store, "long").get("reason") == "InvalidNames", timeout=10)
        assert "at most 55 characters" in ready(store, "long")["message"]
        await asyncio.sleep(1.5)
    entries = cluster.api_server.audit.entries(user_agent="canaryd-long", since=audit_from)
    writes = {(e.verb, e.resource) for e in entries if e.verb not in ("get", "list", "watch")}
    assert writes <= {("patch", "canaries"), ("create", "events")}, writes
    assert store.get("deployments", name, NS)["spec"]["replicas"] == 2


async def test_a_backend_ref_on_another_port_moves_no_traffic_and_the_run_is_not_promoted(cluster):
    store = cluster.store
    store.ensure_namespace(NS)
    store.create("deployments", world.deployment(NS, "ports"))
    route = world.route(NS, "ports")
    route["spec"]["rules"][0]["backendRefs"][1]["port"] = 9090
    store.create(HTTP, route)
    body = canary_of("ports", "ports")
    body["spec"]["progressDeadlineSeconds"] = 3
    store.create(CANARIES, body)
    recorder = world.WeightRecorder(store, NS, "ports")
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await initialized(store, "ports")
        routes_ready = world.condition(store, NS, "ports", "RoutesReady")
        assert routes_ready["reason"] == "RoutePortMismatch"
        assert "port 9090" in routes_ready["message"] and "port 8080" in routes_ready["message"]
        world.new_revision(store, NS, "ports", "app:2")
        await world.wait_until(lambda: world.status(store, NS, "ports").get("phase") == "Failed", timeout=20)
    recorder.close()
    assert recorder.sequence == [(100, 0)]
