"""A pass that keeps failing is reported where a person looks, retried with backoff, and cleared after.

Before: an OverflowError in every reconcile of one Canary (a progress
deadline of 2^62 seconds) was logged and retried for ever while its status
said all was well, and a 422 on creating the primary left "creating
Deployment" in status.
"""

from __future__ import annotations

import asyncio

import pytest

from canaryd.core import lifecycle
from canaryd.runtime.controller import running_controller
from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world
from tests.runtime.test_controller import METRIC, NS, ScriptedAnalysis, settings_for


@pytest.fixture
async def cluster():
    async with SandboxCluster(ready_delay=0.05, tick_interval=0.5) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        yield sandbox


def reconciled(store, name):
    return world.condition(store, NS, name, "Reconciled")


class BrokenDecisions:
    """``lifecycle.decide``, except that it raises for the Canaries named in ``broken``."""

    def __init__(self, *broken: str) -> None:
        self.broken = set(broken)
        self.calls: dict[str, int] = {}

    def __call__(self, canary, observations, now):
        name = canary.metadata.name
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.broken:
            raise OverflowError("date value out of range")
        return lifecycle.decide(canary, observations, now)


async def test_an_exception_in_every_pass_is_a_condition_and_one_event_with_backoff(cluster):
    store = cluster.store
    world.app(store, NS, "boom", metrics=METRIC)
    world.app(store, NS, "fine", metrics=METRIC)
    decide = BrokenDecisions("boom")
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis(), decide=decide):
        condition = await world.wait_until(lambda: reconciled(store, "boom"), timeout=10)
        assert (condition["status"], condition["reason"]) == ("False", "ReconcileError")
        assert condition["message"] == (
            "deciding: canaryd failed: OverflowError: date value out of range (retried with backoff)"
        )
        await world.wait_until(
            lambda: world.status(store, NS, "fine").get("phase") == "Initialized", timeout=10
        )
        calls_before = decide.calls["boom"]
        await asyncio.sleep(4)
        # 0.5 s, doubling: at most a handful of passes in 4 s, not a hot loop.
        assert decide.calls["boom"] - calls_before <= 4
        warnings = [e for e in world.events(store, NS, "boom") if e["reason"] == "ReconcileError"]
        # One Event for the problem, however many passes met it.
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
        assert reconciled(store, "fine") is None  # a Canary that never failed has no such condition
        decide.broken.clear()
        await world.wait_until(
            lambda: (reconciled(store, "boom") or {}).get("status") == "True", timeout=70
        )
        await world.wait_until(
            lambda: world.status(store, NS, "boom").get("phase") == "Initialized", timeout=10
        )
        # The lifecycle's own status writes keep the condition as the runtime left it.
        assert reconciled(store, "boom")["reason"] == "Reconciled"


async def test_an_api_server_refusal_is_reported_in_status_naming_the_write(cluster):
    store = cluster.store
    store.ensure_namespace(NS)
    store.create("deployments", world.deployment(NS, "web"))
    store.create("httproutes.gateway.networking.k8s.io", world.route(NS, "web"))
    fault = cluster.api_server.faults.add("error", resource="deployments", verb="create", code=422)
    store.create("canaries.canaryd.io", world.canary(NS, "web", metrics=METRIC))
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        condition = await world.wait_until(lambda: reconciled(store, "web"), timeout=10)
        assert (condition["status"], condition["reason"]) == ("False", "ApiRejected")
        assert condition["message"].startswith(
            f"creating or updating Deployment {NS}/web-primary: the API server answered 422"
        )
        await world.wait_until(
            lambda: "ApiRejected" in [e["reason"] for e in world.events(store, NS, "web")], timeout=5
        )
        cluster.api_server.faults.remove(fault.id)
        await world.wait_until(
            lambda: world.status(store, NS, "web").get("phase") == "Initialized", timeout=70
        )
        await world.wait_until(lambda: reconciled(store, "web")["status"] == "True", timeout=10)
