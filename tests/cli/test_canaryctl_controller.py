"""`canaryctl` steering live runs of the real controller, on each backend: the sandbox and the real cluster.

The controller runs in-process (caches, workers, writers, the lifecycle) with a
scripted analysis that always passes, so the only thing deciding the course of
a run besides the schedule is what a person asks for with `canaryctl`. The
program runs for real in its own thread and event loop, over HTTP. On the real
backend (tests/e2e/backends.py) the routes hang off a Gateway that Traefik
accepts, and the controller and canaryctl talk to the real kube-apiserver.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import pytest

from canaryd.api.constants import Verdict
from canaryd.cli import canaryctl
from canaryd.core.observations import MetricResult
from canaryd.runtime.controller import running_controller
from canaryd.runtime.settings import Settings
from canaryd.sandbox.cluster import SandboxCluster
from tests.cli.test_canaryctl import Run, run_ctl
from tests.e2e.backends import BACKENDS, SANDBOX, Backend, RealBackend, SandboxBackend
from tests.runtime import world

METRIC = [{"name": "ok", "query": "vector(1)", "thresholdRange": {"min": 0}}]


class PassingAnalysis:
    async def __call__(self, canary: Any, metrics: Any, now: datetime) -> tuple[MetricResult, ...]:
        return tuple(MetricResult(name=m.check.name, verdict=Verdict.PASS, value=1.0) for m in metrics)


@pytest.fixture(params=BACKENDS)
async def cluster(request: pytest.FixtureRequest) -> Any:
    if request.param == SANDBOX:
        async with SandboxCluster(ready_delay=0.05, tick_interval=0.5) as sandbox:
            world.install_crds(sandbox.store)
            world.install_gateway(sandbox.store)
            env = SandboxBackend(sandbox)
            sandbox.store.ensure_namespace(env.ns)
            yield env
        return
    real = RealBackend(
        request.getfixturevalue("real_cluster"), request.getfixturevalue("real_dataplane"), None
    )
    await asyncio.to_thread(real.setup)
    try:
        yield real
    finally:
        await asyncio.to_thread(real.teardown)


def controller(cluster: Backend) -> Any:
    scope = (
        {}
        if cluster.name == SANDBOX
        else {"namespaces": [cluster.ns], "leader_election_namespace": cluster.system_ns}
    )
    settings = Settings(
        kubeconfig=str(cluster.kubeconfig_path),
        health_address="0",
        metrics_address="0",
        prometheus_url="http://127.0.0.1:9",
        qps=500,
        burst=1000,
        **scope,
    )
    return running_controller(settings, analyzer=PassingAnalysis())


async def ctl(cluster: Backend, *argv: str) -> Run:
    return await asyncio.to_thread(
        run_ctl, "--kubeconfig", str(cluster.kubeconfig_path), "-n", cluster.ns, *argv
    )


def status(cluster: Backend, name: str) -> dict[str, Any]:
    return world.status(cluster.store, cluster.ns, name)


def weights(cluster: Backend, name: str) -> tuple[int, int]:
    return world.weights(cluster.store, cluster.ns, name)


async def start_run(cluster: Backend, name: str) -> world.WeightRecorder:
    """Wait for the Canary to initialize, then roll out a new revision and wait for its first step."""
    await world.wait_until(
        lambda: status(cluster, name).get("phase") == "Initialized", 30, message="initialized"
    )
    recorder = world.WeightRecorder(cluster.store, cluster.ns, name)
    world.new_revision(cluster.store, cluster.ns, name, "app:2.0")
    await world.wait_until(lambda: status(cluster, name).get("step", 0) >= 1, 15, message="first step")
    return recorder


async def test_pause_holds_the_weight_resume_continues_and_promote_skips_the_rest(cluster: Backend) -> None:
    cluster.app("cart", step_weights=[10, 20, 30, 40, 50], interval="1s", metrics=METRIC)
    async with controller(cluster):
        recorder = await start_run(cluster, "cart")

        paused = await ctl(cluster, "pause", "cart")
        assert paused.code == 0, paused.err
        assert "pause acknowledged by the controller: paused at step" in paused.out
        weight, step = status(cluster, "cart")["canaryWeight"], status(cluster, "cart")["step"]
        held = (100 - weight, weight)
        await world.wait_until(
            lambda: weights(cluster, "cart") == held, 10, message="the paused step's weight on the route"
        )
        await asyncio.sleep(2.5)  # more than two analysis intervals
        assert weights(cluster, "cart") == held
        assert status(cluster, "cart")["step"] == step

        page = await ctl(cluster, "status", "cart")
        assert page.code == 0
        assert "Paused:          yes" in page.out
        assert "Last action:     pause -> paused at step" in page.out
        event_reasons = [e["reason"] for e in world.events(cluster.store, cluster.ns, "cart")]
        assert "Paused" in event_reasons

        again = await ctl(cluster, "pause", "cart")
        assert again.code == 0 and "already paused" in again.out

        resumed = await ctl(cluster, "resume", "cart")
        assert resumed.code == 0 and "resumed" in resumed.out
        await world.wait_until(lambda: status(cluster, "cart")["step"] > step, 10, message="stepping again")

        promoted = await ctl(cluster, "promote", "cart")
        assert promoted.code == 0, promoted.out + promoted.err
        assert "promoting revision" in promoted.out
        watched = await ctl(cluster, "status", "cart", "--watch", "--timeout", "30s")
        assert watched.code == 0, watched.out + watched.err
        assert watched.out.strip().splitlines()[-1].split()[1] == "Succeeded"
        assert status(cluster, "cart")["lastPromotedRevision"] == status(cluster, "cart")["revision"]
        canary_weights = [pair[1] for pair in recorder.sequence]
        assert held[1] in canary_weights
        assert max(canary_weights) < 50  # the remaining steps were skipped
        assert canary_weights[-1] == 0
        recorder.close()


async def test_abort_rolls_back_and_retry_survives_a_controller_restart(cluster: Backend) -> None:
    cluster.app("pay", step_weights=[20, 40, 60, 80], interval="1s", metrics=METRIC)
    async with controller(cluster):
        recorder = await start_run(cluster, "pay")
        watching = asyncio.create_task(ctl(cluster, "status", "pay", "--watch"))
        await asyncio.sleep(0.3)

        aborted = await ctl(cluster, "abort", "pay")
        assert aborted.code == 0, aborted.err
        assert "abort acknowledged by the controller: rolled back revision" in aborted.out
        assert "phase Failed, weight 0%" in aborted.out
        assert (await asyncio.wait_for(watching, 20)).code == canaryctl.EXIT_CANARY_FAILED
        # The controller records the decision in status, then moves traffic and scales down.
        await world.wait_until(
            lambda: weights(cluster, "pay") == (100, 0), 10, message="traffic back on the primary"
        )
        await world.wait_until(
            lambda: cluster.store.get("deployments", "pay", cluster.ns)["spec"]["replicas"] == 0,
            10,
            message="canary scaled to 0",
        )
        assert (await ctl(cluster, "status", "pay")).code == canaryctl.EXIT_CANARY_FAILED

        refused = await ctl(cluster, "promote", "pay")
        assert refused.code == canaryctl.EXIT_REFUSED
        assert "did not apply promote: ignored: no run in progress (phase Failed)" in refused.out

    # The controller is down: the request is stored and waits for it.
    pending = await ctl(cluster, "retry", "pay", "--timeout", "0.5")
    assert pending.code == canaryctl.EXIT_TIMEOUT
    assert "it stays pending" in pending.out
    request_id = status(cluster, "pay")["requestedAction"]["id"]
    assert status(cluster, "pay")["phase"] == "Failed"

    async with controller(cluster):
        await world.wait_until(
            lambda: (status(cluster, "pay").get("lastAction") or {}).get("id") == request_id,
            15,
            message="retry acknowledged after the restart",
        )
        assert status(cluster, "pay")["lastAction"]["result"].startswith("restarted the run of revision")
        watched = await ctl(cluster, "status", "pay", "--watch", "--timeout", "30s")
        assert watched.code == 0, watched.out + watched.err
        # Rolled back, then the same revision walked the whole schedule again and was promoted.
        rollback = recorder.sequence.index((100, 0))
        assert recorder.sequence[rollback:] == [(100, 0), (80, 20), (60, 40), (40, 60), (20, 80), (100, 0)]
        retried = [e for e in world.events(cluster.store, cluster.ns, "pay") if e["reason"] == "Retried"]
        assert retried and "retry requested by" in retried[0]["note"]
        recorder.close()


async def test_promote_step_walks_a_slow_schedule_one_step_at_a_time(cluster: Backend) -> None:
    # An interval of ten minutes: within this test only `promote --step` moves the weight.
    cluster.app("slow", step_weights=[10, 40], interval="10m", metrics=METRIC)
    async with controller(cluster):
        recorder = await start_run(cluster, "slow")
        await world.wait_until(
            lambda: weights(cluster, "slow") == (90, 10), 10, message="first step's weight on the route"
        )

        stepped = await ctl(cluster, "promote", "slow", "--step")
        assert stepped.code == 0, stepped.err
        assert "promote-step acknowledged by the controller: advanced to step 2 (40%)" in stepped.out
        await world.wait_until(
            lambda: weights(cluster, "slow") == (60, 40), 10, message="second step's weight on the route"
        )

        final = await ctl(cluster, "promote", "slow", "--step", "-o", "json")
        assert final.code == 0, final.err
        document = json.loads(final.out)
        assert document["request"]["action"] == "promote-step"
        assert document["acknowledgement"]["result"].startswith("promoting revision")
        watched = await ctl(cluster, "status", "slow", "--watch", "--timeout", "30s")
        assert watched.code == 0, watched.out + watched.err
        assert recorder.sequence == [(90, 10), (60, 40), (100, 0)]
        recorder.close()
