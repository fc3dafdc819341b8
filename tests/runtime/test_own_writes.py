"""A weight step costs one reconcile pass: the answers to the pass's own writes do not queue another.

Before, each step's status patch and route patch came back into the caches
and queued one more pass for the same Canary, which observed, decided and
wrote nothing: two passes per step. The runs must still move as fast (the
phases that wait on the effects of the last decision still get their look),
and a person's action still lands at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from canaryd.runtime.controller import running_controller
from canaryd.sandbox.cluster import SandboxCluster
from tests.cli.test_canaryctl import run_ctl
from tests.runtime import world
from tests.runtime.test_controller import METRIC, NS, ScriptedAnalysis, settings_for

STEPS = [10, 20, 30, 40, 50]


@pytest.fixture
async def cluster():
    async with SandboxCluster(ready_delay=0.05, tick_interval=0.5, seed=15) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        yield sandbox


def passes(controller: Any) -> int:
    return sum(
        int(sample.value)
        for metric in controller.metrics.registry.collect()
        if metric.name == "canaryd_reconciles"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


class PassesAtSteps:
    """The controller's reconcile passes so far, each time the Canary's status.step moved."""

    def __init__(self, store: Any, controller: Any, name: str) -> None:
        self.at_step: dict[int, int] = {}
        self._controller, self._name = controller, name
        self._unsubscribe = store.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        obj = event.obj if isinstance(event.obj, dict) else {}
        if (
            event.storage_key != ("canaryd.io", "canaries")
            or (obj.get("metadata") or {}).get("name") != self._name
        ):
            return
        status = obj.get("status") or {}
        if status.get("phase") == "Progressing":
            self.at_step.setdefault(int(status.get("step", 0)), passes(self._controller))

    def close(self) -> None:
        self._unsubscribe()


async def test_a_weight_step_takes_one_pass_and_the_run_does_not_slow_down(cluster):
    store = cluster.store
    world.app(store, NS, "web", metrics=METRIC, interval="1s", step_weights=STEPS)
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()) as controller:
        await world.wait_until(
            lambda: world.status(store, NS, "web").get("phase") == "Initialized", timeout=15
        )
        recorder = PassesAtSteps(store, controller, "web")
        started = time.monotonic()
        world.new_revision(store, NS, "web", "app:2")
        await world.wait_until(lambda: world.status(store, NS, "web").get("phase") == "Succeeded", timeout=60)
        run_seconds = time.monotonic() - started
        recorder.close()
    at = recorder.at_step
    assert set(range(2, len(STEPS) + 1)) <= set(at), at
    # Steps 2..5 are weight steps within Progressing: one pass each (a foreign event may add one).
    per_step = (at[len(STEPS)] - at[2]) / (len(STEPS) - 2)
    assert per_step <= 1.34, at
    # Five steps one second apart, then the promotion: skipped looks must not hold any phase up.
    assert run_seconds < len(STEPS) + 4, run_seconds


async def test_a_promote_during_a_long_step_lands_at_once(cluster):
    store = cluster.store
    world.app(store, NS, "web", metrics=METRIC, interval="60s", step_weights=STEPS)
    async with running_controller(settings_for(cluster), analyzer=ScriptedAnalysis()):
        await world.wait_until(
            lambda: world.status(store, NS, "web").get("phase") == "Initialized", timeout=15
        )
        world.new_revision(store, NS, "web", "app:2")
        await world.wait_until(lambda: world.status(store, NS, "web").get("step") == 1, timeout=15)
        result = await asyncio.to_thread(
            run_ctl, "--kubeconfig", str(cluster.kubeconfig_path), "-n", NS, "promote", "web"
        )
        assert result.code == 0, result.err
        await world.wait_until(
            lambda: world.status(store, NS, "web").get("phase") in ("Promoting", "Finalizing", "Succeeded"),
            timeout=10,
            message="the promote was acted on well before the step's minute was over",
        )
