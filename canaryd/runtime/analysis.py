"""One analysis round: every metric of a Canary rendered, asked of Prometheus, and judged.

The round runs only when the core says one is due, so an idle Canary costs no
queries. Each metric's query comes from its MetricTemplate (or an inline
``query``), rendered with the Canary's variables (escaped, so no resource
name can inject PromQL; once per route when it uses ``{{ route }}``), sent to
the template's Prometheus (or the controller's default) at the decision time,
and judged against its thresholdRange (the worst route's verdict when there
are several). Threshold queries ask about the decision time rounded down to
``--prometheus-align-seconds``, and identical queries (same endpoint, PromQL
and time) are sent once and their answer shared, so Canaries on a shared
template cost one query between them. A metric with ``compare`` is judged against the primary instead
(range queries for both sides). Both kinds run through
``runtime.metric_checks``, which ``canaryd backtest`` shares. Whatever goes
wrong with one metric (a missing variable, a Secret that cannot be read,
Prometheus down) becomes that metric's Error verdict with a message, never an
exception that stops the Canary.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import structlog

from canaryd.adapters.kube import SECRETS, ApiError, KubeClient
from canaryd.adapters.prometheus import (
    Credentials,
    CredentialsError,
    PrometheusQuerier,
    QueryObservation,
    credentials_from_secret,
    endpoint_for,
)
from canaryd.api.constants import Verdict
from canaryd.api.models import Canary, MetricTemplate, PrometheusProvider
from canaryd.core.evaluation import evaluation_time
from canaryd.core.observations import MetricResult, ShareReading
from canaryd.runtime.metric_checks import measure_share, run_comparison, run_threshold
from canaryd.runtime.metrics import ControllerMetrics
from canaryd.runtime.observe import ResolvedMetric
from canaryd.runtime.settings import Settings

log = structlog.get_logger("canaryd.analysis")

#: How long a Secret read for Prometheus credentials is reused before it is read again.
SECRET_TTL_SECONDS = 60.0


class PrometheusAnalyzer:
    def __init__(self, settings: Settings, metrics: ControllerMetrics, client: KubeClient) -> None:
        self.settings = settings
        self.client = client
        self._metrics = metrics
        self.querier = PrometheusQuerier(
            max_in_flight=settings.prometheus_max_in_flight,
            share_seconds=settings.prometheus_share_seconds,
            on_query=self._observed,
        )
        self._secrets: dict[tuple[str, str], tuple[float, Credentials]] = {}

    def _observed(self, observation: QueryObservation) -> None:
        self._metrics.prometheus_query_seconds.labels(observation.server).observe(observation.seconds)

    async def close(self) -> None:
        await self.querier.aclose()

    async def _credentials(self, provider: PrometheusProvider, namespace: str) -> Credentials | None:
        if provider.auth is None:
            return None
        ref = provider.auth.secret_ref
        key = (ref.namespace or namespace, ref.name)
        cached = self._secrets.get(key)
        if cached is not None and time.monotonic() - cached[0] < SECRET_TTL_SECONDS:
            return cached[1]
        secret = await self.client.get(SECRETS, key[0], key[1])
        credentials = credentials_from_secret(secret.get("data") or {}, provider.auth.kind)
        self._secrets[key] = (time.monotonic(), credentials)
        return credentials

    async def _check(self, canary: Canary, metric: ResolvedMetric, now: datetime) -> MetricResult:
        check = metric.check
        template = metric.template
        namespace = canary.metadata.namespace
        try:
            provider = template.spec.provider if template is not None else PrometheusProvider()
            credentials = await self._credentials(
                provider, template.metadata.namespace if template is not None else namespace
            )
            endpoint = endpoint_for(
                provider,
                default_address=self.settings.prometheus_url,
                credentials=credentials,
                default_timeout=self.settings.prometheus_timeout_seconds,
            )
        except (CredentialsError, ValueError) as exc:
            return MetricResult(check.name, Verdict.ERROR, None, f"cannot build the query: {exc}")
        except ApiError as exc:
            return MetricResult(
                check.name,
                Verdict.ERROR,
                None,
                f"cannot read the Prometheus credentials Secret: {exc.message}",
            )
        if check.compare is not None:
            verdict = await run_comparison(self.querier, endpoint, canary, check, template, now)
        else:
            at = evaluation_time(now, self.settings.prometheus_align_seconds)
            verdict = await run_threshold(self.querier, endpoint, canary, check, template, at)
        log.debug("metric checked", metric=check.name, verdict=verdict.verdict.value, value=verdict.value)
        return verdict

    async def measure_share(
        self, canary: Canary, template: MetricTemplate, now: datetime
    ) -> tuple[ShareReading, ...]:
        """The canary's measured share of the requests (analysis.trafficShare), as readings per route."""
        route = canary.spec.route_refs[0].name
        try:
            credentials = await self._credentials(template.spec.provider, template.metadata.namespace)
            endpoint = endpoint_for(
                template.spec.provider,
                default_address=self.settings.prometheus_url,
                credentials=credentials,
                default_timeout=self.settings.prometheus_timeout_seconds,
            )
        except (CredentialsError, ValueError) as exc:
            return (ShareReading(route, None, f"cannot build the query: {exc}"),)
        except ApiError as exc:
            return (
                ShareReading(route, None, f"cannot read the Prometheus credentials Secret: {exc.message}"),
            )
        readings = await measure_share(self.querier, endpoint, canary, template, now)
        log.debug("traffic share measured", readings=[(r.route, r.value) for r in readings])
        return readings

    async def analyze(
        self, canary: Canary, metrics: tuple[ResolvedMetric, ...], now: datetime
    ) -> tuple[MetricResult, ...]:
        results: list[Any] = await asyncio.gather(*(self._check(canary, m, now) for m in metrics))
        return tuple(results)
