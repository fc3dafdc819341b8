"""`canaryd loadtest` on the real cluster: the only traffic two canaries get, and what they are judged on.

The load tester runs as a process, allowed to load Services of the test's namespace only. Each Canary's
``rollout`` webhooks call it at every step for HTTP and gRPC load against ``<name>-canary``; nothing
else sends them a request (no route traffic through Traefik). The requests reach the canary's pods on
the real data plane (real processes on the pod IPs, counting ``http_requests_total`` per pod), a real
Prometheus scrapes those counters, and the Canaries' metrics are queries over them: a good revision is
promoted, a broken one (60 % errors) is rolled back. The throughput the load tester reaches against
the real data plane is measured and printed, HTTP and gRPC.

The real cluster runs no kube-proxy, so a Service's ClusterIP leads nowhere; :class:`ServiceProxy`
stands in for it: each Service gets a loopback address (the load tester's ``--test-host``), and every
connection there is relayed to one of the ready endpoints of the Service's EndpointSlices.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from canaryd.core.webhooks import build_payload, encode_payload, headers_for
from cluster.harness import Cluster
from tests.e2e.backends import REAL, Backend, backend
from tests.runtime import world

pytestmark = [pytest.mark.e2e, pytest.mark.realcluster]

PORT = 8080
BROKEN = {"sandbox.canaryd.io/error-rate": "0.6"}
#: The good revision answers at once, so the throughput measured on it is the load tester's and the data
#: plane's, not the pod application's simulated latency times the concurrency.
PROMPT = {"sandbox.canaryd.io/latency-ms": "0"}


class ServiceProxy:
    """kube-proxy for a few Services, on loopback: one address per Service, relayed to its endpoints."""

    def __init__(self, cluster: Cluster, namespace: str, services: list[str]) -> None:
        self.cluster, self.namespace = cluster, namespace
        base = f"127.{random.randint(20, 250)}.{random.randint(0, 250)}"
        self.addresses = {service: f"{base}.{i + 1}" for i, service in enumerate(services)}
        self.endpoints: dict[str, list[tuple[str, int]]] = {service: [] for service in services}
        self.relayed: dict[str, int] = dict.fromkeys(services, 0)
        self._turn = itertools.count()
        self._stopped = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._servers: list[asyncio.AbstractServer] = []
        self._threads = [
            threading.Thread(target=self.loop.run_forever, daemon=True, name="service proxy"),
            threading.Thread(target=self._follow_endpoints, daemon=True, name="endpoint slices"),
        ]

    def start(self) -> ServiceProxy:
        for thread in self._threads:
            thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        return self

    async def _listen(self) -> None:
        for service, address in self.addresses.items():

            async def relay(reader: Any, writer: Any, service: str = service) -> None:
                await self._relay(service, reader, writer)

            self._servers.append(await asyncio.start_server(relay, address, PORT))

    def _follow_endpoints(self) -> None:
        while not self._stopped.wait(0.3):
            for service in self.endpoints:
                selector = urllib.parse.quote(f"kubernetes.io/service-name={service}")
                status, body = self.cluster.api(
                    "GET",
                    f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices"
                    f"?labelSelector={selector}",
                )
                if status != 200:
                    continue
                ready = []
                for item in body.get("items") or []:
                    ports = [p.get("port") for p in item.get("ports") or [] if p.get("port")]
                    for endpoint in item.get("endpoints") or []:
                        if (endpoint.get("conditions") or {}).get("ready") and ports:
                            ready += [(address, ports[0]) for address in endpoint.get("addresses") or []]
                self.endpoints[service] = sorted(ready)

    async def _relay(self, service: str, reader: Any, writer: Any) -> None:
        endpoints = self.endpoints[service]
        if not endpoints:
            writer.close()
            return
        ip, port = endpoints[next(self._turn) % len(endpoints)]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(ip, port)
        except OSError:
            writer.close()
            return
        self.relayed[service] += 1

        async def pipe(source: Any, sink: Any) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            with contextlib.suppress(OSError):
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def stop(self) -> None:
        self._stopped.set()

        async def close() -> None:
            for server in self._servers:
                server.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        for thread in self._threads:
            thread.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoadTesterProcess:
    """`canaryd loadtest` as a child process, allowed to load Services of one namespace."""

    def __init__(self, namespace: str, hosts: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        test_hosts = [
            arg for service, ip in hosts.items() for arg in ("--test-host", f"{service}.{namespace}={ip}")
        ]
        self.command = [
            sys.executable, "-m", "canaryd.cli.main", "loadtest",
            "--address", f"127.0.0.1:{self.port}", "--namespaces", namespace,
            "--max-rps", "5000", "--max-concurrency", "64", "--log-format", "json", *test_hosts,
        ]  # fmt: skip
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LoadTesterProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-2000:]
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}healthz", timeout=1) as answer,
            ):
                if answer.status == 200:
                    return self
            time.sleep(0.2)
        raise AssertionError(f"canaryd loadtest did not answer /healthz: {self.log_path.read_text()[-2000:]}")

    def post(self, payload: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url, data=encode_payload(payload), headers=headers_for(payload), method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            result: dict[str, Any] = json.loads(answer.read())
        return result

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}metrics", timeout=5) as answer:
            return str(answer.read().decode())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def canary_pods(namespace: str, name: str, *, primary: bool = False) -> str:
    """A label matcher for the pods of ``name``'s canary (the target) or its primary."""
    pods = f"{name}-primary-[a-z0-9]+-[a-z0-9]+" if primary else f"{name}-[a-z0-9]+-[a-z0-9]+"
    return f'namespace="{namespace}",pod=~"{pods}"'


def analysis(namespace: str, name: str) -> list[dict[str, Any]]:
    pods = canary_pods(namespace, name)
    return [
        {
            "name": "success-rate",
            "query": f'100 * sum(rate(http_requests_total{{{pods},code!~"5.."}}[10s])) '
            f"/ sum(rate(http_requests_total{{{pods}}}[10s]))",
            "thresholdRange": {"min": 95},
            "interval": "5s",
        },
        {
            # The load arrived: at least 100 requests in 10 s at the canary's pods, or the check fails.
            "name": "requests",
            "query": f"sum(increase(http_requests_total{{{pods}}}[10s]))",
            "thresholdRange": {"min": 100},
            "interval": "5s",
        },
    ]


def load_hooks(tester: LoadTesterProcess, namespace: str, name: str) -> list[dict[str, Any]]:
    service = f"{name}-canary.{namespace}:{PORT}"
    return [
        {"name": "http-load", "type": "rollout", "url": tester.url, "timeout": "5s",
         "metadata": {"url": f"http://{service}/", "rps": "40", "concurrency": "4"}},
        {"name": "grpc-load", "type": "rollout", "url": tester.url, "timeout": "5s",
         "metadata": {"url": f"grpc://{service}", "rps": "20", "concurrency": "2"}},
    ]  # fmt: skip


def counted(namespace: str, name: str) -> str:
    """Requests each canary pod counted, by protocol and code (pods scaled away stay 5 min)."""
    selector = canary_pods(namespace, name)
    return f"sum by (protocol, code) (max_over_time(http_requests_total{{{selector}}}[5m]))"


def prometheus_query(url: str, query: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}") as answer:
        result: list[dict[str, Any]] = json.loads(answer.read())["data"]["result"]
    return result


async def until_phase(env: Backend, name: str, wanted: str, timeout: float) -> None:
    try:
        await world.wait_until(
            lambda: world.status(env.store, env.ns, name).get("phase") == wanted,
            timeout=timeout,
            interval=0.2,
        )
    except AssertionError:
        events = [f"{e['reason']}: {e.get('note', '')}" for e in world.events(env.store, env.ns, name)]
        raise AssertionError(
            f"{name} not {wanted} within {timeout}s: {world.status(env.store, env.ns, name)}; {events}"
        ) from None


async def test_load_tester_traffic_is_what_canaries_are_judged_on_on_the_real_cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with backend(REAL, request) as env:
        assert isinstance(env.store.cluster, Cluster)
        services = ["good-canary", "bad-canary", "good-primary"]
        proxy = ServiceProxy(env.store.cluster, env.ns, services).start()
        tester = LoadTesterProcess(env.ns, proxy.addresses, tmp_path / "loadtest.log")
        controller = None
        try:
            await asyncio.to_thread(tester.start)
            for name in ("good", "bad"):
                env.store.create("deployments", world.deployment(env.ns, name))
                env.store.create("httproutes.gateway.networking.k8s.io", env.route(name))
                canary = world.canary(
                    env.ns, name, step_weights=[20, 50], interval="5s", metrics=analysis(env.ns, name),
                    deadline=180,
                )  # fmt: skip
                canary["spec"]["analysis"]["webhooks"] = load_hooks(tester, env.ns, name)
                env.store.create("canaries.canaryd.io", canary)
            controller = env.controller(tmp_path).start()
            for name in ("good", "bad"):
                await until_phase(env, name, "Initialized", timeout=60)
            world.new_revision(env.store, env.ns, "good", "shop:2.0", PROMPT)
            world.new_revision(env.store, env.ns, "bad", "shop:2.0-broken", BROKEN)
            await until_phase(env, "good", "Succeeded", timeout=150)
            await until_phase(env, "bad", "Failed", timeout=150)
            good, bad = (world.status(env.store, env.ns, n) for n in ("good", "bad"))

            # What the canary pods counted (the series of pods scaled away stay in Prometheus a while).
            arrived = {
                (name, r["metric"]["protocol"], r["metric"]["code"]): float(r["value"][1])
                for name in ("good", "bad")
                for r in prometheus_query(env.prometheus_url, counted(env.ns, name))
            }
            tester_metrics = await asyncio.to_thread(tester.metrics)
            throughput = await asyncio.to_thread(measure_throughput, tester, env.ns)
        finally:
            if controller is not None:
                code = controller.stop()
            tester.stop()
            proxy.stop()
    assert code == 0, controller.log()[-3000:]
    ns = env.ns

    # The load reached the canaries' pods, over both protocols, and nothing else did.
    for name in ("good", "bad"):
        for protocol in ("http", "grpc"):
            total = sum(v for (n, p, _), v in arrived.items() if (n, p) == (name, protocol))
            assert total >= 100, (name, protocol, arrived)
    assert proxy.relayed["good-canary"] > 0 and proxy.relayed["bad-canary"] > 0
    for name in ("good", "bad"):
        assert f'target="{name}-canary.{ns}:{PORT}"' in tester_metrics, tester_metrics

    # Judged on it: the good revision passed on its load, the broken one failed on its load.
    metrics = {m["name"]: m for m in good["metrics"]}
    assert metrics["success-rate"]["verdict"] == "Pass" and metrics["success-rate"]["value"] >= 95, good
    assert metrics["requests"]["value"] >= 100, good
    failed = {m["name"]: m for m in bad["metrics"]}
    assert bad["failedChecks"] == 2 and failed["success-rate"]["value"] < 80, bad
    bad_errors = sum(v for (n, _, c), v in arrived.items() if n == "bad" and c.startswith("5"))
    assert bad_errors > 0, arrived

    for protocol, stats in throughput.items():
        print(
            f"\nreal data plane, canaryd loadtest {protocol}: {stats['requestsPerSecond']:.0f} req/s "
            f"({stats['sent']} requests in {stats['seconds']:.1f} s, {stats['errors']} errors, "
            f"at most {stats['maxInFlight']} in flight, mean latency "
            f"{(stats['meanLatencySeconds'] or 0) * 1000:.1f} ms)"
        )
        request.node.user_properties.append((f"loadtest_{protocol}_rps", stats["requestsPerSecond"]))
        assert stats["sent"] > 0 and stats["errors"] == 0, stats


def measure_throughput(tester: LoadTesterProcess, namespace: str) -> dict[str, dict[str, Any]]:
    """As fast as the load tester goes against the promoted primary's pods: 5 s per protocol, waited for."""
    results = {}
    for protocol, url in (
        ("HTTP", f"http://good-primary.{namespace}:{PORT}/"),
        ("gRPC", f"grpc://good-primary.{namespace}:{PORT}"),
    ):
        payload = build_payload(
            hook="rollout", name=f"throughput-{protocol.lower()}", namespace=namespace, phase="Progressing",
            revision="bench", weight=50, step=1, failed_checks=0, now=datetime.now(UTC), interval="5s",
            metadata={"url": url, "rps": "5000", "concurrency": "32", "duration": "5s", "wait": "true"},
        )  # fmt: skip
        answer = tester.post(payload)
        assert answer.get("accepted"), answer
        results[protocol] = answer["job"]["stats"]
    return results
