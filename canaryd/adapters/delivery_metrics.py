"""Prometheus series about what canaryd sends out: webhook calls and chat notifications.

A gate that never answers or a chat webhook that was revoked fails quietly
from the sender's side; these counters make it visible on the controller's
/metrics (alert on ``rate(canaryd_webhook_deliveries_total{outcome!="ok"}[10m])``
or on dropped notifications). The runtime passes its own registry, so the
series are served with the controller's others; without one they go to a
private registry (tests, the load tester).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Seconds: a receiver on the same cluster answers in milliseconds, a retried call takes seconds.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.webhook_deliveries = Counter(
            "canaryd_webhook_deliveries_total",
            "Webhook calls by hook type and outcome (ok, http-error, timeout, unreachable, malformed), "
            "after retries",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "canaryd_webhook_attempts_total",
            "HTTP requests made for webhook calls, retries included, by hook type",
            ["type"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "canaryd_webhook_delivery_duration_seconds",
            "Time one webhook call took, retries and waits between them included",
            ["type"],
            buckets=DELIVERY_BUCKETS,
            registry=self.registry,
        )
        self.webhooks_dropped = Counter(
            "canaryd_webhooks_dropped_total",
            "Background webhook calls (post-rollout, rollback, event) dropped without being sent, by hook "
            "type and reason (queue-full, shutdown)",
            ["type", "reason"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "canaryd_notifications_total",
            "Chat notifications by provider and outcome, after retries",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.notifications_dropped = Counter(
            "canaryd_notifications_dropped_total",
            "Notifications dropped without being sent, by provider and reason (queue-full, shutdown)",
            ["provider", "reason"],
            registry=self.registry,
        )

    def observe_webhook(self, hook: str, outcome: str, attempts: int, seconds: float) -> None:
        self.webhook_deliveries.labels(hook, outcome).inc()
        self.webhook_attempts.labels(hook).inc(attempts)
        self.webhook_seconds.labels(hook).observe(seconds)

    def dropped_webhook(self, hook: str, reason: str) -> None:
        self.webhooks_dropped.labels(hook, reason).inc()

    def observe_notification(self, provider: str, outcome: str) -> None:
        self.notifications.labels(provider, outcome).inc()

    def dropped_notification(self, provider: str, reason: str) -> None:
        self.notifications_dropped.labels(provider, reason).inc()
