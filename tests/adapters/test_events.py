"""The Events canaryd records, as every reader sees them: on the sandbox and on a real kube-apiserver.

A kube-apiserver stores each Event once and serves it through core ``v1`` and
``events.k8s.io/v1``. canaryd writes through core ``v1`` so that its Events
carry what both generations of readers sort and display by (``eventTime``
and ``lastTimestamp``, ``count``, ``source``), and ``kubectl canary status``
shows each Event once although it reads both APIs. The same checks run on
the sandbox and on the real control plane, so the sandbox serves the mapping
exactly as the real server does.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from canaryd.adapters.ctl_client import CtlClient
from canaryd.adapters.kube import CORE_EVENTS, EVENTS, KubeClient
from canaryd.adapters.writers import Writer
from canaryd.api.timestamps import parse_rfc3339
from canaryd.sandbox.server.apiserver import SandboxApiServer


@dataclass
class Backend:
    name: str
    kubeconfig: Path
    namespace: str
    kubectl: str

    def run_kubectl(self, *args: str) -> str:
        result = subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(params=["sandbox", "real cluster"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    namespace = f"ev-{uuid.uuid4().hex[:8]}"
    if request.param == "real cluster":
        cluster = request.getfixturevalue("real_cluster")
        status, body = cluster.api(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        assert status == 201, body
        try:
            yield Backend("real cluster", Path(cluster.kubeconfig), namespace, str(cluster.kubectl_path))
        finally:
            cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")
        return
    server = SandboxApiServer()
    await server.start()
    try:
        server.store.ensure_namespace(namespace)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.skip("kubectl is not installed")
        yield Backend("sandbox", kubeconfig, namespace, kubectl)
    finally:
        await server.stop()


def canary_about(namespace: str) -> dict[str, Any]:
    """The Canary an Event regards (the Event API does not require it to exist)."""
    return {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "web", "namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "7"},
    }


async def test_an_event_carries_the_fields_of_both_apis_and_kubectl_sorts_it(backend: Backend) -> None:
    client = await KubeClient.connect(str(backend.kubeconfig), user_agent="canaryd-test")
    try:
        canary = canary_about(backend.namespace)
        writer = Writer(client, {}, identity="canaryd-0")
        await writer.record_event(canary, "Normal", "StepAdvanced", "step 1 of 4", action="Progressing")
        await writer.record_event(
            canary, "Warning", "AnalysisFailed", "failed check 1 of 5", action="Progressing"
        )
        core = (await client.list(CORE_EVENTS, backend.namespace))["items"]
        new = (await client.list(EVENTS, backend.namespace))["items"]
    finally:
        await client.close()

    assert sorted(e["reason"] for e in core) == ["AnalysisFailed", "StepAdvanced"]
    by_uid = {e["metadata"]["uid"]: e for e in new}
    assert set(by_uid) == {e["metadata"]["uid"] for e in core}, "one object, two views"
    for event in core:
        seen_through_events_api = by_uid[event["metadata"]["uid"]]
        # What core v1 readers (kubectl get events, describe, dashboards) sort and display by.
        assert event["lastTimestamp"] == event["firstTimestamp"]
        assert event["lastTimestamp"].endswith("Z") and "." not in event["lastTimestamp"], "whole seconds"
        event_time = parse_rfc3339(event["eventTime"])
        last = parse_rfc3339(event["lastTimestamp"])
        assert event_time is not None and last is not None
        assert last == event_time.replace(microsecond=0)
        assert event["count"] == 1
        assert event["source"] == {"component": "canaryd.io/controller"}
        assert event["reportingComponent"] == "canaryd.io/controller"
        assert event["reportingInstance"] == "canaryd-0" and event["action"] == "Progressing"
        assert event["involvedObject"]["uid"] == canary["metadata"]["uid"]
        # events.k8s.io/v1 shows the same values under its own names.
        assert seen_through_events_api["deprecatedLastTimestamp"] == event["lastTimestamp"]
        assert seen_through_events_api["deprecatedFirstTimestamp"] == event["firstTimestamp"]
        assert seen_through_events_api["deprecatedCount"] == event["count"]
        assert seen_through_events_api["deprecatedSource"] == event["source"]
        assert seen_through_events_api["eventTime"] == event["eventTime"]
        assert seen_through_events_api["note"] == event["message"]
        assert seen_through_events_api["regarding"] == event["involvedObject"]
        assert seen_through_events_api["reportingController"] == event["reportingComponent"]

    # In a thread: the sandbox answers on this test's event loop.
    listed = await asyncio.to_thread(
        backend.run_kubectl,
        "get", "events", "-n", backend.namespace, "--sort-by=.lastTimestamp",
        "-o", "custom-columns=REASON:.reason,LAST:.lastTimestamp,COUNT:.count,FROM:.source.component",
    )  # fmt: skip
    rows = [line.split() for line in listed.strip().splitlines()[1:]]
    assert [row[0] for row in rows] == ["StepAdvanced", "AnalysisFailed"]
    assert all(row[2:] == ["1", "canaryd.io/controller"] and row[1] != "<none>" for row in rows)


async def test_an_event_written_through_events_k8s_io_has_the_same_zero_values_on_both(
    backend: Backend,
) -> None:
    """Another controller's Event (events.k8s.io/v1, no deprecated fields): what each view shows."""
    client = await KubeClient.connect(str(backend.kubeconfig), user_agent="canaryd-test")
    try:
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "other", "namespace": backend.namespace},
            "eventTime": "2026-12-01T12:00:00.123456Z", "reportingController": "example.com/other",
            "reportingInstance": "other-0", "action": "Sync", "reason": "Synced", "note": "synced",
            "type": "Normal",
            "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "name": "x",
                          "namespace": backend.namespace},
        }  # fmt: skip
        await client.create(EVENTS, backend.namespace, body)
        (core,) = (await client.list(CORE_EVENTS, backend.namespace))["items"]
        (new,) = (await client.list(EVENTS, backend.namespace))["items"]
    finally:
        await client.close()
    assert (core["firstTimestamp"], core["lastTimestamp"], core["source"]) == (None, None, {})
    assert "count" not in core
    assert (new["deprecatedFirstTimestamp"], new["deprecatedLastTimestamp"], new["deprecatedSource"]) == (
        None,
        None,
        {},
    )
    assert "deprecatedCount" not in new
    assert core["eventTime"] == new["eventTime"] == "2026-12-01T12:00:00.123456Z"


async def test_status_reads_both_event_apis_and_shows_each_event_once(backend: Backend) -> None:
    kube = await KubeClient.connect(str(backend.kubeconfig), user_agent="canaryd-test")
    ctl = await CtlClient.connect(str(backend.kubeconfig))
    try:
        canary = canary_about(backend.namespace)
        writer = Writer(kube, {}, identity="canaryd-0")
        for step in range(1, 4):
            await writer.record_event(
                canary, "Normal", "StepAdvanced", f"step {step} of 4", action="Progressing"
            )
        events = await ctl.events_for(canary)
    finally:
        await ctl.close()
        await kube.close()
    assert [e["message"] for e in events] == ["step 1 of 4", "step 2 of 4", "step 3 of 4"]
    assert len({e["uid"] for e in events}) == 3
