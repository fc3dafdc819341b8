"""The sandbox Deployment controller: status converges as the real one reports; never-ready stays unready."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from canaryd.sandbox.server.store import ObjectStore
from canaryd.sandbox.sim.deployments import (
    DeploymentSimulator,
    Rollout,
    deployment_status,
    max_unavailable,
    next_change_at,
    next_rollout,
    pod_template_hash,
)
from canaryd.sandbox.sim.knobs import ANNOTATION_NEVER_READY, ANNOTATION_READY_INTERVAL
from canaryd.sandbox.store_view import StoreView
from tests.fixtures.waiting import eventually

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DELAY = 2.0


def deployment(
    name: str = "payments-api",
    *,
    replicas: int = 3,
    image: str = "payments:1",
    annotations: dict[str, str] | None = None,
    generation: int = 1,
    progress_deadline: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "app", "image": image}]},
        },
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "payments", "generation": generation},
        "spec": spec,
    }


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def status_at(
    dep: dict[str, Any], rollout: Rollout, seconds: float, time_scale: float = 1.0
) -> dict[str, Any]:
    return deployment_status(dep, rollout, at(seconds), ready_delay=DELAY, time_scale=time_scale)


def counts(status: dict[str, Any]) -> tuple[int, int, int, int]:
    return (
        status.get("replicas", 0),
        status.get("updatedReplicas", 0),
        status.get("readyReplicas", 0),
        status.get("availableReplicas", 0),
    )


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


# --------------------------------------------------------------------------- pure status computation


def test_new_deployment_becomes_ready_after_the_delay() -> None:
    dep = deployment()
    rollout = next_rollout(None, dep, at(0), ready_delay=DELAY)
    before = status_at(dep, rollout, 1.0)
    assert counts(before) == (3, 3, 0, 0)
    assert before["unavailableReplicas"] == 3
    assert before["observedGeneration"] == 1
    assert conditions(before) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("True", "NewReplicaSetCreated"),
    }
    after = status_at(dep, rollout, DELAY)
    assert counts(after) == (3, 3, 3, 3)
    assert "unavailableReplicas" not in after
    assert conditions(after) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    replica_set = f"payments-api-{pod_template_hash(dep['spec']['template'])}"
    assert after["conditions"][1]["message"] == f'ReplicaSet "{replica_set}" has successfully progressed.'
    assert next_change_at(dep, rollout, at(1.0), ready_delay=DELAY, time_scale=1.0) == at(DELAY)
    assert next_change_at(dep, rollout, at(DELAY), ready_delay=DELAY, time_scale=1.0) is None


def test_new_template_keeps_old_pods_serving_until_new_ones_are_ready() -> None:
    dep = deployment()
    rollout = next_rollout(None, dep, at(0), ready_delay=DELAY)
    updated = deployment(image="payments:2", generation=2)
    rollout = next_rollout(rollout, updated, at(10), ready_delay=DELAY)
    during = status_at(updated, rollout, 11)
    assert counts(during) == (6, 3, 3, 3)
    assert during["observedGeneration"] == 2
    assert conditions(during) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "ReplicaSetUpdated"),
    }
    assert counts(status_at(updated, rollout, 12)) == (3, 3, 3, 3)


def test_a_ready_interval_makes_pods_ready_one_by_one_and_says_when_the_next_is_due() -> None:
    paced = {ANNOTATION_READY_INTERVAL: "3"}
    dep = deployment(replicas=4, annotations=paced)
    rollout = next_rollout(None, dep, at(0), ready_delay=DELAY)
    # first pod after the delay (2 s), then one every 3 s: ready at 2, 5, 8 and 11 s
    seen = [counts(status_at(dep, rollout, t))[2] for t in (1, 2, 4.9, 5, 8, 10.9, 11, 30)]
    assert seen == [0, 1, 1, 2, 3, 3, 4, 4]
    assert next_change_at(dep, rollout, at(5.5), ready_delay=DELAY, time_scale=1.0) == at(8) + timedelta(
        milliseconds=1
    )
    assert conditions(status_at(dep, rollout, 8))["Progressing"] == ("True", "NewReplicaSetCreated")
    assert conditions(status_at(dep, rollout, 11))["Progressing"] == ("True", "NewReplicaSetAvailable")
    assert next_change_at(dep, rollout, at(11), ready_delay=DELAY, time_scale=1.0) is None


def test_during_a_paced_template_change_old_pods_leave_as_far_as_max_unavailable_allows() -> None:
    paced = {ANNOTATION_READY_INTERVAL: "3"}
    dep = deployment(replicas=4, annotations=paced)
    rollout = next_rollout(None, dep, at(0), ready_delay=DELAY)
    updated = deployment(replicas=4, image="payments:2", annotations=paced, generation=2)
    rollout = next_rollout(rollout, updated, at(20), ready_delay=DELAY)  # maxUnavailable 25 %: 1 of 4
    # (replicas, updated, ready, available): old pods serve until new ones are ready, then 3 stay available
    assert counts(status_at(updated, rollout, 21)) == (8, 4, 4, 4)
    assert counts(status_at(updated, rollout, 22)) == (6, 4, 3, 3)  # 1 new + 2 old
    assert counts(status_at(updated, rollout, 25)) == (5, 4, 3, 3)  # 2 new + 1 old
    assert counts(status_at(updated, rollout, 28)) == (4, 4, 3, 3)  # 3 new, the old ones gone
    assert counts(status_at(updated, rollout, 31)) == (4, 4, 4, 4)


def test_an_unreadable_ready_interval_means_all_at_once() -> None:
    for value in ("soon", "-2", "nan", ""):
        dep = deployment(replicas=3, annotations={ANNOTATION_READY_INTERVAL: value})
        rollout = next_rollout(None, dep, at(0), ready_delay=DELAY)
        assert counts(status_at(dep, rollout, 2))[2] == 3, value


def test_scaling_to_zero_reports_no_replicas_and_scaling_up_waits_for_readiness() -> None:
    dep = deployment()
    rollout = next_rollout(None, dep, at(0), ready_delay=DELAY)
    zero = deployment(replicas=0, generation=2)
    rollout = next_rollout(rollout, zero, at(10), ready_delay=DELAY)
    status = status_at(zero, rollout, 10)
    assert counts(status) == (0, 0, 0, 0)
    assert set(status) == {"observedGeneration", "conditions"}  # zero counts are omitted like the real server
    assert conditions(status)["Available"] == ("True", "MinimumReplicasAvailable")
    two = deployment(replicas=2, generation=3)
    rollout = next_rollout(rollout, two, at(20), ready_delay=DELAY)
    assert counts(status_at(two, rollout, 21)) == (2, 2, 0, 0)
    assert counts(status_at(two, rollout, 22)) == (2, 2, 2, 2)
    five = deployment(replicas=5, generation=4)
    rollout = next_rollout(rollout, five, at(30), ready_delay=DELAY)
    assert counts(status_at(five, rollout, 31)) == (5, 5, 2, 2)
    assert counts(status_at(five, rollout, 32)) == (5, 5, 5, 5)
    one = deployment(replicas=1, generation=5)
    rollout = next_rollout(rollout, one, at(40), ready_delay=DELAY)
    assert counts(status_at(one, rollout, 40)) == (1, 1, 1, 1)


def test_never_ready_template_stays_unready_and_exceeds_its_progress_deadline() -> None:
    dep = deployment(annotations={ANNOTATION_NEVER_READY: "true"}, progress_deadline=600)
    rollout = next_rollout(None, dep, at(0), ready_delay=DELAY)
    time_scale = 0.01  # 600 s of deadline pass in 6 s
    early = status_at(dep, rollout, 5.0, time_scale)  # well past the ready delay
    assert counts(early) == (3, 3, 0, 0)
    assert conditions(early)["Progressing"] == ("True", "NewReplicaSetCreated")
    assert next_change_at(dep, rollout, at(1), ready_delay=DELAY, time_scale=time_scale) == at(6.001)
    late = status_at(dep, rollout, 6.5, time_scale)
    assert counts(late) == (3, 3, 0, 0)
    assert conditions(late) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("False", "ProgressDeadlineExceeded"),
    }
    assert late["conditions"][1]["message"].endswith("has timed out progressing.")
    assert next_change_at(dep, rollout, at(6.5), ready_delay=DELAY, time_scale=time_scale) is None


def test_condition_times_move_only_when_the_condition_changes() -> None:
    dep = deployment()
    rollout = next_rollout(None, dep, at(0), ready_delay=DELAY)
    dep["status"] = status_at(dep, rollout, DELAY)
    again = status_at(dep, rollout, 100)
    assert again == dep["status"]
    assert again["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:07Z"


def test_max_unavailable_follows_the_strategy() -> None:
    assert max_unavailable(deployment(replicas=10)) == 2  # 25% rounded down
    assert max_unavailable(deployment(replicas=1)) == 0
    dep = deployment(replicas=4)
    dep["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert max_unavailable(dep) == 1
    dep["spec"]["strategy"] = {"type": "Recreate"}
    assert max_unavailable(dep) == 0


# --------------------------------------------------------------------------- against the sandbox store


def stored(store: ObjectStore, name: str = "payments-api") -> dict[str, Any]:
    return store.get("deployments", name, "payments")


def rolled_out(store: ObjectStore, name: str = "payments-api") -> bool:
    dep = stored(store, name)
    status = dep.get("status") or {}
    replicas = dep["spec"]["replicas"]
    return (
        status.get("observedGeneration") == dep["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
    )


async def test_simulator_converges_status_through_the_status_subresource() -> None:
    store = ObjectStore()
    store.ensure_namespace("payments")
    simulator = DeploymentSimulator(StoreView(store), ready_delay=0.05)
    simulator.start()
    try:
        body = deployment()
        del body["metadata"]["generation"]
        store.create("deployments", body)
        await eventually(lambda: rolled_out(store))
        assert stored(store)["metadata"]["generation"] == 1  # status writes do not bump generation

        store.patch(
            "deployments",
            "payments-api",
            {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "payments:2"}]}}}},
            "payments",
            patch_type="strategic",
        )
        assert stored(store)["metadata"]["generation"] == 2
        await eventually(lambda: stored(store)["status"].get("observedGeneration") == 2)
        assert stored(store)["status"]["updatedReplicas"] == 3
        await eventually(lambda: rolled_out(store))

        store.patch("deployments", "payments-api", {"spec": {"replicas": 0}}, "payments")
        await eventually(lambda: rolled_out(store) and "readyReplicas" not in stored(store)["status"])
        writes = simulator.status_writes
        await asyncio.sleep(0.1)
        assert simulator.status_writes == writes  # settled: no write loop
    finally:
        simulator.stop()


async def test_simulator_never_readies_a_marked_template_and_gives_up_at_the_deadline() -> None:
    store = ObjectStore()
    store.ensure_namespace("payments")
    # a 100 s deadline takes 0.1 s
    simulator = DeploymentSimulator(StoreView(store), ready_delay=0.01, time_scale=0.001)
    simulator.start()
    try:
        body = deployment(annotations={ANNOTATION_NEVER_READY: "true"}, progress_deadline=100, replicas=2)
        del body["metadata"]["generation"]
        store.create("deployments", body)
        await eventually(
            lambda: (
                conditions(stored(store).get("status") or {"conditions": []}).get("Progressing")
                == ("False", "ProgressDeadlineExceeded")
            )
        )
        status = stored(store)["status"]
        assert counts(status) == (2, 2, 0, 0)
        assert conditions(status)["Available"] == ("False", "MinimumReplicasUnavailable")
    finally:
        simulator.stop()
