"""kubernetes_asyncio and kubectl both work against the sandbox API server."""

from __future__ import annotations

from kubernetes_asyncio import client

from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.fixtures.sandbox import deployment_manifest


async def test_kubernetes_asyncio_crud_round_trip(sandbox_api: SandboxApiServer, sandbox_k8s_client) -> None:
    apps = client.AppsV1Api(sandbox_k8s_client)
    created = await apps.create_namespaced_deployment("default", deployment_manifest("web"))
    assert created.metadata.uid and created.metadata.generation == 1
    fetched = await apps.read_namespaced_deployment("web", "default")
    assert fetched.spec.template.spec.containers[0].image == "nginx:1.25"
    listed = await apps.list_namespaced_deployment("default")
    assert [d.metadata.name for d in listed.items] == ["web"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    await apps.delete_namespaced_deployment("web", "default")
    assert sandbox_api.store.count("deployments") == 0


async def test_kubectl_create_get_and_delete(sandbox_api: SandboxApiServer, kubectl) -> None:
    import json

    manifest = json.dumps(deployment_manifest("web"))
    (await kubectl("create", "--validate=false", "-f", "-", input=manifest)).check()
    listing = await kubectl("get", "deployments")
    assert listing.returncode == 0
    assert listing.stdout.split("\n")[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert listing.stdout.split("\n")[1].split()[:2] == ["web", "0/1"]
    (await kubectl("delete", "deployment", "web")).check()
    assert sandbox_api.store.count("deployments") == 0
