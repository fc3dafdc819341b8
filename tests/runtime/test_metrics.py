"""The controller's /metrics: per-Canary series exist only while someone keeps them up to date.

A deleted Canary leaves none of its series behind (phase, weight, verdicts),
even when its deletion arrives while a pass for it is under way, and a
replica that stops leading drops every per-Canary series: the new leader
reports them from then on.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client import generate_latest

from canaryd.runtime.controller import running_controller
from canaryd.runtime.metrics import ControllerMetrics
from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world
from tests.runtime.test_controller import METRIC, NS, ScriptedAnalysis, settings_for

PER_CANARY = ("canaryd_canary_phase", "canaryd_canary_weight", "canaryd_analysis_verdicts")


def series_naming(text: str, name: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.startswith(PER_CANARY) and f'name="{name}"' in line
    ]


def test_forgetting_a_canary_removes_every_series_that_names_it() -> None:
    metrics = ControllerMetrics()
    for name in ("gone", "kept"):
        metrics.set_canary(NS, name, "Progressing", 30)
        metrics.analysis_verdicts.labels(NS, name, "success-rate", "Pass").inc()
        metrics.analysis_verdicts.labels(NS, name, "latency-p99", "Fail").inc()
    metrics.forget_canary(NS, "gone")
    text = generate_latest(metrics.registry).decode()
    assert series_naming(text, "gone") == []
    # Nine phases, the weight, and two verdict counters (each a _total and a _created line).
    assert len(series_naming(text, "kept")) == 9 + 1 + 2 * 2
    metrics.forget_canaries()
    assert series_naming(generate_latest(metrics.registry).decode(), "kept") == []


@pytest.fixture
async def cluster():
    async with SandboxCluster(ready_delay=0.05, tick_interval=0.5) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        sandbox.store.ensure_namespace("canaryd-system")
        yield sandbox


async def scrape(controller) -> str:
    host, port = controller.endpoints.bound["metrics"]
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/metrics") as response:
        return await response.text()


async def test_deleted_canaries_leave_no_series_behind(cluster):
    store = cluster.store
    names = [f"app{i}" for i in range(6)]
    for name in names:
        world.app(store, NS, name, step_weights=[50], interval="1s", metrics=METRIC)
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()) as ctl:
        await world.wait_until(
            lambda: all(world.status(store, NS, n).get("phase") == "Initialized" for n in names), timeout=30
        )
        for name in names:
            world.new_revision(store, NS, name, "app:2")
        await world.wait_until(
            lambda: all(world.status(store, NS, n).get("phase") == "Succeeded" for n in names), timeout=30
        )
        text = await scrape(ctl)
        assert all(series_naming(text, n) for n in names)
        for name in names:
            store.delete("canaries.canaryd.io", name, NS)
        await world.wait_until(
            lambda: all(world.find(store, "canaries.canaryd.io", NS, n) is None for n in names), timeout=15
        )
        await asyncio.sleep(0.5)
        text = await scrape(ctl)
        assert [line for n in names for line in series_naming(text, n)] == []


async def test_a_replica_that_loses_the_lease_drops_its_per_canary_series(cluster):
    store = cluster.store
    world.app(store, NS, "shop", step_weights=[50], interval="1s", metrics=METRIC)
    settings = settings_for(
        cluster,
        leader_elect=True,
        leader_election_identity="replica-a",
        lease_duration_seconds=1.5,
        renew_deadline_seconds=1.0,
        retry_period_seconds=0.2,
    )
    async with running_controller(settings, analyzer=ScriptedAnalysis()) as ctl:
        await world.wait_until(
            lambda: world.status(store, NS, "shop").get("phase") == "Initialized", timeout=15
        )
        await world.wait_until(lambda: ctl.is_leader, timeout=5)
        assert series_naming(await scrape(ctl), "shop")
        # The Lease can no longer be renewed (the API server refuses every write to it).
        fault = cluster.api_server.faults.add("error", resource="leases", verb="update", code=503)
        await world.wait_until(lambda: not ctl.is_leader, timeout=10, message="stopped leading")
        text = await scrape(ctl)
        assert series_naming(text, "shop") == []
        assert "canaryd_leader 0.0" in text
        cluster.api_server.faults.remove(fault.id)
        await world.wait_until(lambda: ctl.is_leader, timeout=10, message="leads again")
        for _ in range(50):
            if series_naming(await scrape(ctl), "shop"):
                break
            await asyncio.sleep(0.1)
        assert series_naming(await scrape(ctl), "shop")
