"""End to end: the richer analysis options against a real Prometheus and the sandbox's simulated traffic.

One sandbox, several Canaries at once, each showing one option as a user
sees it: a ``dryRun`` metric measured and shown but never failing the run;
a value in a metric's ``inconclusiveRange`` pausing the run until a person
promotes or aborts it with ``kubectl canary``; ``initialDelay`` keeping the
first check after each step back; a per-metric ``failureLimit`` failing the
run before the Canary's threshold; ``skipAnalysis`` promoting a bad
revision without checks, with an Event that says so. The metrics are
analysis/sandbox.yaml's templates over the traffic simulator's series.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from canaryd.runtime.controller import running_controller
from tests.cli.test_canaryctl import run_ctl
from tests.e2e.backends import SANDBOX, backend
from tests.runtime import world
from tests.runtime.test_controller import settings_for

pytestmark = pytest.mark.e2e

ERRORS = "sandbox.canaryd.io/error-rate"
NS = "shop"


def phase(store: Any, name: str) -> str | None:
    return world.status(store, NS, name).get("phase")


def reasons(store: Any, name: str) -> list[str]:
    return [e["reason"] for e in world.events(store, NS, name)]


async def until_phase(store: Any, name: str, wanted: str, timeout: float = 60) -> None:
    await world.wait_until(
        lambda: phase(store, name) == wanted,
        timeout=timeout,
        message=f"{name} {wanted} (is {phase(store, name)})",
    )


def success_rate(**options: Any) -> dict[str, Any]:
    return {
        "name": "success-rate",
        "templateRef": {"name": "success-rate", "namespace": "canaryd-system"},
        "thresholdRange": {"min": 95},
        "interval": "4s",
        **options,
    }


def app(store: Any, name: str, metrics: list[dict[str, Any]], *, threshold: int = 3, **spec: Any) -> None:
    store.create("deployments", world.deployment(NS, name))
    store.create("httproutes.gateway.networking.k8s.io", world.route(NS, name, rps=100))
    canary = world.canary(
        NS, name, step_weights=[20, 50], interval="2s", threshold=threshold, metrics=metrics, deadline=300
    )
    canary["spec"].update(spec)
    store.create("canaries.canaryd.io", canary)


def metric_status(store: Any, name: str, metric: str) -> dict[str, Any] | None:
    return next((m for m in world.status(store, NS, name).get("metrics", []) if m["name"] == metric), None)


def notes(store: Any, name: str) -> list[str]:
    return [f"{e['reason']}: {e.get('note', '')}" for e in world.events(store, NS, name)]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def ctl(kubeconfig: Path, *argv: str) -> Any:
    return await asyncio.to_thread(run_ctl, "--kubeconfig", str(kubeconfig), "-n", NS, *argv)


async def test_dry_run_inconclusive_initial_delay_failure_limit_and_skip_analysis(request):
    async with backend(SANDBOX, request) as sandbox:
        cluster = sandbox.cluster
        store = cluster.store
        latency_dry = {
            "name": "latency-p99",
            "templateRef": {"name": "latency-p99", "namespace": "canaryd-system"},
            "thresholdRange": {"max": 0.001},  # no request is that fast: it would fail every check
            "interval": "4s",
            "dryRun": True,
        }
        app(store, "dry", [success_rate(), latency_dry])
        # ~85 % success: below 95, within the inconclusive range [50, 95].
        app(store, "unsure", [success_rate(inconclusiveRange={"min": 50})])
        app(store, "doubtful", [success_rate(inconclusiveRange={"min": 50})])
        app(store, "delayed", [success_rate(initialDelay="7s")])
        app(store, "limited", [success_rate(failureLimit=1)], threshold=5)
        app(store, "skipped", [success_rate()], skipAnalysis=True)
        names = ("dry", "unsure", "doubtful", "delayed", "limited", "skipped")
        settings = settings_for(cluster, prometheus_url=cluster.prometheus_url)
        async with running_controller(settings):
            for name in names:
                await until_phase(store, name, "Initialized", timeout=30)
            for name in ("dry", "delayed"):
                world.new_revision(store, NS, name, "shop:2.0")
            for name in ("unsure", "doubtful"):
                world.new_revision(store, NS, name, "shop:2.0-flaky", {ERRORS: "0.15"})
            for name in ("limited", "skipped"):
                world.new_revision(store, NS, name, "shop:2.0-broken", {ERRORS: "0.6"})

            # initialDelay: every check made after a step comes at least 7 s after it.
            seen: list[tuple[datetime, datetime]] = []

            def delayed_done() -> bool:
                status = world.status(store, NS, "delayed")
                metric = metric_status(store, "delayed", "success-rate")
                if metric and metric.get("checkedAt") and status.get("lastStepTime"):
                    seen.append((when(status["lastStepTime"]), when(metric["checkedAt"])))
                return status.get("phase") == "Succeeded"

            # The inconclusive ones pause; a person decides each.
            def paused(name: str) -> bool:
                return bool(world.status(store, NS, name).get("paused"))

            await world.wait_until(
                lambda: paused("unsure") and paused("doubtful"),
                timeout=60,
                message="inconclusive runs paused",
            )
            for name in ("unsure", "doubtful"):
                metric = metric_status(store, name, "success-rate")
                assert metric is not None and metric["verdict"] == "Inconclusive", metric
                assert 50 <= metric["value"] < 95
                await world.wait_until(lambda n=name: "AnalysisInconclusive" in reasons(store, n), timeout=10)
                assert world.status(store, NS, name)["failedChecks"] == 0
            weights = world.weights(store, NS, "unsure")
            await asyncio.sleep(5)  # paused: no step, no promotion, no rollback on its own
            assert phase(store, "unsure") == "Progressing" and world.weights(store, NS, "unsure") == weights
            assert (await ctl(cluster.kubeconfig_path, "promote", "unsure")).code == 0
            assert (await ctl(cluster.kubeconfig_path, "abort", "doubtful")).code == 0

            await world.wait_until(delayed_done, timeout=90, interval=0.1, message="delayed promoted")
            await until_phase(store, "dry", "Succeeded", timeout=60)
            await until_phase(store, "unsure", "Succeeded", timeout=60)
            await until_phase(store, "doubtful", "Failed", timeout=60)
            await until_phase(store, "limited", "Failed", timeout=60)
            await until_phase(store, "skipped", "Succeeded", timeout=60)

        # dryRun: measured and shown as failing, yet the run promoted.
        dry = metric_status(store, "dry", "latency-p99")
        assert dry is not None and dry["dryRun"] is True and dry["verdict"] == "Fail", dry
        assert dry["value"] is not None and dry["value"] > 0.001
        assert world.status(store, NS, "dry")["failedChecks"] == 0

        after_steps = [(step, checked) for step, checked in seen if checked > step]
        assert after_steps, "checks were seen after a step"
        assert all((checked - step).total_seconds() >= 7 - 0.01 for step, checked in after_steps), after_steps

        limited = world.status(store, NS, "limited")
        assert limited["failedChecks"] == 1, notes(store, "limited")
        await world.wait_until(
            lambda: "MetricFailureLimitReached" in reasons(store, "limited"),
            timeout=10,
            message=str(notes(store, "limited")),
        )
        assert world.weights(store, NS, "limited") == (100, 0)

        await world.wait_until(lambda: "AnalysisSkipped" in reasons(store, "skipped"), timeout=10)
        skipped_primary = store.get("deployments", "skipped-primary", NS)
        assert skipped_primary["spec"]["template"]["metadata"]["annotations"].get(ERRORS) == "0.6"
        assert "AnalysisPassed" not in reasons(store, "skipped")

        assert (
            store.get("deployments", "doubtful-primary", NS)["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
            != "shop:2.0-flaky"
        )
