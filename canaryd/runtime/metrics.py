"""The controller's own Prometheus series, served on /metrics.

What an operator asks of a progressive-delivery controller: where each Canary
is (phase, weight), what each metric check said, whether steps happen on time
(lateness: actual minus due), and what the controller costs its neighbours
(API requests by verb and code, Prometheus query latency). Each Controller
owns its own registry, so two controllers in one process (tests) never mix.

Series labelled with a Canary exist only while this replica leads and the
Canary exists: ``forget_canary`` removes all of them when it is deleted, and
``forget_canaries`` when the replica stops leading, so /metrics never shows a
phase or a weight that nobody is keeping up to date.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from canaryd.api.constants import Phase

#: The labels that name a Canary, first in every per-Canary series.
CANARY_LABELS = ("namespace", "name")


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.canary_phase = Gauge(
            "canaryd_canary_phase",
            "1 for the phase each Canary is in, 0 for the others",
            [*CANARY_LABELS, "phase"],
            registry=self.registry,
        )
        self.canary_weight = Gauge(
            "canaryd_canary_weight",
            "Share of traffic (percent) on the canary revision",
            list(CANARY_LABELS),
            registry=self.registry,
        )
        self.analysis_verdicts = Counter(
            "canaryd_analysis_verdicts_total",
            "Metric checks by verdict (Pass, Fail, NoData, Error)",
            [*CANARY_LABELS, "metric", "verdict"],
            registry=self.registry,
        )
        self.webhook_calls = Counter(
            "canaryd_webhook_calls_total",
            "Gate and check webhook calls of each Canary, by webhook and outcome (ok, http-error, timeout, "
            "unreachable, malformed, not-sent)",
            [*CANARY_LABELS, "webhook", "outcome"],
            registry=self.registry,
        )
        self.step_lateness = Histogram(
            "canaryd_step_lateness_seconds",
            "How late a due step was taken: actual time minus due time",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.api_requests = Counter(
            "canaryd_kubernetes_requests_total",
            "Requests to the Kubernetes API by verb, resource and HTTP code (0: no answer)",
            ["verb", "resource", "code"],
            registry=self.registry,
        )
        self.prometheus_query_seconds = Histogram(
            "canaryd_prometheus_query_duration_seconds",
            "Latency of analysis queries to Prometheus",
            ["server"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.reconciles = Counter(
            "canaryd_reconciles_total",
            "Decisions taken, by outcome (ok, conflict, error)",
            ["outcome"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "canaryd_leader", "1 while this replica holds the leader Lease", registry=self.registry
        )
        self.shards_held = Gauge(
            "canaryd_shards_held", "Shards this replica holds (with --shards)", registry=self.registry
        )

    def observe_request(self, verb: str, resource: str, code: int) -> None:
        self.api_requests.labels(verb, resource, str(code)).inc()

    def set_canary(self, namespace: str, name: str, phase: str | None, weight: int) -> None:
        for candidate in Phase:
            self.canary_phase.labels(namespace, name, candidate.value).set(1 if candidate == phase else 0)
        self.canary_weight.labels(namespace, name).set(weight)

    def _per_canary(self) -> tuple[tuple[Gauge | Counter, tuple[str, ...]], ...]:
        return (
            (self.canary_phase, (*CANARY_LABELS, "phase")),
            (self.canary_weight, CANARY_LABELS),
            (self.analysis_verdicts, (*CANARY_LABELS, "metric", "verdict")),
            (self.webhook_calls, (*CANARY_LABELS, "webhook", "outcome")),
        )

    def _remove_series(self, namespace: str | None, name: str | None) -> None:
        """Remove every per-Canary series of one Canary (or of all, when both are None)."""
        for metric, labelnames in self._per_canary():
            found: set[tuple[str, ...]] = set()
            for family in metric.collect():
                for sample in family.samples:
                    if all(label in sample.labels for label in labelnames):
                        found.add(tuple(sample.labels[label] for label in labelnames))
            for values in found:
                if namespace is None or values[:2] == (namespace, name):
                    metric.remove(*values)

    def forget_canary(self, namespace: str, name: str) -> None:
        """The Canary is gone: none of its series stays behind."""
        self._remove_series(namespace, name)

    def forget_canaries(self) -> None:
        """This replica no longer leads: the new leader reports every Canary, this one none."""
        self._remove_series(None, None)
