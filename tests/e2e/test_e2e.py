"""End to end: `canaryd run` as a process, the sandbox cluster, and a real Prometheus.

Each test builds several Canaries in one sandbox and lets them run at once,
to keep the whole set short; every assertion is something a user would see:
the weights on their route, their Deployments, the Canary's status and
Events. The analysis uses analysis/sandbox.yaml against the traffic
simulator's series as scraped by Prometheus every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.cli.controller_process import ControllerProcess
from canaryd.sandbox.cluster import SandboxCluster
from canaryd.sandbox.prometheus_server import find_binary
from tests.runtime import world

pytestmark = pytest.mark.e2e

NS = "shop"
INTERVAL = "3s"
METRICS = [
    {
        "name": "success-rate",
        "templateRef": {"name": "success-rate", "namespace": "canaryd-system"},
        "thresholdRange": {"min": 95},
        "interval": "6s",
    },
    {
        "name": "latency-p99",
        "templateRef": {"name": "latency-p99", "namespace": "canaryd-system"},
        "thresholdRange": {"max": 500},
        "interval": "6s",
    },
]
HTTP = "httproutes.gateway.networking.k8s.io"
GRPC = "grpcroutes.gateway.networking.k8s.io"


def prometheus_available() -> bool:
    try:
        find_binary("prometheus")
    except Exception:
        return False
    return True


@contextlib.asynccontextmanager
async def sandbox(tmp_path: Path):
    if not prometheus_available():
        pytest.skip("Debian's prometheus binary is not installed")
    async with SandboxCluster(
        with_prometheus=True, scrape_interval=1.0, ready_delay=0.3, tick_interval=0.25, default_rps=40
    ) as cluster:
        store = cluster.store
        world.install_crds(store)
        world.install_gateway(store)
        store.ensure_namespace("canaryd-system")
        for doc in yaml.safe_load_all((world.REPO / "analysis" / "sandbox.yaml").read_text()):
            if doc:
                store.create("metrictemplates.canaryd.io", doc)
        store.ensure_namespace(NS)
        yield cluster


def controller(
    cluster: SandboxCluster, tmp_path: Path, name: str = "controller", *extra: str
) -> ControllerProcess:
    assert cluster.prometheus_url is not None
    return ControllerProcess(
        cluster.kubeconfig_path, cluster.prometheus_url, tmp_path / f"{name}.log", *extra
    )


def app(store: Any, name: str, *, kind: str = "HTTPRoute", steps: list[int] | None = None, threshold: int = 2,
        deadline: int = 120, parent_namespace: str = world.GATEWAY_NAMESPACE,
        parent: str = world.GATEWAY_NAME, namespace: str = NS) -> None:  # fmt: skip
    store.ensure_namespace(namespace)
    store.create("deployments", world.deployment(namespace, name))
    store.create(
        HTTP if kind == "HTTPRoute" else GRPC,
        world.route(namespace, name, kind=kind, parent=parent, parent_namespace=parent_namespace),
    )
    store.create(
        "canaries.canaryd.io",
        world.canary(
            namespace,
            name,
            step_weights=steps or [10, 30, 50],
            interval=INTERVAL,
            threshold=threshold,
            metrics=copy.deepcopy(METRICS),
            route_kind=kind,
            deadline=deadline,
        ),
    )


def phase(store: Any, name: str, namespace: str = NS) -> str | None:
    return world.status(store, namespace, name).get("phase")


async def until_phase(store: Any, name: str, wanted: str, timeout: float = 60, namespace: str = NS) -> None:
    await world.wait_until(
        lambda: phase(store, name, namespace) == wanted,
        timeout=timeout,
        message=f"{namespace}/{name} in {wanted} (is {phase(store, name, namespace)})",
    )


def image(store: Any, deployment: str, namespace: str = NS) -> str:
    return store.get("deployments", deployment, namespace)["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]


def reasons(store: Any, name: str, namespace: str = NS) -> list[str]:
    return [e["reason"] for e in world.events(store, namespace, name)]


async def test_rollouts_a_user_sees(tmp_path):
    """(a) promote, (b) roll back, (e) route edited, (f) new revision mid-run, (g) route not accepted,
    (h) GRPCRoute, (i) deleted mid-run, and bad input, all at once under one controller."""
    async with sandbox(tmp_path) as cluster:
        store = cluster.store
        # (g): a Gateway whose listener admits routes from its own namespace only.
        store.create(
            "gateways.gateway.networking.k8s.io",
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"name": "internal", "namespace": world.GATEWAY_NAMESPACE},
                "spec": {
                    "gatewayClassName": world.GATEWAY_CLASS,
                    "listeners": [
                        {
                            "name": "http",
                            "protocol": "HTTP",
                            "port": 80,
                            "allowedRoutes": {"namespaces": {"from": "Same"}},
                        }
                    ],
                },
            },
        )
        app(store, "good")
        app(store, "bad")
        app(store, "edited", steps=[10, 20, 30, 40])
        app(store, "changing", steps=[10, 30, 50])
        app(store, "refused", parent="internal")
        app(store, "rpc", kind="GRPCRoute")
        app(store, "deleted", steps=[20, 40, 60, 80])
        store.create("canaries.canaryd.io", world.canary(NS, "ghost", metrics=copy.deepcopy(METRICS)))
        recorders = {
            n: world.WeightRecorder(store, NS, n) for n in ("good", "bad", "edited", "changing", "refused")
        }
        recorders["rpc"] = world.WeightRecorder(store, NS, "rpc", kind="GRPCRoute")
        deleted_at: list[tuple[int, int]] = []
        unsubscribe = store.subscribe(
            lambda e: (
                deleted_at.append(world.weights(store, NS, "deleted"))
                if e.type == "DELETED"
                and e.storage_key[1] == "canaries"
                and e.obj["metadata"]["name"] == "deleted"
                else None
            )
        )
        ctl = controller(cluster, tmp_path).start()
        try:
            # A new revision while a Canary is still initializing becomes its stable revision, so each
            # must have finished initializing (the refused route included) before its revision changes.
            for name in ("good", "bad", "edited", "changing", "refused", "rpc", "deleted"):
                await until_phase(store, name, "Initialized", timeout=30)

            world.new_revision(store, NS, "good", "shop:2.0")
            world.new_revision(store, NS, "bad", "shop:2.0-broken", {"sandbox.canaryd.io/error-rate": "0.6"})
            world.new_revision(store, NS, "edited", "shop:2.0")
            world.new_revision(store, NS, "changing", "shop:2.0")
            world.new_revision(store, NS, "refused", "shop:2.0")
            world.new_revision(store, NS, "rpc", "shop:2.0")
            world.new_revision(store, NS, "deleted", "shop:2.0")

            # (e) someone edits the route mid-run: other weights and a filter.
            await world.wait_until(lambda: world.weights(store, NS, "edited") == (90, 10), timeout=30)
            filter_ = {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-cart", "value": "1"}]},
            }
            store.patch(HTTP, "edited", [
                {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 40},
                {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 60},
                {"op": "add", "path": "/spec/rules/0/filters", "value": [filter_]},
            ], NS, patch_type="json")  # fmt: skip

            # (f) a new revision while the run is at 30 %.
            await world.wait_until(lambda: world.weights(store, NS, "changing") == (70, 30), timeout=40)
            revision_before = world.status(store, NS, "changing")["revision"]
            world.new_revision(store, NS, "changing", "shop:3.0")

            # (i) the Canary is deleted mid-run.
            await world.wait_until(lambda: world.weights(store, NS, "deleted") == (60, 40), timeout=40)
            deleted_uid = store.get("canaries.canaryd.io", "deleted", NS)["metadata"]["uid"]
            store.delete("canaries.canaryd.io", "deleted", NS)

            for name in ("good", "edited", "rpc"):
                await until_phase(store, name, "Succeeded", timeout=60)
            await until_phase(store, "bad", "Failed", timeout=60)
            await until_phase(store, "changing", "Succeeded", timeout=60)
            await world.wait_until(lambda: deleted_at, timeout=20, message="deleted Canary gone")

            # (a) exact weight sequence, promoted, canary Deployment scaled to 0.
            assert recorders["good"].sequence == [(100, 0), (90, 10), (70, 30), (50, 50), (100, 0)]
            assert image(store, "good-primary") == "shop:2.0"
            await world.wait_until(
                lambda: store.get("deployments", "good", NS)["spec"]["replicas"] == 0, timeout=10
            )
            metrics = {m["name"]: m for m in world.status(store, NS, "good")["metrics"]}
            assert metrics["success-rate"]["verdict"] == "Pass" and metrics["success-rate"]["value"] >= 95

            # (b) rolled back at the threshold, all traffic on the primary, old revision kept.
            bad = world.status(store, NS, "bad")
            assert bad["failedChecks"] == 2
            await world.wait_until(lambda: world.weights(store, NS, "bad") == (100, 0), timeout=10)
            assert image(store, "bad-primary") == "app:1.0"
            assert "FailedChecksThresholdReached" in reasons(store, "bad")
            await world.wait_until(
                lambda: store.get("deployments", "bad", NS)["spec"]["replicas"] == 0, timeout=10
            )

            # (e) weights corrected, the filter kept, an Event says so.
            route = store.get(HTTP, "edited", NS)
            assert route["spec"]["rules"][0]["filters"] == [filter_]
            assert "RouteWeightsDrifted" in reasons(store, "edited")
            assert (40, 60) in recorders["edited"].sequence
            after_edit = recorders["edited"].sequence[recorders["edited"].sequence.index((40, 60)) + 1]
            assert after_edit in ((90, 10), (80, 20))

            # (f) the analysis restarted for the newer revision, which is what got promoted.
            assert "RevisionChanged" in reasons(store, "changing")
            assert world.status(store, NS, "changing")["lastPromotedRevision"] != revision_before
            assert image(store, "changing-primary") == "shop:3.0"
            # After the change at 30 % the schedule starts again from its first step. The weight
            # shows 100/0 in between unless the new revision was already ready when the
            # controller looked, in which case the restart and the first step are one write.
            seq = recorders["changing"].sequence
            restart = seq[seq.index((70, 30)) + 1 :]
            if restart[0] == (100, 0):
                restart = restart[1:]
            assert restart == [(90, 10), (70, 30), (50, 50), (100, 0)]

            # (g) no traffic moved through a route the Gateway refused, and the condition says why.
            assert recorders["refused"].sequence == [(100, 0)]
            routes_ready = world.condition(store, NS, "refused", "RoutesReady")
            assert routes_ready["status"] == "False" and "NotAllowedByListeners" in routes_ready["message"]
            assert (
                phase(store, "refused") == "Progressing"
                and world.status(store, NS, "refused")["canaryWeight"] == 0
            )

            # (h) a GRPCRoute canary walks the same steps.
            assert recorders["rpc"].sequence == [(100, 0), (90, 10), (70, 30), (50, 50), (100, 0)]
            assert image(store, "rpc-primary") == "shop:2.0"

            # (i) all traffic was back on the primary when the finalizer went, and it stays there: the
            # primary Deployment and both Services outlive the Canary, no longer owned by it.
            assert deleted_at == [(100, 0)]
            assert world.find(store, "canaries.canaryd.io", NS, "deleted") is None
            assert world.weights(store, NS, "deleted") == (100, 0)
            for resource, name in (
                ("deployments", "deleted-primary"),
                ("services", "deleted-primary"),
                ("services", "deleted-canary"),
            ):
                left = world.find(store, resource, NS, name)
                assert left is not None, f"{resource} {name} was garbage-collected with the Canary"
                owners = [o.get("uid") for o in left["metadata"].get("ownerReferences") or []]
                assert deleted_uid not in owners
            assert store.get("deployments", "deleted-primary", NS)["status"].get("readyReplicas", 0) >= 1
            assert "left in place" in next(
                e["note"] for e in world.events(store, NS, "deleted") if e["reason"] == "Deleting"
            )

            # Bad input: a condition and an Event, and the controller kept running.
            ghost = world.condition(store, NS, "ghost", "Ready")
            assert ghost["status"] == "False" and "ghost" in ghost["message"]
            assert world.events(store, NS, "ghost")
            assert ctl.alive()
        finally:
            unsubscribe()
            for recorder in recorders.values():
                recorder.close()
            code = ctl.stop()
        assert code == 0, ctl.log()[-3000:]


def route_patches(cluster: SandboxCluster, name: str) -> list[Any]:
    """Every successful route patch sent for ``name`` (audit log entries, oldest first)."""
    entries = cluster.api_server.audit.entries(verb="patch", resource="httproutes", name=name)
    return [entry for entry in entries if entry.code == 200]


async def test_killed_controller_resumes_and_a_dead_prometheus_promotes_nothing(tmp_path):
    """(d) SIGKILL mid-run and restart: same step, nothing applied twice; (c) Prometheus stopped mid-run."""
    async with sandbox(tmp_path) as cluster:
        store = cluster.store
        app(store, "resilient", steps=[10, 20, 30, 40, 50])
        app(store, "blind", steps=[10, 50], deadline=6)
        recorder = world.WeightRecorder(store, NS, "resilient")
        first = controller(cluster, tmp_path, "first").start()
        second = controller(cluster, tmp_path, "second")
        try:
            await until_phase(store, "resilient", "Initialized", timeout=30)
            await until_phase(store, "blind", "Initialized", timeout=30)
            world.new_revision(store, NS, "resilient", "shop:2.0")
            await world.wait_until(lambda: world.weights(store, NS, "resilient") == (80, 20), timeout=40)
            before = world.status(store, NS, "resilient")
            first.kill()
            await asyncio.sleep(1.0)
            assert world.status(store, NS, "resilient")["step"] == before["step"]
            second.start()
            await until_phase(store, "resilient", "Succeeded", timeout=60)
            assert recorder.sequence == [(100, 0), (90, 10), (80, 20), (70, 30), (60, 40), (50, 50), (100, 0)]
            steps = [e for e in world.events(store, NS, "resilient") if "canary weight" in e.get("note", "")]
            notes = [e["note"] for e in steps]
            assert len(notes) == len(set(notes)), f"a step was applied twice: {notes}"
            # The audit log agrees: one successful route write per weight change, across both processes.
            assert len(route_patches(cluster, "resilient")) == len(recorder.sequence) - 1

            # (c) Prometheus goes away during a run: no verdict, so no promotion.
            world.new_revision(store, NS, "blind", "shop:2.0")
            await world.wait_until(lambda: world.weights(store, NS, "blind") == (90, 10), timeout=40)
            assert cluster.prometheus is not None
            await asyncio.to_thread(cluster.prometheus.stop)
            await world.wait_until(lambda: phase(store, "blind") in ("Failed", "Succeeded"), timeout=40)
            assert phase(store, "blind") == "Failed"
            assert image(store, "blind-primary") == "app:1.0"
            # The status records the rollback first; the route follows at once.
            await world.wait_until(lambda: world.weights(store, NS, "blind") == (100, 0), timeout=10)
            last = {m["name"]: m["verdict"] for m in world.status(store, NS, "blind")["metrics"]}
            assert set(last.values()) <= {"Error", "NoData"}
        finally:
            recorder.close()
            first.stop()
            code = second.stop()
        assert code == 0, second.log()[-3000:]


async def test_two_replicas_only_the_leader_acts_and_the_other_takes_over(tmp_path):
    """(j) leader election between two `canaryd run --leader-elect` processes."""
    async with sandbox(tmp_path) as cluster:
        store = cluster.store
        store.ensure_namespace("canaryd-system")
        app(store, "ha", steps=[10, 20, 30, 40, 50])
        recorder = world.WeightRecorder(store, NS, "ha")
        election = (
            "--leader-elect",
            "--lease-duration",
            "4",
            "--renew-deadline",
            "3",
            "--retry-period",
            "0.5",
        )
        replicas = {
            name: controller(cluster, tmp_path, name, *election, "--leader-election-identity", name).start()
            for name in ("replica-a", "replica-b")
        }
        try:

            def holder() -> str:
                lease = world.find(store, "leases.coordination.k8s.io", "canaryd-system", "canaryd-leader")
                return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

            leader = await world.wait_until(holder, timeout=20, message="a leader")
            standby = next(n for n in replicas if n != leader)
            await until_phase(store, "ha", "Initialized", timeout=30)
            world.new_revision(store, NS, "ha", "shop:2.0")
            await world.wait_until(lambda: world.weights(store, NS, "ha") == (80, 20), timeout=40)
            instances = {e.get("reportingInstance") for e in world.events(store, NS, "ha")}
            assert instances == {leader}, "only the leader writes"
            replicas[leader].kill()
            await world.wait_until(lambda: holder() == standby, timeout=20, message="takeover")
            await until_phase(store, "ha", "Succeeded", timeout=60)
            late = {e.get("reportingInstance") for e in world.events(store, NS, "ha")} - {leader}
            assert late == {standby}
            assert recorder.sequence == [(100, 0), (90, 10), (80, 20), (70, 30), (60, 40), (50, 50), (100, 0)]
        finally:
            recorder.close()
            for process in replicas.values():
                process.stop()
