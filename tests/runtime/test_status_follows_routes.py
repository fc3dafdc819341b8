"""Under 409 storms and slow route patches, status never says a weight the route does not carry.

Before: status.canaryWeight said 2 % for 3 s while the route still carried 1 %,
because status (written first, as the record of intent) took the new weight
before the route patch had gone through.
"""

from __future__ import annotations

from typing import Any

import pytest

from canaryd.runtime.controller import running_controller
from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world
from tests.runtime.test_controller import METRIC, NS, ScriptedAnalysis, settings_for

CANARIES = "canaries.canaryd.io"


@pytest.fixture
async def cluster():
    async with SandboxCluster(ready_delay=0.05, tick_interval=0.5, seed=16) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        yield sandbox


class StatusBesideRoute:
    """For every write to the Canary: its canaryWeight and movingToWeight, and the route's weight then."""

    def __init__(self, store: Any, name: str) -> None:
        self.seen: list[tuple[int, int | None, int]] = []
        self._store, self._name = store, name
        self._unsubscribe = store.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        obj = event.obj if isinstance(event.obj, dict) else {}
        meta = obj.get("metadata") or {}
        if event.storage_key != ("canaryd.io", "canaries") or meta.get("name") != self._name:
            return
        status = obj.get("status") or {}
        on_route = world.weights(self._store, NS, self._name)[1]
        self.seen.append((status.get("canaryWeight", 0), status.get("movingToWeight"), on_route))

    def close(self) -> None:
        self._unsubscribe()


async def test_status_follows_the_route_through_conflicts_and_latency(cluster):
    store = cluster.store
    world.app(store, NS, "web", metrics=METRIC, interval="1s")
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await world.wait_until(
            lambda: world.status(store, NS, "web").get("phase") == "Initialized", timeout=15
        )
        faults = cluster.api_server.faults
        faults.add("conflict", resource="httproutes", verb="patch", rate=0.5)
        faults.add("latency", resource="httproutes", verb="patch", latency_ms=300)
        watcher = StatusBesideRoute(store, "web")
        world.new_revision(store, NS, "web", "app:2")
        await world.wait_until(lambda: world.status(store, NS, "web").get("phase") == "Succeeded", timeout=60)
        watcher.close()
    moves = [s for s in watcher.seen if s[1] is not None]
    assert moves, watcher.seen
    for canary_weight, moving_to, on_route in watcher.seen:
        assert canary_weight == on_route or moving_to == on_route, watcher.seen
    confirmed = [w for w, moving_to, _ in watcher.seen if moving_to is None]
    assert {10, 30, 50} <= set(confirmed), watcher.seen
    assert world.status(store, NS, "web").get("canaryWeight") == 0
    assert "movingToWeight" not in world.status(store, NS, "web")
