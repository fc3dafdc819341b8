"""canaryd's writes against the sandbox API server: guarded, minimal, and never losing anyone's edit."""

from __future__ import annotations

import time

import pytest

from canaryd.adapters.informer import MultiInformer
from canaryd.adapters.kube import CANARIES, EVENTS, HTTP_ROUTES, SERVICES, ApiError
from canaryd.adapters.ratelimit import TokenBucket
from canaryd.adapters.writers import Writer, status_merge_patch
from canaryd.api.constants import FINALIZER
from canaryd.core.routes import weight_patch
from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.adapters.kube_sandbox import NAMESPACE, connect, install_crds, route

CANARY = {
    "apiVersion": "canaryd.io/v1alpha1",
    "kind": "Canary",
    "metadata": {"name": "web", "namespace": NAMESPACE},
    "spec": {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "service": {"port": 80},
        "routeRefs": [{"kind": "HTTPRoute", "name": "web"}],
        "analysis": {"interval": "10s", "threshold": 2, "stepWeights": [10, 50]},
    },
}


@pytest.fixture
async def sandbox(tmp_path):
    server = SandboxApiServer()
    await server.start()
    server.store.ensure_namespace(NAMESPACE)
    install_crds(server)
    client = await connect(server.write_kubeconfig(tmp_path / "kubeconfig"), user_agent="canaryd-test")
    routes = MultiInformer(client, HTTP_ROUTES, [NAMESPACE])
    canaries = MultiInformer(client, CANARIES, [NAMESPACE])
    writer = Writer(client, {"httproutes": routes, "canaries": canaries}, identity="test-1")
    try:
        yield server, client, writer, routes
    finally:
        await client.close()
        await server.stop()


async def test_weight_patch_loses_a_race_and_nobody_loses_their_edit(sandbox):
    server, _, writer, routes = sandbox
    stale = server.store.create("httproutes", route())
    # Someone edits the route after canaryd read it: changes the weights and adds a filter.
    server.store.patch(
        "httproutes",
        "web",
        [
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 60},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 40},
            {
                "op": "add",
                "path": "/spec/rules/0/filters",
                "value": [
                    {
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"add": [{"name": "x", "value": "1"}]},
                    }
                ],
            },
        ],
        NAMESPACE,
        patch_type="json",
    )
    ops = weight_patch(stale, "web-primary", "web-canary", 90, 10)
    with pytest.raises(ApiError) as caught:
        await writer.patch_route(HTTP_ROUTES, NAMESPACE, "web", ops)
    assert caught.value.conflict
    fresh = await writer.refresh(HTTP_ROUTES, NAMESPACE, "web")
    assert routes.get(NAMESPACE, "web") == fresh, "the fresh route is in the cache for the next decision"
    await writer.patch_route(
        HTTP_ROUTES, NAMESPACE, "web", weight_patch(fresh, "web-primary", "web-canary", 90, 10)
    )
    final = server.store.get("httproutes", "web", NAMESPACE)
    assert [r["weight"] for r in final["spec"]["rules"][0]["backendRefs"]] == [90, 10]
    assert final["spec"]["rules"][0]["filters"][0]["type"] == "RequestHeaderModifier"


async def test_status_patch_never_touches_the_requested_action(sandbox):
    server, _client, writer, _ = sandbox
    server.store.create("canaries", CANARY)
    request = {"id": "a1", "action": "pause", "requestedBy": "alice"}
    server.store.patch(
        "canaries",
        "web",
        {"status": {"requestedAction": request, "phase": "Progressing"}},
        NAMESPACE,
        subresource="status",
    )
    old = server.store.get("canaries", "web", NAMESPACE)["status"]
    new = {
        "phase": "Progressing",
        "canaryWeight": 10,
        "lastAction": {"id": "a1", "action": "pause", "result": "paused"},
    }
    patch = status_merge_patch(old, new)
    assert "requestedAction" not in patch
    await writer.patch_status(NAMESPACE, "web", patch)
    status = server.store.get("canaries", "web", NAMESPACE)["status"]
    assert status["requestedAction"]["id"] == "a1"
    assert status["canaryWeight"] == 10 and status["lastAction"]["result"] == "paused"
    writes = server.audit.entries(resource="canaries", user_agent="canaryd-test")
    assert [(e.verb, e.subresource) for e in writes] == [("patch", "status")]


async def test_status_merge_patch_clears_what_is_gone_and_skips_what_is_equal():
    old = {"phase": "Progressing", "canaryWeight": 10, "revision": "abc", "requestedAction": {"id": "x"}}
    new = {"phase": "Progressing", "canaryWeight": 20}
    assert status_merge_patch(old, new) == {"canaryWeight": 20, "revision": None}
    assert status_merge_patch(new, new) == {}


async def test_finalizer_added_and_removed_with_a_resource_version_guard(sandbox):
    server, _, writer, _ = sandbox
    created = server.store.create("canaries", CANARY)
    with_finalizer = await writer.add_finalizer(created)
    assert FINALIZER in with_finalizer["metadata"]["finalizers"]
    # Someone else changes the Canary: a removal based on the old read is refused, not applied blindly.
    edited = server.store.patch("canaries", "web", {"metadata": {"labels": {"team": "web"}}}, NAMESPACE)
    with pytest.raises(ApiError) as caught:
        await writer.remove_finalizer(with_finalizer)
    assert caught.value.conflict
    await writer.remove_finalizer(edited)
    assert FINALIZER not in (
        server.store.get("canaries", "web", NAMESPACE)["metadata"].get("finalizers") or []
    )


async def test_event_regards_the_canary(sandbox):
    server, client, writer, _ = sandbox
    canary = server.store.create("canaries", CANARY)
    await writer.record_event(
        canary, "Normal", "StepAdvanced", "canary weight 0% -> 10%", action="Progressing"
    )
    events = (await client.list(EVENTS, NAMESPACE))["items"]
    assert len(events) == 1
    event = events[0]
    assert (event["reason"], event["type"], event["note"]) == (
        "StepAdvanced",
        "Normal",
        "canary weight 0% -> 10%",
    )
    assert event["regarding"]["kind"] == "Canary" and event["regarding"]["name"] == "web"
    assert event["reportingController"] == "canaryd.io/controller"


async def test_client_rate_limit_spaces_requests_and_counts_them(sandbox):
    _server, client, _, _ = sandbox
    client.limiter = TokenBucket(qps=20, burst=2)
    started = time.monotonic()
    for _ in range(8):
        await client.list(HTTP_ROUTES, NAMESPACE)
    elapsed = time.monotonic() - started
    assert elapsed >= (8 - 2) / 20 * 0.9
    assert client.counts[("list", 200)] == 8
    with pytest.raises(ApiError) as caught:
        await client.get(HTTP_ROUTES, NAMESPACE, "missing")
    assert caught.value.not_found and client.counts[("get", 404)] == 1


async def test_token_bucket_allows_a_burst_then_the_rate():
    now = [0.0]
    bucket = TokenBucket(qps=10, burst=3, clock=lambda: now[0])
    for _ in range(3):
        await bucket.acquire()
    assert bucket.waited_seconds == 0
    await bucket.acquire()
    assert bucket.waited_seconds == pytest.approx(0.1)


def _owner(name: str, uid: str) -> dict:
    return {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary", "name": name, "uid": uid}


async def test_releasing_removes_only_our_owner_even_from_a_stale_copy(sandbox):
    server, _, writer, _ = sandbox
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web-primary",
            "namespace": NAMESPACE,
            "ownerReferences": [_owner("web", "uid-web")],
        },
        "spec": {"selector": {"app": "web-primary"}, "ports": [{"port": 80}]},
    }
    stale = server.store.create("services", service)
    # Someone else adds an owner in front of ours after canaryd read the Service: our entry moved.
    server.store.patch(
        "services",
        "web-primary",
        [{"op": "add", "path": "/metadata/ownerReferences/0", "value": _owner("other", "uid-other")}],
        NAMESPACE,
        patch_type="json",
    )
    released = await writer.remove_owner_reference(SERVICES, stale, "uid-web")
    assert released is not None
    stored = server.store.get("services", "web-primary", NAMESPACE)
    assert [o["uid"] for o in stored["metadata"]["ownerReferences"]] == ["uid-other"]
    assert stored["spec"]["selector"] == {"app": "web-primary"}
    # Releasing again is a no-op, and a Service that is gone is not an error.
    assert await writer.remove_owner_reference(SERVICES, stored, "uid-web") == stored
    server.store.delete("services", "web-primary", NAMESPACE)
    assert await writer.remove_owner_reference(SERVICES, stale, "uid-web") is None
