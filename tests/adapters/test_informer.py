"""The list+watch caches against the sandbox API server, including its failure modes."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client import Configuration

from canaryd.adapters.informer import LAST_APPLIED, Informer
from canaryd.adapters.kube import DEPLOYMENTS, KubeClient
from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.adapters.kube_sandbox import NAMESPACE, connect, deployment


@pytest.fixture
async def sandbox(tmp_path):
    server = SandboxApiServer(bookmark_interval=0.2)
    await server.start()
    server.store.ensure_namespace(NAMESPACE)
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    client = await connect(kubeconfig)
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop()


async def eventually(check, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_cache_lists_then_follows_changes_in_order(sandbox):
    server, client = sandbox
    server.store.create("deployments", deployment("a"))
    seen: list[tuple[str, str]] = []
    informer = Informer(client, DEPLOYMENTS, NAMESPACE)
    informer.add_handler(lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))
    informer.start()
    try:
        assert await informer.wait_synced(5)
        assert informer.get(NAMESPACE, "a") is not None
        server.store.create("deployments", deployment("b"))
        server.store.patch("deployments", "a", {"spec": {"replicas": 3}}, NAMESPACE)
        server.store.delete("deployments", "b", NAMESPACE)
        await eventually(lambda: ("DELETED", "b") in seen)
        assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        assert informer.get(NAMESPACE, "a")["spec"]["replicas"] == 3
        assert informer.get(NAMESPACE, "b") is None
    finally:
        await informer.stop()


async def test_a_late_answer_about_a_deleted_object_does_not_bring_it_back(sandbox):
    server, client = sandbox
    server.store.create("deployments", deployment("gone"))
    informer = Informer(client, DEPLOYMENTS, NAMESPACE)
    informer.start()
    try:
        assert await informer.wait_synced(5)
        last_answer = server.store.patch("deployments", "gone", {"spec": {"replicas": 2}}, NAMESPACE)
        server.store.delete("deployments", "gone", NAMESPACE)
        await eventually(lambda: informer.get(NAMESPACE, "gone") is None)
        # The answer to the controller's last write comes in after the watch reported the deletion.
        informer.store(last_answer)
        assert informer.get(NAMESPACE, "gone") is None
        # A new object of the same name is a different object (another uid): it is cached.
        server.store.create("deployments", deployment("gone"))
        await eventually(lambda: informer.get(NAMESPACE, "gone") is not None)
    finally:
        await informer.stop()


async def test_410_gone_relists_and_reports_what_vanished_meanwhile(sandbox):
    server, client = sandbox
    server.store.create("deployments", deployment("stays"))
    server.store.create("deployments", deployment("goes"))
    seen: list[tuple[str, str]] = []
    informer = Informer(client, DEPLOYMENTS, NAMESPACE)
    informer.add_handler(lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))
    informer.start()
    try:
        assert await informer.wait_synced(5)
        # The next watch is answered with 410; meanwhile one object goes and one comes.
        server.faults.add("watch_gone", resource="deployments", remaining=1)
        server.store.close_watches("deployments")
        server.store.delete("deployments", "goes", NAMESPACE)
        server.store.create("deployments", deployment("new"))
        await eventually(lambda: informer.relists >= 1 and informer.get(NAMESPACE, "new") is not None)
        assert informer.get(NAMESPACE, "goes") is None
        assert ("DELETED", "goes") in seen
        assert informer.get(NAMESPACE, "stays") is not None
        # And it keeps following changes after the relist.
        server.store.patch("deployments", "stays", {"spec": {"replicas": 4}}, NAMESPACE)
        await eventually(lambda: informer.get(NAMESPACE, "stays")["spec"]["replicas"] == 4)
    finally:
        await informer.stop()


async def test_stalled_watch_is_restarted_and_loses_nothing(sandbox):
    server, client = sandbox
    informer = Informer(client, DEPLOYMENTS, NAMESPACE, stall_timeout=0.5)
    informer.start()
    try:
        assert await informer.wait_synced(5)
        server.faults.add("watch_stall", resource="deployments", remaining=1)
        server.store.close_watches("deployments")
        await asyncio.sleep(0.1)
        server.store.create("deployments", deployment("during-stall"))
        await eventually(lambda: informer.get(NAMESPACE, "during-stall") is not None, timeout=5)
        assert informer.stalls >= 1
    finally:
        await informer.stop()


async def test_own_write_is_visible_at_once_and_the_echo_is_not_reported_twice(sandbox):
    server, client = sandbox
    server.store.create("deployments", deployment("a"))
    seen: list[str] = []
    informer = Informer(client, DEPLOYMENTS, NAMESPACE)
    informer.add_handler(lambda kind, obj: seen.append(obj["metadata"]["resourceVersion"]))
    informer.start()
    try:
        assert await informer.wait_synced(5)
        written = await client.patch(DEPLOYMENTS, NAMESPACE, "a", {"spec": {"replicas": 2}})
        informer.store(written)
        assert informer.get(NAMESPACE, "a")["spec"]["replicas"] == 2
        await asyncio.sleep(0.3)
        assert seen.count(written["metadata"]["resourceVersion"]) == 1
    finally:
        await informer.stop()


async def test_a_relist_never_takes_back_a_newer_own_write(sandbox):
    server, client = sandbox
    server.store.create("deployments", deployment("a"))
    informer = Informer(client, DEPLOYMENTS, NAMESPACE)
    informer.start()
    try:
        assert await informer.wait_synced(5)
        snapshot = await client.list(DEPLOYMENTS, NAMESPACE)  # what a slow LIST would answer
        written = await client.patch(DEPLOYMENTS, NAMESPACE, "a", {"spec": {"replicas": 5}})
        informer.store(written)
        original_list = client.list

        async def slow_list(*args, **kwargs):
            return snapshot

        client.list = slow_list  # the LIST answer predates the write canaryd just made
        await informer._list()
        client.list = original_list
        assert informer.get(NAMESPACE, "a")["spec"]["replicas"] == 5
    finally:
        await informer.stop()


def as_a_real_server_sends(name: str, rv: str) -> dict[str, Any]:
    """A Deployment as kube-apiserver sends it: managedFields and kubectl apply's last-applied copy."""
    obj = deployment(name)
    applied = json.dumps(obj, separators=(",", ":"))
    obj["metadata"].update(
        {
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "labels": {"app": name},
            "annotations": {
                LAST_APPLIED: applied,
                "canaryd.io/revision": "abc123",
                "deployment.kubernetes.io/revision": "1",
            },
            "managedFields": [
                {
                    "manager": "kubectl-client-side-apply",
                    "operation": "Update",
                    "apiVersion": "apps/v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {}}}},
                }
            ],
        }
    )
    obj["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "2026-12-01"}
    obj["status"] = {"replicas": 1, "readyReplicas": 1, "observedGeneration": 1}
    return obj


def without_trimmed_parts(obj: dict[str, Any]) -> dict[str, Any]:
    expected = copy.deepcopy(obj)
    expected["metadata"].pop("managedFields")
    expected["metadata"]["annotations"].pop(LAST_APPLIED)
    return expected


@pytest.fixture
async def real_shaped_api():
    """An API that lists ``listed`` and then sends one watch event for ``watched``, then bookmarks only."""
    listed = as_a_real_server_sends("listed", "10")
    watched = as_a_real_server_sends("watched", "11")

    async def deployments(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response({"kind": "DeploymentList", "metadata": {"resourceVersion": "10"},
                                      "items": [copy.deepcopy(listed)]})  # fmt: skip
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(json.dumps({"type": "ADDED", "object": copy.deepcopy(watched)}).encode() + b"\n")
        while True:
            bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "11"}}}
            await response.write(json.dumps(bookmark).encode() + b"\n")
            await asyncio.sleep(0.1)

    app = web.Application()
    app.router.add_get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", deployments)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    configuration = Configuration()
    configuration.host = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = KubeClient(configuration)
    try:
        yield client, listed, watched
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.parametrize("trim", [True, False])
async def test_cached_objects_keep_everything_but_managed_fields_and_the_last_applied_copy(
    real_shaped_api, trim
):
    client, listed, watched = real_shaped_api
    informer = Informer(client, DEPLOYMENTS, NAMESPACE, trim=trim)
    seen: list[dict[str, Any]] = []
    informer.add_handler(lambda kind, obj: seen.append(obj))
    informer.start()
    try:
        assert await informer.wait_synced(5)
        await eventually(lambda: informer.get(NAMESPACE, "watched") is not None)
        written = as_a_real_server_sends("written", "12")
        sent = copy.deepcopy(written)
        informer.store(written)
        assert written == sent  # the writer's answer itself is left as it came
        for obj in (listed, watched, written):
            cached = informer.get(NAMESPACE, obj["metadata"]["name"])
            assert cached == (without_trimmed_parts(obj) if trim else obj)
        assert seen == [informer.get(NAMESPACE, name) for name in ("listed", "watched", "written")]
    finally:
        await informer.stop()


async def test_an_annotation_map_that_held_only_the_last_applied_copy_goes_too(real_shaped_api):
    client, _, _ = real_shaped_api
    informer = Informer(client, DEPLOYMENTS, NAMESPACE)
    written = as_a_real_server_sends("only-applied", "12")
    written["metadata"]["annotations"] = {LAST_APPLIED: "{}"}
    informer.store(written)
    cached = informer.get(NAMESPACE, "only-applied")
    assert cached is not None and "annotations" not in cached["metadata"]
    assert cached["metadata"]["labels"] == {"app": "only-applied"}


async def test_the_list_is_read_in_pages_and_the_watch_starts_from_the_first_pages_version(sandbox):
    server, client = sandbox
    for index in range(5):
        server.store.create("deployments", deployment(f"d{index}"))
    informer = Informer(client, DEPLOYMENTS, NAMESPACE, page_size=2)
    informer.start()
    try:
        assert await informer.wait_synced(5)
        assert sorted(o["metadata"]["name"] for o in informer.items()) == [f"d{i}" for i in range(5)]
        assert client.counts[("list", 200)] == 3
        server.store.patch("deployments", "d4", {"spec": {"replicas": 4}}, NAMESPACE)
        await eventually(lambda: informer.get(NAMESPACE, "d4")["spec"]["replicas"] == 4)
    finally:
        await informer.stop()


async def test_on_a_real_api_server_cached_objects_come_without_managed_fields_or_the_applied_copy(
    real_cluster,
):
    namespace = f"trim-{uuid.uuid4().hex[:8]}"
    real_cluster.kubectl("create", "namespace", namespace)
    try:

        def applied(name: str) -> None:
            manifest = deployment(name)
            manifest["metadata"].update(namespace=namespace, annotations={"team.example/owner": "web"})
            real_cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

        applied("listed")
        client = await KubeClient.connect(str(real_cluster.kubeconfig))
        informer = Informer(client, DEPLOYMENTS, namespace)
        informer.start()
        try:
            assert await informer.wait_synced(10)
            applied("watched")
            await eventually(lambda: informer.get(namespace, "watched") is not None, timeout=10)
            answer = await client.patch(DEPLOYMENTS, namespace, "listed", {"spec": {"replicas": 2}})
            assert answer["metadata"]["managedFields"] and LAST_APPLIED in answer["metadata"]["annotations"]
            informer.store(answer)
            for name in ("listed", "watched"):
                cached = informer.get(namespace, name)
                assert cached is not None
                assert "managedFields" not in cached["metadata"]
                assert cached["metadata"]["annotations"].get("team.example/owner") == "web"
                assert LAST_APPLIED not in cached["metadata"]["annotations"]
            assert informer.get(namespace, "listed")["spec"] == answer["spec"]
        finally:
            await informer.stop()
            await client.close()
    finally:
        real_cluster.kubectl("delete", "namespace", namespace, "--wait=false")
