"""The sandbox keeps ReplicaSets, Pods, EndpointSlices and Endpoints as a cluster's controllers do.

A Gateway implementation routes to the addresses of a Service's
EndpointSlices, so what the sandbox reports there must follow its simulated
rollouts: a Deployment's pods (owned by a ReplicaSet of its template) get IPs
and become Ready when the Deployment simulator says so, the old template's
pods keep serving until the new ones are ready, and a Service lists exactly
the pods it selects, ready or not. Shapes follow a real v1.35 cluster (names,
labels, owner chain, `endpoints`/`ports` null for a Service that selects
nothing, named target ports resolved per pod).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from canaryd.adapters.kube import KubeClient
from canaryd.sandbox.cluster import SandboxCluster
from canaryd.sandbox.server.apiserver import SandboxApiServer
from canaryd.sandbox.server.store import ObjectStore
from canaryd.sandbox.sim.api_view import ApiClusterView
from canaryd.sandbox.sim.cluster_view import (
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    ENDPOINTS,
    PODS,
    REPLICA_SETS,
    SERVICES,
)
from canaryd.sandbox.sim.deployments import DeploymentSimulator
from canaryd.sandbox.sim.endpoints import EndpointsController
from tests.fixtures.sandbox import Kubectl, deployment_manifest, service_manifest
from tests.fixtures.waiting import eventually as _eventually

READY_DELAY = 0.3


async def eventually(check: Any, timeout: float = 30.0) -> None:
    """Wait for the simulators (generous: they share a busy machine with other tests)."""
    await _eventually(check, timeout=timeout)


@pytest.fixture
async def cluster() -> AsyncIterator[SandboxCluster]:
    async with SandboxCluster(ready_delay=READY_DELAY, simulate_traffic=False, pod_cidr="10.9.0.0/24") as c:
        yield c


def pods_of(store: ObjectStore, app: str) -> list[dict[str, Any]]:
    return [p for p in store.list("pods", "default", label_selector=f"app={app}")[0]]


def ready_of(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


def addresses(store: ObjectStore, service: str) -> dict[str, bool]:
    """IP -> ready, over the Service's EndpointSlices."""
    slices = store.list("endpointslices", "default", label_selector=f"kubernetes.io/service-name={service}")[
        0
    ]
    return {
        address: endpoint["conditions"]["ready"]
        for endpoint_slice in slices
        for endpoint in endpoint_slice["endpoints"] or []
        for address in endpoint["addresses"]
    }


async def test_a_deployment_gets_a_replica_set_and_pods_that_become_ready(cluster: SandboxCluster) -> None:
    store = cluster.store
    deployment = store.create("deployments", deployment_manifest("web", replicas=2))
    store.create("services", service_manifest("web"))

    await eventually(
        lambda: len(pods_of(store, "web")) == 2 and all(p.get("status") for p in pods_of(store, "web"))
    )
    (replica_set,) = store.list("replicasets", "default")[0]
    template_hash = replica_set["metadata"]["labels"]["pod-template-hash"]
    assert replica_set["metadata"]["name"] == f"web-{template_hash}"
    assert replica_set["metadata"]["ownerReferences"][0]["uid"] == deployment["metadata"]["uid"]
    assert replica_set["spec"]["selector"]["matchLabels"] == {
        "app": "web",
        "pod-template-hash": template_hash,
    }
    for pod in pods_of(store, "web"):
        assert pod["metadata"]["name"].startswith(f"web-{template_hash}-")
        assert pod["metadata"]["ownerReferences"][0]["uid"] == replica_set["metadata"]["uid"]
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["podIP"].startswith("10.9.0.")
    assert len({p["status"]["podIP"] for p in pods_of(store, "web")}) == 2

    # Not ready before the ready delay, ready after it, as the Deployment's own status says.
    await eventually(lambda: all(ready_of(p) for p in pods_of(store, "web")), timeout=30)
    assert store.get("deployments", "web", "default")["status"]["readyReplicas"] == 2
    assert set(addresses(store, "web").values()) == {True}
    (endpoints,) = [store.get("endpoints", "web", "default")]
    assert sorted(a["ip"] for a in endpoints["subsets"][0]["addresses"]) == sorted(addresses(store, "web"))
    assert endpoints["subsets"][0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]

    # Scaled down: the pod goes, and so does its address.
    store.patch("deployments", "web", {"spec": {"replicas": 1}}, "default")
    await eventually(lambda: len(pods_of(store, "web")) == 1 and len(addresses(store, "web")) == 1)

    # Deleted: the garbage collector takes the ReplicaSets and pods; the Service selects nothing.
    store.delete("deployments", "web", namespace="default")
    await eventually(lambda: store.count("pods") == 0 and store.count("replicasets") == 0)
    await eventually(lambda: addresses(store, "web") == {})
    (empty,) = store.list("endpointslices", "default")[0]
    assert empty["endpoints"] is None and empty["ports"] is None


async def test_a_rollout_keeps_the_old_pods_serving_until_the_new_ones_are_ready(
    cluster: SandboxCluster,
) -> None:
    store = cluster.store
    store.create("deployments", deployment_manifest("web", replicas=2))
    store.create("services", service_manifest("web"))
    await eventually(lambda: len(addresses(store, "web")) == 2 and all(addresses(store, "web").values()))
    old = set(addresses(store, "web"))

    store.patch("deployments", "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "nginx:1.27"}]}}}}, "default", patch_type="strategic")  # fmt: skip
    await eventually(lambda: len(addresses(store, "web")) == 4)
    serving = addresses(store, "web")
    assert {ip for ip, ready in serving.items() if ready} == old  # the new pods are not ready yet
    assert len(store.list("replicasets", "default")[0]) == 2

    await eventually(lambda: len(addresses(store, "web")) == 2, timeout=30)
    assert not set(addresses(store, "web")) & old
    assert all(addresses(store, "web").values())
    replica_sets = {rs["metadata"]["name"]: rs for rs in store.list("replicasets", "default")[0]}
    assert sorted(rs["spec"]["replicas"] for rs in replica_sets.values()) == [0, 2]
    revisions = sorted(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for rs in replica_sets.values()
    )
    assert revisions == ["1", "2"]


async def test_never_ready_pods_are_listed_not_ready(cluster: SandboxCluster) -> None:
    store = cluster.store
    manifest = deployment_manifest("stuck")
    manifest["spec"]["template"]["metadata"]["annotations"] = {"sandbox.canaryd.io/never-ready": "true"}
    store.create("deployments", manifest)
    store.create("services", service_manifest("stuck"))
    await eventually(lambda: len(addresses(store, "stuck")) == 1)
    await asyncio.sleep(READY_DELAY * 2)
    assert list(addresses(store, "stuck").values()) == [False]
    endpoints = store.get("endpoints", "stuck", "default")
    assert "addresses" not in endpoints["subsets"][0]
    assert len(endpoints["subsets"][0]["notReadyAddresses"]) == 1
    (pod,) = pods_of(store, "stuck")
    assert pod["metadata"]["annotations"] == {"sandbox.canaryd.io/never-ready": "true"}


async def test_named_target_ports_are_resolved_per_pod(cluster: SandboxCluster) -> None:
    store = cluster.store
    manifest = deployment_manifest("api")
    manifest["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "web", "containerPort": 9000}]
    store.create("deployments", manifest)
    named = service_manifest("api")
    named["spec"]["ports"] = [{"name": "http", "port": 80, "targetPort": "web"}]
    store.create("services", named)
    missing = service_manifest("api-missing", app="api")
    missing["spec"]["ports"] = [{"name": "http", "port": 80, "targetPort": "grpc"}]
    store.create("services", missing)
    await eventually(lambda: len(addresses(store, "api")) == 1 and len(addresses(store, "api-missing")) == 1)
    (resolved,) = store.list("endpointslices", "default", label_selector="kubernetes.io/service-name=api")[0]
    assert resolved["ports"] == [{"name": "http", "port": 9000, "protocol": "TCP"}]
    # A port the pod does not name: the pod is listed without ports, and v1 Endpoints leave it out.
    (unresolved,) = store.list(
        "endpointslices", "default", label_selector="kubernetes.io/service-name=api-missing"
    )[0]
    assert unresolved["ports"] is None and len(unresolved["endpoints"]) == 1
    assert "subsets" not in store.get("endpoints", "api-missing", "default")


async def test_a_deleted_pod_or_slice_is_put_back(cluster: SandboxCluster) -> None:
    store = cluster.store
    store.create("deployments", deployment_manifest("web"))
    store.create("services", service_manifest("web"))
    await eventually(lambda: list(addresses(store, "web").values()) == [True], timeout=30)
    (pod,) = pods_of(store, "web")
    store.delete("pods", pod["metadata"]["name"], namespace="default")
    await eventually(
        lambda: [p["metadata"]["uid"] for p in pods_of(store, "web")] not in ([], [pod["metadata"]["uid"]])
    )
    (endpoint_slice,) = store.list("endpointslices", "default")[0]
    store.delete("endpointslices", endpoint_slice["metadata"]["name"], namespace="default")
    await eventually(lambda: len(store.list("endpointslices", "default")[0]) == 1)


async def test_kubectl_shows_pods_replica_sets_and_endpoint_slices(
    cluster: SandboxCluster, tmp_path: Path
) -> None:
    store = cluster.store
    store.create("deployments", deployment_manifest("web"))
    store.create("services", service_manifest("web"))
    await eventually(lambda: list(addresses(store, "web").values()) == [True], timeout=30)
    kubectl = Kubectl(cluster.kubeconfig_path, tmp_path / "cache")
    pods = (await kubectl("get", "pods", "-o", "wide", check=True)).stdout
    assert "1/1" in pods and "Running" in pods and "10.9.0." in pods and "sandbox-node" in pods
    replica_sets = (await kubectl("get", "rs", check=True)).stdout.splitlines()
    assert replica_sets[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert replica_sets[1].split()[1:4] == ["1", "1", "1"]
    endpoint_slices = (await kubectl("get", "endpointslices", check=True)).stdout
    assert "IPv4" in endpoint_slices and "8080" in endpoint_slices and "10.9.0." in endpoint_slices


async def test_the_same_controllers_work_as_clients_of_an_api_server(tmp_path: Path) -> None:
    """Through ApiClusterView (HTTP, the controller's own client), not the in-process store."""
    async with SandboxApiServer() as server:
        client = await KubeClient.connect(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        view = ApiClusterView(client, [DEPLOYMENTS, REPLICA_SETS, PODS, SERVICES, ENDPOINT_SLICES, ENDPOINTS])
        await view.start()
        deployments = DeploymentSimulator(view, ready_delay=0.1, pod_cidr="10.7.0.0/24")
        endpoints = EndpointsController(view)
        deployments.start()
        endpoints.start()
        try:
            server.store.create("deployments", deployment_manifest("web", replicas=2))
            server.store.create("services", service_manifest("web"))
            await eventually(
                lambda: (
                    len(addresses(server.store, "web")) == 2 and all(addresses(server.store, "web").values())
                ),
                timeout=30,
            )
            assert all(ip.startswith("10.7.0.") for ip in addresses(server.store, "web"))
        finally:
            deployments.stop()
            endpoints.stop()
            await view.stop()
            await client.close()


async def test_a_deployment_of_two_billion_replicas_gets_a_bounded_number_of_pods(
    cluster: SandboxCluster,
) -> None:
    """The sandbox stays responsive: a hostile replica count costs it a bounded number of Pod objects."""
    from canaryd.sandbox.sim.pods import MAX_PODS_PER_REPLICA_SET

    store = cluster.store
    store.create("deployments", deployment_manifest("huge", replicas=2**31 - 1))

    await eventually(lambda: len(pods_of(store, "huge")) == MAX_PODS_PER_REPLICA_SET)
    await eventually(
        lambda: (store.get("deployments", "huge", "default").get("status") or {}).get("replicas")
        == 2**31 - 1
    )
    small = store.create("deployments", deployment_manifest("small", replicas=2))
    await eventually(
        lambda: len(pods_of(store, "small")) == 2 and all(map(ready_of, pods_of(store, "small")))
    )
    assert small["metadata"]["name"] == "small"
    assert len(pods_of(store, "huge")) == MAX_PODS_PER_REPLICA_SET


def test_a_pod_whose_ports_a_real_api_server_would_refuse_resolves_only_its_valid_ports() -> None:
    from canaryd.sandbox.sim.endpoints import resolved_ports

    service = {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"port": 81}]}}
    pod = {"spec": {"containers": ["oops", {"ports": ["8080", {"name": "http", "containerPort": 8080}]}]}}
    assert resolved_ports(service, pod) == (("http", 8080, "TCP"), ("", 81, "TCP"))
