"""Fault injection, the audit log and token rights, from Python and over HTTP."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.fixtures.sandbox import deployment_manifest

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


async def statuses(http: aiohttp.ClientSession, count: int, path: str = CONFIGMAPS) -> list[int]:
    codes = []
    for _ in range(count):
        async with http.get(path) as response:
            codes.append(response.status)
    return codes


async def test_error_rate_is_deterministic_when_seeded(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    sandbox_api.faults.seed(7)
    sandbox_api.faults.add("error", resource="configmaps", verb="list", rate=0.5, code=503)
    first = await statuses(sandbox_http, 40)
    sandbox_api.faults.seed(7)
    second = await statuses(sandbox_http, 40)
    assert first == second
    assert set(first) == {200, 503} and 8 <= first.count(503) <= 32
    async with sandbox_http.get(CONFIGMAPS) as response:
        if response.status == 503:
            body = await response.json()
            assert body["reason"] == "ServiceUnavailable" and response.headers["Retry-After"] == "1"
    assert set(await statuses(sandbox_http, 5, "/api/v1/namespaces/default/services")) == {200}


async def test_fault_scope_and_remaining_uses(sandbox_api: SandboxApiServer, sandbox_k8s_client) -> None:
    sandbox_api.store.create("deployments", deployment_manifest("web"))
    sandbox_api.faults.add("error", resource="deployments", verb="patch", name="web", remaining=2)
    apps = client.AppsV1Api(sandbox_k8s_client)
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            await apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
        assert caught.value.status == 500
        assert json.loads(caught.value.body)["reason"] == "InternalError"
    await apps.read_namespaced_deployment("web", "default")  # reads are not in scope
    patched = await apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    assert patched.spec.replicas == 2
    assert sandbox_api.faults.list() == []


async def test_forced_conflicts_only_hit_writes(sandbox_api: SandboxApiServer, sandbox_k8s_client) -> None:
    sandbox_api.store.create("deployments", deployment_manifest("web"))
    sandbox_api.faults.add("conflict", resource="deployments")
    apps = client.AppsV1Api(sandbox_k8s_client)
    await apps.read_namespaced_deployment("web", "default")
    with pytest.raises(ApiException) as caught:
        await apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    assert caught.value.status == 409
    assert json.loads(caught.value.body)["message"] == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert sandbox_api.store.get("deployments", "web", "default")["spec"]["replicas"] == 1


async def test_added_latency(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    sandbox_api.faults.add("latency", latency_ms=150, verb="list")
    started = time.monotonic()
    assert await statuses(sandbox_http, 2) == [200, 200]
    assert time.monotonic() - started >= 0.3


async def test_watch_faults_drop_stall_and_gone(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    sandbox_api.store.create("configmaps", {"metadata": {"name": "a"}}, "default")
    sandbox_api.faults.add("watch_gone", resource="configmaps", remaining=1)
    async with sandbox_http.get(CONFIGMAPS, params={"watch": "1"}) as response:
        event = json.loads(await asyncio.wait_for(response.content.readline(), 3))
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    sandbox_api.faults.add("watch_drop", resource="configmaps", after_seconds=0.3, remaining=1)
    started = time.monotonic()
    async with sandbox_http.get(CONFIGMAPS, params={"watch": "1"}) as response:
        body = await asyncio.wait_for(response.read(), 3)
    assert [json.loads(line)["type"] for line in body.splitlines()] == ["ADDED"]
    assert time.monotonic() - started < 2
    sandbox_api.faults.add("watch_stall", resource="configmaps", remaining=1)
    params = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    async with sandbox_http.get(CONFIGMAPS, params=params) as response:
        sandbox_api.store.create("configmaps", {"metadata": {"name": "b"}}, "default")
        assert await asyncio.wait_for(response.read(), 3) == b""


async def test_faults_over_http(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    response = await sandbox_http.post(
        "/sandbox/faults", json={"kind": "error", "resource": "configmaps", "code": 504}
    )
    assert response.status == 201
    fault = await response.json()
    assert fault["kind"] == "error" and fault["code"] == 504
    assert await statuses(sandbox_http, 1) == [504]
    listed = await (await sandbox_http.get("/sandbox/faults")).json()
    assert [f["id"] for f in listed["items"]] == [fault["id"]] and listed["items"][0]["fired"] == 1
    assert (await sandbox_http.delete(f"/sandbox/faults/{fault['id']}")).status == 200
    assert await statuses(sandbox_http, 1) == [200]
    await sandbox_http.post("/sandbox/faults", json={"kind": "conflict"})
    assert (await sandbox_http.delete("/sandbox/faults")).status == 200
    assert sandbox_api.faults.list() == []
    bad = await sandbox_http.post("/sandbox/faults", json={"kind": "meteor"})
    assert bad.status == 400


async def test_audit_log_from_python_and_http(
    sandbox_api: SandboxApiServer, sandbox_k8s_client, sandbox_http
) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    await apps.create_namespaced_deployment("default", deployment_manifest("web"))
    await apps.patch_namespaced_deployment_status("web", "default", {"status": {"replicas": 1}})
    with pytest.raises(ApiException):
        await apps.read_namespaced_deployment("missing", "default")
    entries = sandbox_api.audit.entries(resource="deployments")
    assert [(e.verb, e.subresource, e.name, e.code) for e in entries] == [
        ("create", None, None, 201),
        ("patch", "status", "web", 200),
        ("get", None, "missing", 404),
    ]
    assert all(e.namespace == "default" and e.group == "apps" for e in entries)
    assert "OpenAPI-Generator" in entries[0].user_agent or "kubernetes" in entries[0].user_agent.lower()
    over_http = await (
        await sandbox_http.get("/sandbox/audit", params={"verb": "patch", "subresource": "status"})
    ).json()
    assert [(e["resource"], e["name"]) for e in over_http["items"]] == [("deployments", "web")]
    await sandbox_http.delete("/sandbox/audit")
    assert len(sandbox_api.audit) == 0


async def test_tokens_over_tls_with_kubernetes_asyncio(tmp_path) -> None:
    async with SandboxApiServer(tls=True) as server:
        server.add_read_only_token("viewer-token", "viewer")
        server.add_user("admin-token", "admin")
        for name, token in (("viewer", "viewer-token"), ("admin", "admin-token"), ("stranger", "nope")):
            configuration = client.Configuration()
            await config.load_kube_config(
                config_file=str(server.write_kubeconfig(tmp_path / name, token=token)),
                client_configuration=configuration,
            )
            async with client.ApiClient(configuration) as api:
                core = client.CoreV1Api(api)
                if name == "stranger":
                    with pytest.raises(ApiException) as caught:
                        await core.list_namespace()
                    assert caught.value.status == 401
                    continue
                assert "default" in [n.metadata.name for n in (await core.list_namespace()).items]
                if name == "viewer":
                    with pytest.raises(ApiException) as caught:
                        await core.create_namespace({"metadata": {"name": "from-viewer"}})
                    status = json.loads(caught.value.body)
                    assert (caught.value.status, status["reason"]) == (403, "Forbidden")
                    assert status["message"] == (
                        'namespaces is forbidden: User "viewer" cannot create resource '
                        '"namespaces" in API group "" at the cluster scope'
                    )
                else:
                    await core.create_namespace({"metadata": {"name": "from-admin"}})
        assert [e.user for e in server.audit.entries(verb="create")] == ["viewer", "admin"]
