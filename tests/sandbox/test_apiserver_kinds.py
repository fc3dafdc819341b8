"""Conformance for the kinds the controller relies on: events (both APIs), leases, Gateway API views."""

from __future__ import annotations

import asyncio
import datetime
import json
import time

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from canaryd.sandbox.server.apiserver import SandboxApiServer
from canaryd.sandbox.server.errors import ApiError
from tests.fixtures.sandbox import deployment_manifest

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


async def test_events_recorded_through_events_api_show_as_core_events(
    sandbox_api: SandboxApiServer, sandbox_k8s_client, kubectl
) -> None:
    sandbox_api.store.create("deployments", deployment_manifest("web"))
    events_api = client.EventsV1Api(sandbox_k8s_client)
    recorded = await events_api.create_namespaced_event(
        "default",
        client.EventsV1Event(
            metadata=client.V1ObjectMeta(generate_name="web."),
            event_time=NOW,
            reason="Promoted",
            note="canary promoted",
            type="Normal",
            action="Promote",
            reporting_controller="canaryd.io/controller",
            reporting_instance="canaryd-0",
            regarding=client.V1ObjectReference(
                kind="Deployment", name="web", namespace="default", api_version="apps/v1"
            ),
        ),
    )
    assert recorded.note == "canary promoted" and recorded.regarding.name == "web"
    core = client.CoreV1Api(sandbox_k8s_client)
    (as_core,) = (
        await core.list_namespaced_event(
            "default", field_selector="involvedObject.name=web,involvedObject.kind=Deployment"
        )
    ).items
    assert (as_core.message, as_core.reporting_component, as_core.metadata.name) == (
        "canary promoted",
        "canaryd.io/controller",
        recorded.metadata.name,
    )
    by_regarding = await events_api.list_namespaced_event("default", field_selector="regarding.name=web")
    assert [e.note for e in by_regarding.items] == ["canary promoted"]
    rows = (await kubectl("get", "events", check=True)).stdout.splitlines()
    assert rows[1].split()[1:4] == ["Normal", "Promoted", "deployment/web"]


async def test_core_events_show_through_events_api_and_watch(sandbox_api: SandboxApiServer) -> None:
    store = sandbox_api.store
    async with store.watch("events.events.k8s.io", "default") as watch:
        store.create(
            "events",
            {
                "metadata": {"name": "web.1"},
                "involvedObject": {"kind": "Deployment", "name": "web"},
                "message": "hello",
                "reason": "Synced",
                "type": "Normal",
                "count": 2,
            },
            "default",
        )
        event = await asyncio.wait_for(watch.__anext__(), 2)
    assert event.type == "ADDED"
    assert event.object["apiVersion"] == "events.k8s.io/v1"
    assert (event.object["note"], event.object["regarding"]["name"], event.object["deprecatedCount"]) == (
        "hello",
        "web",
        2,
    )
    assert "message" not in event.object


async def test_lease_updates_conflict_like_leader_election_expects(sandbox_k8s_client) -> None:
    leases = client.CoordinationV1Api(sandbox_k8s_client)
    created = await leases.create_namespaced_lease(
        "default",
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="canaryd-leader"),
            spec=client.V1LeaseSpec(
                holder_identity="a", lease_duration_seconds=15, acquire_time=NOW, renew_time=NOW
            ),
        ),
    )
    created.spec.holder_identity = "b"
    renewed = await leases.replace_namespaced_lease("canaryd-leader", "default", created)
    assert renewed.spec.holder_identity == "b" and renewed.spec.renew_time == NOW
    created.spec.holder_identity = "c"
    with pytest.raises(ApiException) as caught:
        await leases.replace_namespaced_lease("canaryd-leader", "default", created)
    assert caught.value.status == 409
    assert json.loads(caught.value.body)["details"]["group"] == "coordination.k8s.io"


async def test_gateway_api_versions_are_views_of_the_same_objects(
    sandbox_api: SandboxApiServer, sandbox_k8s_client, sandbox_http
) -> None:
    custom = client.CustomObjectsApi(sandbox_k8s_client)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "web-primary", "port": 8080, "weight": 100},
                        {"name": "web-canary", "port": 8080, "weight": 0},
                    ]
                }
            ],
        },
    }
    await custom.create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", "default", "httproutes", route
    )
    old_view = await custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1beta1", "default", "httproutes", "r"
    )
    assert old_view["apiVersion"] == "gateway.networking.k8s.io/v1beta1"
    params = {"watch": "1", "resourceVersion": sandbox_api.store.resource_version}
    async with sandbox_http.get(
        "/apis/gateway.networking.k8s.io/v1beta1/namespaces/default/httproutes", params=params
    ) as response:
        await custom.patch_namespaced_custom_object(
            "gateway.networking.k8s.io",
            "v1",
            "default",
            "httproutes",
            "r",
            [
                {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": 0},
                {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 10},
            ],
        )
        event = json.loads(await asyncio.wait_for(response.content.readline(), 3))
    assert event["type"] == "MODIFIED"
    assert event["object"]["apiVersion"] == "gateway.networking.k8s.io/v1beta1"
    assert event["object"]["spec"]["rules"][0]["backendRefs"][1]["weight"] == 10
    status = await custom.patch_namespaced_custom_object_status(
        "gateway.networking.k8s.io",
        "v1",
        "default",
        "httproutes",
        "r",
        {
            "status": {
                "parents": [
                    {
                        "parentRef": {"name": "gw"},
                        "controllerName": "canaryd.io/sandbox-gateway",
                        "conditions": [
                            {
                                "type": "Accepted",
                                "status": "True",
                                "reason": "Accepted",
                                "message": "",
                                "lastTransitionTime": "2026-05-01T10:00:00Z",
                            }
                        ],
                    }
                ]
            }
        },
        _content_type="application/merge-patch+json",
    )
    assert status["status"]["parents"][0]["conditions"][0]["type"] == "Accepted"
    assert status["metadata"]["generation"] == 2  # the weight change, not the status write


async def test_python_update_is_unconditional_for_built_ins_only(sandbox_api: SandboxApiServer) -> None:
    store = sandbox_api.store
    deployment = store.create("deployments", deployment_manifest("web"))
    del deployment["metadata"]["resourceVersion"]
    deployment["spec"]["replicas"] = 2
    assert store.update("deployments", deployment)["spec"]["replicas"] == 2
    route = store.create("httproutes", {"metadata": {"name": "r"}, "spec": {}}, "default")
    del route["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as caught:
        store.update("httproutes", route)
    assert caught.value.code == 422
    assert caught.value.causes and caught.value.causes[0]["field"] == "metadata.resourceVersion"


async def test_stop_ends_open_watches_promptly(sandbox_kubeconfig) -> None:
    server = SandboxApiServer()
    await server.start()
    import aiohttp

    async with aiohttp.ClientSession() as http:
        response = await http.get(f"{server.url}/api/v1/namespaces/default/configmaps", params={"watch": "1"})
        started = time.monotonic()
        await asyncio.wait_for(server.stop(), 5)
        assert time.monotonic() - started < 2
        assert await asyncio.wait_for(response.read(), 2) == b""
        assert server.store.open_watch_count() == 0


async def test_events_api_is_strict_and_core_api_lenient(sandbox_http) -> None:
    lenient = {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Deployment", "name": "web"},
        "reason": "Synced",
        "message": "hello",
    }
    response = await sandbox_http.post("/api/v1/namespaces/default/events", json=lenient)
    assert response.status == 201
    strict = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "e2"},
        "regarding": {"kind": "Deployment", "name": "web"},
        "note": "hello",
        "type": "Normal",
    }
    response = await sandbox_http.post("/apis/events.k8s.io/v1/namespaces/default/events", json=strict)
    assert response.status == 422
    status = await response.json()
    assert sorted(c["field"] for c in status["details"]["causes"]) == [
        "action",
        "eventTime",
        "reason",
        "reportingController",
        "reportingInstance",
    ]
    assert status["message"].startswith('Event.events.k8s.io "e2" is invalid: [')
    wrong_namespace = dict(
        lenient,
        metadata={"name": "e3"},
        involvedObject={"kind": "Deployment", "name": "web", "namespace": "other"},
    )
    response = await sandbox_http.post("/api/v1/namespaces/default/events", json=wrong_namespace)
    assert response.status == 422


async def test_gateway_api_defaults_and_bounds_like_the_crds(
    sandbox_api: SandboxApiServer, sandbox_http
) -> None:
    routes = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes"
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "filters": [{"type": "RequestHeaderModifier"}],
                    "backendRefs": [
                        {"name": "web-primary", "port": 8080},
                        {"name": "web-canary", "port": 8080, "weight": 0},
                    ],
                }
            ],
        },
    }
    # The CRD's CEL rules apply: a filter without its configuration is refused, as a real server does.
    refused = await sandbox_http.post(routes, json=route)
    assert refused.status == 422
    cause = (await refused.json())["details"]["causes"][0]
    assert cause["field"] == "spec.rules[0].filters[0]"
    assert "filter.requestHeaderModifier must be specified" in cause["message"]
    modifier = {"set": [{"name": "X-Route", "value": "r"}]}
    route["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"] = modifier
    created = await (await sandbox_http.post(routes, json=route)).json()
    primary, canary = created["spec"]["rules"][0]["backendRefs"]
    assert (primary["weight"], primary["kind"], primary["group"], canary["weight"]) == (1, "Service", "", 0)
    assert created["spec"]["parentRefs"][0]["kind"] == "Gateway"
    filters = [{"type": "RequestHeaderModifier", "requestHeaderModifier": modifier}]
    assert created["spec"]["rules"][0]["filters"] == filters  # kept as written
    response = await sandbox_http.patch(
        f"{routes}/r",
        json=[
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": 1},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": -5},
        ],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status == 422
    assert (await response.json())["details"]["causes"][0]["field"] == "spec.rules[0].backendRefs[0].weight"
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw"},
        "spec": {
            "gatewayClassName": "sandbox",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
        },
    }
    stored = sandbox_api.store.create("gateways", gateway, "default")
    assert stored["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}
