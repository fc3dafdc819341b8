"""Conformance: CRDs are served once created, with schema defaults and validation, status and columns."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from canaryd.sandbox.server.apiserver import SandboxApiServer
from canaryd.sandbox.server.errors import ApiError

# kubernetes_asyncio sends a dict body to custom objects as JSON Patch unless told otherwise
# (a real API server then answers 400, and so does the sandbox): say merge patch explicitly.
MERGE = "application/merge-patch+json"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["color"],
                                "properties": {
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                    "size": {"type": "integer", "minimum": 1, "default": 3},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "conditions": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "type": {"type": "string"},
                                                "status": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}

GADGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Cluster",
        "names": {"plural": "gadgets", "kind": "Gadget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def widget(name: str, **spec: object) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
async def widgets(sandbox_http) -> None:
    response = await sandbox_http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=WIDGET_CRD
    )
    assert response.status == 201


async def test_crd_becomes_served_and_discoverable(sandbox_http, widgets) -> None:
    crd = await (
        await sandbox_http.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    ).json()
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {
        "NamesAccepted": "True",
        "Established": "True",
    }
    resources = await (await sandbox_http.get("/apis/example.com/v1")).json()
    assert {r["name"] for r in resources["resources"]} == {"widgets", "widgets/status"}
    groups = await (await sandbox_http.get("/apis")).json()
    assert "example.com" in {g["name"] for g in groups["groups"]}


async def test_custom_resources_get_defaults_and_metadata(sandbox_k8s_client, widgets) -> None:
    custom = client.CustomObjectsApi(sandbox_k8s_client)
    created = await custom.create_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", widget("w1", color="red")
    )
    assert created["spec"] == {"color": "red", "size": 3}
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    listed = await custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert listed["kind"] == "WidgetList" and [i["metadata"]["name"] for i in listed["items"]] == ["w1"]


async def test_schema_violations_are_422_invalid(sandbox_http, widgets) -> None:
    response = await sandbox_http.post(WIDGETS, json=widget("bad", color="green", size=0))
    assert response.status == 422
    status = await response.json()
    assert status["reason"] == "Invalid"
    assert status["details"]["kind"] == "Widget" and status["details"]["group"] == "example.com"
    assert sorted(c["field"] for c in status["details"]["causes"]) == ["spec.color", "spec.size"]
    assert status["message"].startswith('Widget.example.com "bad" is invalid: ')
    response = await sandbox_http.post(WIDGETS, json=widget("missing"))
    assert response.status == 422
    assert [c["reason"] for c in (await response.json())["details"]["causes"]] == ["FieldValueRequired"]


async def test_strict_field_validation_refuses_unknown_fields(sandbox_http, widgets) -> None:
    body = widget("w", color="red", colour="red")
    response = await sandbox_http.post(WIDGETS, params={"fieldValidation": "Strict"}, json=body)
    assert response.status == 400
    assert 'unknown field "spec.colour"' in (await response.json())["message"]
    response = await sandbox_http.post(WIDGETS, json=body)
    assert response.status == 201
    assert (await response.json())["spec"] == {"color": "red", "size": 3}  # pruned


async def test_custom_resource_status_subresource_and_conflicts(sandbox_k8s_client, widgets) -> None:
    custom = client.CustomObjectsApi(sandbox_k8s_client)
    created = await custom.create_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", widget("w1", color="red")
    )
    with_status = await custom.patch_namespaced_custom_object_status(
        "example.com",
        "v1",
        "default",
        "widgets",
        "w1",
        {"spec": {"color": "blue"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        _content_type=MERGE,
    )
    assert with_status["spec"]["color"] == "red"
    assert with_status["status"]["conditions"][0]["status"] == "True"
    assert with_status["metadata"]["generation"] == 1
    spec_change = await custom.patch_namespaced_custom_object(
        "example.com",
        "v1",
        "default",
        "widgets",
        "w1",
        {"spec": {"color": "blue"}, "status": None},
        _content_type=MERGE,
    )
    assert spec_change["status"]["conditions"][0]["status"] == "True"
    assert spec_change["metadata"]["generation"] == 2
    stale = dict(created, spec={"color": "red", "size": 9})
    with pytest.raises(ApiException) as caught:
        await custom.replace_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1", stale)
    assert caught.value.status == 409
    assert json.loads(caught.value.body)["details"] == {
        "name": "w1",
        "group": "example.com",
        "kind": "widgets",
    }


async def test_strategic_merge_patch_is_refused_for_custom_resources(
    sandbox_api: SandboxApiServer, sandbox_http, widgets
) -> None:
    sandbox_api.store.create("widgets.example.com", widget("w1", color="red"), "default")
    response = await sandbox_http.patch(
        f"{WIDGETS}/w1",
        json={"spec": {"size": 4}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert response.status == 415


async def test_table_uses_additional_printer_columns(
    sandbox_api: SandboxApiServer, sandbox_http, widgets
) -> None:
    sandbox_api.store.create("widgets", widget("w1", color="red"), "default")
    sandbox_api.store.patch(
        "widgets",
        "w1",
        {
            "status": {
                "conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]
            }
        },
        "default",
        subresource="status",
    )
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    table = await (await sandbox_http.get(WIDGETS, headers={"Accept": accept})).json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Color", "Size", "Ready", "Age"]
    (row,) = table["rows"]
    assert row["cells"][:4] == ["w1", "red", 3, "True"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    full = await (
        await sandbox_http.get(WIDGETS, params={"includeObject": "Object"}, headers={"Accept": accept})
    ).json()
    assert full["rows"][0]["object"]["spec"]["color"] == "red"


async def test_cluster_scoped_custom_resources(sandbox_http) -> None:
    response = await sandbox_http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=GADGET_CRD
    )
    assert response.status == 201
    response = await sandbox_http.post(
        "/apis/example.com/v1/gadgets",
        json={
            "apiVersion": "example.com/v1",
            "kind": "Gadget",
            "metadata": {"name": "g1"},
            "anything": {"goes": 1},
        },
    )
    assert response.status == 201
    assert "namespace" not in (await response.json())["metadata"]
    response = await sandbox_http.get("/apis/example.com/v1/namespaces/default/gadgets")
    assert response.status == 404


async def test_deleting_the_crd_removes_its_resources(
    sandbox_api: SandboxApiServer, sandbox_http, widgets
) -> None:
    sandbox_api.store.create("widgets", widget("w1", color="red"), "default")
    response = await sandbox_http.delete(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
    )
    assert response.status == 200
    assert (await sandbox_http.get(WIDGETS)).status == 404
    with pytest.raises(ApiError):
        sandbox_api.store.get("widgets.example.com", "w1", "default")


async def test_invalid_crd_is_422(sandbox_http) -> None:
    bad = json.loads(json.dumps(WIDGET_CRD))
    bad["metadata"]["name"] = "wrong.example.com"
    response = await sandbox_http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=bad)
    assert response.status == 422
    assert (await response.json())["details"]["causes"][0]["field"] == "metadata.name"
