"""The workloads around a run on the sandbox: the primary's HPA, pod roles, and a failed canary kept up.

The controller runs in-process against the sandbox cluster, whose
simulators turn Deployments into ReplicaSets and Pods; the analysis is
scripted. What is asserted is what a user sees with kubectl: the
HorizontalPodAutoscaler canaryd keeps for ``<target>-primary``, the
``canaryd.io/role`` label on each side's Pods, and the replicas of a
rolled-back canary during ``abortScaleDownDelay``, and a primary whose pods
become ready one by one (the simulator's ``ready-interval-seconds`` knob)
holding initialization and promotion until ``primaryReadyThreshold`` of them
are ready.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from canaryd.api.constants import LABEL_ROLE, Verdict
from canaryd.runtime.controller import running_controller
from canaryd.sandbox.sim.knobs import ANNOTATION_READY_INTERVAL
from tests.runtime import world
from tests.runtime.test_controller import ScriptedAnalysis, settings_for
from tests.runtime.test_webhooks_sandbox import app, until_phase

NS = "shop"
HPA = "horizontalpodautoscalers"


@pytest.fixture
async def cluster():
    from canaryd.sandbox.cluster import SandboxCluster

    async with SandboxCluster(ready_delay=0.05, tick_interval=0.25) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        sandbox.store.ensure_namespace(NS)
        yield sandbox


def autoscaler(name: str, max_replicas: int = 5) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "shop"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 2,
            "maxReplicas": max_replicas,
        },
    }


def pod_roles(store: Any, app_label: str) -> set[str | None]:
    pods, _ = store.list_refs("pods", namespace=NS)
    return {
        (p["metadata"].get("labels") or {}).get(LABEL_ROLE)
        for p in pods
        if (p["metadata"].get("labels") or {}).get("app") == app_label
    }


async def test_the_primary_gets_a_copy_of_the_target_s_hpa_kept_in_step_and_deleted_with_it(cluster):
    store = cluster.store
    store.create(HPA, autoscaler("cart"))
    app(store, "cart", [])
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await until_phase(store, "cart", "Initialized")
        copy = await world.wait_until(lambda: world.find(store, HPA, NS, "cart-primary"), timeout=10)
        assert copy["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "cart-primary",
        }
        assert (copy["spec"]["minReplicas"], copy["spec"]["maxReplicas"]) == (2, 5)
        assert copy["metadata"]["ownerReferences"][0]["kind"] == "Canary"

        # The team raises the limit: the copy follows. Someone edits the copy: it is put back.
        store.patch(HPA, "cart", {"spec": {"maxReplicas": 9}}, NS)
        await world.wait_until(
            lambda: world.find(store, HPA, NS, "cart-primary")["spec"]["maxReplicas"] == 9, timeout=10
        )
        store.patch(HPA, "cart-primary", {"spec": {"maxReplicas": 3}}, NS)
        await world.wait_until(
            lambda: world.find(store, HPA, NS, "cart-primary")["spec"]["maxReplicas"] == 9, timeout=10
        )

        # A run goes through with the HPA in place; the copy stays in step.
        world.new_revision(store, NS, "cart", "app:2.0")
        await until_phase(store, "cart", "Succeeded")
        assert world.find(store, HPA, NS, "cart-primary")["spec"]["maxReplicas"] == 9

        # The team drops its HPA: the copy goes too.
        store.delete(HPA, "cart", NS)
        await world.wait_until(lambda: world.find(store, HPA, NS, "cart-primary") is None, timeout=10)


async def test_pods_say_which_side_they_are_on(cluster):
    store = cluster.store
    app(store, "cart", [], steps=[50], interval="30s")
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await until_phase(store, "cart", "Initialized")
        await world.wait_until(lambda: pod_roles(store, "cart-primary") == {"primary"}, timeout=15)
        world.new_revision(store, NS, "cart", "app:2.0")
        await world.wait_until(lambda: world.status(store, NS, "cart").get("step") == 1, timeout=15)
        await world.wait_until(lambda: pod_roles(store, "cart") == {"canary"}, timeout=15)
        assert pod_roles(store, "cart-primary") == {"primary"}
        primary = store.get("deployments", "cart-primary", NS)
        assert primary["spec"]["template"]["metadata"]["labels"][LABEL_ROLE] == "primary"


async def test_a_rolled_back_canary_stays_up_for_abort_scale_down_delay(cluster):
    store = cluster.store
    app(store, "kept", [], threshold=1, abortScaleDownDelay="4s")
    app(store, "dropped", [], threshold=1)
    analysis = ScriptedAnalysis()
    async with running_controller(settings_for(cluster), analyzer=analysis):
        await until_phase(store, "kept", "Initialized")
        await until_phase(store, "dropped", "Initialized")
        analysis.verdict = Verdict.FAIL
        for name in ("kept", "dropped"):
            world.new_revision(store, NS, name, "app:bad")
        await until_phase(store, "kept", "Failed")
        failed_at = time.monotonic()
        await world.wait_until(lambda: world.weights(store, NS, "kept") == (100, 0), timeout=5)

        def replicas(name: str) -> int:
            return int(store.get("deployments", name, NS)["spec"]["replicas"])

        await until_phase(store, "dropped", "Failed")
        await world.wait_until(lambda: replicas("dropped") == 0, timeout=5)
        assert replicas("kept") > 0, "the failed canary is kept up for inspection"
        await world.wait_until(lambda: replicas("kept") == 0, timeout=15)
        kept_for = time.monotonic() - failed_at
        assert kept_for >= 3.5, kept_for


#: Seconds between one primary pod becoming ready and the next: long enough that the controller's reaction
#: to the 2nd ready pod lands before the 3rd on a loaded machine.
PACE = 1.5
PACED = {ANNOTATION_READY_INTERVAL: str(PACE)}


@dataclass(frozen=True)
class Seen:
    """One change of a Canary or its primary, as ``kubectl get`` would have shown both at that moment."""

    phase: str | None
    ready: str
    progressing: str
    primary_pods: int
    primary_ready: int


def record(store: Any, names: tuple[str, ...]) -> tuple[dict[str, list[Seen]], Any]:
    seen: dict[str, list[Seen]] = {name: [] for name in names}

    def on_change(event: Any) -> None:
        name = event.obj["metadata"]["name"].removesuffix("-primary")
        if event.obj["metadata"].get("namespace") != NS or name not in seen:
            return
        canary = world.find(store, "canaries.canaryd.io", NS, name)
        primary = world.find(store, "deployments", NS, f"{name}-primary")
        if canary is None or primary is None:
            return
        status = canary.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions", [])}

        def text(kind: str) -> str:
            c = conditions.get(kind) or {}
            return f"{c.get('reason', '')}: {c.get('message', '')}"

        counts = primary.get("status") or {}
        seen[name].append(
            Seen(
                status.get("phase"),
                text("Ready"),
                text("Progressing"),
                int(counts.get("replicas", 0)),
                int(counts.get("readyReplicas", 0)),
            )
        )

    return seen, store.subscribe(on_change)


def first(records: list[Seen], phase: str) -> Seen:
    return next(r for r in records if r.phase == phase)


async def test_the_primary_holds_the_run_until_primary_ready_threshold_of_its_pods_are_ready(cluster):
    store = cluster.store
    for name, threshold in (("half", 50), ("whole", 100)):
        target = world.deployment(NS, name, replicas=4, annotations=PACED)
        # maxUnavailable 50 %: the Deployment controller removes the old pods once 2 new ones are ready
        target["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}
        store.create("deployments", target)
        store.create("httproutes.gateway.networking.k8s.io", world.route(NS, name))
        canary = world.canary(NS, name, step_weights=[50], interval="1s", threshold=2, metrics=[])
        canary["spec"]["primaryReadyThreshold"] = threshold
        store.create("canaries.canaryd.io", canary)
    seen, stop = record(store, ("half", "whole"))
    try:
        async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
            for name in ("half", "whole"):
                await until_phase(store, name, "Initialized", timeout=30)

            # Initialization: 1 of 4 ready holds "half" and says what it waits for; 2 of 4 lets it go on
            # while the 3rd and 4th are still starting. "whole" waits for all 4.
            holding = [r for r in seen["half"] if r.primary_ready == 1]
            assert holding and all(r.phase == "Initializing" for r in holding), holding
            assert any(
                r.ready.startswith("PrimaryNotReady:")
                and "1/4 ready" in r.ready
                and "2 ready needed (primaryReadyThreshold 50%)" in r.ready
                for r in holding
            ), holding
            went_on = first(seen["half"], "Initialized")
            assert 2 <= went_on.primary_ready < 4, went_on
            assert first(seen["whole"], "Initialized").primary_ready == 4
            assert all(r.phase == "Initializing" for r in seen["whole"] if r.primary_ready < 4)

            # Promotion: the old revision's pods count as ready but not as serving the new one, so
            # "half" stays Promoting until they are gone and 2 new pods are ready.
            for name in ("half", "whole"):
                seen[name].clear()
                world.new_revision(store, NS, name, "app:2.0", PACED)
            for name in ("half", "whole"):
                await until_phase(store, name, "Succeeded", timeout=60)
            promoting = [r for r in seen["half"] if r.phase == "Promoting"]
            assert any(
                "of the previous revision still running" in r.progressing
                and "2 ready needed (primaryReadyThreshold 50%)" in r.progressing
                for r in promoting
            ), promoting
            went_on = first(seen["half"], "Finalizing")
            assert went_on.primary_pods == 4 and 2 <= went_on.primary_ready < 4, went_on
            finalizing = first(seen["whole"], "Finalizing")
            assert (finalizing.primary_pods, finalizing.primary_ready) == (4, 4), finalizing
    finally:
        stop()
