"""Conformance: merge patch, JSON patch with `test`, strategic merge patch and server-side apply."""

from __future__ import annotations

import pytest

from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.fixtures.sandbox import deployment_manifest

WEB = "/apis/apps/v1/namespaces/default/deployments/web"


def headers(content_type: str) -> dict[str, str]:
    return {"Content-Type": content_type}


@pytest.fixture
def web(sandbox_api: SandboxApiServer) -> dict:
    manifest = deployment_manifest("web", replicas=2)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    manifest["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    manifest["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    return sandbox_api.store.create("deployments", manifest)


async def test_merge_patch_merges_maps_and_deletes_nulls(sandbox_http, web) -> None:
    response = await sandbox_http.patch(
        WEB,
        json={"metadata": {"labels": {"app": None, "new": "yes"}}, "spec": {"replicas": 4}},
        headers=headers("application/merge-patch+json"),
    )
    patched = await response.json()
    assert response.status == 200
    assert patched["metadata"]["labels"] == {"new": "yes"}
    assert patched["spec"]["replicas"] == 4
    assert len(patched["spec"]["template"]["spec"]["containers"]) == 2


async def test_json_patch_with_passing_and_failing_test(
    sandbox_api: SandboxApiServer, sandbox_http, web
) -> None:
    guarded = [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
    ]
    response = await sandbox_http.patch(WEB, json=guarded, headers=headers("application/json-patch+json"))
    assert response.status == 200
    assert (await response.json())["spec"]["replicas"] == 3
    response = await sandbox_http.patch(WEB, json=guarded, headers=headers("application/json-patch+json"))
    assert response.status == 422
    status = await response.json()
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["message"] == "testing value /spec/replicas failed: test failed"
    assert sandbox_api.store.get("deployments", "web", "default")["spec"]["replicas"] == 3


async def test_json_patch_on_missing_path_is_422_and_malformed_is_400(sandbox_http, web) -> None:
    response = await sandbox_http.patch(
        WEB,
        json=[{"op": "replace", "path": "/spec/nothing/here", "value": 1}],
        headers=headers("application/json-patch+json"),
    )
    assert response.status == 422
    response = await sandbox_http.patch(
        WEB, json={"op": "replace"}, headers=headers("application/json-patch+json")
    )
    assert response.status == 400


async def test_strategic_merge_patch_merges_lists_by_key(sandbox_http, web) -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:2",
                            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                            "ports": [{"containerPort": 9090}],
                        }
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                }
            }
        }
    }
    response = await sandbox_http.patch(
        WEB, json=patch, headers=headers("application/strategic-merge-patch+json")
    )
    assert response.status == 200
    pod = (await response.json())["spec"]["template"]["spec"]
    app, sidecar = pod["containers"]
    assert (app["name"], app["image"], sidecar["name"]) == ("app", "nginx:2", "sidecar")
    assert app["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
    ]
    assert [p["containerPort"] for p in app["ports"]] == [8080, 9090]
    assert [v["name"] for v in pod["volumes"]] == ["data", "cache"]


async def test_strategic_merge_patch_directives(sandbox_http, web) -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                    "containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}],
                    "volumes": [{"name": "data", "$patch": "delete"}],
                }
            }
        }
    }
    response = await sandbox_http.patch(
        WEB, json=patch, headers=headers("application/strategic-merge-patch+json")
    )
    pod = (await response.json())["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["sidecar", "app"]
    assert pod["containers"][1]["env"] == [{"name": "B", "value": "2"}]
    assert pod["volumes"] == []


async def test_service_ports_merge_by_port(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    sandbox_api.store.create(
        "services",
        {
            "metadata": {"name": "svc"},
            "spec": {"selector": {"app": "x"}, "ports": [{"name": "http", "port": 80}]},
        },
        "default",
    )
    response = await sandbox_http.patch(
        "/api/v1/namespaces/default/services/svc",
        json={"spec": {"ports": [{"name": "grpc", "port": 81}]}},
        headers=headers("application/strategic-merge-patch+json"),
    )
    assert [p["port"] for p in (await response.json())["spec"]["ports"]] == [80, 81]


async def test_server_side_apply_creates_then_merges(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: '1'\n"
    url = "/api/v1/namespaces/default/configmaps/settings?fieldManager=test"
    response = await sandbox_http.patch(url, data=body, headers=headers("application/apply-patch+yaml"))
    assert response.status == 201
    response = await sandbox_http.patch(
        url, data=body.replace("a: '1'", "b: '2'"), headers=headers("application/apply-patch+yaml")
    )
    assert response.status == 200
    assert sandbox_api.store.get("configmaps", "settings", "default")["data"] == {"a": "1", "b": "2"}


async def test_unknown_patch_content_type_is_415(sandbox_http, web) -> None:
    response = await sandbox_http.patch(WEB, data=b"{}", headers=headers("text/plain"))
    assert response.status == 415
    assert (await response.json())["reason"] == "UnsupportedMediaType"
