"""The sandbox's data plane: simulated requests through accepted routes, exported as Prometheus metrics.

canaryd judges a canary by what Prometheus says about the requests it served.
With no proxies and no pods in the sandbox, this simulator produces those
requests: for every HTTPRoute and GRPCRoute the sandbox gateway has accepted,
it splits the route's request rate across each rule's backendRefs by weight,
sends each share to the Deployment the backend Service selects, and draws the
outcome from that Deployment's pod-template annotations. A "bad version" is
therefore a one-line change to a Deployment.

The model, exactly:

- Rate: the route annotation `sandbox.canaryd.io/rps` (requests per second,
  default 20).
- Rules: plain requests go to the first rule that has no matches or a match
  without header conditions (path and method conditions are assumed to match
  every request). A share of requests, the route annotation
  `sandbox.canaryd.io/header-share` (default 0.1), carries the headers that the
  rule with the most header conditions asks for; those go to that rule. With
  no header rule, every request is plain. Plain requests with no rule to go to
  are answered 404 by the gateway.
- Weights: backendRef weight defaults to 1; weight 0 gets nothing; a rule with
  no backendRefs or only zero weights answers 500, as the Gateway API spec
  says.
- Backends: a backendRef that does not resolve (missing Service, not a
  Service, cross-namespace without ReferenceGrant) answers 500. A Service's
  endpoints are the ready pods of the Deployments in its namespace whose pod
  template labels contain its selector; traffic is split among them by
  readyReplicas. No ready endpoint: 503.
- Outcomes: the Deployment's pod-template annotation
  `sandbox.canaryd.io/error-rate` (share answered 500, default 0) and
  `sandbox.canaryd.io/latency-ms` (mean latency, default 20). Latencies follow
  a log-normal shape (sigma 0.25) around that mean, so p99 is about 1.8 times
  the mean. Requests the gateway answers itself take 1 ms.
- Mirroring: a rule's `RequestMirror` filter sends a copy of `percent` (or
  `fraction`; default all) of the rule's requests to the mirror's Service, as
  further requests of that Service (its Deployments answer them and they are
  counted like any other); the client only ever gets the rule's own backends'
  answers, so a mirror that does not resolve or has no ready endpoint costs
  nothing but the copies.
- gRPC requests are counted with the HTTP status code of the response.
- Only routes accepted by the sandbox gateway (route status) carry traffic.

Nothing is random: fractional requests and errors carry over between ticks and
latencies cycle through fixed quantiles of the distribution, so rates, error
shares and histograms are exact and tests and demos are repeatable.

Metrics come from a prometheus-client collector in the simulator's own
CollectorRegistry; /metrics on a loopback port serves the same text through
`render_text`, which is checked to be byte-identical to prometheus-client's
`generate_latest` and is an order of magnitude faster with many routes. The
names are a contract with analysis/sandbox.yaml:

- `canaryd_sandbox_requests_total{namespace,route,service,deployment,code}`
- `canaryd_sandbox_request_duration_seconds{namespace,route,service,deployment}`
  histogram with buckets .005 … 5 s.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from canaryd.api.constants import GRPC_ROUTE, HTTP_ROUTE
from canaryd.sandbox.labels import matches_label_selector
from canaryd.sandbox.sim.cluster_view import (
    DEPLOYMENTS,
    REFERENCE_GRANTS,
    ROUTE_KINDS,
    SERVICES,
    Change,
    ClusterView,
    Obj,
    name_of,
)
from canaryd.sandbox.sim.gateway import GatewayWorld, backend_ref_problem, route_is_accepted
from canaryd.sandbox.sim.knobs import (
    ANNOTATION_ERROR_RATE,
    ANNOTATION_HEADER_SHARE,
    ANNOTATION_LATENCY_MS,
    ANNOTATION_RPS,
)

log = logging.getLogger(__name__)

DEFAULT_RPS = 20.0
DEFAULT_LATENCY_MS = 20.0
DEFAULT_HEADER_SHARE = 0.1
DEFAULT_TICK_INTERVAL = 0.2
GATEWAY_RESPONSE_SECONDS = 0.001
LATENCY_SIGMA = 0.25

REQUESTS_METRIC = "canaryd_sandbox_requests"  # exposed as canaryd_sandbox_requests_total
DURATION_METRIC = "canaryd_sandbox_request_duration_seconds"
REQUESTS_HELP = "Requests the sandbox data plane served, by route, backend Service, Deployment and code."
DURATION_HELP = "Latency of requests the sandbox data plane served."
REQUEST_LABELS = ("namespace", "route", "service", "deployment", "code")
DURATION_LABELS = ("namespace", "route", "service", "deployment")
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    5.0,
)

Key = tuple[str, str]


def _latency_multipliers(points: int = 100, sigma: float = LATENCY_SIGMA) -> tuple[float, ...]:
    """Quantile midpoints of a log-normal with mean 1, in a well-mixed (strided) order."""
    normal = statistics.NormalDist()
    raw = [math.exp(sigma * normal.inv_cdf((i + 0.5) / points)) for i in range(points)]
    mean = sum(raw) / points
    ordered = [value / mean for value in raw]
    stride = 37  # coprime with 100: consecutive samples come from all over the distribution
    return tuple(ordered[(i * stride) % points] for i in range(points))


LATENCY_MULTIPLIERS = _latency_multipliers()


# --------------------------------------------------------------------------- knobs


def _annotations(obj: Obj | None) -> Mapping[str, Any]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _float_annotation(
    annotations: Mapping[str, Any], key: str, default: float, low: float, high: float = math.inf
) -> float:
    try:
        value = float(annotations[key])
    except (KeyError, TypeError, ValueError):
        return default
    if math.isnan(value):
        return default
    return min(max(value, low), high)


def route_rps(route: Obj, default: float = DEFAULT_RPS) -> float:
    return _float_annotation(_annotations(route), ANNOTATION_RPS, default, 0.0)


def route_header_share(route: Obj) -> float:
    return _float_annotation(_annotations(route), ANNOTATION_HEADER_SHARE, DEFAULT_HEADER_SHARE, 0.0, 1.0)


def template_error_rate(deployment: Obj) -> float:
    template = (deployment.get("spec") or {}).get("template")
    return _float_annotation(_annotations(template), ANNOTATION_ERROR_RATE, 0.0, 0.0, 1.0)


def template_latency_ms(deployment: Obj) -> float:
    template = (deployment.get("spec") or {}).get("template")
    return _float_annotation(_annotations(template), ANNOTATION_LATENCY_MS, DEFAULT_LATENCY_MS, 0.0)


# --------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class Flow:
    """One stream of requests: a share of a route's rate with a single way of being answered."""

    namespace: str
    route: str
    service: str
    deployment: str
    #: fraction of the route's requests
    share: float
    error_rate: float = 0.0
    latency_ms: float = DEFAULT_LATENCY_MS
    #: a status code the gateway answers with itself (404, 500, 503), None when a backend answers
    gateway_code: str | None = None
    #: copies of requests sent by a RequestMirror filter (not part of the shares that sum to 1)
    mirrored: bool = False

    @property
    def series(self) -> tuple[str, str, str, str]:
        return (self.namespace, self.route, self.service, self.deployment)


@dataclass
class TrafficWorld:
    """What the traffic simulator reads besides the routes."""

    gateway: GatewayWorld = field(default_factory=GatewayWorld)
    #: namespace -> name -> Deployment
    deployments: Mapping[str, Mapping[str, Obj]] = field(default_factory=dict)

    def endpoints(self, service: Obj) -> list[tuple[Obj, int]]:
        """(Deployment, ready replicas) behind a Service: its selector within their pod-template labels."""
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            return []
        namespace = (service.get("metadata") or {}).get("namespace", "")
        result = []
        for deployment in (self.deployments.get(namespace) or {}).values():
            labels = (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
                "labels"
            ) or {}
            ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
            if ready > 0 and matches_label_selector({"matchLabels": selector}, labels):
                result.append((deployment, ready))
        return result


def _matches(rule: Obj) -> list[Obj]:
    return list(rule.get("matches") or [])


def takes_plain_requests(rule: Obj) -> bool:
    matches = _matches(rule)
    return not matches or any(not m.get("headers") for m in matches)


def header_conditions(rule: Obj) -> int:
    return max((len(m.get("headers") or []) for m in _matches(rule)), default=0)


def rule_shares(route: Obj) -> tuple[list[tuple[int, float]], float]:
    """([(rule index, share of the route's requests)], share that no rule takes)."""
    rules = list((route.get("spec") or {}).get("rules") or [])
    plain_rule = next((i for i, rule in enumerate(rules) if takes_plain_requests(rule)), None)
    header_rules = [i for i, rule in enumerate(rules) if header_conditions(rule) > 0]
    header_rule = max(header_rules, key=lambda i: (header_conditions(rules[i]), -i)) if header_rules else None
    header_share = route_header_share(route) if header_rule is not None else 0.0
    shares: dict[int, float] = {}
    unmatched = 0.0
    if header_rule is not None and header_share > 0:
        shares[header_rule] = shares.get(header_rule, 0.0) + header_share
    if plain_rule is not None:
        shares[plain_rule] = shares.get(plain_rule, 0.0) + 1.0 - header_share
    else:
        unmatched = 1.0 - header_share
    return sorted(shares.items()), unmatched


def mirror_share(mirror: Obj) -> float:
    """The share of a rule's requests a RequestMirror filter copies (``percent`` or ``fraction``)."""
    if mirror.get("percent") is not None:
        return min(max(float(mirror["percent"]), 0.0), 100.0) / 100
    fraction = mirror.get("fraction")
    if isinstance(fraction, dict) and fraction.get("numerator") is not None:
        denominator = float(fraction.get("denominator") or 100)
        return min(max(float(fraction["numerator"]) / denominator, 0.0), 1.0) if denominator > 0 else 0.0
    return 1.0


def _backend_flows(
    route: Obj, route_kind: str, ref: Obj, share: float, world: TrafficWorld, *, mirrored: bool = False
) -> list[Flow]:
    """The flows of ``share`` of a route's requests sent to one backendRef (or mirrored to it)."""
    metadata = route.get("metadata") or {}
    namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
    service_name = str(ref.get("name", ""))
    if backend_ref_problem(route, route_kind, ref, world.gateway) is not None:
        return [] if mirrored else [Flow(namespace, name, service_name, "", share, gateway_code="500")]
    service_namespace = ref.get("namespace") or namespace
    service = world.gateway.services[(service_namespace, service_name)]
    endpoints = world.endpoints(service)
    ready_total = sum(ready for _, ready in endpoints)
    if ready_total == 0:
        return [] if mirrored else [Flow(namespace, name, service_name, "", share, gateway_code="503")]
    return [
        Flow(
            namespace,
            name,
            service_name,
            str((deployment.get("metadata") or {}).get("name", "")),
            share * ready / ready_total,
            error_rate=template_error_rate(deployment),
            latency_ms=template_latency_ms(deployment),
            mirrored=mirrored,
        )
        for deployment, ready in endpoints
    ]


def plan_route(route: Obj, route_kind: str, world: TrafficWorld) -> list[Flow]:
    """How an accepted route's requests split into flows (the shares of those not ``mirrored`` sum to 1)."""
    metadata = route.get("metadata") or {}
    namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
    rules = list((route.get("spec") or {}).get("rules") or [])
    shares, unmatched = rule_shares(route)
    flows: list[Flow] = []
    if unmatched > 0:
        flows.append(Flow(namespace, name, "", "", unmatched, gateway_code="404"))
    for index, rule_share in shares:
        refs = list(rules[index].get("backendRefs") or [])
        weights = [max(int(ref.get("weight", 1) if ref.get("weight") is not None else 1), 0) for ref in refs]
        total = sum(weights)
        if total == 0:
            flows.append(Flow(namespace, name, "", "", rule_share, gateway_code="500"))
            continue
        for ref, weight in zip(refs, weights, strict=True):
            if weight > 0:
                flows.extend(_backend_flows(route, route_kind, ref, rule_share * weight / total, world))
        for item in rules[index].get("filters") or []:
            mirror = item.get("requestMirror") if item.get("type") == "RequestMirror" else None
            if isinstance(mirror, dict) and isinstance(mirror.get("backendRef"), dict):
                copies = rule_share * mirror_share(mirror)
                if copies > 0:
                    flows.extend(
                        _backend_flows(route, route_kind, mirror["backendRef"], copies, world, mirrored=True)
                    )
    return flows


@dataclass(frozen=True)
class RoutePlan:
    rps: float
    flows: tuple[Flow, ...]


def plan_traffic(
    routes: Iterable[tuple[str, Obj]], world: TrafficWorld, default_rps: float = DEFAULT_RPS
) -> list[RoutePlan]:
    """Plans for every route the sandbox gateway accepted; refused routes carry nothing."""
    plans = []
    for route_kind, route in routes:
        if route_kind not in (HTTP_ROUTE, GRPC_ROUTE) or not route_is_accepted(route):
            continue
        plans.append(RoutePlan(route_rps(route, default_rps), tuple(plan_route(route, route_kind, world))))
    return plans


# --------------------------------------------------------------------------- the metrics


@dataclass
class _Histogram:
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.bucket_counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1


@dataclass
class _FlowCarry:
    requests: float = 0.0
    errors: float = 0.0
    latency_index: int = 0


class TrafficMetrics(Collector):
    """Counters and histograms of simulated requests, exposed through a prometheus-client collector.

    Kept as plain numbers and rendered on scrape, so that recording thousands of
    requests per tick costs a few additions rather than one call per request.
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str, str], int] = {}
        self.durations: dict[tuple[str, str, str, str], _Histogram] = {}
        self._carry: dict[tuple[str, str, str, str, str], _FlowCarry] = {}
        # per latency mean: bucket counts of one full cycle through LATENCY_MULTIPLIERS
        self._cycle_buckets: dict[float, list[int]] = {}
        self._label_texts: dict[tuple[str, ...], str] = {}
        self._bucket_label_texts: dict[tuple[str, ...], list[str]] = {}

    def label_text(self, key: tuple[str, ...], names: Sequence[str]) -> str:
        text = self._label_texts.get(key)
        if text is None:
            self._label_texts[key] = text = _label_text(names, key)
        return text

    def bucket_label_texts(self, series: tuple[str, ...]) -> list[str]:
        texts = self._bucket_label_texts.get(series)
        if texts is None:
            bounds = [*(repr(float(b)) for b in DURATION_BUCKETS), "+Inf"]
            texts = [_label_text(DURATION_LABELS, series, ("le", bound)) for bound in bounds]
            self._bucket_label_texts[series] = texts
        return texts

    def _count(self, series: tuple[str, str, str, str], code: str, n: int) -> None:
        if n:
            key = (*series, code)
            self.requests[key] = self.requests.get(key, 0) + n

    def _full_cycle_buckets(self, mean_seconds: float) -> list[int]:
        cached = self._cycle_buckets.get(mean_seconds)
        if cached is None:
            counts = [0] * (len(DURATION_BUCKETS) + 1)
            for multiplier in LATENCY_MULTIPLIERS:
                counts[bisect.bisect_left(DURATION_BUCKETS, multiplier * mean_seconds)] += 1
            self._cycle_buckets[mean_seconds] = cached = counts
        return cached

    def _observe_latencies(self, flow: Flow, carry: _FlowCarry, n: int) -> None:
        histogram = self.durations.setdefault(flow.series, _Histogram())
        if flow.gateway_code is not None:
            histogram.bucket_counts[bisect.bisect_left(DURATION_BUCKETS, GATEWAY_RESPONSE_SECONDS)] += n
            histogram.total += n * GATEWAY_RESPONSE_SECONDS
            histogram.count += n
            return
        mean_seconds = flow.latency_ms / 1000.0
        cycles, rest = divmod(n, len(LATENCY_MULTIPLIERS))
        if cycles:
            for index, count in enumerate(self._full_cycle_buckets(mean_seconds)):
                histogram.bucket_counts[index] += count * cycles
            histogram.total += cycles * len(LATENCY_MULTIPLIERS) * mean_seconds
            histogram.count += cycles * len(LATENCY_MULTIPLIERS)
        for _ in range(rest):
            histogram.observe(LATENCY_MULTIPLIERS[carry.latency_index] * mean_seconds)
            carry.latency_index = (carry.latency_index + 1) % len(LATENCY_MULTIPLIERS)

    def record(self, plans: Iterable[RoutePlan], seconds: float) -> int:
        """Account for `seconds` of traffic under `plans`; returns how many requests that was."""
        total = 0
        for plan in plans:
            for flow in plan.flows:
                carry = self._carry.setdefault((*flow.series, flow.gateway_code or ""), _FlowCarry())
                expected = plan.rps * seconds * flow.share + carry.requests
                n = math.floor(expected + 1e-9)
                carry.requests = expected - n
                if n <= 0:
                    continue
                total += n
                if flow.gateway_code is not None:
                    self._count(flow.series, flow.gateway_code, n)
                else:
                    expected_errors = n * flow.error_rate + carry.errors
                    errors = min(math.floor(expected_errors + 1e-9), n)
                    carry.errors = expected_errors - errors
                    self._count(flow.series, "500", errors)
                    self._count(flow.series, "200", n - errors)
                self._observe_latencies(flow, carry, n)
        return total

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(REQUESTS_METRIC, REQUESTS_HELP, labels=REQUEST_LABELS)
        for key, value in sorted(self.requests.items()):
            requests.add_metric(list(key), float(value))
        yield requests
        durations = HistogramMetricFamily(DURATION_METRIC, DURATION_HELP, labels=DURATION_LABELS)
        for series, histogram in sorted(self.durations.items()):
            cumulative = 0
            buckets = []
            for bound, count in zip((*DURATION_BUCKETS, math.inf), histogram.bucket_counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if math.isinf(bound) else repr(float(bound)), float(cumulative)))
            durations.add_metric(list(series), buckets, histogram.total)
        yield durations


def _go_float(value: float) -> str:
    """A sample value as Prometheus' Go formatting (and prometheus-client) writes it."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = list(zip(names, values, strict=True))
    if extra is not None:
        pairs.append(extra)
    return ",".join(f'{name}="{_escape_label_value(value)}"' for name, value in sorted(pairs))


def render_text(metrics: TrafficMetrics) -> bytes:
    """The text exposition of `metrics`, identical to prometheus-client's `generate_latest` of the collector.

    prometheus-client spends about 40 microseconds per sample, which makes a
    scrape of a thousand routes (38k samples) take over a second; label text is
    formatted once per series here, so the same scrape takes a few milliseconds.
    """
    lines: list[str] = []
    name = f"{REQUESTS_METRIC}_total"
    lines.append(f"# HELP {name} {REQUESTS_HELP}\n# TYPE {name} counter\n")
    for key, value in sorted(metrics.requests.items()):
        lines.append(f"{name}{{{metrics.label_text(key, REQUEST_LABELS)}}} {_go_float(float(value))}\n")
    lines.append(f"# HELP {DURATION_METRIC} {DURATION_HELP}\n# TYPE {DURATION_METRIC} histogram\n")
    for series, histogram in sorted(metrics.durations.items()):
        bucket_labels = metrics.bucket_label_texts(series)
        cumulative = 0
        for label_text, count in zip(bucket_labels, histogram.bucket_counts, strict=True):
            cumulative += count
            lines.append(f"{DURATION_METRIC}_bucket{{{label_text}}} {_go_float(float(cumulative))}\n")
        plain = metrics.label_text(series, DURATION_LABELS)
        lines.append(f"{DURATION_METRIC}_count{{{plain}}} {_go_float(float(cumulative))}\n")
        lines.append(f"{DURATION_METRIC}_sum{{{plain}}} {_go_float(histogram.total)}\n")
    return "".join(lines).encode()


def flows_by_series(plans: Sequence[RoutePlan]) -> dict[tuple[str, str, str, str], float]:
    """Requests per second each (namespace, route, service, deployment) receives under `plans`."""
    rates: dict[tuple[str, str, str, str], float] = {}
    for plan in plans:
        for flow in plan.flows:
            rates[flow.series] = rates.get(flow.series, 0.0) + plan.rps * flow.share
    return rates


# --------------------------------------------------------------------------- the running simulator

RouteKey = tuple[str, str, str]  # (kind, namespace, name)


def _route_namespaces(route: Obj) -> set[str]:
    """The namespaces whose objects decide how a route's traffic splits."""
    return {name_of(route)[0]} | {namespace for namespace, _ in _route_services(route)}


def _route_services(route: Obj) -> set[tuple[str, str]]:
    """(namespace, name) of every Service a route's rules send traffic to."""
    namespace = name_of(route)[0]
    return {
        (str(ref.get("namespace") or namespace), str(ref.get("name") or ""))
        for rule in (route.get("spec") or {}).get("rules") or []
        for ref in rule.get("backendRefs") or []
    }


def _template_labels(deployment: Obj | None) -> Mapping[str, Any]:
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("labels") or {}


class TrafficSimulator:
    """Sends simulated traffic through the accepted routes a `ClusterView` shows, and serves /metrics.

    Start and stop it inside a running event loop::

        traffic = TrafficSimulator(StoreView(store), tick_interval=0.1)
        await traffic.start()          # binds 127.0.0.1:port (0 = a free port)
        print(traffic.metrics_url)     # http://127.0.0.1:PORT/metrics
        await traffic.stop()

    It keeps its own index of routes, Services, Deployments and ReferenceGrants
    from watched changes, and re-plans only the routes a change can affect: those
    naming a changed Service, or a Service whose selector picks a changed
    Deployment (a ReferenceGrant re-plans its namespace's routes). The cost of
    a change therefore grows with the Services of its namespace, not with the
    square of its routes. Each tick adds the requests of the
    wall-clock time elapsed since the previous one; a scrape ticks first.
    """

    def __init__(
        self,
        view: ClusterView,
        *,
        tick_interval: float = DEFAULT_TICK_INTERVAL,
        host: str = "127.0.0.1",
        port: int = 0,
        default_rps: float = DEFAULT_RPS,
    ) -> None:
        if tick_interval <= 0:
            raise ValueError("tick_interval must be positive")
        self.view = view
        self.tick_interval = tick_interval
        self.host = host
        self.port = port
        self.default_rps = default_rps
        self.metrics = TrafficMetrics()
        #: prometheus-client registry holding the collector (for generate_latest and custom exporters)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.metrics)
        self.requests_sent = 0
        self._routes: dict[RouteKey, Obj] = {}
        self._services: dict[tuple[str, str], Obj] = {}
        self._deployments: dict[str, dict[str, Obj]] = {}
        self._grants: dict[tuple[str, str], Obj] = {}
        self._routes_by_namespace: dict[str, set[RouteKey]] = {}
        self._route_namespaces: dict[RouteKey, set[str]] = {}
        self._routes_by_service: dict[tuple[str, str], set[RouteKey]] = {}
        self._route_service_keys: dict[RouteKey, set[tuple[str, str]]] = {}
        self._services_by_namespace: dict[str, dict[str, Obj]] = {}
        self._plans: dict[RouteKey, RoutePlan] = {}
        self._dirty_namespaces: set[str] = set()
        self._dirty_routes: set[RouteKey] = set()
        self._stop_watching: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._last_tick: float | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    @property
    def target(self) -> str:
        """`host:port`, as a Prometheus scrape target."""
        return f"{self.host}:{self.port}"

    @property
    def plans(self) -> list[RoutePlan]:
        """The current plan of every accepted route."""
        self._replan()
        return list(self._plans.values())

    async def start(self) -> None:
        self._load()
        self._stop_watching = self.view.watch(
            [*ROUTE_KINDS, SERVICES, DEPLOYMENTS, REFERENCE_GRANTS], self._on_change
        )
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        self._last_tick = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="sandbox-traffic")

    async def stop(self) -> None:
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the index -------------------------------------------------------------------------------------------

    def _load(self) -> None:
        for resource, kind in ROUTE_KINDS.items():
            for route in self.view.list(resource):
                self._put_route((kind, *name_of(route)), route)
        for service in self.view.list(SERVICES):
            self._put_service(name_of(service), service)
        for deployment in self.view.list(DEPLOYMENTS):
            namespace, name = name_of(deployment)
            self._deployments.setdefault(namespace, {})[name] = deployment
        for grant in self.view.list(REFERENCE_GRANTS):
            self._grants[name_of(grant)] = grant

    def _put_service(self, key: tuple[str, str], service: Obj | None) -> None:
        namespace, name = key
        if service is None:
            self._services.pop(key, None)
            self._services_by_namespace.get(namespace, {}).pop(name, None)
        else:
            self._services[key] = service
            self._services_by_namespace.setdefault(namespace, {})[name] = service

    def _routes_selecting(self, namespace: str, labels: Mapping[str, Any]) -> set[RouteKey]:
        """Routes naming a Service in ``namespace`` whose selector picks pods with ``labels``."""
        routes: set[RouteKey] = set()
        for name, service in (self._services_by_namespace.get(namespace) or {}).items():
            selector = (service.get("spec") or {}).get("selector")
            if selector and matches_label_selector({"matchLabels": selector}, labels):
                routes |= self._routes_by_service.get((namespace, name), set())
        return routes

    def _put_route(self, key: RouteKey, route: Obj | None) -> None:
        for namespace in self._route_namespaces.pop(key, set()):
            self._routes_by_namespace.get(namespace, set()).discard(key)
        for service_key in self._route_service_keys.pop(key, set()):
            self._routes_by_service.get(service_key, set()).discard(key)
        if route is None:
            self._routes.pop(key, None)
            self._plans.pop(key, None)
            return
        self._routes[key] = route
        namespaces = _route_namespaces(route)
        self._route_namespaces[key] = namespaces
        for namespace in namespaces:
            self._routes_by_namespace.setdefault(namespace, set()).add(key)
        service_keys = _route_services(route)
        self._route_service_keys[key] = service_keys
        for service_key in service_keys:
            self._routes_by_service.setdefault(service_key, set()).add(key)
        self._dirty_routes.add(key)

    def _on_change(self, change: Change) -> None:
        resource = change.resource
        deleted = change.type == "DELETED"
        obj = change.obj
        namespace, name = name_of(obj)
        kind = ROUTE_KINDS.get(resource)
        if kind is not None:
            self._put_route((kind, namespace, name), None if deleted else obj)
            return
        if resource == SERVICES:
            self._put_service((namespace, name), None if deleted else obj)
            self._dirty_routes |= self._routes_by_service.get((namespace, name), set())
            return
        if resource == DEPLOYMENTS:
            if deleted:
                self._deployments.get(namespace, {}).pop(name, None)
            else:
                self._deployments.setdefault(namespace, {})[name] = obj
            # Old and new pod labels: a Deployment may move from one Service's selector to another's.
            for labels in (_template_labels(change.old), _template_labels(obj)):
                self._dirty_routes |= self._routes_selecting(namespace, labels)
            return
        if deleted:
            self._grants.pop((namespace, name), None)
        else:
            self._grants[(namespace, name)] = obj
        self._dirty_namespaces.add(namespace)

    def _replan(self) -> None:
        if not self._dirty_namespaces and not self._dirty_routes:
            return
        dirty = set(self._dirty_routes)
        for namespace in self._dirty_namespaces:
            dirty.update(self._routes_by_namespace.get(namespace, ()))
        self._dirty_routes.clear()
        self._dirty_namespaces.clear()
        world = TrafficWorld(
            gateway=GatewayWorld(services=self._services, reference_grants=list(self._grants.values())),
            deployments=self._deployments,
        )
        for key in dirty:
            route = self._routes.get(key)
            planned = plan_traffic([(key[0], route)], world, self.default_rps) if route is not None else []
            if planned:
                self._plans[key] = planned[0]
            else:
                self._plans.pop(key, None)

    # -- ticking and serving ---------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Account for the traffic since the previous tick; returns the number of requests added."""
        now = time.monotonic() if now is None else now
        elapsed = 0.0 if self._last_tick is None else max(now - self._last_tick, 0.0)
        self._last_tick = now
        self._replan()
        sent = self.metrics.record(self._plans.values(), elapsed)
        self.requests_sent += sent
        return sent

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self.tick()
            except Exception:  # keep serving traffic even if one plan is broken
                log.exception("traffic simulator tick failed")

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        self.tick()  # a scrape sees every request up to now
        return web.Response(body=render_text(self.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve_health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")
