"""Conformance: finalizers, deletionTimestamp, owner-reference garbage collection, namespace deletion."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from canaryd.sandbox.server.apiserver import SandboxApiServer
from canaryd.sandbox.server.errors import ApiError
from tests.fixtures.sandbox import deployment_manifest, service_manifest


def owned_by(owner: dict) -> list[dict]:
    meta = owner["metadata"]
    return [
        {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"]}
    ]


def exists(store, resource: str, name: str, namespace: str | None = "default") -> bool:
    try:
        store.get(resource, name, namespace)
    except ApiError as error:
        assert error.code == 404
        return False
    return True


async def test_finalizers_hold_deletion_until_removed(
    sandbox_api: SandboxApiServer, sandbox_k8s_client
) -> None:
    store = sandbox_api.store
    manifest = deployment_manifest("web")
    manifest["metadata"]["finalizers"] = ["canaryd.io/finalizer"]
    created = store.create("deployments", manifest)
    apps = client.AppsV1Api(sandbox_k8s_client)
    await apps.delete_namespaced_deployment("web", "default")
    terminating = store.get("deployments", "web", "default")
    assert terminating["metadata"]["deletionTimestamp"]
    assert int(terminating["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    # A second delete changes nothing; new finalizers cannot be added any more.
    await apps.delete_namespaced_deployment("web", "default")
    assert (
        store.get("deployments", "web", "default")["metadata"]["resourceVersion"]
        == terminating["metadata"]["resourceVersion"]
    )
    with pytest.raises(ApiException) as caught:
        await apps.patch_namespaced_deployment(
            "web", "default", {"metadata": {"finalizers": ["canaryd.io/finalizer", "other/one"]}}
        )
    assert caught.value.status == 422
    # Removing the last finalizer completes the deletion.
    await apps.patch_namespaced_deployment("web", "default", {"metadata": {"finalizers": None}})
    assert not exists(store, "deployments", "web")


async def test_deletion_with_finalizer_is_modified_then_deleted(sandbox_api: SandboxApiServer) -> None:
    store = sandbox_api.store
    store.create("configmaps", {"metadata": {"name": "c", "finalizers": ["x/y"]}}, "default")
    async with store.watch("configmaps", "default", resource_version=store.resource_version) as events:
        store.delete("configmaps", "c", "default")
        store.patch(
            "configmaps",
            "c",
            [{"op": "remove", "path": "/metadata/finalizers"}],
            "default",
            patch_type="json",
        )
        seen = []
        async for event in events:
            seen.append(event.type)
            if event.type == "DELETED":
                break
    assert seen == ["MODIFIED", "DELETED"]  # the update that removes the last finalizer deletes


async def test_background_cascade_deletes_dependents_whose_owners_are_gone(
    sandbox_api: SandboxApiServer,
) -> None:
    store = sandbox_api.store
    owner = store.create("deployments", deployment_manifest("web"))
    other_owner = store.create("configmaps", {"metadata": {"name": "other"}}, "default")
    store.create(
        "services",
        {
            **service_manifest("web-primary"),
            "metadata": {"name": "web-primary", "ownerReferences": owned_by(owner)},
        },
        "default",
    )
    store.create(
        "configmaps",
        {"metadata": {"name": "shared", "ownerReferences": owned_by(owner) + owned_by(other_owner)}},
        "default",
    )
    grandchild_parent = store.create(
        "configmaps", {"metadata": {"name": "child", "ownerReferences": owned_by(owner)}}, "default"
    )
    store.create(
        "configmaps",
        {"metadata": {"name": "grandchild", "ownerReferences": owned_by(grandchild_parent)}},
        "default",
    )
    store.delete("deployments", "web", "default")
    assert not exists(store, "services", "web-primary")
    assert not exists(store, "configmaps", "child")
    assert not exists(store, "configmaps", "grandchild")
    assert exists(store, "configmaps", "shared")  # another owner is still there
    store.delete("configmaps", "other", "default")
    assert not exists(store, "configmaps", "shared")


async def test_orphan_propagation_keeps_dependents_and_drops_the_reference(
    sandbox_api: SandboxApiServer, sandbox_k8s_client
) -> None:
    store = sandbox_api.store
    owner = store.create("deployments", deployment_manifest("web"))
    store.create("configmaps", {"metadata": {"name": "child", "ownerReferences": owned_by(owner)}}, "default")
    apps = client.AppsV1Api(sandbox_k8s_client)
    await apps.delete_namespaced_deployment("web", "default", propagation_policy="Orphan")
    assert not exists(store, "deployments", "web")
    child = store.get("configmaps", "child", "default")
    assert "ownerReferences" not in child["metadata"]


async def test_foreground_deletes_dependents_first(sandbox_api: SandboxApiServer) -> None:
    store = sandbox_api.store
    owner = store.create("deployments", deployment_manifest("web"))
    store.create("configmaps", {"metadata": {"name": "child", "ownerReferences": owned_by(owner)}}, "default")
    order = []
    unsubscribe = store.subscribe(
        lambda e: order.append(e.obj["metadata"]["name"]) if e.type == "DELETED" else None
    )
    store.delete("deployments", "web", "default", propagation_policy="Foreground")
    unsubscribe()
    assert order == ["child", "web"]


async def test_delete_preconditions(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    created = sandbox_api.store.create("configmaps", {"metadata": {"name": "c"}}, "default")
    response = await sandbox_http.delete(
        "/api/v1/namespaces/default/configmaps/c", json={"preconditions": {"resourceVersion": "1"}}
    )
    assert response.status == 409
    response = await sandbox_http.delete(
        "/api/v1/namespaces/default/configmaps/c", json={"preconditions": {"uid": created["metadata"]["uid"]}}
    )
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "Success" and body["details"]["uid"] == created["metadata"]["uid"]


async def test_deleting_a_namespace_deletes_its_contents(
    sandbox_api: SandboxApiServer, sandbox_k8s_client
) -> None:
    store = sandbox_api.store
    store.create("namespaces", {"metadata": {"name": "team"}})
    store.create("deployments", deployment_manifest("web", namespace="team"))
    store.create("configmaps", {"metadata": {"name": "held", "finalizers": ["x/y"]}}, "team")
    core = client.CoreV1Api(sandbox_k8s_client)
    await core.delete_namespace("team")
    assert not exists(store, "deployments", "web", "team")
    namespace = store.get("namespaces", "team")
    assert namespace["status"]["phase"] == "Terminating"
    with pytest.raises(ApiError) as caught:
        store.create("configmaps", {"metadata": {"name": "late"}}, "team")
    assert caught.value.code == 403
    store.patch("configmaps", "held", {"metadata": {"finalizers": []}}, "team")
    assert not exists(store, "namespaces", "team", None)


async def test_deleting_a_namespace_that_empties_at_once_succeeds(
    sandbox_api: SandboxApiServer, sandbox_http
) -> None:
    store = sandbox_api.store
    store.create("namespaces", {"metadata": {"name": "brief"}})
    store.create("configmaps", {"metadata": {"name": "settings"}}, "brief")
    async with sandbox_http.delete("/api/v1/namespaces/brief") as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert (body["kind"], body["status"], body["details"]["name"]) == ("Status", "Success", "brief")
    assert not exists(store, "namespaces", "brief", None)


async def test_delete_collection_with_selector(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        sandbox_api.store.create(
            "configmaps", {"metadata": {"name": name, "labels": {"tier": tier}}}, "default"
        )
    response = await sandbox_http.delete(
        "/api/v1/namespaces/default/configmaps", params={"labelSelector": "tier=web"}
    )
    assert response.status == 200
    assert sorted(i["metadata"]["name"] for i in (await response.json())["items"]) == ["a", "b"]
    assert [c["metadata"]["name"] for c in sandbox_api.store.list("configmaps", "default")[0]] == ["c"]
