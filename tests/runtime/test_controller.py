"""The controller in-process against the sandbox cluster, with a scripted analysis.

These tests are about the runtime (caches, workers, wake-ups, writes), so the
analysis verdicts are scripted here; the end-to-end tests use a real
Prometheus.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import aiohttp
import pytest

from canaryd.api.constants import Verdict
from canaryd.core.observations import MetricResult
from canaryd.runtime.controller import running_controller
from canaryd.runtime.settings import Settings
from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world

NS = "shop"
METRIC = [{"name": "ok", "query": "vector(1)", "thresholdRange": {"min": 0}}]


class ScriptedAnalysis:
    """Answers every round with the verdict set in ``verdict``; counts the rounds per Canary."""

    def __init__(self) -> None:
        self.verdict = Verdict.PASS
        self.rounds: dict[str, int] = {}

    async def __call__(self, canary, metrics, now: datetime):
        key = f"{canary.metadata.namespace}/{canary.metadata.name}"
        self.rounds[key] = self.rounds.get(key, 0) + 1
        return tuple(MetricResult(name=m.check.name, verdict=self.verdict, value=1.0) for m in metrics)


@pytest.fixture
async def cluster():
    async with SandboxCluster(ready_delay=0.05, tick_interval=0.5) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        yield sandbox


def settings_for(cluster, **overrides) -> Settings:
    values = {
        "kubeconfig": str(cluster.kubeconfig_path),
        "health_address": "127.0.0.1:0",
        "metrics_address": "127.0.0.1:0",
        "prometheus_url": "http://127.0.0.1:9",
        "qps": 500,
        "burst": 1000,
    }
    values.update(overrides)
    return Settings(**values)


async def initialized(store, name):
    await world.wait_until(
        lambda: world.status(store, NS, name).get("phase") == "Initialized",
        timeout=15,
        message=f"{name} initialized",
    )


async def test_initializes_progresses_and_promotes_with_two_writes_per_step(cluster):
    store = cluster.store
    world.app(store, NS, "cart", step_weights=[10, 30, 50], interval="1s", metrics=METRIC)
    analysis = ScriptedAnalysis()
    recorder = world.WeightRecorder(store, NS, "cart")
    async with running_controller(
        settings_for(cluster), analyzer=analysis, user_agent="canaryd-under-test"
    ) as ctl:
        await initialized(store, "cart")
        primary = store.get("deployments", "cart-primary", NS)
        assert primary["metadata"]["ownerReferences"][0]["kind"] == "Canary"
        # Status is written before the effects, so the scale-down follows the Initialized phase closely.
        await world.wait_until(
            lambda: store.get("deployments", "cart", NS)["spec"]["replicas"] == 0, timeout=5, message="scaled"
        )
        assert store.get("services", "cart-canary", NS)["spec"]["selector"] == {"app": "cart"}
        assert store.get("services", "cart-primary", NS)["spec"]["selector"] == {"app": "cart-primary"}

        audit_from = cluster.api_server.audit.now()
        world.new_revision(store, NS, "cart", "app:2.0")
        await world.wait_until(
            lambda: world.status(store, NS, "cart").get("phase") == "Succeeded",
            timeout=30,
            message="promoted",
        )
        assert recorder.sequence == [(100, 0), (90, 10), (70, 30), (50, 50), (100, 0)]
        primary = store.get("deployments", "cart-primary", NS)
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "app:2.0"
        assert store.get("deployments", "cart", NS)["spec"]["replicas"] == 0
        reasons = [e["reason"] for e in world.events(store, NS, "cart")]
        assert reasons.count("StepAdvanced") >= 2 or len(reasons) >= 5

        # What the controller asked of the API server during the run: writes only, no reads.
        entries = cluster.api_server.audit.entries(user_agent="canaryd-under-test", since=audit_from)
        reads = [e for e in entries if e.verb in ("get", "list") and e.resource != "leases"]
        assert reads == []
        route_patches = [e for e in entries if e.resource == "httproutes" and e.verb == "patch"]
        assert len(route_patches) == 4  # 10, 30, 50, back to the primary
        assert analysis.rounds["shop/cart"] >= 3

        # Once settled, an idle Canary costs nothing: no pending wake-up, no analysis, no requests.
        await world.wait_until(lambda: ctl.scheduler.due("shop/cart") is None, timeout=5)
        rounds, requests = (
            analysis.rounds["shop/cart"],
            len(cluster.api_server.audit.entries(user_agent="canaryd-under-test")),
        )
        await asyncio.sleep(2.5)
        assert analysis.rounds["shop/cart"] == rounds
        assert len(cluster.api_server.audit.entries(user_agent="canaryd-under-test")) == requests

        async with aiohttp.ClientSession() as http:
            host, port = ctl.endpoints.bound["metrics"]
            succeeded = 'canaryd_canary_phase{name="cart",namespace="shop",phase="Succeeded"} 1.0'
            for _ in range(50):
                text = await (await http.get(f"http://{host}:{port}/metrics")).text()
                if succeeded in text:
                    break
                await asyncio.sleep(0.1)
            assert succeeded in text
            assert "canaryd_step_lateness_seconds_count" in text
            assert 'canaryd_kubernetes_requests_total{code="200",resource="httproutes",verb="patch"}' in text
            host, port = ctl.endpoints.bound["health"]
            assert (await http.get(f"http://{host}:{port}/readyz")).status == 200
            assert (await http.get(f"http://{host}:{port}/healthz")).status == 200
    recorder.close()


async def test_failing_analysis_rolls_back_at_the_threshold(cluster):
    store = cluster.store
    world.app(store, NS, "pay", step_weights=[20, 40, 60], interval="1s", threshold=2, metrics=METRIC)
    analysis = ScriptedAnalysis()
    async with running_controller(settings_for(cluster), analyzer=analysis):
        await initialized(store, "pay")
        analysis.verdict = Verdict.FAIL
        world.new_revision(store, NS, "pay", "app:bad")
        await world.wait_until(lambda: world.status(store, NS, "pay").get("phase") == "Failed", timeout=20)
        notes = [e["note"] for e in world.events(store, NS, "pay")]
        assert world.status(store, NS, "pay")["failedChecks"] == 2, notes
        await world.wait_until(
            lambda: store.get("deployments", "pay", NS)["spec"]["replicas"] == 0, timeout=10
        )
        assert world.weights(store, NS, "pay") == (100, 0)
        primary = store.get("deployments", "pay-primary", NS)
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "app:1.0"


async def test_max_concurrent_runs_makes_the_second_run_wait(cluster):
    store = cluster.store
    for name in ("one", "two"):
        world.app(store, NS, name, step_weights=[10, 20, 30, 40], interval="1s", metrics=METRIC)
    analysis = ScriptedAnalysis()
    async with running_controller(settings_for(cluster, max_concurrent_runs=1), analyzer=analysis):
        await initialized(store, "one")
        await initialized(store, "two")
        world.new_revision(store, NS, "one", "app:2")
        world.new_revision(store, NS, "two", "app:2")
        await world.wait_until(
            lambda: (
                {world.status(store, NS, n).get("phase") for n in ("one", "two")}
                == {"Progressing", "Waiting"}
            ),
            timeout=10,
        )
        phases = []
        while {world.status(store, NS, n).get("phase") for n in ("one", "two")} != {"Succeeded"}:
            phases.append(tuple(world.status(store, NS, n).get("phase") for n in ("one", "two")))
            await asyncio.sleep(0.05)
            assert len(phases) < 800, "both runs should finish"
        assert ("Progressing", "Progressing") not in phases


async def test_bad_input_gets_conditions_and_events_not_a_crash(cluster):
    store = cluster.store
    store.ensure_namespace(NS)
    # A Canary whose target, route and template do not exist.
    store.create(
        "canaries.canaryd.io",
        world.canary(
            NS,
            "ghost",
            metrics=[{"name": "sr", "templateRef": {"name": "nope"}, "thresholdRange": {"min": 1}}],
        ),
    )
    analysis = ScriptedAnalysis()
    async with running_controller(settings_for(cluster), analyzer=analysis):
        ready = await world.wait_until(lambda: world.condition(store, NS, "ghost", "Ready"), timeout=10)
        assert (ready["status"], ready["reason"]) == ("False", "TargetNotFound")
        assert "ghost" in ready["message"]
        await world.wait_until(lambda: world.events(store, NS, "ghost"), timeout=10)
        # Fixing the input lets it proceed, without restarting anything; each fix shows the next problem.
        store.create("deployments", world.deployment(NS, "ghost"))
        store.create("httproutes.gateway.networking.k8s.io", world.route(NS, "ghost"))
        ready = await world.wait_until(
            lambda: (
                (c := world.condition(store, NS, "ghost", "Ready")) and c["reason"] != "TargetNotFound" and c
            ),
            timeout=10,
        )
        assert (ready["status"], ready["reason"]) == ("False", "MetricTemplateNotFound")
        assert f"MetricTemplate {NS}/nope not found" in ready["message"]
        assert "MetricTemplateNotFound" in [e["reason"] for e in world.events(store, NS, "ghost")]
        store.create(
            "metrictemplates.canaryd.io",
            {
                "apiVersion": "canaryd.io/v1alpha1",
                "kind": "MetricTemplate",
                "metadata": {"name": "nope", "namespace": NS},
                "spec": {"query": "vector(1)"},
            },
        )
        await initialized(store, "ghost")
        assert world.condition(store, NS, "ghost", "Ready")["status"] == "True"


async def test_route_edited_mid_run_gets_its_weights_back_and_keeps_the_filter(cluster):
    store = cluster.store
    world.app(store, NS, "feed", step_weights=[10, 20, 30], interval="2s", metrics=METRIC)
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await initialized(store, "feed")
        world.new_revision(store, NS, "feed", "app:2")
        await world.wait_until(lambda: world.weights(store, NS, "feed") == (90, 10), timeout=10)
        filter_ = {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "x-team", "value": "feed"}]},
        }
        store.patch(
            "httproutes.gateway.networking.k8s.io",
            "feed",
            [
                {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 50},
                {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 50},
                {"op": "add", "path": "/spec/rules/0/filters", "value": [filter_]},
            ],
            NS,
            patch_type="json",
        )
        await world.wait_until(lambda: world.weights(store, NS, "feed") in ((90, 10), (80, 20)), timeout=5)
        route = store.get("httproutes.gateway.networking.k8s.io", "feed", NS)
        assert route["spec"]["rules"][0]["filters"] == [filter_]
        # The Event follows the route write (and the status that confirms it): wait for it too.
        drift = await world.wait_until(
            lambda: [e for e in world.events(store, NS, "feed") if e["reason"] == "RouteWeightsDrifted"],
            timeout=5,
        )
        assert "primary 50, canary 50" in drift[0]["note"]


async def test_route_not_accepted_by_its_gateway_moves_no_traffic(cluster):
    store = cluster.store
    store.ensure_namespace(NS)
    store.create("deployments", world.deployment(NS, "orphan"))
    store.create("httproutes.gateway.networking.k8s.io", world.route(NS, "orphan", parent="no-such-gateway"))
    store.create("canaries.canaryd.io", world.canary(NS, "orphan", metrics=METRIC))
    recorder = world.WeightRecorder(store, NS, "orphan")
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await world.wait_until(lambda: world.find(store, "deployments", NS, "orphan-primary"), timeout=10)
        world.new_revision(store, NS, "orphan", "app:2")
        routes_ready = await world.wait_until(
            lambda: (
                (c := world.condition(store, NS, "orphan", "RoutesReady")) and c["status"] == "False" and c
            ),
            timeout=10,
        )
        assert "no-such-gateway" in routes_ready["message"]
        await asyncio.sleep(2.5)
        assert recorder.sequence == [(100, 0)]
        assert world.status(store, NS, "orphan").get("canaryWeight", 0) == 0
    recorder.close()


async def test_deleted_canary_returns_traffic_before_its_finalizer_goes_and_leaves_the_primary_serving(
    cluster,
):
    store = cluster.store
    world.app(store, NS, "gone", step_weights=[30, 60], interval="1s", metrics=METRIC)
    weights_when_deleted: list[tuple[int, int]] = []

    def on_event(event) -> None:
        if event.type == "DELETED" and event.storage_key[1] == "canaries":
            weights_when_deleted.append(world.weights(store, NS, "gone"))

    unsubscribe = store.subscribe(on_event)
    left_behind = [("deployments", "gone-primary"), ("services", "gone-primary"), ("services", "gone-canary")]
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await initialized(store, "gone")
        uid = store.get("canaries.canaryd.io", "gone", NS)["metadata"]["uid"]
        for resource, name in left_behind:  # created owned by the Canary
            owners = store.get(resource, name, NS)["metadata"].get("ownerReferences") or []
            assert [o["uid"] for o in owners] == [uid]
        world.new_revision(store, NS, "gone", "app:2")
        await world.wait_until(lambda: world.weights(store, NS, "gone") == (70, 30), timeout=10)
        store.delete("canaries.canaryd.io", "gone", NS)
        await world.wait_until(lambda: weights_when_deleted, timeout=10)
        deleting = next(e for e in world.events(store, NS, "gone") if e["reason"] == "Deleting")
        assert "Deployment gone-primary and Services gone-primary, gone-canary are left in place" in str(
            deleting["note"]
        )
        await asyncio.sleep(0.5)  # the garbage collector has had its chance
    unsubscribe()
    assert weights_when_deleted == [(100, 0)]
    assert world.find(store, "canaries.canaryd.io", NS, "gone") is None
    # The route still sends all traffic to gone-primary, so it and both Services outlive the Canary.
    assert world.weights(store, NS, "gone") == (100, 0)
    for resource, name in left_behind:
        obj = world.find(store, resource, NS, name)
        assert obj is not None, f"{resource} {name} was garbage-collected with the Canary"
        assert uid not in [o.get("uid") for o in obj["metadata"].get("ownerReferences") or []]
    primary = store.get("deployments", "gone-primary", NS)
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "app:1.0"
    assert (primary.get("status") or {}).get("readyReplicas", 0) >= 1


async def test_a_primary_scaled_to_zero_still_gets_a_canary_with_a_pod(cluster):
    store = cluster.store
    world.app(store, NS, "idle", step_weights=[10, 50], interval="30s", metrics=METRIC)
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await initialized(store, "idle")
        store.patch("deployments", "idle-primary", {"spec": {"replicas": 0}}, NS)
        world.new_revision(store, NS, "idle", "app:2")
        await world.wait_until(lambda: world.weights(store, NS, "idle") == (90, 10), timeout=10)
        assert store.get("deployments", "idle", NS)["spec"]["replicas"] == 1


async def test_a_lost_route_race_is_read_again_and_decided_again(cluster):
    store = cluster.store
    world.app(store, NS, "race", step_weights=[25, 50], interval="1s", metrics=METRIC)
    recorder = world.WeightRecorder(store, NS, "race")
    async with running_controller(
        settings_for(cluster), analyzer=ScriptedAnalysis(), user_agent="canaryd-race"
    ):
        await initialized(store, "race")
        cluster.api_server.faults.add(
            "conflict", resource="httproutes", verb="patch", name="race", remaining=1
        )
        world.new_revision(store, NS, "race", "app:2")
        await world.wait_until(
            lambda: world.status(store, NS, "race").get("phase") == "Succeeded", timeout=20
        )
    recorder.close()
    assert recorder.sequence == [(100, 0), (75, 25), (50, 50), (100, 0)]
    entries = cluster.api_server.audit.entries(user_agent="canaryd-race", resource="httproutes", name="race")
    codes = [(e.verb, e.code) for e in entries]
    conflict = codes.index(("patch", 409))
    assert codes[conflict + 1] == ("get", 200), "the route is read again after the lost race"
