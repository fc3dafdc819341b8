"""One object that starts, and stops, the whole local stand-in cluster.

The CLI (`canaryd sandbox`), the demo, the end-to-end tests and the
benchmarks all need the same thing: a Kubernetes API server with the
Deployment controller (Deployments, their ReplicaSets and Pods), the
EndpointSlice controller, the Gateway implementation and the traffic data
plane running against it, a kubeconfig pointing at it, and often a real Prometheus
scraping the traffic metrics. `SandboxCluster` starts them in order, stops
them in reverse order even when starting failed half-way, and leaves no
process or temporary file behind::

    async with SandboxCluster(with_prometheus=True, ready_delay=0.2) as cluster:
        cluster.api_url          # http://127.0.0.1:PORT
        cluster.kubeconfig_path  # Path of a kubeconfig for kubectl and kubernetes_asyncio
        cluster.metrics_url      # http://127.0.0.1:PORT/metrics (the traffic simulator)
        cluster.prometheus_url   # http://127.0.0.1:PORT, or None without Prometheus
        cluster.store            # the ObjectStore, for in-process arranging and asserting
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from canaryd.sandbox.prometheus_server import PrometheusServer, find_binary
from canaryd.sandbox.server.apiserver import SandboxApiServer
from canaryd.sandbox.server.store import ObjectStore
from canaryd.sandbox.sim.deployments import DEFAULT_READY_DELAY, DeploymentSimulator
from canaryd.sandbox.sim.endpoints import EndpointsController
from canaryd.sandbox.sim.gateway import CONTROLLER_NAME, SandboxGateway
from canaryd.sandbox.sim.pods import DEFAULT_POD_CIDR
from canaryd.sandbox.sim.traffic import DEFAULT_RPS, DEFAULT_TICK_INTERVAL, TrafficSimulator
from canaryd.sandbox.store_view import StoreView

DEFAULT_SCRAPE_INTERVAL = 1.0
GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"


class SandboxCluster:
    """The API server, the simulators and optionally Prometheus, as one async context manager.

    Arguments:
        port: API server port on 127.0.0.1 (0: a free one).
        kubeconfig_path: where to write the kubeconfig (None: a temporary file removed on stop).
        with_prometheus: also run Debian's `prometheus`, scraping the traffic simulator.
        prometheus_port: its port (0: a free one).
        metrics_port: the traffic simulator's /metrics port (0: a free one).
        scrape_interval: Prometheus scrape interval in seconds.
        ready_delay: seconds until a Deployment's new pods count as ready.
        time_scale: real seconds per second of a Deployment's progressDeadlineSeconds.
        pod_cidr: where pod IPs come from (any range: the sandbox, unlike a real API server, accepts
            loopback endpoints, so 127.x.y.0/24 lets real processes serve the pods); None: Deployments
            get status only, with no ReplicaSets, Pods, EndpointSlices or Endpoints.
        tick_interval: seconds between traffic simulator ticks.
        default_rps: request rate of routes without the `sandbox.canaryd.io/rps` annotation.
        gateway_class: when set, a GatewayClass of that name for the sandbox gateway is created.
        simulate_traffic: run the traffic simulator (off for benchmarks that judge canaries otherwise;
            then there is no metrics endpoint and Prometheus cannot be started).
        seed: makes generated names and injected faults repeatable.
        api_server_options: further keyword arguments for `SandboxApiServer`.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        kubeconfig_path: str | Path | None = None,
        with_prometheus: bool = False,
        prometheus_port: int = 0,
        metrics_port: int = 0,
        scrape_interval: float = DEFAULT_SCRAPE_INTERVAL,
        ready_delay: float = DEFAULT_READY_DELAY,
        time_scale: float = 1.0,
        pod_cidr: str | None = DEFAULT_POD_CIDR,
        tick_interval: float = DEFAULT_TICK_INTERVAL,
        default_rps: float = DEFAULT_RPS,
        gateway_class: str | None = None,
        simulate_traffic: bool = True,
        seed: int | None = None,
        api_server_options: dict[str, Any] | None = None,
    ) -> None:
        self.api_server = SandboxApiServer(port=port, seed=seed, **(api_server_options or {}))
        self.store: ObjectStore = self.api_server.store
        view = StoreView(self.store)
        self.deployments = DeploymentSimulator(
            view, ready_delay=ready_delay, time_scale=time_scale, pod_cidr=pod_cidr
        )
        self.endpoints = EndpointsController(view) if pod_cidr is not None else None
        self.gateway = SandboxGateway(view)
        self.traffic = TrafficSimulator(
            view, tick_interval=tick_interval, port=metrics_port, default_rps=default_rps
        )
        if with_prometheus and not simulate_traffic:
            raise ValueError(
                "with_prometheus needs simulate_traffic: Prometheus scrapes the traffic simulator"
            )
        self.simulate_traffic = simulate_traffic
        self.with_prometheus = with_prometheus
        self.prometheus: PrometheusServer | None = None
        self._prometheus_port = prometheus_port
        self._scrape_interval = scrape_interval
        self._gateway_class = gateway_class
        self._requested_kubeconfig = Path(kubeconfig_path) if kubeconfig_path is not None else None
        self._temp_dir: Path | None = None
        self._kubeconfig_path: Path | None = None
        self._started: list[str] = []

    # -- addresses -------------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.api_server.url

    @property
    def kubeconfig_path(self) -> Path:
        if self._kubeconfig_path is None:
            raise RuntimeError("the sandbox cluster has not been started")
        return self._kubeconfig_path

    @property
    def metrics_url(self) -> str:
        """The traffic simulator's /metrics URL (RuntimeError when traffic is not simulated)."""
        self._require_traffic()
        return self.traffic.metrics_url

    @property
    def metrics_target(self) -> str:
        """`host:port` of the traffic simulator, as a Prometheus scrape target."""
        self._require_traffic()
        return self.traffic.target

    def _require_traffic(self) -> None:
        if not self.simulate_traffic:
            raise RuntimeError("this sandbox cluster runs without the traffic simulator")

    @property
    def prometheus_url(self) -> str | None:
        return self.prometheus.url if self.prometheus is not None else None

    @property
    def prometheus_pid(self) -> int | None:
        return self.prometheus.pid if self.prometheus is not None else None

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> SandboxCluster:
        """Start everything; on failure, stop what was started and re-raise."""
        if self.with_prometheus:
            find_binary("prometheus")  # fail before starting anything, with the install hint
        try:
            await self.api_server.start()
            self._started.append("api")
            self._kubeconfig_path = self._write_kubeconfig()
            self.deployments.start()
            self._started.append("deployments")
            if self.endpoints is not None:
                self.endpoints.start()
                self._started.append("endpoints")
            self.gateway.start()
            self._started.append("gateway")
            if self.simulate_traffic:
                await self.traffic.start()
                self._started.append("traffic")
            if self._gateway_class:
                self._ensure_gateway_class(self._gateway_class)
            if self.with_prometheus:
                self.prometheus = PrometheusServer(
                    scrape_targets=[self.traffic.target],
                    scrape_interval=self._scrape_interval,
                    port=self._prometheus_port or None,
                )
                self._started.append("prometheus")
                await asyncio.to_thread(self.prometheus.start)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop everything that was started, newest first; safe to call twice."""
        errors: list[BaseException] = []
        while self._started:
            part = self._started.pop()
            try:
                if part == "prometheus" and self.prometheus is not None:
                    await asyncio.to_thread(self.prometheus.close)
                elif part == "traffic":
                    await self.traffic.stop()
                elif part == "gateway":
                    self.gateway.stop()
                elif part == "deployments":
                    self.deployments.stop()
                elif part == "endpoints" and self.endpoints is not None:
                    self.endpoints.stop()
                elif part == "api":
                    await self.api_server.stop()
            except Exception as error:  # keep stopping the rest
                errors.append(error)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        if errors:
            raise errors[0]

    async def __aenter__(self) -> SandboxCluster:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    # -- internals -------------------------------------------------------------------------------------------

    def _write_kubeconfig(self) -> Path:
        path = self._requested_kubeconfig
        if path is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="canaryd-sandbox-"))
            path = self._temp_dir / "kubeconfig"
        return self.api_server.write_kubeconfig(path)

    def _ensure_gateway_class(self, name: str) -> None:
        try:
            self.store.get("gatewayclasses.gateway.networking.k8s.io", name)
        except Exception:
            self.store.create(
                "gatewayclasses.gateway.networking.k8s.io",
                {
                    "apiVersion": GATEWAY_API_VERSION,
                    "kind": "GatewayClass",
                    "metadata": {"name": name},
                    "spec": {
                        "controllerName": CONTROLLER_NAME,
                        "description": "The canaryd sandbox's simulated Gateway implementation",
                    },
                },
            )
