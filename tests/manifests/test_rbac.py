"""The controller's RBAC grants exactly what the controller does: no verb missing, none unused.

The real controller runs a short end-to-end scenario on the sandbox as the
ServiceAccount the install binds, with its rights enforced by the sandbox API
server and derived from the rendered ClusterRole `canaryd-manager` and Role
`canaryd-leader-election`: a missing verb is a 403 that stalls the scenario.
Afterwards the sandbox's audit log says which (group, resource, verb) the
controller used; that set must equal the set the rules grant, so a grant the
controller never needs fails the test too.

The scenario covers every code path that talks to the API server:
initialization, a promoted release and an aborted one on an HTTPRoute, a
promoted release on a GRPCRoute, a Canary deleted (its finalizer removed),
metric checks through a MetricTemplate whose Prometheus credentials come from
a Secret, leader election on a Lease, someone editing a Service canaryd owns,
and what production brings: conflicts (an app team editing a route while
canaryd patches it, another writer creating the primary Deployment first,
injected with the sandbox's faults) and an API server restart mid-run.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from canaryd.api.constants import API_VERSION, GATEWAY_GROUP
from canaryd.runtime.controller import running_controller
from canaryd.runtime.settings import Settings
from canaryd.sandbox.cluster import SandboxCluster
from tests.manifests.rbac_audit import INSTALL_NAMESPACE, SERVICE_ACCOUNT_USER, Grant, differences, granted
from tests.manifests.rendering import MANIFESTS, render

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus]

TOKEN = "canaryd-service-account-token"
APP_NAMESPACE = "shop"
GATEWAY_CLASS = "sandbox"


def sandbox_rules(grants: set[Grant]) -> list[str]:
    """The grants in the sandbox authorizer's "VERB RESOURCE[/SUBRESOURCE]" form."""
    return sorted({f"{verb} {resource}" for _, resource, verb in grants})


def app(name: str, route_kind: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    rule: dict[str, Any] = {
        "backendRefs": [
            {"name": f"{name}-primary", "port": 8080, "weight": 100},
            {"name": f"{name}-canary", "port": 8080, "weight": 0},
        ]
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": APP_NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": f"example/{name}:v1"}]},
                },
            },
        },
        {
            "apiVersion": f"{GATEWAY_GROUP}/v1",
            "kind": route_kind,
            "metadata": {"name": name, "namespace": APP_NAMESPACE},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [rule]},
        },
        {
            "apiVersion": API_VERSION,
            "kind": "Canary",
            "metadata": {"name": name, "namespace": APP_NAMESPACE},
            "spec": {
                "targetRef": {"name": name},
                "service": {"port": 8080},
                "routeRefs": [{"kind": route_kind, "name": name}],
                "analysis": {
                    "interval": "1s",
                    "threshold": 1,
                    "stepWeights": [50],
                    "noDataPolicy": "Pass",
                    "metrics": [
                        {
                            "name": "availability",
                            "templateRef": {"name": "availability", "namespace": INSTALL_NAMESPACE},
                            "thresholdRange": {"min": 99},
                        }
                    ],
                },
                "progressDeadlineSeconds": 120,
            },
        },
    ]


def shared_objects(prometheus_url: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{GATEWAY_GROUP}/v1",
            "kind": "Gateway",
            "metadata": {"name": "public", "namespace": APP_NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "prometheus-token", "namespace": INSTALL_NAMESPACE},
            "type": "Opaque",
            "data": {"token": base64.b64encode(b"not-checked-by-this-prometheus").decode()},
        },
        {
            "apiVersion": API_VERSION,
            "kind": "MetricTemplate",
            "metadata": {"name": "availability", "namespace": INSTALL_NAMESPACE},
            "spec": {
                "query": "vector(100)",
                "provider": {
                    "address": prometheus_url,
                    "auth": {"kind": "Bearer", "secretRef": {"name": "prometheus-token"}},
                },
            },
        },
    ]


def release(store: Any, name: str, version: str) -> None:
    store.patch(
        "deployments",
        name,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": f"example/{name}:{version}"}]}}
            }
        },
        namespace=APP_NAMESPACE,
        patch_type="strategic",
    )


async def api_server_outage(server: Any, seconds: float) -> None:
    """Stop the API server and start it again on the same port, as a control-plane restart does."""
    port = server.port
    await server.stop()
    await asyncio.sleep(seconds)
    server.requested_port = port
    await server.start()


async def until(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def status_of(store: Any, name: str) -> dict[str, Any]:
    status: dict[str, Any] = store.get("canaries", name, namespace=APP_NAMESPACE).get("status") or {}
    return status


def phase_is(store: Any, name: str, phase: str, since_revision: str | None = None) -> Callable[[], bool]:
    def check() -> bool:
        status = status_of(store, name)
        return status.get("phase") == phase and (
            since_revision is None or status.get("revision") != since_revision
        )

    return check


async def test_controller_rbac_is_exactly_what_the_controller_uses(tmp_path: Path) -> None:
    cluster_grants, lease_grants = granted(render(MANIFESTS / "default"))
    crds = [o for o in render(MANIFESTS / "crd") if o["kind"] == "CustomResourceDefinition"]

    async with SandboxCluster(
        with_prometheus=True, ready_delay=0.2, gateway_class=GATEWAY_CLASS, seed=7
    ) as cluster:
        assert cluster.prometheus_url is not None
        server, store = cluster.api_server, cluster.store
        server.add_user(TOKEN, SERVICE_ACCOUNT_USER, sandbox_rules(cluster_grants | lease_grants))
        kubeconfig = server.write_kubeconfig(tmp_path / "controller.kubeconfig", token=TOKEN)
        for crd in crds:
            store.create("customresourcedefinitions", crd)
        for namespace in (INSTALL_NAMESPACE, APP_NAMESPACE):
            store.ensure_namespace(namespace)
        for obj in [
            *shared_objects(cluster.prometheus_url),
            *app("storefront", "HTTPRoute"),
            *app("orders", "GRPCRoute"),
        ]:
            store.create(obj["kind"], obj, namespace=obj["metadata"].get("namespace"))

        # Production races, once each: the route changes under canaryd's weight patch (it re-reads the
        # route), and the primary Deployment turns out to exist already when canaryd creates it.
        server.faults.add("conflict", resource="httproutes", verb="patch", remaining=1)
        server.faults.add("conflict", resource="grpcroutes", verb="patch", remaining=1)
        server.faults.add("conflict", resource="deployments", verb="create", remaining=1)

        settings = Settings(
            kubeconfig=str(kubeconfig),
            prometheus_url=cluster.prometheus_url,
            leader_elect=True,
            leader_election_namespace=INSTALL_NAMESPACE,
            lease_duration_seconds=3,
            renew_deadline_seconds=2,
            retry_period_seconds=0.5,
            health_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            log_level="warning",
        )
        async with running_controller(settings):
            for name in ("storefront", "orders"):
                await until(f"{name} Initialized", phase_is(store, name, "Initialized"))

            # Someone edits a Service canaryd owns: canaryd puts its selector back.
            wanted = store.get("services", "storefront-canary", namespace=APP_NAMESPACE)["spec"]["selector"]
            store.patch(
                "services",
                "storefront-canary",
                {"spec": {"selector": {"app": "somebody-else"}}},
                namespace=APP_NAMESPACE,
                patch_type="merge",
            )

            def selector() -> Any:
                return store.get("services", "storefront-canary", namespace=APP_NAMESPACE)["spec"]["selector"]

            await until("the canary Service repaired", lambda: selector() == wanted)

            before = status_of(store, "storefront").get("revision")
            release(store, "storefront", "v2")
            await until("storefront v2 Succeeded", phase_is(store, "storefront", "Succeeded", before))

            # The API server goes away for a moment during a run: writes get no answer, so canaryd
            # reads the Canary once before deciding again.
            before = status_of(store, "orders").get("revision")
            release(store, "orders", "v2")
            await until(
                "orders v2 at its step",
                lambda: (
                    status_of(store, "orders").get("revision") not in (None, before)
                    and status_of(store, "orders").get("canaryWeight") == 50
                ),
            )
            await api_server_outage(server, seconds=1.5)
            await until("orders v2 Succeeded", phase_is(store, "orders", "Succeeded", before))

            before = status_of(store, "storefront").get("revision")
            release(store, "storefront", "v3")
            await until(
                "storefront v3 under way",
                lambda: (
                    status_of(store, "storefront").get("revision") not in (None, before)
                    and status_of(store, "storefront").get("phase") == "Progressing"
                ),
            )
            store.patch(
                "canaries",
                "storefront",
                {"status": {"requestedAction": {"id": "abort-1", "action": "abort", "requestedBy": "test"}}},
                namespace=APP_NAMESPACE,
                patch_type="merge",
                subresource="status",
            )
            await until("storefront v3 Failed", phase_is(store, "storefront", "Failed"))

            # Deleting a Canary releases the primary and the Services it owns; one of those patches
            # meets someone else's edit of the Service (canaryd re-reads it and patches again).
            server.faults.add("conflict", resource="services", verb="patch", remaining=1)
            store.delete("canaries", "orders", namespace=APP_NAMESPACE)

            def orders_gone() -> bool:
                try:
                    store.get("canaries", "orders", namespace=APP_NAMESPACE)
                except Exception:
                    return True
                return False

            await until("orders deleted (finalizer removed)", orders_gone)

        entries = server.audit.entries(user=SERVICE_ACCOUNT_USER)
        assert entries, "the controller made no requests as its ServiceAccount"
        refused = [e for e in entries if e.code == 403]
        assert not refused, (
            f"requests the install's RBAC refuses: {sorted({(e.verb, e.resource) for e in refused})}"
        )

        used = [
            ((e.group, f"{e.resource}/{e.subresource}" if e.subresource else e.resource, e.verb), e.namespace)
            for e in entries
        ]
        assert differences(used, cluster_grants, lease_grants) == []
