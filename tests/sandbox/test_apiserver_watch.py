"""Conformance: watches (initial state, resumption, 410 Gone, bookmarks, timeouts, selectors)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from canaryd.sandbox.server.apiserver import SandboxApiServer
from canaryd.sandbox.server.errors import ApiError

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def configmap(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


async def read_events(response: aiohttp.ClientResponse, count: int, timeout: float = 3.0) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        line = await asyncio.wait_for(response.content.readline(), max(0.01, deadline - time.monotonic()))
        if not line:
            break
        events.append(json.loads(line))
    return events


def summary(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


async def test_watch_without_version_starts_with_current_state(
    sandbox_api: SandboxApiServer, sandbox_k8s_client
) -> None:
    store = sandbox_api.store
    store.create("configmaps", configmap("existing"), "default")
    core = client.CoreV1Api(sandbox_k8s_client)
    seen: list[tuple[str, str]] = []
    stream = watch.Watch()

    async def change() -> None:
        await asyncio.sleep(0.1)
        store.create("configmaps", configmap("new"), "default")
        store.patch("configmaps", "existing", {"data": {"k": "w"}}, "default")
        store.delete("configmaps", "new", "default")

    changer = asyncio.create_task(change())
    async for event in stream.stream(core.list_namespaced_config_map, "default", timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 4:
            stream.stop()
    await changer
    assert seen == [("ADDED", "existing"), ("ADDED", "new"), ("MODIFIED", "existing"), ("DELETED", "new")]


async def test_watch_resumes_from_resource_version(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    store = sandbox_api.store
    store.create("configmaps", configmap("a"), "default")
    resume_from = store.resource_version
    store.create("configmaps", configmap("b"), "default")
    store.patch("configmaps", "a", {"data": {"k": "2"}}, "default")
    async with sandbox_http.get(
        CONFIGMAPS, params={"watch": "1", "resourceVersion": resume_from}
    ) as response:
        events = await read_events(response, 2)
        assert summary(events) == [("ADDED", "b"), ("MODIFIED", "a")]
        assert int(events[0]["object"]["metadata"]["resourceVersion"]) > int(resume_from)
        store.delete("configmaps", "b", "default")
        assert summary(await read_events(response, 1)) == [("DELETED", "b")]


async def test_too_old_resource_version_is_410_gone() -> None:
    async with (
        SandboxApiServer(history_limit=5) as server,
        aiohttp.ClientSession(base_url=server.url) as http,
    ):
        old = server.store.resource_version
        for index in range(10):
            server.store.create("configmaps", configmap(f"cm-{index}"), "default")
        async with http.get(CONFIGMAPS, params={"watch": "true", "resourceVersion": old}) as response:
            assert response.status == 200
            (event,) = await read_events(response, 1)
        assert event["type"] == "ERROR"
        status = event["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
        assert status["message"].startswith(f"too old resource version: {old}")
        with pytest.raises(ApiError) as caught:
            server.store.watch("configmaps", resource_version=old)
        assert caught.value.code == 410
        # A version still in the history resumes fine.
        recent = str(int(server.store.resource_version) - 2)
        async with http.get(CONFIGMAPS, params={"watch": "true", "resourceVersion": recent}) as response:
            assert summary(await read_events(response, 2)) == [("ADDED", "cm-8"), ("ADDED", "cm-9")]


async def test_kubernetes_asyncio_sees_410_as_api_exception(tmp_path) -> None:
    from kubernetes_asyncio import config

    async with SandboxApiServer(history_limit=3) as server:
        old = server.store.resource_version
        for index in range(5):
            server.store.create("configmaps", configmap(f"cm-{index}"), "default")
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(server.write_kubeconfig(tmp_path / "kubeconfig")),
            client_configuration=configuration,
        )
        async with client.ApiClient(configuration) as api:
            core = client.CoreV1Api(api)
            with pytest.raises(ApiException) as caught:
                async for _ in watch.Watch().stream(
                    core.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=2
                ):
                    pass
    assert caught.value.status == 410
    assert "Expired" in str(caught.value.reason)


async def test_bookmarks_carry_the_current_resource_version(
    sandbox_api: SandboxApiServer, sandbox_http
) -> None:
    sandbox_api.store.create("configmaps", configmap("a"), "default")
    now = sandbox_api.store.resource_version
    async with sandbox_http.get(
        CONFIGMAPS, params={"watch": "1", "resourceVersion": now, "allowWatchBookmarks": "true"}
    ) as response:
        (bookmark,) = await read_events(response, 1, timeout=2)
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["object"]["kind"] == "ConfigMap"
        assert bookmark["object"]["metadata"]["resourceVersion"] == now
        sandbox_api.store.create("configmaps", configmap("b"), "default")
        events = await read_events(response, 2, timeout=2)
        assert events[0]["type"] == "ADDED"
        assert events[1] == {
            "type": "BOOKMARK",
            "object": {
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": sandbox_api.store.resource_version},
            },
        }


async def test_no_bookmarks_unless_asked(sandbox_api: SandboxApiServer, sandbox_http) -> None:
    now = sandbox_api.store.resource_version
    async with sandbox_http.get(
        CONFIGMAPS, params={"watch": "1", "resourceVersion": now, "timeoutSeconds": "1"}
    ) as response:
        assert await read_events(response, 1, timeout=3) == []


async def test_timeout_seconds_ends_the_stream(sandbox_http) -> None:
    started = time.monotonic()
    async with sandbox_http.get(CONFIGMAPS, params={"watch": "1", "timeoutSeconds": "1"}) as response:
        body = await asyncio.wait_for(response.read(), 5)
    elapsed = time.monotonic() - started
    assert body == b""
    assert 0.9 <= elapsed < 2.5


async def test_selectors_turn_label_changes_into_added_and_deleted(
    sandbox_api: SandboxApiServer, sandbox_http
) -> None:
    store = sandbox_api.store
    store.create("configmaps", configmap("a", tier="web"), "default")
    store.create("configmaps", configmap("b", tier="db"), "default")
    async with sandbox_http.get(CONFIGMAPS, params={"watch": "1", "labelSelector": "tier=web"}) as response:
        assert summary(await read_events(response, 1)) == [("ADDED", "a")]
        store.patch("configmaps", "a", {"metadata": {"labels": {"tier": "db"}}}, "default")
        store.patch("configmaps", "b", {"metadata": {"labels": {"tier": "web"}}}, "default")
        store.patch("configmaps", "b", {"data": {"k": "changed"}}, "default")
        events = await read_events(response, 3)
        assert summary(events) == [("DELETED", "a"), ("ADDED", "b"), ("MODIFIED", "b")]
        assert events[0]["object"]["metadata"]["labels"] == {"tier": "db"}


async def test_field_selector_on_watch_and_single_object_watch(
    sandbox_api: SandboxApiServer, sandbox_http
) -> None:
    store = sandbox_api.store
    store.create("configmaps", configmap("a"), "default")
    store.create("configmaps", configmap("b"), "default")
    async with sandbox_http.get(
        CONFIGMAPS, params={"watch": "1", "fieldSelector": "metadata.name=b"}
    ) as response:
        assert summary(await read_events(response, 1)) == [("ADDED", "b")]
        store.patch("configmaps", "a", {"data": {"k": "1"}}, "default")
        store.patch("configmaps", "b", {"data": {"k": "1"}}, "default")
        assert summary(await read_events(response, 1)) == [("MODIFIED", "b")]
    async with sandbox_http.get("/api/v1/watch/namespaces/default/configmaps/a") as response:
        assert summary(await read_events(response, 1)) == [("ADDED", "a")]


async def test_send_initial_events_ends_with_marked_bookmark(
    sandbox_api: SandboxApiServer, sandbox_http
) -> None:
    sandbox_api.store.create("configmaps", configmap("a"), "default")
    params = {
        "watch": "1",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
    }
    async with sandbox_http.get(CONFIGMAPS, params=params) as response:
        added, bookmark = await read_events(response, 2)
    assert summary([added]) == [("ADDED", "a")]
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_python_watch_api(sandbox_api: SandboxApiServer) -> None:
    store = sandbox_api.store
    store.create("configmaps", configmap("a"), "default")
    async with store.watch("configmaps", "default") as stream:
        store.create("configmaps", configmap("b"), "default")
        received = []
        async for event in stream:
            received.append((event.type, event.object["metadata"]["name"]))
            event.object["data"] = {"mutated": "by the reader"}
            if len(received) == 2:
                break
    assert received == [("ADDED", "a"), ("ADDED", "b")]
    assert store.get("configmaps", "b", "default")["data"] == {"k": "v"}
    assert store.open_watch_count() == 0


async def test_store_subscribers_see_every_change(sandbox_api: SandboxApiServer) -> None:
    seen = []
    unsubscribe = sandbox_api.store.subscribe(
        lambda event: seen.append((event.type, event.storage_key, event.obj["metadata"]["name"]))
    )
    sandbox_api.store.create("configmaps", configmap("a"), "default")
    sandbox_api.store.delete("configmaps", "a", "default")
    unsubscribe()
    sandbox_api.store.create("configmaps", configmap("b"), "default")
    assert seen == [("ADDED", ("", "configmaps"), "a"), ("DELETED", ("", "configmaps"), "a")]


async def test_watch_is_released_when_the_client_goes_away(sandbox_api: SandboxApiServer) -> None:
    async with aiohttp.ClientSession(base_url=sandbox_api.url) as http:
        response = await http.get(CONFIGMAPS, params={"watch": "1"})
        await asyncio.sleep(0.1)
        assert sandbox_api.store.open_watch_count() == 1
        response.close()
    for _ in range(50):
        if sandbox_api.store.open_watch_count() == 0:
            break
        await asyncio.sleep(0.05)
    assert sandbox_api.store.open_watch_count() == 0
