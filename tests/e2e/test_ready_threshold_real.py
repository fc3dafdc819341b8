"""``primaryReadyThreshold`` on the real control plane, with pods that become ready one at a time.

kwok makes pods ready the moment they are scheduled; pods whose template carries
``cluster.canaryd.io/ready-by-hand`` it leaves Pending, and this test plays their kubelet: it reports
them Ready one by one (``Cluster.make_pod_ready``), as readiness probes that pass one pod at a time
would. The real Deployment controller turns that into the Deployment's status (and removes the old
revision's pods as maxUnavailable allows), which is all canaryd reads. Two Canaries of 4 replicas:
``half`` (threshold 50) and ``whole`` (the default 100); what is asserted is the phase and the
condition a user sees after each pod: held below the threshold, saying how many ready pods it needs,
and going on at the threshold, in initialization and in promotion.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import pytest

from cluster.harness import READY_BY_HAND_ANNOTATION, Cluster
from tests.e2e.backends import REAL, Backend, backend
from tests.runtime import world

pytestmark = [pytest.mark.e2e, pytest.mark.realcluster]

HELD = {READY_BY_HAND_ANNOTATION: "true"}
REPLICAS = 4


def phase(env: Backend, name: str) -> str | None:
    return world.status(env.store, env.ns, name).get("phase")


def said(env: Backend, name: str, kind: str) -> str:
    condition = world.condition(env.store, env.ns, name, kind) or {}
    return f"{condition.get('reason')}: {condition.get('message')}"


def pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    selector = urllib.parse.quote(f"app={app}")
    status, body = cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
    assert status == 200, body
    return [p for p in body.get("items") or [] if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def ready_one(env: Backend, app: str, template_hash: str | None = None) -> None:
    """Make one more pod of ``app`` ready (of the ReplicaSet with ``template_hash`` when given)."""
    cluster: Cluster = env.store.cluster

    def waiting() -> list[dict[str, Any]]:
        return sorted(
            (
                p
                for p in pods(cluster, env.ns, app)
                if not is_ready(p)
                and template_hash in (None, p["metadata"]["labels"].get("pod-template-hash"))
            ),
            key=lambda p: p["metadata"]["name"],
        )

    pending = await world.wait_until(waiting, timeout=30, interval=0.2, message=f"a pending pod of {app}")
    await asyncio.to_thread(cluster.make_pod_ready, env.ns, pending[0]["metadata"]["name"])


def deployment_counts(env: Backend, name: str) -> tuple[int, int, int]:
    """(replicas, updatedReplicas, readyReplicas) of a Deployment's status."""
    status = env.store.get("deployments", name, env.ns).get("status") or {}
    return (status.get("replicas", 0), status.get("updatedReplicas", 0), status.get("readyReplicas", 0))


async def until(check: Any, message: str, timeout: float = 30) -> None:
    await world.wait_until(check, timeout=timeout, interval=0.2, message=message)


async def stays(env: Backend, name: str, wanted: str, seconds: float = 3.0) -> None:
    """``name`` is in phase ``wanted`` and still is ``seconds`` later (well past its interval)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        assert phase(env, name) == wanted, (
            name, phase(env, name), said(env, name, "Progressing"), seen(env, f"{name}-primary"),
        )  # fmt: skip
        await asyncio.sleep(0.2)


def seen(env: Backend, name: str) -> str:
    """A Deployment's status counts and its pods (template hash, ready), for a failure message."""
    listed = [
        f"{p['metadata']['name']}({p['metadata']['labels'].get('pod-template-hash')}, ready={is_ready(p)})"
        for p in pods(env.store.cluster, env.ns, name)
    ]
    status = env.store.get("deployments", name, env.ns).get("status") or {}
    counts = {k: v for k, v in status.items() if k != "conditions"}
    return f"{name} status {counts}; pods {listed}"


def new_replica_set_hash(env: Backend, name: str) -> str:
    status, body = env.store.cluster.api(
        "GET", f"/apis/apps/v1/namespaces/{env.ns}/replicasets?labelSelector=app%3D{name}"
    )
    assert status == 200, body
    def revision(replica_set: dict[str, Any]) -> int:
        annotations = replica_set["metadata"].get("annotations") or {}
        return int(annotations.get("deployment.kubernetes.io/revision", 0))

    newest = max(body["items"], key=revision)
    return str(newest["metadata"]["labels"]["pod-template-hash"])


async def test_a_primary_below_its_ready_threshold_holds_and_at_it_goes_on(
    request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    async with backend(REAL, request) as env:
        thresholds = {"half": 50, "whole": 100}
        for name, threshold in thresholds.items():
            target = world.deployment(env.ns, name, replicas=REPLICAS, annotations=HELD)
            target["spec"]["strategy"] = {
                "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%", "maxSurge": "25%"},
            }  # fmt: skip
            env.store.create("deployments", target)
            env.store.create("httproutes.gateway.networking.k8s.io", env.route(name))
            canary = world.canary(env.ns, name, step_weights=[50], interval="2s", metrics=[], deadline=300)
            canary["spec"]["primaryReadyThreshold"] = threshold
            env.store.create("canaries.canaryd.io", canary)
        controller = env.controller(tmp_path).start()
        try:
            # Initialization: 1 of 4 ready holds both; "half" goes on at 2, "whole" only at 4.
            for name in thresholds:
                await ready_one(env, f"{name}-primary")
                await until(lambda n=name: deployment_counts(env, f"{n}-primary")[2] == 1, f"{name}: 1 ready")
            for name in thresholds:
                await stays(env, name, "Initializing")
            assert "1/4 ready" in said(env, "half", "Ready"), said(env, "half", "Ready")
            assert "2 ready needed (primaryReadyThreshold 50%)" in said(env, "half", "Ready")
            assert "1/4 ready" in said(env, "whole", "Ready") and "needed" not in said(env, "whole", "Ready")
            for name in thresholds:
                await ready_one(env, f"{name}-primary")
            await until(lambda: phase(env, "half") == "Initialized", "half Initialized at 2 of 4")
            assert deployment_counts(env, "half-primary")[2] == 2
            await ready_one(env, "whole-primary")
            await stays(env, "whole", "Initializing")
            await ready_one(env, "whole-primary")
            await until(lambda: phase(env, "whole") == "Initialized", "whole Initialized at 4 of 4")
            for _ in range(2):  # the rest of half's primary, so both start the run from 4 ready
                await ready_one(env, "half-primary")

            # The run: the canary (the target, scaled up again) needs all its pods ready to take traffic.
            for name in thresholds:
                world.new_revision(env.store, env.ns, name, "shop:2.0", HELD)
            for name in thresholds:
                await until(lambda n=name: env.store.get("deployments", n, env.ns)["spec"]["replicas"] == 4,
                            f"{name} scaled up")  # fmt: skip
                for _ in range(REPLICAS):
                    await ready_one(env, name)
            for name in thresholds:
                await until(lambda n=name: phase(env, n) == "Promoting", f"{name} Promoting", timeout=60)

            # Promotion: the old revision's pods still count as ready, never as serving the new one.
            for name in thresholds:
                await until(
                    lambda n=name: deployment_counts(env, f"{n}-primary")[1] >= 1, f"{name}-primary updating"
                )
            hashes = {name: new_replica_set_hash(env, f"{name}-primary") for name in thresholds}
            for name in thresholds:
                await ready_one(env, f"{name}-primary", hashes[name])
            await stays(env, "half", "Promoting")
            message = said(env, "half", "Progressing")
            assert "2 ready needed (primaryReadyThreshold 50%)" in message, message
            await ready_one(env, "half-primary", hashes["half"])
            await until(lambda: phase(env, "half") in ("Finalizing", "Succeeded"), "half goes on at 2 of 4")
            replicas, updated, ready = deployment_counts(env, "half-primary")
            assert replicas == updated == REPLICAS and ready >= 2, (replicas, updated, ready)
            assert not all(is_ready(p) for p in pods(env.store.cluster, env.ns, "half-primary")), (
                "half went on before all its new pods were ready"
            )
            # whole has 1 new pod ready: 2 and 3 hold it, the 4th lets it go on.
            await ready_one(env, "whole-primary", hashes["whole"])
            await stays(env, "whole", "Promoting")
            await ready_one(env, "whole-primary", hashes["whole"])
            await stays(env, "whole", "Promoting", seconds=2)
            assert deployment_counts(env, "whole-primary")[2] == 3, seen(env, "whole-primary")
            await ready_one(env, "whole-primary", hashes["whole"])
            await until(lambda: phase(env, "whole") in ("Finalizing", "Succeeded"), "whole goes on at 4 of 4")
        finally:
            code = controller.stop()
    assert code == 0, controller.log()[-3000:]
