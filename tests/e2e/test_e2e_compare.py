"""End to end: Canaries judged against their primary by `canaryd run`, on the sandbox with a real Prometheus.

Two Canaries compare the canary's error rate with the primary's (the
``error-rate`` template of analysis/sandbox.yaml, whose counts the
sequential judge tests), one with each judge. Each first gets a good
revision, which must be promoted, then a bad one (30 % of its requests
fail), which must be rolled back; what is asserted is what a user sees: the
phase, the route's weights, and the comparison in status and Events. (Sandbox only:
analysis/traefik.yaml has no comparison template.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.backends import SANDBOX, backend
from tests.e2e.test_e2e import HTTP, until_phase
from tests.runtime import world

pytestmark = pytest.mark.e2e

JUDGES = {
    "sequential": {"judge": "Sequential", "resolution": "2s", "absoluteTolerance": 5},
    "fixed-sample": {"judge": "MannWhitney", "resolution": "2s"},
}


def _metric(compare: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "error-rate",
        "templateRef": {"name": "error-rate", "namespace": "canaryd-system"},
        "compare": {"tolerance": 0.25, **compare},
        "interval": "12s",
    }


async def test_a_comparison_promotes_a_good_revision_and_rolls_back_a_bad_one(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with backend(SANDBOX, request) as env:
        store, ns = env.store, env.ns
        for name, compare in JUDGES.items():
            store.create("deployments", world.deployment(ns, name))
            store.create(HTTP, world.route(ns, name))
            store.create(
                "canaries.canaryd.io",
                world.canary(ns, name, step_weights=[10, 30, 50], interval="3s", threshold=2,
                             metrics=[_metric(compare)], deadline=180),
            )  # fmt: skip
        ctl = env.controller(tmp_path).start()
        try:
            for name in JUDGES:
                await until_phase(env, name, "Initialized", timeout=30)
            for name in JUDGES:
                world.new_revision(store, ns, name, "shop:2.0")
            for name in JUDGES:
                await until_phase(env, name, "Succeeded", timeout=150)
                assert world.weights(store, ns, name) == (100, 0)
                metric = world.status(store, ns, name)["metrics"][0]
                assert metric["verdict"] == "Pass"
                assert metric["comparison"]["judge"] == JUDGES[name]["judge"]
                assert metric["comparison"]["classification"] == "Pass"
                assert metric["comparison"]["score"] == 100

            for name in JUDGES:
                broken = {"sandbox.canaryd.io/error-rate": "0.3"}
                world.new_revision(store, ns, name, "shop:3.0-broken", broken)
            for name in JUDGES:
                await until_phase(env, name, "Failed", timeout=90)
                await world.wait_until(lambda n=name: world.weights(store, ns, n) == (100, 0), timeout=15)
                status = world.status(store, ns, name)
                metric = status["metrics"][0]
                assert metric["verdict"] == "Fail" and metric["comparison"]["classification"] == "High"
                assert metric["comparison"]["canary"] > 10 and metric["comparison"]["primary"] < 1
                assert "above the tolerance of +25%" in metric["message"]
            sequential = [e["reason"] for e in world.events(store, ns, "sequential")]
            fixed = [e["reason"] for e in world.events(store, ns, "fixed-sample")]
            assert "CriticalMetricFailed" in sequential  # its failure is final: no threshold to wait for
            assert "FailedChecksThresholdReached" in fixed
            assert world.status(store, ns, "sequential")["failedChecks"] == 1
            assert world.status(store, ns, "fixed-sample")["failedChecks"] == 2
        finally:
            ctl.stop()
