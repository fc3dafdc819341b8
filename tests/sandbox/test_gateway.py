"""The sandbox Gateway implementation: GatewayClass, Gateway and route status as a real one writes it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from canaryd.sandbox.server.store import ObjectStore
from canaryd.sandbox.sim.gateway import (
    CONTROLLER_NAME,
    GatewayWorld,
    SandboxGateway,
    gateway_class_status,
    gateway_status,
    hostname_matches,
    merged_route_parents,
    route_is_accepted,
    route_parent_statuses,
)
from canaryd.sandbox.store_view import StoreView
from tests.fixtures.waiting import eventually

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GW = "gateway.networking.k8s.io"


def gateway_class(name: str = "sandbox", controller: str = CONTROLLER_NAME) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name, "generation": 1},
        "spec": {"controllerName": controller},
    }


def gateway(
    name: str = "public",
    namespace: str = "infra",
    class_name: str = "sandbox",
    listeners: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    if listeners is None:
        listeners = [
            {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
        ]
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": {"gatewayClassName": class_name, "listeners": listeners},
    }


def service(name: str, namespace: str = "payments", selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector or {"app": name}, "ports": [{"port": 8080}]},
    }


def route(
    name: str = "payments-api",
    namespace: str = "payments",
    *,
    kind: str = "HTTPRoute",
    parent_refs: list[dict[str, Any]] | None = None,
    backend_refs: list[dict[str, Any]] | None = None,
    hostnames: list[str] | None = None,
    generation: int = 3,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "parentRefs": parent_refs if parent_refs is not None else [{"name": "public", "namespace": "infra"}],
        "rules": [
            {
                "backendRefs": backend_refs
                if backend_refs is not None
                else [
                    {"name": "payments-api-primary", "port": 8080, "weight": 100},
                    {"name": "payments-api-canary", "port": 8080, "weight": 0},
                ]
            }
        ],
    }
    if hostnames is not None:
        spec["hostnames"] = hostnames
    return {
        "apiVersion": f"{GW}/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": spec,
    }


def world(
    *gateways: dict[str, Any],
    services: list[dict[str, Any]] | None = None,
    namespaces: dict[str, dict[str, str]] | None = None,
    grants: list[dict[str, Any]] | None = None,
) -> GatewayWorld:
    services = (
        services
        if services is not None
        else [service("payments-api-primary"), service("payments-api-canary")]
    )
    return GatewayWorld(
        gateway_classes={"sandbox": gateway_class(), "other": gateway_class("other", "example.com/other")},
        gateways={(g["metadata"]["namespace"], g["metadata"]["name"]): g for g in gateways or [gateway()]},
        namespaces={
            name: {"metadata": {"name": name, "labels": labels}}
            for name, labels in (namespaces or {}).items()
        },
        services={(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services},
        reference_grants=grants or [],
    )


def conditions_of(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]}


def only_entry(r: dict[str, Any], w: GatewayWorld, kind: str = "HTTPRoute") -> dict[str, Any]:
    entries = route_parent_statuses(r, kind, w, NOW)
    assert len(entries) == 1
    return entries[0]


# --------------------------------------------------------------------------- pure decisions


def test_accepted_route_gets_accepted_and_resolved_refs_with_observed_generation() -> None:
    r = route()
    entry = only_entry(r, world())
    assert entry["controllerName"] == CONTROLLER_NAME
    assert entry["parentRef"] == {"name": "public", "namespace": "infra"}
    assert conditions_of(entry) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    assert {c["observedGeneration"] for c in entry["conditions"]} == {3}
    assert {c["lastTransitionTime"] for c in entry["conditions"]} == {"2026-01-02T03:04:05Z"}


def test_grpc_route_attaches_to_http_listener() -> None:
    entry = only_entry(route(kind="GRPCRoute"), world(), kind="GRPCRoute")
    assert conditions_of(entry)["Accepted"] == ("True", "Accepted")


@pytest.mark.parametrize(
    ("parent_ref", "listeners", "route_namespace", "namespace_labels", "hostnames", "reason"),
    [
        pytest.param(
            {"name": "missing", "namespace": "infra"},
            None,
            "payments",
            {},
            None,
            "NoMatchingParent",
            id="gateway-missing",
        ),
        pytest.param(
            {"name": "public", "namespace": "infra", "sectionName": "https"},
            None,
            "payments",
            {},
            None,
            "NoMatchingParent",
            id="section-name-matches-no-listener",
        ),
        pytest.param(
            {"name": "public", "namespace": "infra", "port": 8443},
            None,
            "payments",
            {},
            None,
            "NoMatchingParent",
            id="port-matches-no-listener",
        ),
        pytest.param(
            {"name": "public", "namespace": "infra"},
            [{"name": "http", "port": 80, "protocol": "HTTP"}],
            "payments",
            {},
            None,
            "NotAllowedByListeners",
            id="from-same-namespace-only",
        ),
        pytest.param(
            {"name": "public", "namespace": "infra"},
            [
                {
                    "name": "http",
                    "port": 80,
                    "protocol": "HTTP",
                    "allowedRoutes": {
                        "namespaces": {
                            "from": "Selector",
                            "selector": {"matchLabels": {"gateway-access": "yes"}},
                        }
                    },
                }
            ],
            "payments",
            {"payments": {"gateway-access": "no"}},
            None,
            "NotAllowedByListeners",
            id="namespace-selector-does-not-match",
        ),
        pytest.param(
            {"name": "public", "namespace": "infra"},
            [
                {
                    "name": "grpc",
                    "port": 80,
                    "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "All"}, "kinds": [{"kind": "GRPCRoute"}]},
                }
            ],
            "payments",
            {},
            None,
            "NotAllowedByListeners",
            id="kind-not-allowed",
        ),
        pytest.param(
            {"name": "public", "namespace": "infra"},
            [
                {
                    "name": "http",
                    "port": 80,
                    "protocol": "HTTP",
                    "hostname": "*.example.com",
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
            "payments",
            {},
            ["pay.example.org"],
            "NoMatchingListenerHostname",
            id="hostname-mismatch",
        ),
    ],
)
def test_refused_attachments_name_the_reason(
    parent_ref: dict[str, Any],
    listeners: list[dict[str, Any]] | None,
    route_namespace: str,
    namespace_labels: dict[str, dict[str, str]],
    hostnames: list[str] | None,
    reason: str,
) -> None:
    r = route(namespace=route_namespace, parent_refs=[parent_ref], hostnames=hostnames)
    entry = only_entry(r, world(gateway(listeners=listeners), namespaces=namespace_labels))
    assert conditions_of(entry)["Accepted"] == ("False", reason)
    assert entry["parentRef"] == parent_ref
    assert not route_is_accepted({**r, "status": {"parents": [entry]}})


def test_namespace_selector_that_matches_admits_the_route() -> None:
    listeners = [
        {
            "name": "http",
            "port": 80,
            "protocol": "HTTP",
            "allowedRoutes": {
                "namespaces": {"from": "Selector", "selector": {"matchLabels": {"gateway-access": "yes"}}}
            },
        }
    ]
    entry = only_entry(
        route(), world(gateway(listeners=listeners), namespaces={"payments": {"gateway-access": "yes"}})
    )
    assert conditions_of(entry)["Accepted"] == ("True", "Accepted")


def test_same_namespace_listener_admits_route_of_its_own_namespace() -> None:
    listeners = [{"name": "http", "port": 80, "protocol": "HTTP"}]
    r = route(parent_refs=[{"name": "public", "sectionName": "http", "port": 80}])
    entry = only_entry(r, world(gateway(namespace="payments", listeners=listeners)))
    assert conditions_of(entry)["Accepted"] == ("True", "Accepted")


@pytest.mark.parametrize(
    ("backend_refs", "grants", "reason"),
    [
        pytest.param(
            [{"name": "payments-api-primary", "port": 8080}, {"name": "nope", "port": 8080}],
            [],
            "BackendNotFound",
            id="service-missing",
        ),
        pytest.param(
            [{"name": "shared", "namespace": "platform", "port": 8080}],
            [],
            "RefNotPermitted",
            id="cross-namespace-without-grant",
        ),
        pytest.param(
            [{"name": "shared", "namespace": "platform", "port": 8080}],
            [
                {
                    "metadata": {"name": "g", "namespace": "platform"},
                    "spec": {
                        "from": [{"group": GW, "kind": "GRPCRoute", "namespace": "payments"}],
                        "to": [{"group": "", "kind": "Service"}],
                    },
                }
            ],
            "RefNotPermitted",
            id="grant-for-another-route-kind",
        ),
        pytest.param(
            [{"name": "shared", "namespace": "platform", "port": 8080}],
            [
                {
                    "metadata": {"name": "g", "namespace": "platform"},
                    "spec": {
                        "from": [{"group": GW, "kind": "HTTPRoute", "namespace": "payments"}],
                        "to": [{"group": "", "kind": "Service", "name": "other"}],
                    },
                }
            ],
            "RefNotPermitted",
            id="grant-for-another-service-name",
        ),
        pytest.param(
            [{"group": "example.com", "kind": "Bucket", "name": "b"}], [], "InvalidKind", id="not-a-service"
        ),
    ],
)
def test_unresolved_backend_refs_set_resolved_refs_false(
    backend_refs: list[dict[str, Any]], grants: list[dict[str, Any]], reason: str
) -> None:
    services = [service("payments-api-primary"), service("shared", "platform")]
    entry = only_entry(route(backend_refs=backend_refs), world(services=services, grants=grants))
    assert conditions_of(entry) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", reason)}


def test_reference_grant_permits_cross_namespace_backend() -> None:
    grant = {
        "metadata": {"name": "g", "namespace": "platform"},
        "spec": {
            "from": [{"group": GW, "kind": "HTTPRoute", "namespace": "payments"}],
            "to": [{"group": "", "kind": "Service", "name": "shared"}],
        },
    }
    r = route(backend_refs=[{"name": "shared", "namespace": "platform", "port": 8080}])
    entry = only_entry(r, world(services=[service("shared", "platform")], grants=[grant]))
    assert conditions_of(entry)["ResolvedRefs"] == ("True", "ResolvedRefs")


def test_parents_of_other_implementations_get_no_entry_and_their_entries_are_kept() -> None:
    foreign_entry = {
        "parentRef": {"name": "theirs", "namespace": "infra"},
        "controllerName": "example.com/other",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
    }
    missing_but_reported = {
        "parentRef": {"name": "gone", "namespace": "infra"},
        "controllerName": "example.com/other",
        "conditions": [],
    }
    r = route(
        parent_refs=[
            {"name": "public", "namespace": "infra"},
            {"name": "theirs", "namespace": "infra"},
            {"name": "gone", "namespace": "infra"},
            {"group": "", "kind": "Service", "name": "mesh-parent"},
        ]
    )
    r["status"] = {
        "parents": [
            foreign_entry,
            missing_but_reported,
            {"parentRef": {"name": "stale"}, "controllerName": CONTROLLER_NAME, "conditions": []},
        ]
    }
    w = world(gateway(), gateway("theirs", class_name="other"))
    ours = route_parent_statuses(r, "HTTPRoute", w, NOW)
    assert [e["parentRef"]["name"] for e in ours] == ["public"]
    merged = merged_route_parents(r, ours)
    assert merged[:2] == [foreign_entry, missing_but_reported]
    assert [e["parentRef"]["name"] for e in merged[2:]] == ["public"]  # our stale entry is gone


def test_last_transition_time_is_kept_while_status_does_not_change() -> None:
    r = route()
    r["status"] = {"parents": route_parent_statuses(r, "HTTPRoute", world(), NOW)}
    later = NOW + timedelta(minutes=5)
    r["metadata"]["generation"] = 4
    again = route_parent_statuses(r, "HTTPRoute", world(), later)
    assert {c["lastTransitionTime"] for c in again[0]["conditions"]} == {"2026-01-02T03:04:05Z"}
    assert {c["observedGeneration"] for c in again[0]["conditions"]} == {4}
    flipped = route_parent_statuses(r, "HTTPRoute", world(services=[]), later)
    resolved = next(c for c in flipped[0]["conditions"] if c["type"] == "ResolvedRefs")
    assert resolved["lastTransitionTime"] == "2026-01-02T03:09:05Z"


def test_gateway_status_reports_listeners_attached_routes_and_address() -> None:
    listeners = [
        {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}},
        {
            "name": "grpc-only",
            "port": 81,
            "protocol": "HTTP",
            "allowedRoutes": {
                "namespaces": {"from": "All"},
                "kinds": [{"kind": "GRPCRoute"}, {"kind": "TCPRoute"}],
            },
        },
        {"name": "tcp", "port": 9000, "protocol": "TCP"},
    ]
    g = gateway(listeners=listeners)
    w = world(g)
    routes = [
        ("HTTPRoute", route("a")),
        ("HTTPRoute", route("b")),
        ("GRPCRoute", route("c", kind="GRPCRoute")),
        ("HTTPRoute", route("d", parent_refs=[{"name": "elsewhere"}])),
    ]
    status = gateway_status(g, w, routes, NOW)
    assert status is not None
    by_name = {entry["name"]: entry for entry in status["listeners"]}
    assert by_name["http"]["attachedRoutes"] == 3
    assert by_name["grpc-only"]["attachedRoutes"] == 1
    assert by_name["grpc-only"]["supportedKinds"] == [{"group": GW, "kind": "GRPCRoute"}]
    assert conditions_of(by_name["grpc-only"])["ResolvedRefs"] == ("False", "InvalidRouteKinds")
    assert conditions_of(by_name["tcp"])["Accepted"] == ("False", "UnsupportedProtocol")
    assert by_name["tcp"]["attachedRoutes"] == 0
    assert conditions_of(status) == {
        "Accepted": ("True", "ListenersNotValid"),
        "Programmed": ("True", "Programmed"),
    }
    assert status["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]


def test_gateways_and_classes_of_other_controllers_are_left_alone() -> None:
    assert gateway_class_status(gateway_class("other", "example.com/other"), NOW) is None
    accepted = gateway_class_status(gateway_class(), NOW)
    assert accepted is not None and conditions_of(accepted)["Accepted"] == ("True", "Accepted")
    assert gateway_status(gateway(class_name="other"), world(), [], NOW) is None


@pytest.mark.parametrize(
    ("pattern", "hostname", "expected"),
    [
        ("a.example.com", "a.example.com", True),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "example.com", False),
        ("a.example.com", "*.example.com", True),
        ("*.example.com", "*.b.example.com", True),
        ("a.example.com", "b.example.com", False),
    ],
)
def test_hostname_matching(pattern: str, hostname: str, expected: bool) -> None:
    assert hostname_matches(pattern, hostname) is expected


# --------------------------------------------------------------------------- wired to the store


def route_conditions(
    store: ObjectStore,
    name: str = "payments-api",
    namespace: str = "payments",
    resource: str = "httproutes.gateway.networking.k8s.io",
) -> dict[str, tuple[str, str]]:
    parents = (store.get(resource, name, namespace).get("status") or {}).get("parents") or []
    ours = [p for p in parents if p["controllerName"] == CONTROLLER_NAME]
    return conditions_of(ours[0]) if ours else {}


def populate(store: ObjectStore) -> None:
    store.ensure_namespace("infra")
    store.ensure_namespace("payments")
    store.create("gatewayclasses.gateway.networking.k8s.io", gateway_class())
    g = gateway(
        listeners=[
            {
                "name": "http",
                "port": 80,
                "protocol": "HTTP",
                "allowedRoutes": {
                    "namespaces": {
                        "from": "Selector",
                        "selector": {"matchLabels": {"shared-gateway": "true"}},
                    }
                },
            }
        ]
    )
    del g["metadata"]["generation"]
    store.create("gateways.gateway.networking.k8s.io", g)
    for name in ("payments-api-primary", "payments-api-canary"):
        store.create("services", service(name))
    r = route()
    del r["metadata"]["generation"]
    store.create("httproutes.gateway.networking.k8s.io", r)


async def test_sandbox_gateway_follows_changes_in_the_store() -> None:
    store = ObjectStore()
    gateway_controller = SandboxGateway(StoreView(store), gateway_recount_delay=0.01)
    gateway_controller.start()
    try:
        populate(store)
        await eventually(
            lambda: route_conditions(store).get("Accepted") == ("False", "NotAllowedByListeners")
        )
        gw = store.get("gateways.gateway.networking.k8s.io", "public", "infra")
        assert conditions_of(gw["status"])["Programmed"] == ("True", "Programmed")
        gc = store.get("gatewayclasses.gateway.networking.k8s.io", "sandbox")
        assert conditions_of(gc["status"])["Accepted"] == ("True", "Accepted")

        store.patch("namespaces", "payments", {"metadata": {"labels": {"shared-gateway": "true"}}})
        await eventually(lambda: route_conditions(store).get("Accepted") == ("True", "Accepted"))
        await eventually(
            lambda: (
                store.get("gateways.gateway.networking.k8s.io", "public", "infra")["status"]["listeners"][0][
                    "attachedRoutes"
                ]
                == 1
            )
        )

        store.delete("services", "payments-api-canary", "payments")
        await eventually(lambda: route_conditions(store).get("ResolvedRefs") == ("False", "BackendNotFound"))

        store.patch(
            "httproutes.gateway.networking.k8s.io",
            "payments-api",
            {"spec": {"rules": [{"backendRefs": [{"name": "payments-api-primary", "port": 8080}]}]}},
            "payments",
        )
        await eventually(lambda: route_conditions(store).get("ResolvedRefs") == ("True", "ResolvedRefs"))
        current = store.get("httproutes.gateway.networking.k8s.io", "payments-api", "payments")
        ours = next(p for p in current["status"]["parents"] if p["controllerName"] == CONTROLLER_NAME)
        assert (
            {c["observedGeneration"] for c in ours["conditions"]}
            == {current["metadata"]["generation"]}
            == {2}
        )

        store.delete("httproutes.gateway.networking.k8s.io", "payments-api", "payments")
        await eventually(
            lambda: (
                store.get("gateways.gateway.networking.k8s.io", "public", "infra")["status"]["listeners"][0][
                    "attachedRoutes"
                ]
                == 0
            )
        )
    finally:
        gateway_controller.stop()


async def test_sandbox_gateway_keeps_entries_written_by_other_controllers() -> None:
    store = ObjectStore()
    gateway_controller = SandboxGateway(StoreView(store), gateway_recount_delay=0.01)
    gateway_controller.start()
    try:
        populate(store)
        store.patch("namespaces", "payments", {"metadata": {"labels": {"shared-gateway": "true"}}})
        await eventually(lambda: route_conditions(store).get("Accepted") == ("True", "Accepted"))
        current = store.get("httproutes.gateway.networking.k8s.io", "payments-api", "payments")
        foreign = {
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "mesh"},
            "controllerName": "example.com/mesh",
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
        # another implementation replaces the whole list, dropping our entry
        store.update_status(
            "httproutes.gateway.networking.k8s.io",
            {"metadata": current["metadata"], "status": {"parents": [foreign]}},
            "payments",
        )
        await eventually(lambda: route_conditions(store).get("Accepted") == ("True", "Accepted"))
        parents = store.get("httproutes.gateway.networking.k8s.io", "payments-api", "payments")["status"][
            "parents"
        ]
        assert parents[0] == foreign
        writes = gateway_controller.status_writes
        await asyncio.sleep(0.05)
        assert gateway_controller.status_writes == writes  # settled: no write loop
    finally:
        gateway_controller.stop()


async def test_sandbox_gateway_reevaluates_routes_when_another_namespace_changes() -> None:
    store = ObjectStore()
    gateway_controller = SandboxGateway(StoreView(store), gateway_recount_delay=0.01)
    gateway_controller.start()
    try:
        populate(store)
        store.patch("namespaces", "payments", {"metadata": {"labels": {"shared-gateway": "true"}}})
        store.ensure_namespace("shared")
        store.patch(
            "httproutes.gateway.networking.k8s.io",
            "payments-api",
            {"spec": {"rules": [{"backendRefs": [{"name": "ledger", "namespace": "shared", "port": 8080}]}]}},
            "payments",
        )
        await eventually(lambda: route_conditions(store).get("ResolvedRefs") == ("False", "RefNotPermitted"))
        store.create(
            "referencegrants.gateway.networking.k8s.io",
            {
                "apiVersion": f"{GW}/v1beta1",
                "kind": "ReferenceGrant",
                "metadata": {"name": "from-payments", "namespace": "shared"},
                "spec": {
                    "from": [{"group": GW, "kind": "HTTPRoute", "namespace": "payments"}],
                    "to": [{"group": "", "kind": "Service"}],
                },
            },
        )
        await eventually(lambda: route_conditions(store).get("ResolvedRefs") == ("False", "BackendNotFound"))
        store.create("services", service("ledger", "shared"))
        await eventually(lambda: route_conditions(store).get("ResolvedRefs") == ("True", "ResolvedRefs"))
        store.delete("gateways.gateway.networking.k8s.io", "public", "infra")
        await eventually(lambda: route_conditions(store).get("Accepted") == ("False", "NoMatchingParent"))
    finally:
        gateway_controller.stop()
