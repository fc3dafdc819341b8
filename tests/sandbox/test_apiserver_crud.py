"""Conformance: CRUD, metadata bookkeeping and error Status bodies, as kube-apiserver does them."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.fixtures.sandbox import deployment_manifest, service_manifest

STALE = "the object has been modified; please apply your changes to the latest version and try again"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def status_of(error: ApiException) -> dict:
    return json.loads(error.body)


async def test_create_sets_uid_resource_version_generation_and_timestamp(sandbox_k8s_client) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    first = await apps.create_namespaced_deployment("default", deployment_manifest("a"))
    second = await apps.create_namespaced_deployment("default", deployment_manifest("b"))
    assert first.metadata.uid != second.metadata.uid
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert first.metadata.generation == 1
    assert first.metadata.creation_timestamp is not None
    # Defaults a real API server applies.
    assert first.spec.strategy.type == "RollingUpdate"
    assert first.spec.revision_history_limit == 10
    assert first.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"


async def test_generation_moves_only_with_spec(sandbox_k8s_client) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    await apps.create_namespaced_deployment("default", deployment_manifest("web"))
    labelled = await apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    status = await apps.patch_namespaced_deployment_status("web", "default", {"status": {"replicas": 1}})
    assert status.metadata.generation == 1
    scaled = await apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 3}})
    assert scaled.metadata.generation == 2


async def test_write_that_changes_nothing_keeps_resource_version(
    sandbox_api: SandboxApiServer, sandbox_k8s_client
) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    created = await apps.create_namespaced_deployment("default", deployment_manifest("web"))
    same = await apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 1}})
    assert same.metadata.resource_version == created.metadata.resource_version
    assert sandbox_api.store.resource_version == created.metadata.resource_version


async def test_create_existing_is_409_already_exists(sandbox_k8s_client) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    await apps.create_namespaced_deployment("default", deployment_manifest("web"))
    with pytest.raises(ApiException) as caught:
        await apps.create_namespaced_deployment("default", deployment_manifest("web"))
    assert caught.value.status == 409
    body = status_of(caught.value)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'deployments.apps "web" already exists'
    assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}


async def test_stale_resource_version_on_put_and_patch_is_409_conflict(sandbox_k8s_client) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    created = await apps.create_namespaced_deployment("default", deployment_manifest("web"))
    stale_rv = created.metadata.resource_version
    await apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    created.spec.replicas = 5
    with pytest.raises(ApiException) as put_error:
        await apps.replace_namespaced_deployment("web", "default", created)
    assert put_error.value.status == 409
    body = status_of(put_error.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == f'Operation cannot be fulfilled on deployments.apps "web": {STALE}'
    assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    with pytest.raises(ApiException) as patch_error:
        await apps.patch_namespaced_deployment(
            "web", "default", {"metadata": {"resourceVersion": stale_rv}, "spec": {"replicas": 9}}
        )
    assert patch_error.value.status == 409
    current = await apps.read_namespaced_deployment("web", "default")
    assert current.spec.replicas == 2


async def test_put_with_current_resource_version_succeeds(sandbox_k8s_client) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    created = await apps.create_namespaced_deployment("default", deployment_manifest("web"))
    created.spec.replicas = 4
    replaced = await apps.replace_namespaced_deployment("web", "default", created)
    assert replaced.spec.replicas == 4
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)


async def test_not_found_status(sandbox_http) -> None:
    response = await sandbox_http.get(f"{DEPLOYMENTS}/missing")
    assert response.status == 404
    assert await response.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "missing" not found',
        "reason": "NotFound",
        "details": {"name": "missing", "group": "apps", "kind": "deployments"},
        "code": 404,
    }


async def test_malformed_bodies_are_400(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    sandbox_api.store.create("deployments", deployment_manifest("x"))
    for content_type, body in (("application/json", b"{not json"), ("application/yaml", b"a: [unclosed")):
        response = await sandbox_http.post(DEPLOYMENTS, data=body, headers={"Content-Type": content_type})
        assert response.status == 400
        status = await response.json()
        assert status["reason"] == "BadRequest" and status["code"] == 400
    response = await sandbox_http.patch(
        f"{DEPLOYMENTS}/x", data=b"[1,", headers={"Content-Type": "application/merge-patch+json"}
    )
    assert response.status == 400
    assert sandbox_api.store.get("deployments", "x", "default")["spec"]["replicas"] == 1


async def test_unknown_kinds_and_paths_are_404(sandbox_http, sandbox_k8s_client) -> None:
    for path in (
        "/apis/apps/v1/namespaces/default/widgets",
        "/apis/example.com/v1/things",
        "/api/v2/pods",
        "/apis/apps/v1/namespaces/default/deployments/x/logs",
    ):
        response = await sandbox_http.get(path)
        assert response.status == 404, path
        assert (await response.json())["reason"] == "NotFound"
    custom = client.CustomObjectsApi(sandbox_k8s_client)
    with pytest.raises(ApiException) as caught:
        await custom.list_namespaced_custom_object("example.com", "v1", "default", "things")
    assert caught.value.status == 404


async def test_unsupported_verbs_are_405(sandbox_http) -> None:
    response = await sandbox_http.post(f"{DEPLOYMENTS}/web", json=deployment_manifest("web"))
    assert response.status == 405
    assert (await response.json())["reason"] == "MethodNotAllowed"
    response = await sandbox_http.put(DEPLOYMENTS, json=deployment_manifest("web"))
    assert response.status == 405
    response = await sandbox_http.post("/apis/apps/v1/deployments", json=deployment_manifest("web"))
    assert response.status == 405  # across namespaces only list and watch exist


async def test_invalid_objects_are_422_with_causes(sandbox_http) -> None:
    bad = deployment_manifest("web")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    response = await sandbox_http.post(DEPLOYMENTS, json=bad)
    assert response.status == 422
    status = await response.json()
    assert status["reason"] == "Invalid"
    assert status["details"]["kind"] == "Deployment"
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.template.metadata.labels"]
    bad_name = deployment_manifest("Not_Valid")
    response = await sandbox_http.post(DEPLOYMENTS, json=bad_name)
    assert response.status == 422
    assert (await response.json())["details"]["causes"][0]["field"] == "metadata.name"


async def test_objects_need_an_existing_namespace(sandbox_k8s_client) -> None:
    core = client.CoreV1Api(sandbox_k8s_client)
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_service("nowhere", service_manifest("svc", namespace="nowhere"))
    assert caught.value.status == 404
    assert status_of(caught.value)["message"] == 'namespaces "nowhere" not found'
    await core.create_namespace({"metadata": {"name": "nowhere"}})
    created = await core.create_namespaced_service("nowhere", service_manifest("svc", namespace="nowhere"))
    assert created.spec.cluster_ip.startswith("10.96.")
    assert created.spec.ports[0].target_port == 8080


async def test_status_and_main_resource_do_not_leak(sandbox_k8s_client) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    await apps.create_namespaced_deployment("default", deployment_manifest("web"))
    main = await apps.patch_namespaced_deployment(
        "web", "default", {"spec": {"replicas": 2}, "status": {"readyReplicas": 7}}
    )
    assert main.spec.replicas == 2
    assert main.status is None or main.status.ready_replicas is None
    status = await apps.patch_namespaced_deployment_status(
        "web",
        "default",
        {
            "spec": {"replicas": 9},
            "metadata": {"labels": {"leak": "yes"}},
            "status": {"readyReplicas": 2, "replicas": 2},
        },
    )
    assert status.status.ready_replicas == 2
    assert status.spec.replicas == 2
    assert "leak" not in status.metadata.labels
    current = await apps.read_namespaced_deployment("web", "default")
    current.status.ready_replicas = 0
    current.spec.replicas = 3
    replaced = await apps.replace_namespaced_deployment("web", "default", current)
    assert replaced.status.ready_replicas == 2 and replaced.spec.replicas == 3


async def test_scale_subresource(sandbox_k8s_client) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    await apps.create_namespaced_deployment("default", deployment_manifest("web", replicas=2))
    scale = await apps.read_namespaced_deployment_scale("web", "default")
    assert scale.spec.replicas == 2 and scale.status.selector == "app=web"
    await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 5}})
    assert (await apps.read_namespaced_deployment("web", "default")).spec.replicas == 5


async def test_list_has_kind_api_version_resource_version_and_pages(
    sandbox_api: SandboxApiServer, sandbox_http
) -> None:
    for index in range(7):
        sandbox_api.store.create(
            "configmaps", {"metadata": {"name": f"cm-{index}"}, "data": {"i": str(index)}}, "default"
        )
    response = await sandbox_http.get("/api/v1/namespaces/default/configmaps", params={"limit": "3"})
    page = await response.json()
    assert page["kind"] == "ConfigMapList" and page["apiVersion"] == "v1"
    assert page["metadata"]["resourceVersion"] == sandbox_api.store.resource_version
    names = [item["metadata"]["name"] for item in page["items"]]
    while page["metadata"].get("continue"):
        response = await sandbox_http.get(
            "/api/v1/namespaces/default/configmaps",
            params={"limit": "3", "continue": page["metadata"]["continue"]},
        )
        page = await response.json()
        names += [item["metadata"]["name"] for item in page["items"]]
    assert names == [f"cm-{i}" for i in range(7)]


async def test_cluster_wide_and_namespaced_lists(sandbox_api: SandboxApiServer, sandbox_k8s_client) -> None:
    sandbox_api.store.create("namespaces", {"metadata": {"name": "team-a"}})
    sandbox_api.store.create("deployments", deployment_manifest("one", namespace="team-a"))
    sandbox_api.store.create("deployments", deployment_manifest("two"))
    apps = client.AppsV1Api(sandbox_k8s_client)
    everywhere = await apps.list_deployment_for_all_namespaces()
    assert sorted(d.metadata.name for d in everywhere.items) == ["one", "two"]
    in_team = await apps.list_namespaced_deployment("team-a")
    assert [d.metadata.name for d in in_team.items] == ["one"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=web", ["a", "b"]),
        ("tier==web", ["a", "b"]),
        ("tier!=web", ["c", "d"]),
        ("tier in (web,db)", ["a", "b", "c"]),
        ("tier notin (web)", ["c", "d"]),
        ("tier", ["a", "b", "c"]),
        ("!tier", ["d"]),
        ("tier=web,env=prod", ["a"]),
    ],
)
async def test_label_selectors(
    sandbox_api: SandboxApiServer, sandbox_k8s_client, selector: str, expected: list[str]
) -> None:
    labels = {"a": {"tier": "web", "env": "prod"}, "b": {"tier": "web"}, "c": {"tier": "db"}, "d": {}}
    for name, extra in labels.items():
        sandbox_api.store.create("configmaps", {"metadata": {"name": name, "labels": extra}}, "default")
    core = client.CoreV1Api(sandbox_k8s_client)
    found = await core.list_namespaced_config_map("default", label_selector=selector)
    assert [c.metadata.name for c in found.items] == expected


async def test_field_selectors(sandbox_api: SandboxApiServer, sandbox_k8s_client, sandbox_http) -> None:
    sandbox_api.store.create("namespaces", {"metadata": {"name": "other"}})
    for namespace in ("default", "other"):
        for name in ("x", "y"):
            sandbox_api.store.create("configmaps", {"metadata": {"name": name}}, namespace)
    core = client.CoreV1Api(sandbox_k8s_client)
    by_name = await core.list_config_map_for_all_namespaces(field_selector="metadata.name=x")
    assert sorted((c.metadata.namespace, c.metadata.name) for c in by_name.items) == [
        ("default", "x"),
        ("other", "x"),
    ]
    not_default = await core.list_config_map_for_all_namespaces(
        field_selector="metadata.namespace!=default,metadata.name!=x"
    )
    assert [(c.metadata.namespace, c.metadata.name) for c in not_default.items] == [("other", "y")]
    response = await sandbox_http.get("/api/v1/configmaps", params={"fieldSelector": "spec.nothing=1"})
    assert response.status == 400


async def test_dry_run_stores_nothing(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    before = sandbox_api.store.resource_version
    response = await sandbox_http.post(DEPLOYMENTS, params={"dryRun": "All"}, json=deployment_manifest("web"))
    assert response.status == 201
    assert (await response.json())["spec"]["revisionHistoryLimit"] == 10
    assert sandbox_api.store.count("deployments") == 0
    assert sandbox_api.store.resource_version == before


async def test_discovery_with_and_without_trailing_slash(sandbox_http) -> None:
    for path in (
        "/api",
        "/api/",
        "/api/v1",
        "/api/v1/",
        "/apis",
        "/apis/",
        "/apis/apps",
        "/apis/apps/",
        "/apis/apps/v1",
        "/apis/apps/v1/",
        "/version",
        "/version/",
    ):
        response = await sandbox_http.get(path)
        assert response.status == 200, path
    apps = await (await sandbox_http.get("/apis/apps/v1")).json()
    names = {r["name"]: r for r in apps["resources"]}
    assert {"deployments", "deployments/status", "deployments/scale"} <= set(names)
    assert names["deployments"]["shortNames"] == ["deploy"]
    groups = await (await sandbox_http.get("/apis")).json()
    gateway = next(g for g in groups["groups"] if g["name"] == "gateway.networking.k8s.io")
    assert gateway["preferredVersion"]["version"] == "v1"
    gateway_v1beta1 = await (await sandbox_http.get("/apis/gateway.networking.k8s.io/v1beta1")).json()
    assert "referencegrants" in {r["name"] for r in gateway_v1beta1["resources"]}
    aggregated = await sandbox_http.get(
        "/apis", headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"}
    )
    assert aggregated.headers["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    assert (await aggregated.json())["kind"] == "APIGroupDiscoveryList"
    version = await (await sandbox_http.get("/version")).json()
    assert version["major"] == "1"
