"""The list+watch caches against the sandbox API server, including its failure modes."""

from __future__ import annotations

import asyncio

import pytest

from canaryd.adapters.informer import Informer
from canaryd.adapters.kube import DEPLOYMENTS
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
