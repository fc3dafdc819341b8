"""End to end: leaving canaryd, following the README's "Deleting a Canary" steps, with no outage.

`canaryd run` as a process and the sandbox cluster with its traffic simulator,
driven with the real kubectl exactly as the README says: delete the Canary
(kubectl waits until canaryd has scaled the app team's Deployment back up and
it is ready), give the Deployment a Service of its own, point the route at
it, then delete what canaryd left behind. The simulator counts every request
the route carries; not one may fail at any point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from canaryd.cli.controller_process import ControllerProcess
from canaryd.sandbox.cluster import SandboxCluster
from tests.fixtures.sandbox import Kubectl
from tests.runtime import world

pytestmark = pytest.mark.e2e

NS = "shop"
HTTP = "httproutes.gateway.networking.k8s.io"


@contextlib.asynccontextmanager
async def sandbox_with_controller(tmp_path: Path):
    # Pods take a second to get ready, so that waiting for them is something a test can see.
    async with SandboxCluster(ready_delay=1.0, tick_interval=0.1, default_rps=50) as cluster:
        world.install_crds(cluster.store)
        world.install_gateway(cluster.store)
        # No metrics in these Canaries: the controller never asks Prometheus anything.
        log = tmp_path / "canaryd.log"
        controller = ControllerProcess(cluster.kubeconfig_path, "http://127.0.0.1:9", log)
        controller.start()
        try:
            yield cluster, controller
        finally:
            controller.stop()


def route_requests(cluster: SandboxCluster, route: str) -> dict[str, int]:
    """Requests the route has carried so far, by response code."""
    cluster.traffic.tick()
    by_code: dict[str, int] = {}
    for (namespace, route_name, _svc, _deployment, code), count in cluster.traffic.metrics.requests.items():
        if (namespace, route_name) == (NS, route):
            by_code[code] = by_code.get(code, 0) + count
    return by_code


def failed_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Requests answered with anything but 200 between two counts, by code."""
    return {
        code: count - before.get(code, 0)
        for code, count in after.items()
        if code != "200" and count > before.get(code, 0)
    }


def served_by(cluster: SandboxCluster, route: str) -> dict[tuple[str, str], int]:
    """Successful requests of the route by (Service, Deployment)."""
    cluster.traffic.tick()
    requests = cluster.traffic.metrics.requests
    return {
        (service, deployment): count
        for (namespace, route_name, service, deployment, code), count in requests.items()
        if (namespace, route_name) == (NS, route) and code == "200"
    }


def ready_replicas(store: Any, name: str) -> int:
    return int((store.get("deployments", name, NS).get("status") or {}).get("readyReplicas") or 0)


async def test_deleting_a_canary_then_following_the_readme_never_fails_a_request(tmp_path):
    async with sandbox_with_controller(tmp_path) as (cluster, controller):
        store = cluster.store
        kubectl = Kubectl(cluster.kubeconfig_path, tmp_path / "kube-cache")
        world.app(store, NS, "shop-api")
        await world.wait_until(
            lambda: world.status(store, NS, "shop-api").get("phase") == "Initialized",
            timeout=60,
            message=f"shop-api initialized; controller log:\n{controller.log()}",
        )
        # At rest: the primary serves, the team's Deployment is scaled to 0.
        await world.wait_until(
            lambda: store.get("deployments", "shop-api", NS)["spec"]["replicas"] == 0, timeout=20
        )
        primary_replicas = store.get("deployments", "shop-api-primary", NS)["spec"]["replicas"]
        assert primary_replicas == 2

        # What the Deployments look like at the moment the Canary is gone.
        at_release: list[tuple[int, int]] = []

        def on_event(event) -> None:
            if event.type == "DELETED" and event.storage_key[1] == "canaries":
                target = store.get("deployments", "shop-api", NS)
                at_release.append((target["spec"]["replicas"], ready_replicas(store, "shop-api")))

        unsubscribe = store.subscribe(on_event)
        # (Before canaryd had created the Services and a ready primary, the route answered 500 and 503:
        # that is the set-up, not the way out. Count from here.)
        before = route_requests(cluster, "shop-api")
        await asyncio.sleep(1.0)
        assert failed_since(before, route_requests(cluster, "shop-api")) == {}

        # Step 1: delete the Canary; kubectl returns once the finalizer is gone.
        started = time.monotonic()
        await kubectl("delete", "canary", "shop-api", "-n", NS, "--timeout=60s", timeout=70, check=True)
        deletion_seconds = time.monotonic() - started
        unsubscribe()
        assert at_release == [(primary_replicas, primary_replicas)], "released before the target was ready"
        # The pods took their ready delay: kubectl waited for them, it did not return at once.
        assert deletion_seconds >= 1.0
        deleting = next(e for e in world.events(store, NS, "shop-api") if e["reason"] == "Deleting")
        plan = "then Deployment shop-api is scaled back to 2 replicas, and once they are ready"
        assert plan in deleting["note"]
        for resource, name in [("deployments", "shop-api-primary"), ("services", "shop-api-primary")]:
            assert world.find(store, resource, NS, name) is not None, f"{name} went with the Canary"
        assert world.weights(store, NS, "shop-api") == (100, 0)

        # Step 2: a Service of the team's own, selecting the Deployment's pods.
        await kubectl("expose", "deployment", "shop-api", "-n", NS, "--port", "8080", check=True)

        # Step 3: the route names that Service instead of the two canaryd created.
        backend = [{"op": "replace", "path": "/spec/rules/0/backendRefs", "value": [
            {"name": "shop-api", "port": 8080}
        ]}]  # fmt: skip
        patch = json.dumps(backend)
        await kubectl("patch", "httproute", "shop-api", "-n", NS, "--type", "json", "-p", patch, check=True)
        generation = store.get(HTTP, "shop-api", NS)["metadata"]["generation"]

        def accepted_for_new_generation() -> bool:
            parents = (store.get(HTTP, "shop-api", NS).get("status") or {}).get("parents") or []
            return bool(parents) and all(
                any(
                    (c["type"], c["status"], c.get("observedGeneration")) == ("Accepted", "True", generation)
                    for c in parent.get("conditions") or []
                )
                for parent in parents
            )

        await world.wait_until(accepted_for_new_generation, timeout=20, message="route accepted")
        await asyncio.sleep(0.5)

        # Step 4: delete what canaryd left behind.
        await kubectl("delete", "deployment", "shop-api-primary", "-n", NS, check=True)
        await kubectl("delete", "service", "shop-api-primary", "shop-api-canary", "-n", NS, check=True)
        await asyncio.sleep(1.0)

        after = route_requests(cluster, "shop-api")
        assert failed_since(before, after) == {}, "requests failed on the way out"
        assert after["200"] - before["200"] >= 50 * 3  # the route carried traffic throughout
        # The team's own Deployment serves now, through the team's own Service.
        last = served_by(cluster, "shop-api")
        await asyncio.sleep(0.5)
        now = served_by(cluster, "shop-api")
        grew = {key for key, count in now.items() if count > last.get(key, 0)}
        assert grew == {("shop-api", "shop-api")}
        assert controller.alive()


@pytest.mark.realcluster
async def test_on_the_real_cluster_leaving_by_the_readme_never_fails_a_real_request(
    tmp_path, real_cluster, real_dataplane
):
    """The same steps on the real control plane, with real requests through Traefik to real pods."""
    from cluster.load import canary_pods_of
    from tests.e2e.backends import RealBackend

    real = RealBackend(real_cluster, real_dataplane, None)
    await asyncio.to_thread(real.setup)
    controller = ControllerProcess(
        real.kubeconfig_path, "http://127.0.0.1:9", tmp_path / "canaryd.log", *real.controller_args()
    )
    try:
        controller.start()
        store, ns = real.store, real.ns
        real.app("shop-api")
        await world.wait_until(
            lambda: world.status(store, ns, "shop-api").get("phase") == "Initialized"
            and store.get("deployments", "shop-api", ns)["spec"]["replicas"] == 0,
            timeout=90,
            message="shop-api initialized",
        )
        await real.carry_traffic("shop-api")

        at_release: list[tuple[int, int]] = []

        def on_event(event) -> None:
            if event.type == "DELETED" and event.storage_key[1] == "canaries":
                target = store.get("deployments", "shop-api", ns)
                ready = int((target.get("status") or {}).get("readyReplicas") or 0)
                at_release.append((target["spec"]["replicas"], ready))

        unsubscribe = store.subscribe(on_event)
        # Step 1 to 4, as the README gives them, with the cluster's kubectl.
        await asyncio.to_thread(
            real_cluster.kubectl, "delete", "canary", "shop-api", "-n", ns, "--timeout=90s", timeout=100
        )
        await world.wait_until(lambda: at_release, timeout=20, message="the Canary's deletion seen")
        unsubscribe()
        assert at_release == [(2, 2)], "released before the target was back and ready"
        await asyncio.to_thread(real_cluster.kubectl, "expose", "deployment", "shop-api", "-n", ns,
                                "--port", "8080")  # fmt: skip
        backend = [{"op": "replace", "path": "/spec/rules/0/backendRefs", "value": [
            {"name": "shop-api", "port": 8080}
        ]}]  # fmt: skip
        await asyncio.to_thread(real_cluster.kubectl, "patch", "httproute", "shop-api", "-n", ns, "--type",
                                "json", "-p", json.dumps(backend))  # fmt: skip
        generation = store.get(HTTP, "shop-api", ns)["metadata"]["generation"]

        def accepted_for_new_generation() -> bool:
            parents = (store.get(HTTP, "shop-api", ns).get("status") or {}).get("parents") or []
            return bool(parents) and all(
                any(
                    (c["type"], c["status"], c.get("observedGeneration")) == ("Accepted", "True", generation)
                    for c in parent.get("conditions") or []
                )
                for parent in parents
            )

        await world.wait_until(accepted_for_new_generation, timeout=30, message="route accepted")
        await asyncio.sleep(3)  # Traefik has the new configuration, and requests reach the new Service
        await asyncio.to_thread(real_cluster.kubectl, "delete", "deployment", "shop-api-primary", "-n", ns)
        await asyncio.to_thread(real_cluster.kubectl, "delete", "service", "shop-api-primary",
                                "shop-api-canary", "-n", ns)  # fmt: skip
        await asyncio.sleep(3)
        samples = real.traffic.stop()["shop-api"].samples
        failed = [s for s in samples if s.code != "200"]
        assert len(samples) >= 100, len(samples)
        assert not failed, f"{len(failed)} of {len(samples)} requests failed: {failed[:5]}"
        # The last requests are answered by the team's own Deployment's pods.
        last = [s.pod for s in samples[-20:]]
        assert last and all(pod is not None and canary_pods_of("shop-api")(pod) for pod in last), last
    finally:
        controller.stop()
        await asyncio.to_thread(real.teardown)
