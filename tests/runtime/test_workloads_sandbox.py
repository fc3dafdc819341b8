"""The workloads around a run on the sandbox: the primary's HPA, pod roles, and a failed canary kept up.

The controller runs in-process against the sandbox cluster, whose
simulators turn Deployments into ReplicaSets and Pods; the analysis is
scripted. What is asserted is what a user sees with kubectl: the
HorizontalPodAutoscaler canaryd keeps for ``<target>-primary``, the
``canaryd.io/role`` label on each side's Pods, and the replicas of a
rolled-back canary during ``abortScaleDownDelay``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from canaryd.api.constants import LABEL_ROLE, Verdict
from canaryd.runtime.controller import running_controller
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
