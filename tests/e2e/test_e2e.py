"""End to end: `canaryd run` as a process, on each backend (tests/e2e/backends.py), with a real Prometheus.

Every scenario runs twice: on the sandbox (its traffic simulator, analysis/sandbox.yaml) and on the
real control plane with the real data plane (Traefik carrying real requests to pods answered in a
network namespace, analysis/traefik.yaml). Each test builds several Canaries in one cluster and lets
them run at once, to keep the whole set short; every assertion is something a user would see: the
weights on their route, their Deployments, the Canary's status and Events. On the real backend, the
share of real requests that reached the canary at every weight is printed and checked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from canaryd.sandbox.prometheus_server import find_binary
from tests.e2e.backends import (
    BACKENDS,
    REAL,
    Backend,
    RealBackend,
    assert_traffic_followed_the_weights,
    backend,
)
from tests.runtime import world

pytestmark = pytest.mark.e2e

INTERVAL = "3s"
HTTP = "httproutes.gateway.networking.k8s.io"
GRPC = "grpcroutes.gateway.networking.k8s.io"


def prometheus_available() -> bool:
    try:
        find_binary("prometheus")
    except Exception:
        return False
    return True


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest) -> Any:
    async with backend(request.param, request) as chosen:
        yield chosen


def app(env: Backend, name: str, *, kind: str = "HTTPRoute", steps: list[int] | None = None,
        threshold: int = 2, deadline: int = 120, parent: str | None = None) -> None:  # fmt: skip
    env.app(
        name, kind=kind, parent=parent, step_weights=steps or [10, 30, 50], interval=INTERVAL,
        threshold=threshold, metrics=env.metrics(), deadline=deadline,
    )  # fmt: skip


def phase(env: Backend, name: str) -> str | None:
    return world.status(env.store, env.ns, name).get("phase")


async def until_phase(env: Backend, name: str, wanted: str, timeout: float = 60) -> None:
    try:
        await world.wait_until(lambda: phase(env, name) == wanted, timeout=timeout)
    except AssertionError:
        status = world.status(env.store, env.ns, name)
        events = [f"{e['reason']}: {e.get('note', '')}" for e in world.events(env.store, env.ns, name)]
        raise AssertionError(
            f"{env.ns}/{name} not in {wanted} within {timeout} s (is {status.get('phase')}); "
            f"status: {status}; events: {events}"
        ) from None


def image(env: Backend, deployment: str) -> str:
    return env.store.get("deployments", deployment, env.ns)["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]


def reasons(env: Backend, name: str) -> list[str]:
    return [e["reason"] for e in world.events(env.store, env.ns, name)]


def replicas(env: Backend, name: str) -> int:
    return int(env.store.get("deployments", name, env.ns)["spec"]["replicas"])


async def test_rollouts_a_user_sees(env: Backend, tmp_path: Path) -> None:
    """(a) promote, (b) roll back, (e) route edited, (f) new revision mid-run, (g) route not accepted,
    (h) GRPCRoute, (i) deleted mid-run, and bad input, all at once under one controller."""
    store, ns = env.store, env.ns
    # (g): a Gateway whose listener admits routes from its own namespace only.
    store.create("gateways.gateway.networking.k8s.io", env.gateway("internal", allowed_namespaces="Same"))
    app(env, "good")
    app(env, "bad")
    app(env, "edited", steps=[10, 20, 30, 40])
    app(env, "changing", steps=[10, 30, 50])
    app(env, "refused", parent="internal")
    app(env, "rpc", kind="GRPCRoute")
    app(env, "deleted", steps=[20, 40, 60, 80])
    store.create("canaries.canaryd.io", world.canary(ns, "ghost", metrics=env.metrics()))
    recorders = {
        n: world.WeightRecorder(store, ns, n) for n in ("good", "bad", "edited", "changing", "refused")
    }
    recorders["rpc"] = world.WeightRecorder(store, ns, "rpc", kind="GRPCRoute")
    recorders["deleted"] = world.WeightRecorder(store, ns, "deleted")
    deleted_at: list[tuple[int, int]] = []
    unsubscribe = store.subscribe(
        lambda e: (
            deleted_at.append(world.weights(store, ns, "deleted"))
            if e.type == "DELETED"
            and e.storage_key[1] == "canaries"
            and e.obj["metadata"]["name"] == "deleted"
            else None
        )
    )
    ctl = env.controller(tmp_path).start()
    deleting: asyncio.Task[str] | None = None
    try:
        # A new revision while a Canary is still initializing becomes its stable revision, so each
        # must have finished initializing (the refused route included) before its revision changes.
        for name in ("good", "bad", "edited", "changing", "refused", "rpc", "deleted"):
            await until_phase(env, name, "Initialized", timeout=30)
        await asyncio.gather(
            *(env.carry_traffic(n) for n in ("good", "bad", "edited", "changing", "deleted")),
            env.carry_traffic("rpc", "GRPCRoute"),
        )

        world.new_revision(store, ns, "good", "shop:2.0")
        world.new_revision(store, ns, "bad", "shop:2.0-broken", {"sandbox.canaryd.io/error-rate": "0.6"})
        world.new_revision(store, ns, "edited", "shop:2.0")
        world.new_revision(store, ns, "changing", "shop:2.0")
        world.new_revision(store, ns, "refused", "shop:2.0")
        world.new_revision(store, ns, "rpc", "shop:2.0")
        world.new_revision(store, ns, "deleted", "shop:2.0")

        # (i) the Canary is deleted mid-run, at 40 %: watched from now on, since the waits below last as
        # long as other Canaries' steps do, and one step of this one lasts a single interval.
        async def delete_mid_run() -> str:
            await world.wait_until(lambda: world.weights(store, ns, "deleted") == (60, 40), timeout=60)
            uid = str(store.get("canaries.canaryd.io", "deleted", ns)["metadata"]["uid"])
            store.delete("canaries.canaryd.io", "deleted", ns)
            return uid

        deleting = asyncio.create_task(delete_mid_run())

        # (e) someone edits the route mid-run: other weights and a filter.
        await world.wait_until(lambda: world.weights(store, ns, "edited") == (90, 10), timeout=30)
        filter_ = {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "x-cart", "value": "1"}]},
        }
        store.patch(HTTP, "edited", [
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 40},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 60},
            {"op": "add", "path": "/spec/rules/0/filters", "value": [filter_]},
        ], ns, patch_type="json")  # fmt: skip

        # (f) a new revision while the run is at 30 %.
        await world.wait_until(lambda: world.weights(store, ns, "changing") == (70, 30), timeout=40)
        revision_before = world.status(store, ns, "changing")["revision"]
        world.new_revision(store, ns, "changing", "shop:3.0")

        deleted_uid = await deleting

        for name in ("good", "edited", "rpc"):
            await until_phase(env, name, "Succeeded", timeout=60)
        await until_phase(env, "bad", "Failed", timeout=60)
        await until_phase(env, "changing", "Succeeded", timeout=60)
        await world.wait_until(lambda: deleted_at, timeout=20, message="deleted Canary gone")

        # (a) exact weight sequence, promoted, canary Deployment scaled to 0.
        assert recorders["good"].sequence == [(100, 0), (90, 10), (70, 30), (50, 50), (100, 0)]
        assert image(env, "good-primary") == "shop:2.0"
        await world.wait_until(lambda: replicas(env, "good") == 0, timeout=10)
        metrics = {m["name"]: m for m in world.status(store, ns, "good")["metrics"]}
        assert metrics["success-rate"]["verdict"] == "Pass" and metrics["success-rate"]["value"] >= 95

        # (b) rolled back at the threshold, all traffic on the primary, old revision kept.
        bad = world.status(store, ns, "bad")
        assert bad["failedChecks"] == 2
        await world.wait_until(lambda: world.weights(store, ns, "bad") == (100, 0), timeout=10)
        assert image(env, "bad-primary") == "app:1.0"
        assert "FailedChecksThresholdReached" in reasons(env, "bad")
        await world.wait_until(lambda: replicas(env, "bad") == 0, timeout=10)

        # (e) weights corrected, the filter kept, an Event says so.
        route = store.get(HTTP, "edited", ns)
        assert route["spec"]["rules"][0]["filters"] == [filter_]
        assert "RouteWeightsDrifted" in reasons(env, "edited")
        assert (40, 60) in recorders["edited"].sequence
        after_edit = recorders["edited"].sequence[recorders["edited"].sequence.index((40, 60)) + 1]
        assert after_edit in ((90, 10), (80, 20))

        # (f) the analysis restarted for the newer revision, which is what got promoted.
        assert "RevisionChanged" in reasons(env, "changing")
        assert world.status(store, ns, "changing")["lastPromotedRevision"] != revision_before
        assert image(env, "changing-primary") == "shop:3.0"
        # After the change at 30 % the schedule starts again from its first step. The weight
        # shows 100/0 in between unless the new revision was already ready when the
        # controller looked, in which case the restart and the first step are one write.
        seq = recorders["changing"].sequence
        restart = seq[seq.index((70, 30)) + 1 :]
        if restart[0] == (100, 0):
            restart = restart[1:]
        assert restart == [(90, 10), (70, 30), (50, 50), (100, 0)]

        # (g) no traffic moved through a route the Gateway refused, and the condition says why.
        assert recorders["refused"].sequence == [(100, 0)]
        routes_ready = world.condition(store, ns, "refused", "RoutesReady")
        assert routes_ready is not None
        assert routes_ready["status"] == "False" and "NotAllowedByListeners" in routes_ready["message"]
        assert (
            phase(env, "refused") == "Progressing" and world.status(store, ns, "refused")["canaryWeight"] == 0
        )

        # (h) a GRPCRoute canary walks the same steps.
        assert recorders["rpc"].sequence == [(100, 0), (90, 10), (70, 30), (50, 50), (100, 0)]
        assert image(env, "rpc-primary") == "shop:2.0"

        # (i) all traffic was back on the primary when the finalizer went, and it stays there: the
        # primary Deployment and both Services outlive the Canary, no longer owned by it.
        assert deleted_at == [(100, 0)]
        assert world.find(store, "canaries.canaryd.io", ns, "deleted") is None
        assert world.weights(store, ns, "deleted") == (100, 0)
        for resource, name in (
            ("deployments", "deleted-primary"),
            ("services", "deleted-primary"),
            ("services", "deleted-canary"),
        ):
            left = world.find(store, resource, ns, name)
            assert left is not None, f"{resource} {name} was garbage-collected with the Canary"
            owners = [o.get("uid") for o in left["metadata"].get("ownerReferences") or []]
            assert deleted_uid not in owners
        assert store.get("deployments", "deleted-primary", ns)["status"].get("readyReplicas", 0) >= 1
        assert "left in place" in next(
            e["note"] for e in world.events(store, ns, "deleted") if e["reason"] == "Deleting"
        )

        # Bad input: a condition and an Event, and the controller kept running.
        ghost = world.condition(store, ns, "ghost", "Ready")
        assert ghost is not None and ghost["status"] == "False" and "ghost" in ghost["message"]
        assert world.events(store, ns, "ghost")
        assert ctl.alive()

        # The real requests followed every weight canaryd (or a person) set.
        assert_traffic_followed_the_weights(env.traffic_report(recorders))
    finally:
        if deleting is not None:
            deleting.cancel()
        unsubscribe()
        for recorder in recorders.values():
            recorder.close()
        code = ctl.stop()
    assert code == 0, ctl.log()[-3000:]


async def test_killed_controller_resumes_and_a_dead_prometheus_promotes_nothing(
    env: Backend, tmp_path: Path
) -> None:
    """(d) SIGKILL mid-run and restart: same step, nothing applied twice; (c) Prometheus stopped mid-run."""
    store, ns = env.store, env.ns
    app(env, "resilient", steps=[10, 20, 30, 40, 50])
    app(env, "blind", steps=[10, 50], deadline=6)
    recorder = world.WeightRecorder(store, ns, "resilient")
    first = env.controller(tmp_path, "first").start()
    second = env.controller(tmp_path, "second")
    try:
        await until_phase(env, "resilient", "Initialized", timeout=30)
        await until_phase(env, "blind", "Initialized", timeout=30)
        await asyncio.gather(env.carry_traffic("resilient"), env.carry_traffic("blind"))
        world.new_revision(store, ns, "resilient", "shop:2.0")
        # The step to 20 %: the route carries it and status says so (an ordinary step writes its route first).
        await world.wait_until(
            lambda: world.weights(store, ns, "resilient") == (80, 20)
            and world.status(store, ns, "resilient").get("canaryWeight") == 20,
            timeout=40,
        )
        before = world.status(store, ns, "resilient")
        first.kill()
        await asyncio.sleep(1.0)
        assert world.status(store, ns, "resilient")["step"] == before["step"]
        second.start()
        await until_phase(env, "resilient", "Succeeded", timeout=60)
        assert recorder.sequence == [(100, 0), (90, 10), (80, 20), (70, 30), (60, 40), (50, 50), (100, 0)]
        steps = [e for e in world.events(store, ns, "resilient") if "canary weight" in e.get("note", "")]
        notes = [e["note"] for e in steps]
        assert len(notes) == len(set(notes)), f"a step was applied twice: {notes}"
        # The audit log agrees: one successful route write per weight change, across both processes.
        assert len(env.route_patches("resilient")) == len(recorder.sequence) - 1

        # (c) Prometheus goes away during a run: no verdict, so no promotion.
        world.new_revision(store, ns, "blind", "shop:2.0")
        await world.wait_until(lambda: world.weights(store, ns, "blind") == (90, 10), timeout=40)
        await env.stop_prometheus()
        await world.wait_until(lambda: phase(env, "blind") in ("Failed", "Succeeded"), timeout=40)
        assert phase(env, "blind") == "Failed"
        assert image(env, "blind-primary") == "app:1.0"
        # The status records the rollback first; the route follows at once.
        await world.wait_until(lambda: world.weights(store, ns, "blind") == (100, 0), timeout=10)
        last = {m["name"]: m["verdict"] for m in world.status(store, ns, "blind")["metrics"]}
        assert set(last.values()) <= {"Error", "NoData"}
        assert_traffic_followed_the_weights(env.traffic_report({"resilient": recorder}))
    finally:
        recorder.close()
        first.stop()
        code = second.stop()
    assert code == 0, second.log()[-3000:]


async def test_two_replicas_only_the_leader_acts_and_the_other_takes_over(
    env: Backend, tmp_path: Path
) -> None:
    """(j) leader election between two `canaryd run --leader-elect` processes."""
    store, ns = env.store, env.ns
    store.ensure_namespace(env.system_ns)
    app(env, "ha", steps=[10, 20, 30, 40, 50])
    recorder = world.WeightRecorder(store, ns, "ha")
    election = ("--leader-elect", "--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5")
    replicas_ = {
        name: env.controller(tmp_path, name, *election, "--leader-election-identity", name).start()
        for name in ("replica-a", "replica-b")
    }
    try:

        def holder() -> str:
            lease = world.find(store, "leases.coordination.k8s.io", env.system_ns, "canaryd-leader")
            return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

        leader = await world.wait_until(holder, timeout=20, message="a leader")
        standby = next(n for n in replicas_ if n != leader)
        await until_phase(env, "ha", "Initialized", timeout=30)
        await env.carry_traffic("ha")
        world.new_revision(store, ns, "ha", "shop:2.0")
        await world.wait_until(lambda: world.weights(store, ns, "ha") == (80, 20), timeout=40)
        instances = {e.get("reportingInstance") for e in world.events(store, ns, "ha")}
        assert instances == {leader}, "only the leader writes"
        replicas_[leader].kill()
        await world.wait_until(lambda: holder() == standby, timeout=20, message="takeover")
        await until_phase(env, "ha", "Succeeded", timeout=60)
        late = {e.get("reportingInstance") for e in world.events(store, ns, "ha")} - {leader}
        assert late == {standby}
        assert recorder.sequence == [(100, 0), (90, 10), (80, 20), (70, 30), (60, 40), (50, 50), (100, 0)]
        assert_traffic_followed_the_weights(env.traffic_report({"ha": recorder}))
    finally:
        recorder.close()
        for process in replicas_.values():
            process.stop()


@pytest.mark.realcluster
async def test_a_kube_apiserver_restart_mid_run_loses_no_step(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The real kube-apiserver restarted mid-run: watches break, writes fail for a while; the run goes on
    from where it was, no step is applied twice, and real requests keep following the weights.
    (Real cluster only: the sandbox's API server is the same process as its store.)"""
    async with backend(REAL, request) as env:
        store, ns = env.store, env.ns
        assert isinstance(env, RealBackend)
        app(env, "steady", steps=[10, 20, 30, 40, 50])
        recorder = world.WeightRecorder(store, ns, "steady")
        ctl = env.controller(tmp_path).start()
        try:
            await until_phase(env, "steady", "Initialized", timeout=30)
            await env.carry_traffic("steady")
            world.new_revision(store, ns, "steady", "shop:2.0")
            await world.wait_until(lambda: world.weights(store, ns, "steady") == (80, 20), timeout=40)
            await asyncio.to_thread(env.cluster.restart_apiserver)
            await until_phase(env, "steady", "Succeeded", timeout=90)
            assert recorder.sequence == [(100, 0), (90, 10), (80, 20), (70, 30), (60, 40), (50, 50), (100, 0)]
            assert image(env, "steady-primary") == "shop:2.0"
            notes = [
                e["note"] for e in world.events(store, ns, "steady") if "canary weight" in e.get("note", "")
            ]
            assert len(notes) == len(set(notes)), f"a step was applied twice: {notes}"
            assert len(env.route_patches("steady")) == len(recorder.sequence) - 1
            assert ctl.alive()
            assert_traffic_followed_the_weights(env.traffic_report({"steady": recorder}))
        finally:
            recorder.close()
            code = ctl.stop()
        assert code == 0, ctl.log()[-3000:]
