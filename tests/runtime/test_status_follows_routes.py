"""Under 409 storms and slow route patches, status never says a weight the route does not carry.

Before: status.canaryWeight said 2 % for 3 s while the route still carried 1 %,
because status (written first, as the record of intent) took the new weight
before the route patch had gone through.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from canaryd.api.timestamps import parse_rfc3339
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
    """For every write to the Canary: its canaryWeight and movingToWeight, and the route's weight then.

    ``writes`` lists, in commit order, ("route", canary weight) for every route version and ("status",
    phase, step, canaryWeight, movingToWeight) for every Canary version.
    """

    def __init__(self, store: Any, name: str) -> None:
        self.seen: list[tuple[int, int | None, int]] = []
        self.writes: list[tuple[Any, ...]] = []
        #: (step, lastStepTime) of every Canary version.
        self.step_times: list[tuple[int, datetime]] = []
        self._store, self._name = store, name
        self._unsubscribe = store.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        obj = event.obj if isinstance(event.obj, dict) else {}
        meta = obj.get("metadata") or {}
        if meta.get("name") != self._name:
            return
        if event.storage_key == ("gateway.networking.k8s.io", "httproutes"):
            self.writes.append(("route", world.weights(self._store, NS, self._name)[1]))
        if event.storage_key != ("canaryd.io", "canaries"):
            return
        status = obj.get("status") or {}
        on_route = world.weights(self._store, NS, self._name)[1]
        self.seen.append((status.get("canaryWeight", 0), status.get("movingToWeight"), on_route))
        self.writes.append(
            (
                "status",
                status.get("phase"),
                status.get("step"),
                status.get("canaryWeight"),
                status.get("movingToWeight"),
            )
        )
        if status.get("lastStepTime"):
            self.step_times.append((status.get("step"), parse_rfc3339(status["lastStepTime"])))

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


def _progressing_steps(writes: list[tuple[Any, ...]]) -> list[tuple[int, int]]:
    """(step, canaryWeight) of each Progressing status version that changed them, in order."""
    steps: list[tuple[int, int]] = []
    for write in writes:
        if write[0] != "status" or write[1] != "Progressing" or not write[2]:
            continue  # a route version, or the run before its first step
        if not steps or steps[-1] != (write[2], write[3]):
            steps.append((write[2], write[3]))
    return steps


async def _watched_run(cluster, meanwhile=None) -> StatusBesideRoute:
    """A run of a new revision to Succeeded, every write watched; ``meanwhile`` runs while it is under way."""
    store = cluster.store
    world.app(store, NS, "web", metrics=METRIC, interval="1s")
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await world.wait_until(
            lambda: world.status(store, NS, "web").get("phase") == "Initialized", timeout=15
        )
        watcher = StatusBesideRoute(store, "web")
        world.new_revision(store, NS, "web", "app:2")
        if meanwhile is not None:
            await meanwhile()
        await world.wait_until(lambda: world.status(store, NS, "web").get("phase") == "Succeeded", timeout=60)
        watcher.close()
    return watcher


async def test_an_ordinary_step_writes_its_route_first_and_status_once(cluster):
    watcher = await _watched_run(cluster)
    for canary_weight, moving_to, on_route in watcher.seen:
        assert canary_weight == on_route or moving_to == on_route, watcher.seen
    # The steps within the run (10 -> 30 -> 50 %) never say movingToWeight: the route was written first,
    # then status, once, with the weight the route carries.
    progressing = [w for w in watcher.writes if w[0] == "status" and w[1] == "Progressing"]
    assert {w[3] for w in progressing} >= {10, 30, 50}, watcher.writes
    for later in (30, 50):
        moves = [w for w in progressing if w[4] == later]
        assert moves == [], watcher.writes
        at = next(i for i, w in enumerate(watcher.writes) if w[0] == "status" and w[3] == later)
        assert ("route", later) in watcher.writes[:at], watcher.writes
    assert _progressing_steps(watcher.writes) == [(1, 10), (2, 30), (3, 50)], watcher.writes


async def test_a_status_write_lost_after_the_route_patch_takes_the_step_once(cluster):
    async def status_writes_fail_after_the_first_step() -> None:
        await world.wait_until(lambda: world.status(cluster.store, NS, "web").get("step") == 1, timeout=30)
        # The next status writes fail: the step to 30 % has patched the route when its status write fails.
        cluster.api_server.faults.add(
            "error", resource="canaries", subresource="status", verb="patch", code=503, remaining=2
        )

    watcher = await _watched_run(cluster, status_writes_fail_after_the_first_step)
    assert ("route", 30) in watcher.writes
    for canary_weight, moving_to, on_route in watcher.seen:
        assert canary_weight == on_route or moving_to == on_route, watcher.seen
    assert _progressing_steps(watcher.writes) == [(1, 10), (2, 30), (3, 50)], watcher.writes
    route_weights = [w[1] for w in watcher.writes if w[0] == "route"]
    climb = route_weights[: route_weights.index(50) + 1]
    assert climb == sorted(climb), route_weights  # the route never went back a step


async def test_a_step_held_up_in_its_route_patch_counts_its_interval_from_when_the_route_carried_it(cluster):
    """A slow API server holds each route patch for 1.5 s, longer than the 1 s interval: every step's
    lastStepTime is when its weight reached the route, so the next round judges a whole interval of it."""
    routed: dict[int, datetime] = {}

    def on_route(event: Any) -> None:
        obj = event.obj if isinstance(event.obj, dict) else {}
        route = event.storage_key == ("gateway.networking.k8s.io", "httproutes")
        if route and obj["metadata"]["name"] == "web":
            routed.setdefault(world.weights(cluster.store, NS, "web")[1], datetime.now(UTC))

    unsubscribe = cluster.store.subscribe(on_route)

    async def slow_route_patches() -> None:
        await world.wait_until(lambda: world.status(cluster.store, NS, "web").get("step") == 1, timeout=30)
        cluster.api_server.faults.add("latency", resource="httproutes", verb="patch", latency_ms=1500)

    watcher = await _watched_run(cluster, slow_route_patches)
    unsubscribe()
    steps = {}
    for write in watcher.writes:
        if write[0] == "status" and write[1] == "Progressing" and write[2] in (2, 3):
            steps.setdefault(write[2], write[3])
    assert steps == {2: 30, 3: 50}, watcher.writes
    for step, weight in steps.items():
        stamp = next(t for s, t in watcher.step_times if s == step)
        # Status timestamps have whole seconds.
        assert stamp >= routed[weight].replace(microsecond=0), (step, stamp, routed)
