"""The load tester's own /metrics: what it sent, to whom, what came back, and what it refused.

``target`` is ``service.namespace:port`` and ``namespace`` the target's
namespace: both bounded by the allow-list, so the series stay few.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class LoadTestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "canaryd_loadtest_requests_total",
            "Requests sent, by target and answer (HTTP status, gRPC status name, or none when none came)",
            ["namespace", "target", "code"],
            registry=self.registry,
        )
        self.errors = Counter(
            "canaryd_loadtest_errors_total",
            "Failed requests by target and reason (timeout, connect, disconnected, http-5xx, a gRPC status)",
            ["namespace", "target", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "canaryd_loadtest_request_duration_seconds",
            "Time from sending a request to its whole answer",
            ["namespace", "target"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "canaryd_loadtest_in_flight_requests",
            "Requests sent and not yet answered, by target",
            ["namespace", "target"],
            registry=self.registry,
        )
        self.jobs = Gauge("canaryd_loadtest_jobs", "Load jobs running now", registry=self.registry)
        self.webhooks = Counter(
            "canaryd_loadtest_webhooks_total",
            "Webhook calls by hook type and result (started, extended, stopped, ignored, or why refused)",
            ["type", "result"],
            registry=self.registry,
        )
