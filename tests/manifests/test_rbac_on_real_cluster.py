"""The install on a real cluster: `kubectl apply -k manifests/default`, then canaryd with exactly that RBAC.

The real kube-apiserver authorizes every request of `canaryd run` (a process,
with a token of the install's ServiceAccount through the TokenRequest API)
against the rendered ClusterRole and Role alone, and its audit log records
each one with verb, API group, resource and subresource as RBAC sees them.
The run goes through what talks to the API server: initialization, a
promoted release on an HTTPRoute and on a GRPCRoute, an aborted release, a
Service edited under canaryd, a primary Deployment that someone else
created first (canaryd's cache has it, so canaryd takes it over with a
patch), metric checks through a MetricTemplate whose Prometheus
credentials come from a Secret, leader election on a Lease, kube-apiserver
restarted mid-run and a Canary deleted. Afterwards the audit log and the
rules must agree both ways (tests/manifests/rbac_audit.py): nothing refused,
nothing used that is not granted, and every grant used, except the re-reads
only a lost race makes (a JSON Patch `test` failing on a route or Service
edited in the same instant, a create meeting an object its cache has not
seen yet), which the sandbox's version of this test (test_rbac.py) forces
with injected conflicts. Requests kube-apiserver refuses while it starts
again (before /readyz its RBAC caches are empty) are counted apart.

Pods are kwok's (no containers run), there is no data plane: the sandbox's
Gateway implementation accepts the routes (as an ordinary client of the
real server), and the metric is an inline `vector(100)` on a real, empty
Prometheus.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from canaryd.adapters.kube import KubeClient
from canaryd.cli.controller_process import ControllerProcess
from canaryd.sandbox.sim.api_view import ApiClusterView
from canaryd.sandbox.sim.cluster_view import GATEWAY_AND_TRAFFIC_RESOURCES
from canaryd.sandbox.sim.gateway import CONTROLLER_NAME, SandboxGateway
from cluster.harness import Cluster
from tests.manifests.rbac_audit import INSTALL_NAMESPACE, SERVICE_ACCOUNT_USER, differences, granted
from tests.manifests.rendering import MANIFESTS, render
from tests.manifests.test_rbac import APP_NAMESPACE, GATEWAY_CLASS, app, shared_objects

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus]

#: Grants only a lost race uses (canaryd re-reads the object and decides again); no request of this
#: run can lose one on purpose, so they stay unused here. test_rbac.py uses each with injected conflicts.
#: The Canary is re-read after a write that got no answer, which the kube-apiserver restart below causes
#: only when a status write falls into it.
RACE_ONLY: set[tuple[str, str, str]] = {
    ("canaryd.io", "canaries", "get"),
    ("apps", "deployments", "get"),
    ("gateway.networking.k8s.io", "httproutes", "get"),
    ("gateway.networking.k8s.io", "grpcroutes", "get"),
    ("", "services", "get"),
}


class Run:
    """kubectl as admin, and waiting on the real cluster's objects."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def apply(self, objects: list[dict[str, Any]]) -> None:
        self.cluster.kubectl("apply", "-f", "-", input="\n".join(json.dumps(o) for o in objects))

    def get(self, resource: str, name: str, namespace: str = APP_NAMESPACE) -> dict[str, Any] | None:
        proc = self.cluster.kubectl("get", resource, name, "-n", namespace, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def status(self, name: str) -> dict[str, Any]:
        canary = self.get("canaries.canaryd.io", name) or {}
        status: dict[str, Any] = canary.get("status") or {}
        return status

    def release(self, name: str, version: str) -> None:
        self.cluster.kubectl(
            "set", "image", f"deployment/{name}", f"app=example/{name}:{version}", "-n", APP_NAMESPACE
        )

    async def until(
        self, what: str, check: Callable[[], bool], controller: ControllerProcess, timeout: float = 120
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert controller.alive(), f"canaryd exited while waiting for {what}:\n{controller.log_tail()}"
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; canaryd's log:\n{controller.log_tail()}")
            await asyncio.sleep(0.3)

    def set_interval(self, name: str, interval: str) -> None:
        patch = json.dumps({"spec": {"analysis": {"interval": interval}}})
        self.cluster.kubectl(
            "patch", "canaries.canaryd.io", name, "-n", APP_NAMESPACE, "--type=merge", "-p", patch
        )

    def step_reached(self, name: str, since: str | None) -> Callable[[], bool]:
        """A new revision of ``name`` Progressing at its first step (weight 50)."""

        def check() -> bool:
            status = self.status(name)
            return (
                status.get("revision") not in (None, since)
                and status.get("phase") == "Progressing"
                and status.get("canaryWeight") == 50
            )

        return check

    def phase_is(self, name: str, phase: str, since: str | None = None) -> Callable[[], bool]:
        def check() -> bool:
            status = self.status(name)
            return status.get("phase") == phase and (since is None or status.get("revision") != since)

        return check


@pytest.fixture
async def gateway(install_cluster: Cluster) -> AsyncIterator[None]:
    """The sandbox's Gateway implementation, as an ordinary client (admin) of the real cluster."""
    client = await KubeClient.connect(str(install_cluster.kubeconfig))
    view = ApiClusterView(client, GATEWAY_AND_TRAFFIC_RESOURCES)
    await view.start()
    implementation = SandboxGateway(view)
    implementation.start()
    try:
        yield
    finally:
        implementation.stop()
        await view.stop()
        await client.close()


def _remove_install(cluster: Cluster) -> None:
    """Leave the cluster as found: no app namespace, no install, no GatewayClass (finalizers dropped first,
    since no controller runs any more to remove them)."""
    canaries = cluster.kubectl("get", "canaries.canaryd.io", "-A", "-o", "name", check=False)
    for name in canaries.stdout.split() if canaries.returncode == 0 else []:
        cluster.kubectl("patch", name, "-n", APP_NAMESPACE, "--type=merge", "-p",
                        '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
    cluster.kubectl("delete", "namespace", APP_NAMESPACE, "--ignore-not-found", "--wait=true", check=False,
                    timeout=120)  # fmt: skip
    cluster.kubectl("delete", "-k", str(MANIFESTS / "default"), "--ignore-not-found", "--wait=true",
                    check=False, timeout=180)  # fmt: skip
    cluster.kubectl("delete", "gatewayclass", GATEWAY_CLASS, "--ignore-not-found", check=False)


def _received_in(event: dict[str, Any], window: tuple[datetime, datetime]) -> bool:
    received = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
    return window[0] <= received <= window[1]


def audit_of(cluster: Cluster, user: str, since: str) -> list[dict[str, Any]]:
    """The audit events of ``user``'s resource requests received from ``since`` on, one per request."""
    events = []
    for event in cluster.audit_events():
        if event.get("user", {}).get("username") != user or event.get("requestReceivedTimestamp", "") < since:
            continue
        if event.get("stage") == "ResponseStarted":
            continue  # a watch: its ResponseComplete event follows (or the run ended before it)
        events.append(event)
    return events


async def test_canaryd_runs_on_a_real_cluster_with_exactly_the_rendered_rbac(
    install_cluster: Cluster, prometheus_factory: Any, gateway: None, tmp_path: Path
) -> None:
    cluster = install_cluster
    run = Run(cluster)
    cluster_grants, lease_grants = granted(render(MANIFESTS / "default"))
    _remove_install(cluster)
    began = time.monotonic()
    installed = cluster.kubectl("apply", "-k", str(MANIFESTS / "default"))
    assert "Warning" not in installed.stderr, installed.stderr
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/canaries.canaryd.io", "crd/metrictemplates.canaryd.io"
    )
    install_seconds = time.monotonic() - began
    prometheus = prometheus_factory()
    try:
        await _scenario(cluster, run, prometheus.url, tmp_path, cluster_grants, lease_grants)
    finally:
        _remove_install(cluster)
    print(f"install applied in {install_seconds:.1f} s")


async def _scenario(
    cluster: Cluster,
    run: Run,
    prometheus_url: str,
    tmp_path: Path,
    cluster_grants: set[tuple[str, str, str]],
    lease_grants: set[tuple[str, str, str]],
) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    restart_window = (datetime.now(UTC), datetime.now(UTC))
    token = cluster.create_token("canaryd", INSTALL_NAMESPACE)
    kubeconfig = cluster.write_kubeconfig(tmp_path / "canaryd.kubeconfig", token, INSTALL_NAMESPACE)
    cluster.kubectl("create", "namespace", APP_NAMESPACE)
    gateway_class = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass"}
    gateway_class |= {"metadata": {"name": GATEWAY_CLASS}, "spec": {"controllerName": CONTROLLER_NAME}}
    run.apply([gateway_class])
    objects = [*shared_objects(prometheus_url), *app("storefront", "HTTPRoute"), *app("orders", "GRPCRoute")]
    for obj in objects:
        if obj["kind"] == "Secret":
            obj["data"] = {"token": base64.b64encode(b"not-checked-by-this-prometheus").decode()}
    # Someone else created the primary Deployment of orders first: canaryd finds it and takes it over.
    primary = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "orders")
    primary = json.loads(json.dumps(primary))
    primary["metadata"]["name"] = "orders-primary"
    primary["spec"]["selector"] = {"matchLabels": {"app": "orders-primary"}}
    primary["spec"]["template"]["metadata"]["labels"] = {"app": "orders-primary"}
    run.apply([primary, *objects])

    controller = ControllerProcess(
        kubeconfig, prometheus_url, tmp_path / "canaryd.log",
        "--leader-elect", "--leader-election-namespace", INSTALL_NAMESPACE,
        "--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "1",
    ).start()  # fmt: skip
    try:
        for name in ("storefront", "orders"):
            await run.until(f"{name} Initialized", run.phase_is(name, "Initialized"), controller)

        # Someone edits a Service canaryd owns: canaryd puts its selector back.
        wanted = (run.get("service", "storefront-canary") or {})["spec"]["selector"]
        cluster.kubectl("patch", "service", "storefront-canary", "-n", APP_NAMESPACE, "--type=merge",
                        "-p", json.dumps({"spec": {"selector": {"app": "somebody-else"}}}))  # fmt: skip
        await run.until(
            "the canary Service repaired",
            lambda: (run.get("service", "storefront-canary") or {})["spec"]["selector"] == wanted,
            controller,
        )

        before = run.status("storefront").get("revision")
        run.release("storefront", "v2")
        await run.until(
            "storefront v2 Succeeded", run.phase_is("storefront", "Succeeded", before), controller
        )

        # kube-apiserver restarts while orders is under analysis: writes get no answer meanwhile.
        before = run.status("orders").get("revision")
        run.set_interval("orders", "3s")  # its next write falls in the restart
        run.release("orders", "v2")
        await run.until("orders v2 at its step", run.step_reached("orders", before), controller)
        restart_began = datetime.now(UTC)
        await asyncio.to_thread(cluster.restart_apiserver)  # returns once /readyz answers 200
        restart_window = (restart_began, datetime.now(UTC))
        await run.until("orders v2 Succeeded", run.phase_is("orders", "Succeeded", before), controller)

        # v3 waits a minute at its first step, so that it is still under way when it is aborted.
        run.set_interval("storefront", "1m")
        before = run.status("storefront").get("revision")
        run.release("storefront", "v3")
        await run.until("storefront v3 under way", run.step_reached("storefront", before), controller)
        action = {"status": {"requestedAction": {"id": "abort-1", "action": "abort", "requestedBy": "test"}}}
        cluster.kubectl("patch", "canaries.canaryd.io", "storefront", "-n", APP_NAMESPACE, "--type=merge",
                        "--subresource=status", "-p", json.dumps(action))  # fmt: skip
        await run.until("storefront v3 Failed", run.phase_is("storefront", "Failed"), controller)

        cluster.kubectl("delete", "canaries.canaryd.io", "orders", "-n", APP_NAMESPACE, "--wait=false")
        await run.until(
            "orders deleted", lambda: run.get("canaries.canaryd.io", "orders") is None, controller
        )
    finally:
        controller.stop()

    events = audit_of(cluster, SERVICE_ACCOUNT_USER, since)
    assert events, "canaryd made no requests as its ServiceAccount"
    # While kube-apiserver starts, before /readyz, it refuses every request (its RBAC caches are still
    # empty: even system:discovery is "not found"); canaryd retries. Those are not the rules' refusals.
    starting = [e for e in events if e["responseStatus"]["code"] == 403 and _received_in(e, restart_window)]
    print(f"requests refused while kube-apiserver was starting again: {len(starting)}")
    refused = [
        (e["requestReceivedTimestamp"], e["verb"], e["objectRef"]["resource"], e.get("annotations", {}))
        for e in events
        if e["responseStatus"]["code"] == 403 and e not in starting
    ]
    assert not refused, f"requests the install's RBAC refuses: {refused}"
    non_resource = sorted({e["requestURI"] for e in events if "objectRef" not in e})
    used = []
    for event in events:
        ref = event.get("objectRef")
        if ref is None:
            continue
        resource = f"{ref['resource']}/{ref['subresource']}" if ref.get("subresource") else ref["resource"]
        used.append(((ref.get("apiGroup", ""), resource, event["verb"]), ref.get("namespace")))
    counted = Counter(f"{verb} {group or 'core'}/{resource}" for (group, resource, verb), _ in used)
    print(f"canaryd's requests on the real cluster ({len(used)}): {dict(sorted(counted.items()))}")
    print(f"non-resource requests: {non_resource}")
    assert non_resource == [], "canaryd asked for non-resource URLs that its rules do not name"
    unused_race_only = sorted(RACE_ONLY - {grant for grant, _ in used})
    print(f"grants only a lost race uses, unused in this run: {unused_race_only}")
    expected = (
        [f"ClusterRole canaryd-manager: granted but unused {unused_race_only}"] if unused_race_only else []
    )
    assert differences(used, cluster_grants, lease_grants) == expected
    assert cluster_grants >= RACE_ONLY
