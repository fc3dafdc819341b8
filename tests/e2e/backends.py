"""The two clusters the end-to-end scenarios run on, behind one interface: the sandbox and the real one.

Why this module exists: a scenario that passes on one and fails on the other is a bug, so the
scenarios are written once against :class:`Backend` and run on both:

- ``sandbox``: :class:`canaryd.sandbox.cluster.SandboxCluster` with its traffic simulator, and
  ``analysis/sandbox.yaml``'s templates; arranging and asserting go through its in-process store;
- ``real``: the session's real control plane (``cluster.harness``) and real data plane
  (``cluster.dataplane``: pods answered in a network namespace, Traefik as the Gateway), real
  requests from ``cluster.load`` through Traefik for every route, a Prometheus of the test's own
  scraping Traefik and the pods, and ``analysis/traefik.yaml``'s templates. :class:`RealStore` offers
  the part of the sandbox store's API the scenarios use, over the real API server, so the world
  helpers (``tests.runtime.world``) work unchanged.

Each real test gets namespaces of its own (apps, Gateway, templates and Lease), and its controller
watches only those, so tests never see each other's objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.cli.controller_process import ControllerProcess
from canaryd.sandbox.prometheus_server import PrometheusServer
from cluster.dataplane import DataPlane
from cluster.harness import Cluster
from cluster.load import (
    AppliedWeights,
    RouteLoad,
    StepShare,
    canary_pods_of,
    format_table,
    step_shares,
    until_answered,
)
from tests.runtime import world

REPO = Path(__file__).resolve().parents[2]
SANDBOX = "sandbox"
REAL = "real"
#: Every backend's parameter for ``@pytest.mark.parametrize``; the real one carries the marker.
BACKENDS = [pytest.param(SANDBOX, id=SANDBOX), pytest.param(REAL, id=REAL, marks=pytest.mark.realcluster)]
#: Requests per second the load generator sends to each route on the real backend.
REAL_RPS = 20.0


# ---------------------------------------------------------------------------------------------------------
# The real API server, shaped like the sandbox store


class RealApiError(Exception):
    """A refused request; str() holds the reason (e.g. AlreadyExists, NotFound) and the message."""

    def __init__(self, status: int, body: Any) -> None:
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status, self.reason = status, reason


_CORE = {"services", "pods", "namespaces", "events", "configmaps", "secrets", "serviceaccounts"}
_APPS = {"deployments", "replicasets"}
_CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions", "gatewayclasses"}
_VERSIONS = {
    "events.k8s.io": "v1", "coordination.k8s.io": "v1", "canaryd.io": "v1alpha1",
    "gateway.networking.k8s.io": "v1", "apiextensions.k8s.io": "v1",
}  # fmt: skip


def _api_path(resource: str, namespace: str | None, name: str | None = None) -> tuple[str, str, str]:
    """(URL path, group, plural) of a sandbox-style resource name such as ``canaries.canaryd.io``."""
    plural, _, group = resource.partition(".")
    if not group:
        group = (
            "apps"
            if plural in _APPS
            else "apiextensions.k8s.io"
            if plural == "customresourcedefinitions"
            else ""
        )
    prefix = "/api/v1" if not group else f"/apis/{group}/{'v1' if group == 'apps' else _VERSIONS[group]}"
    scope = "" if plural in _CLUSTER_SCOPED or not namespace else f"/namespaces/{namespace}"
    return f"{prefix}{scope}/{plural}" + (f"/{name}" if name else ""), group, plural


@dataclass(frozen=True)
class RealEvent:
    """A watch event in the shape of the sandbox store's StoreEvent (the fields the scenarios read)."""

    type: str
    storage_key: tuple[str, str]
    obj: dict[str, Any]


class _Watcher(threading.Thread):
    """List, then watch, one resource in one namespace; relists after errors (an API server restart)."""

    def __init__(self, store: RealStore, resource: str, namespace: str) -> None:
        super().__init__(daemon=True, name=f"watch {resource} {namespace}")
        self.store, self.resource, self.namespace = store, resource, namespace
        self.path, group, plural = _api_path(resource, namespace)
        self.key = (group, plural)
        self.objects: dict[str, dict[str, Any]] = {}
        self.primed = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                status, body = self.store.cluster.api("GET", self.path)
                if status != 200:
                    raise RealApiError(status, body)
                with self.store.lock:
                    seen = {o["metadata"]["name"]: o for o in body.get("items", [])}
                    for name, obj in seen.items():  # what changed while we were not watching
                        if (
                            self.objects.get(name, {}).get("metadata", {}).get("resourceVersion")
                            != obj["metadata"]["resourceVersion"]
                        ):
                            self.store.dispatch(RealEvent("MODIFIED", self.key, obj))
                    self.objects = seen
                self.primed.set()
                self._follow(body["metadata"]["resourceVersion"])
            except (OSError, ValueError, RealApiError, KeyError):
                if self.stopped.wait(0.3):
                    return

    def _follow(self, version: str) -> None:
        query = urllib.parse.urlencode({"watch": "1", "resourceVersion": version, "timeoutSeconds": "10"})
        request = urllib.request.Request(f"{self.store.cluster.server}{self.path}?{query}")
        request.add_header("Authorization", f"Bearer {self.store.cluster.admin_token}")
        with urllib.request.urlopen(
            request, timeout=15, context=self.store.cluster.ssl_context()
        ) as response:
            for line in response:
                if self.stopped.is_set():
                    return
                event = json.loads(line)
                if event["type"] in ("ERROR", "BOOKMARK"):
                    return
                obj = event["object"]
                with self.store.lock:
                    if event["type"] == "DELETED":
                        self.objects.pop(obj["metadata"]["name"], None)
                    else:
                        self.objects[obj["metadata"]["name"]] = obj
                    self.store.dispatch(RealEvent(event["type"], self.key, obj))


class RealStore:
    """The sandbox store's methods the scenarios use (create, get, patch, delete, list_refs,
    ensure_namespace, subscribe), on the real API server as admin. Errors raise :class:`RealApiError`.

    ``subscribe`` watches the routes and Canaries of ``watched`` namespaces and, as the sandbox's does,
    calls back for every change from then on (not for what exists already).
    """

    WATCHED = (
        "httproutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
        "canaries.canaryd.io",
    )

    def __init__(self, cluster: Cluster, watched: list[str]) -> None:
        self.cluster = cluster
        self.watched = watched
        self.lock = threading.RLock()
        self._subscribers: list[Callable[[RealEvent], None]] = []
        self._watchers: list[_Watcher] = []

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        status, answer = self.cluster.api(method, path, body, content_type=content_type)
        if status >= 300:
            raise RealApiError(status, answer)
        return answer

    def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        path, _, _ = _api_path(resource, (obj.get("metadata") or {}).get("namespace"))
        return dict(self._call("POST", path, obj))

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(self._call("GET", _api_path(resource, namespace, name)[0]))

    def patch(self, resource: str, name: str, patch: Any, namespace: str | None = None, *,
              patch_type: str = "merge") -> dict[str, Any]:  # fmt: skip
        content_type = {"json": "application/json-patch+json", "merge": "application/merge-patch+json"}[
            patch_type
        ]
        return dict(self._call("PATCH", _api_path(resource, namespace, name)[0], patch, content_type))

    def update(self, resource: str, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """PUT the whole object (its resourceVersion makes a stale copy fail with 409 Conflict)."""
        meta = obj.get("metadata") or {}
        path = _api_path(resource, namespace or meta.get("namespace"), meta["name"])[0]
        return dict(self._call("PUT", path, obj))

    def delete(self, resource: str, name: str, namespace: str | None = None) -> Any:
        return self._call("DELETE", _api_path(resource, namespace, name)[0])

    def list_refs(self, resource: str, namespace: str | None = None) -> tuple[list[dict[str, Any]], str]:
        body = self._call("GET", _api_path(resource, namespace)[0])
        return list(body.get("items") or []), str(body["metadata"].get("resourceVersion", ""))

    def ensure_namespace(self, name: str) -> dict[str, Any]:
        try:
            return self.create(
                "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
        except RealApiError as error:
            if error.status != 409:
                raise
            return self.get("namespaces", name)

    def dispatch(self, event: RealEvent) -> None:
        for callback in list(self._subscribers):
            callback(event)

    def subscribe(self, callback: Callable[[RealEvent], None]) -> Callable[[], None]:
        with self.lock:
            if not self._watchers:
                self._watchers = [_Watcher(self, r, ns) for ns in self.watched for r in self.WATCHED]
                for watcher in self._watchers:
                    watcher.start()
        for watcher in self._watchers:
            if not watcher.primed.wait(20):
                raise AssertionError(f"cannot list {watcher.resource} in {watcher.namespace}")
        with self.lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self.lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def close(self) -> None:
        for watcher in self._watchers:
            watcher.stopped.set()


# ---------------------------------------------------------------------------------------------------------
# Real requests, in a thread of their own


class TrafficThread:
    """Runs the load generators in their own thread and event loop, so a test's blocking API calls
    never delay a request (and the requests never slow the test's loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="traffic")
        self.thread.start()
        self.loads: dict[str, RouteLoad] = {}
        self.applied: dict[str, AppliedWeights] = {}

    def _run(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def start(
        self, key: str, gateway: str, host: str, kind: str, rps: float, applied: AppliedWeights
    ) -> None:
        async def begin() -> None:
            await until_answered(gateway, host, kind=kind)
            self.applied[key] = applied.start()
            self.loads[key] = RouteLoad(gateway, host, kind=kind, rps=rps, max_seconds=600).start()

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(begin(), self.loop))

    def linger(self, final: dict[str, int], timeout: float = 20.0, seconds: float = 2.0) -> None:
        """Go on until the Gateway shows each route's last weight, then ``seconds`` more, to measure it."""

        async def wait() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline and any(
                not self.applied[name].changes or self.applied[name].changes[-1][1] != weight
                for name, weight in final.items()
            ):
                await asyncio.sleep(0.1)
            await asyncio.sleep(seconds)

        if self.thread.is_alive():
            self._run(wait(), timeout + seconds + 10)

    def stop(self) -> dict[str, RouteLoad]:
        if not self.thread.is_alive():
            return self.loads

        async def end() -> None:
            await asyncio.gather(*(load.stop() for load in self.loads.values()))
            await asyncio.gather(*(applied.stop() for applied in self.applied.values()))

        self._run(end())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        return self.loads


# ---------------------------------------------------------------------------------------------------------
# Backends


class Backend:
    """What a scenario needs of a cluster. Namespaces: ``ns`` (the apps), ``gateway_namespace``,
    ``system_ns`` (MetricTemplates and the leader Lease)."""

    name: str
    store: Any
    ns: str
    gateway_namespace: str
    gateway_name = world.GATEWAY_NAME
    system_ns: str
    kubeconfig_path: Path
    prometheus: PrometheusServer | None
    template_prefix: str

    @property
    def prometheus_url(self) -> str:
        assert self.prometheus is not None
        return self.prometheus.url

    def metrics(self, interval: str = "6s") -> list[dict[str, Any]]:
        """The analysis every scenario uses: success rate ≥ 95 % and p99 ≤ 500 ms."""
        ref = {"namespace": self.system_ns}
        return [
            {"name": "success-rate", "templateRef": {"name": f"{self.template_prefix}success-rate", **ref},
             "thresholdRange": {"min": 95}, "interval": interval},
            {"name": "latency-p99", "templateRef": {"name": f"{self.template_prefix}latency-p99", **ref},
             "thresholdRange": {"max": 500}, "interval": interval},
        ]  # fmt: skip

    def gateway(self, name: str, *, allowed_namespaces: str = "All") -> dict[str, Any]:
        raise NotImplementedError

    def route(self, name: str, *, kind: str = "HTTPRoute", parent: str | None = None,
              parent_namespace: str | None = None) -> dict[str, Any]:  # fmt: skip
        return world.route(
            self.ns, name, kind=kind, parent=parent or self.gateway_name,
            parent_namespace=parent_namespace or self.gateway_namespace,
        )  # fmt: skip

    def app(self, name: str, *, kind: str = "HTTPRoute", parent: str | None = None, **canary: Any) -> None:
        """A Deployment, its route and its Canary in ``ns``."""
        self.store.create("deployments", world.deployment(self.ns, name))
        self.store.create(
            f"{kind.lower()}s.gateway.networking.k8s.io", self.route(name, kind=kind, parent=parent)
        )
        self.store.create("canaries.canaryd.io", world.canary(self.ns, name, route_kind=kind, **canary))

    def controller_args(self) -> list[str]:
        return []

    def controller(self, tmp_path: Path, name: str = "controller", *extra: str) -> ControllerProcess:
        return ControllerProcess(
            self.kubeconfig_path,
            self.prometheus_url,
            tmp_path / f"{name}.log",
            *self.controller_args(),
            *extra,
        )

    def route_patches(self, name: str) -> list[Any]:
        """Every successful write of the weights of HTTPRoute ``name`` (oldest first)."""
        raise NotImplementedError

    async def stop_prometheus(self) -> None:
        assert self.prometheus is not None
        await asyncio.to_thread(self.prometheus.stop)

    async def carry_traffic(self, name: str, kind: str = "HTTPRoute") -> None:
        """Real requests to the route from now on (the real backend; the sandbox simulates its own)."""

    def traffic_report(self, recorders: dict[str, world.WeightRecorder]) -> dict[str, list[StepShare]]:
        """Per route, the canary's measured share at each weight it was given (the real backend)."""
        return {}


class SandboxBackend(Backend):
    name = SANDBOX
    template_prefix = ""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.ns = "shop"
        self.gateway_namespace = world.GATEWAY_NAMESPACE
        self.system_ns = "canaryd-system"
        self.kubeconfig_path = cluster.kubeconfig_path
        self.prometheus = cluster.prometheus

    def gateway(self, name: str, *, allowed_namespaces: str = "All") -> dict[str, Any]:
        return {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": self.gateway_namespace},
            "spec": {"gatewayClassName": world.GATEWAY_CLASS, "listeners": [
                {"name": "http", "protocol": "HTTP", "port": 80,
                 "allowedRoutes": {"namespaces": {"from": allowed_namespaces}}},
            ]},
        }  # fmt: skip

    def route_patches(self, name: str) -> list[Any]:
        entries = self.cluster.api_server.audit.entries(verb="patch", resource="httproutes", name=name)
        return [entry for entry in entries if entry.code == 200]


class RealBackend(Backend):
    name = REAL
    template_prefix = "traefik-"

    def __init__(self, cluster: Cluster, plane: DataPlane, prometheus: PrometheusServer | None) -> None:
        tag = uuid.uuid4().hex[:8]
        self.cluster, self.plane = cluster, plane
        self.ns, self.gateway_namespace, self.system_ns = (
            f"e2e-{tag}",
            f"e2e-{tag}-infra",
            f"e2e-{tag}-system",
        )
        self.store = RealStore(cluster, [self.ns])
        self.kubeconfig_path = cluster.kubeconfig
        self.prometheus = prometheus
        self.traffic = TrafficThread()
        self.kinds: dict[str, str] = {}

    def host(self, name: str) -> str:
        return f"{name}.{self.ns}.test"

    def gateway(self, name: str, *, allowed_namespaces: str = "All") -> dict[str, Any]:
        return self.plane.gateway(self.gateway_namespace, name, allowed_namespaces=allowed_namespaces)

    def route(self, name: str, *, kind: str = "HTTPRoute", parent: str | None = None,
              parent_namespace: str | None = None) -> dict[str, Any]:  # fmt: skip
        route = super().route(name, kind=kind, parent=parent, parent_namespace=parent_namespace)
        route["spec"]["hostnames"] = [self.host(name)]  # every route on one listener: told apart by host
        return route

    def controller_args(self) -> list[str]:
        return ["--namespaces", self.ns, "--leader-election-namespace", self.system_ns]

    def route_patches(self, name: str) -> list[Any]:
        return [
            event for event in self.cluster.audit_events()
            if event.get("verb") == "patch" and event.get("stage") == "ResponseComplete"
            and (ref := event.get("objectRef") or {}).get("resource") == "httproutes"
            and ref.get("namespace") == self.ns and ref.get("name") == name and not ref.get("subresource")
            and (event.get("responseStatus") or {}).get("code") == 200
        ]  # fmt: skip

    async def carry_traffic(self, name: str, kind: str = "HTTPRoute") -> None:
        self.kinds[name] = kind
        api = f"http://{self.plane.traefik_metrics_target}"
        applied = AppliedWeights(api, kind, self.ns, name, f"{name}-canary")
        await self.traffic.start(name, self.plane.web_url, self.host(name), kind, REAL_RPS, applied)

    def traffic_report(self, recorders: dict[str, world.WeightRecorder]) -> dict[str, list[StepShare]]:
        finals = {
            name: r.changes[-1][1][1]
            for name, r in recorders.items()
            if name in self.traffic.loads and r.changes
        }
        self.traffic.linger(finals)
        loads = self.traffic.stop()
        report = {}
        for name, load in loads.items():
            recorder = recorders.get(name)
            if recorder is None:
                continue
            changes = [(at, canary) for at, (_, canary) in recorder.changes]
            applied = self.traffic.applied[name].changes
            shares = step_shares(load.samples, changes, canary_pods_of(name), applied=applied)
            report[name] = shares
            title = f"{self.kinds[name]} {self.ns}/{name}: share of real requests that reached the canary"
            print("\n" + format_table(title, shares))
        return report

    def setup(self) -> None:
        crds = [arg for path in sorted((REPO / "manifests" / "crd").glob("*.yaml"))
                if path.name != "kustomization.yaml" for arg in ("-f", str(path))]  # fmt: skip
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", *crds)
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *crds)
        for namespace in (self.ns, self.gateway_namespace, self.system_ns):
            self.store.ensure_namespace(namespace)
        for doc in yaml.safe_load_all((REPO / "analysis" / "traefik.yaml").read_text()):
            doc = copy.deepcopy(doc)
            doc["metadata"]["namespace"] = self.system_ns
            self.store.create("metrictemplates.canaryd.io", doc)
        self.store.create("gateways.gateway.networking.k8s.io", self.gateway(self.gateway_name))

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.traffic.stop()
        self.store.close()
        # No controller runs any more: drop the finalizers, or the namespaces would never go.
        with contextlib.suppress(Exception):
            for canary in self.store.list_refs("canaries.canaryd.io", self.ns)[0]:
                self.store.patch("canaries.canaryd.io", canary["metadata"]["name"],
                                 {"metadata": {"finalizers": None}}, self.ns)  # fmt: skip
        for namespace in (self.ns, self.gateway_namespace, self.system_ns):
            self.cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")


def assert_traffic_followed_the_weights(report: dict[str, list[StepShare]], min_requests: int = 10) -> None:
    """Every step with enough requests: the canary's share of real requests within tolerance."""
    for name, shares in report.items():
        for step in shares:
            if step.requests >= min_requests:
                assert step.within_tolerance, (
                    f"{name}: canary weight {step.weight}% but {step.share:.1f}% of {step.requests} real "
                    f"requests reached the canary (tolerance ±{step.tolerance:.1f})"
                )


@contextlib.asynccontextmanager
async def backend(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A fresh world on the chosen backend: CRDs, a Gateway for all namespaces, the templates, ``ns``."""
    from canaryd.sandbox.cluster import SandboxCluster
    from tests.e2e.test_e2e import prometheus_available

    if not prometheus_available():
        pytest.fail("Debian's prometheus binary is not installed", pytrace=False)
    if kind == SANDBOX:
        async with SandboxCluster(
            with_prometheus=True, scrape_interval=1.0, ready_delay=0.3, tick_interval=0.25, default_rps=40
        ) as cluster:
            store = cluster.store
            world.install_crds(store)
            world.install_gateway(store)
            store.ensure_namespace("canaryd-system")
            for doc in yaml.safe_load_all((REPO / "analysis" / "sandbox.yaml").read_text()):
                if doc:
                    store.create("metrictemplates.canaryd.io", doc)
            sandbox = SandboxBackend(cluster)
            store.ensure_namespace(sandbox.ns)
            yield sandbox
        return
    cluster: Cluster = request.getfixturevalue("real_cluster")
    plane: DataPlane = request.getfixturevalue("real_dataplane")
    prometheus = PrometheusServer(scrape_targets=plane.scrape_targets, scrape_interval="1s")
    real = RealBackend(cluster, plane, prometheus)
    try:
        await asyncio.to_thread(prometheus.start)
        await asyncio.to_thread(real.setup)
        yield real
    finally:
        await asyncio.to_thread(real.teardown)
        await asyncio.to_thread(prometheus.close)
