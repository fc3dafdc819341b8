"""SandboxCluster: API server, simulators and Prometheus together, reached as the controller reaches them."""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.request
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from canaryd.sandbox.cluster import SandboxCluster
from canaryd.sandbox.prometheus_server import PrometheusNotInstalledError
from canaryd.sandbox.sim.gateway import CONTROLLER_NAME
from canaryd.sandbox.sim.knobs import ANNOTATION_RPS
from tests.fixtures.waiting import eventually

GW_GROUP, GW_VERSION = "gateway.networking.k8s.io", "v1"


def port_open(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def app_objects(namespace: str) -> list[tuple[str, dict[str, Any]]]:
    labels = {"app": "web"}
    return [
        (
            "gateway",
            {
                "apiVersion": f"{GW_GROUP}/{GW_VERSION}",
                "kind": "Gateway",
                "metadata": {"name": "public", "namespace": namespace},
                "spec": {
                    "gatewayClassName": "canaryd-sandbox",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                },
            },
        ),
        (
            "httproute",
            {
                "apiVersion": f"{GW_GROUP}/{GW_VERSION}",
                "kind": "HTTPRoute",
                "metadata": {"name": "web", "namespace": namespace, "annotations": {ANNOTATION_RPS: "50"}},
                "spec": {
                    "parentRefs": [{"name": "public"}],
                    "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
                },
            },
        ),
        (
            "deployment",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "web", "image": "web:1"}]},
                    },
                },
            },
        ),
        (
            "service",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": labels, "ports": [{"port": 80}]},
            },
        ),
    ]


async def create_app(api: k8s_client.ApiClient, namespace: str) -> None:
    core, apps, custom = (
        k8s_client.CoreV1Api(api),
        k8s_client.AppsV1Api(api),
        k8s_client.CustomObjectsApi(api),
    )
    await core.create_namespace({"metadata": {"name": namespace}})
    for kind, body in app_objects(namespace):
        if kind == "deployment":
            await apps.create_namespaced_deployment(namespace, body)
        elif kind == "service":
            await core.create_namespaced_service(namespace, body)
        else:
            await custom.create_namespaced_custom_object(GW_GROUP, GW_VERSION, namespace, f"{kind}s", body)


async def test_cluster_serves_kubernetes_clients_and_simulates_status_and_traffic() -> None:
    async with SandboxCluster(
        ready_delay=0.05, tick_interval=0.05, gateway_class="canaryd-sandbox"
    ) as cluster:
        assert cluster.prometheus_url is None
        kubeconfig = cluster.kubeconfig_path
        assert kubeconfig.is_file()
        api = await k8s_config.new_client_from_config(config_file=str(kubeconfig))
        async with api:
            await create_app(api, "shop")
            apps, custom = k8s_client.AppsV1Api(api), k8s_client.CustomObjectsApi(api)

            async def deployment_ready() -> bool:
                status = (await apps.read_namespaced_deployment("web", "shop")).status
                return status.ready_replicas == 2 and status.observed_generation == 1

            async def route_accepted() -> bool:
                route = await custom.get_namespaced_custom_object(
                    GW_GROUP, GW_VERSION, "shop", "httproutes", "web"
                )
                parents = (route.get("status") or {}).get("parents") or []
                return any(
                    p["controllerName"] == CONTROLLER_NAME and p["conditions"][0]["status"] == "True"
                    for p in parents
                )

            await eventually(deployment_ready)
            await eventually(route_accepted)
            gateway_class = await custom.get_cluster_custom_object(
                GW_GROUP, GW_VERSION, "gatewayclasses", "canaryd-sandbox"
            )
            assert gateway_class["status"]["conditions"][0]["status"] == "True"

            def metrics() -> str:
                with urllib.request.urlopen(cluster.metrics_url, timeout=5) as response:
                    return response.read().decode()

            async def traffic_seen() -> bool:
                text = await asyncio.to_thread(metrics)
                return (
                    'canaryd_sandbox_requests_total{code="200",deployment="web",namespace="shop",'
                    'route="web",service="web"}'
                ) in text

            await eventually(traffic_seen)
        api_url, metrics_url = cluster.api_url, cluster.metrics_url
    assert not port_open(api_url)
    assert not port_open(metrics_url)
    assert not kubeconfig.exists()  # the temporary kubeconfig is removed with the cluster


@pytest.mark.prometheus
async def test_cluster_with_prometheus_points_it_at_the_traffic_and_stops_the_process(
    prometheus_binary: str, tmp_path: Any
) -> None:
    kubeconfig = tmp_path / "sandbox.kubeconfig"
    async with SandboxCluster(
        with_prometheus=True,
        scrape_interval=0.2,
        ready_delay=0.0,
        tick_interval=0.05,
        gateway_class="canaryd-sandbox",
        kubeconfig_path=kubeconfig,
    ) as cluster:
        assert cluster.kubeconfig_path == kubeconfig
        assert cluster.prometheus is not None and cluster.prometheus_url is not None
        pid = cluster.prometheus_pid
        assert pid is not None
        api = await k8s_config.new_client_from_config(config_file=str(kubeconfig))
        async with api:
            await create_app(api, "shop")
        # what it scrapes is checked through queries in tests/sandbox/test_traffic.py
        assert cluster.prometheus.scrape_targets == [cluster.metrics_target]
        with urllib.request.urlopen(f"{cluster.prometheus_url}/-/ready", timeout=5) as response:
            assert response.status == 200
    assert kubeconfig.exists()  # a kubeconfig the caller asked for stays
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_cluster_without_traffic_simulation_still_runs_deployments_and_gateway() -> None:
    with pytest.raises(ValueError, match="simulate_traffic"):
        SandboxCluster(with_prometheus=True, simulate_traffic=False)
    async with SandboxCluster(simulate_traffic=False, ready_delay=0.0) as cluster:
        cluster.store.ensure_namespace("shop")
        for kind, body in app_objects("shop"):
            cluster.store.create(
                kind if kind in ("deployment", "service") else f"{kind}s.{GW_GROUP}", body, "shop"
            )

        async def ready() -> bool:
            return cluster.store.get("deployments", "web", "shop").get("status", {}).get("readyReplicas") == 2

        await eventually(ready)
        with pytest.raises(RuntimeError, match="without the traffic simulator"):
            _ = cluster.metrics_url


async def test_cluster_without_prometheus_binary_fails_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    cluster = SandboxCluster(with_prometheus=True)
    with pytest.raises(PrometheusNotInstalledError, match="apt-get install"):
        await cluster.start()
    assert cluster.api_server.port == 0
