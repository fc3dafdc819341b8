"""The Grafana dashboard shows real data: every query it makes answers from a running controller.

The dashboard (manifests/grafana/canaryd-dashboard.json) is checked as Grafana
would load it (ids, layout, the datasource variable), and then live: the real
`canaryd run` drives two rollouts on the sandbox (one promoted, one rolled
back), a real Prometheus scrapes the controller's /metrics as the
ServiceMonitor does (job "canaryd-metrics", honorLabels), and each panel's
PromQL, with Grafana's variables filled in as Grafana fills them, must parse
and return at least one finite value. Each template variable's query must
list the rollouts' namespace and Canaries.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.cli.controller_process import ControllerProcess
from canaryd.sandbox.cluster import SandboxCluster
from canaryd.sandbox.prometheus_server import PrometheusServer, free_loopback_port
from tests.manifests.rendering import MANIFESTS
from tests.runtime import world

DASHBOARD_FILE = MANIFESTS / "grafana" / "canaryd-dashboard.json"
NAMESPACE = "shop"
METRICS = [
    {
        "name": "success-rate",
        "templateRef": {"name": "success-rate", "namespace": "canaryd-system"},
        "thresholdRange": {"min": 95},
        "interval": "6s",
    },
    {
        "name": "latency-p99",
        "templateRef": {"name": "latency-p99", "namespace": "canaryd-system"},
        "thresholdRange": {"max": 500},
        "interval": "6s",
    },
]
#: What Grafana puts in place of its variables: "All" is the allValue (.*); the
#: range variables get a window that covers the whole rollout.
GRAFANA_VARIABLES = {
    "$namespace": ".*",
    "$canary": ".*",
    "$__rate_interval": "5m",
    "$__range": "15m",
    "$__interval": "15s",
}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in _panels(dashboard) for target in panel["targets"]]


def _fill(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return expr


def test_dashboard_loads_as_grafana_expects() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]
    for panel in _panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_dashboard_shows_phase_weight_verdicts_lateness_and_api_requests() -> None:
    queries = " ".join(expr for _, expr in _expressions(_dashboard()))
    for series in (
        "canaryd_canary_phase",
        "canaryd_canary_weight",
        "canaryd_analysis_verdicts_total",
        "canaryd_step_lateness_seconds_bucket",
        "canaryd_kubernetes_requests_total",
    ):
        assert series in queries, f"no panel shows {series}"


def _instant(prometheus: PrometheusServer, expr: str) -> list[float]:
    data = prometheus.query(expr)
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(sample["value"][1]) for sample in data["result"]]


def _label_values(prometheus: PrometheusServer, query: str) -> list[str]:
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", _fill(query).strip())
    assert match, f"not a label_values() query: {query}"
    selector, label = match.groups()
    return sorted({str(sample["metric"].get(label)) for sample in prometheus.query(selector)["result"]})


def _app(store: Any, name: str) -> None:
    store.create("deployments", world.deployment(NAMESPACE, name))
    store.create("httproutes.gateway.networking.k8s.io", world.route(NAMESPACE, name))
    store.create(
        "canaries.canaryd.io",
        world.canary(NAMESPACE, name, step_weights=[20, 50], interval="3s", threshold=2,
                     metrics=copy.deepcopy(METRICS), deadline=120),
    )  # fmt: skip


def _phase(store: Any, name: str) -> str | None:
    return world.status(store, NAMESPACE, name).get("phase")


async def _until_phase(store: Any, name: str, wanted: str, timeout: float) -> None:
    await world.wait_until(
        lambda: _phase(store, name) == wanted,
        timeout=timeout,
        message=f"{NAMESPACE}/{name} in {wanted} (is {_phase(store, name)})",
    )


@pytest.mark.e2e
async def test_every_dashboard_query_returns_data_from_a_running_controller(
    tmp_path: Path, prometheus_binary: str
) -> None:
    dashboard = _dashboard()
    async with SandboxCluster(
        with_prometheus=True, scrape_interval=1.0, ready_delay=0.3, tick_interval=0.25, default_rps=40
    ) as cluster:
        store = cluster.store
        world.install_crds(store)
        world.install_gateway(store)
        store.ensure_namespace("canaryd-system")
        for doc in yaml.safe_load_all((world.REPO / "analysis" / "sandbox.yaml").read_text()):
            if doc:
                store.create("metrictemplates.canaryd.io", doc)
        store.ensure_namespace(NAMESPACE)
        _app(store, "good")
        _app(store, "bad")

        metrics_port = free_loopback_port()
        assert cluster.prometheus_url is not None
        controller = ControllerProcess(
            cluster.kubeconfig_path, cluster.prometheus_url, tmp_path / "controller.log",
            "--metrics-address", f"127.0.0.1:{metrics_port}", "--leader-elect",
        )  # fmt: skip
        # A second Prometheus scrapes the controller as the ServiceMonitor does.
        scraper = PrometheusServer(
            scrape_targets=[f"127.0.0.1:{metrics_port}"], scrape_interval="1s", job_name="canaryd-metrics"
        )
        controller.start()
        try:
            scraper.start()
            for name in ("good", "bad"):
                await _until_phase(store, name, "Initialized", timeout=30)
            world.new_revision(store, NAMESPACE, "good", "shop:2.0")
            world.new_revision(
                store, NAMESPACE, "bad", "shop:2.0-broken", {"sandbox.canaryd.io/error-rate": "0.6"}
            )
            await _until_phase(store, "good", "Succeeded", timeout=90)
            await _until_phase(store, "bad", "Failed", timeout=90)
            # Until a scrape holds both ends (either Canary may end first), so that the last phase and
            # weight of each are in Prometheus.
            await world.wait_until(
                lambda: _instant(
                    scraper,
                    'max(canaryd_canary_phase{name="bad", phase="Failed"})'
                    ' + max(canaryd_canary_phase{name="good", phase="Succeeded"})',
                )
                == [2.0],
                timeout=15,
                message="the promotion and the rollback scraped",
            )

            answers: dict[str, list[float]] = {}
            for title, expr in _expressions(dashboard):
                answers[f"{title}: {expr}"] = _instant(scraper, _fill(expr))
            empty = [query for query, values in answers.items() if not any(math.isfinite(v) for v in values)]
            assert not empty, "queries without data:\n" + "\n".join(empty)

            variables = {v["name"]: v for v in dashboard["templating"]["list"] if v["type"] == "query"}
            assert NAMESPACE in _label_values(scraper, variables["namespace"]["query"]["query"])
            assert {"good", "bad"} <= set(_label_values(scraper, variables["canary"]["query"]["query"]))

            # The values mean what the panels say: the phase and weight the Canaries are in.
            phase_now = next(
                expr for title, expr in _expressions(dashboard) if title == "Phase and weight now"
            )
            rows = scraper.query(_fill(phase_now))["result"]
            phases = {row["metric"]["name"]: row["metric"]["phase"] for row in rows}
            assert phases == {"good": "Succeeded", "bad": "Failed"}
        finally:
            controller.stop()
            scraper.close()
            if not controller.alive():
                print(controller.log()[-3000:])
