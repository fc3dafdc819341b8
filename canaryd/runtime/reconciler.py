"""One pass for one Canary: observe, decide, then do what the decision says, in its order.

The reconciler decides nothing; it interprets a core decision:

1. the status (a merge patch on /status) is written first: it is the record of
   what canaryd intends, so a controller killed at any point resumes from it
   and re-applies (idempotently) whatever effect had not happened yet, and a
   step is never taken twice;
2. the effects, in the order the decision gives them (its Events first); the
   first failure stops the pass (a later effect may depend on an earlier one).
   A route that someone changed meanwhile (409/422 on the guarded patch) is
   read again and the Canary is decided again at once, so nobody's edit is lost;
3. the next wake-up, from the decision (itself computed from status), so idle
   Canaries cost nothing and a restart is on time.

A Canary that does not parse gets the report ``core.invalid`` makes of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from canaryd.adapters.informer import Key
from canaryd.adapters.kube import CANARIES, DEPLOYMENTS, ROUTE_RESOURCES, SERVICES, ApiError
from canaryd.adapters.scheduler import WakeupScheduler
from canaryd.adapters.writers import Writer, status_merge_patch
from canaryd.api.models import Canary, CanaryStatus, MetricTemplate, validation_text
from canaryd.api.naming import workload_names
from canaryd.core import effects as fx
from canaryd.core.concurrency import starts_run
from canaryd.core.invalid import invalid_canary_report
from canaryd.core.lifecycle import Decision
from canaryd.core.observations import MetricResult, Observations, ShareReading
from canaryd.core.revision import deployment_template_hash
from canaryd.core.route_plan import route_patch
from canaryd.core.schedule import retry_backoff
from canaryd.core.workloads import (
    primary_deployment,
    primary_template_patch,
    service_matches,
    service_patch,
    services,
    workload_state,
)
from canaryd.runtime.metrics import ControllerMetrics
from canaryd.runtime.observe import Caches, ResolvedMetric, RunSlots, observe, owned_by

log = structlog.get_logger("canaryd.reconciler")

Analyzer = Callable[[Canary, tuple[ResolvedMetric, ...], datetime], Awaitable[tuple[MetricResult, ...]]]
#: Measures the canary's share of each route's requests with the trafficShare template.
ShareMeter = Callable[[Canary, MetricTemplate, datetime], Awaitable[tuple[ShareReading, ...]]]
DecideFn = Callable[[Canary, Observations, datetime], Decision]
DueFn = Callable[[Canary, Observations, datetime], bool]


class RouteConflict(Exception):
    """A guarded route patch lost a race; the route was read again."""


def key_text(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


class Reconciler:
    def __init__(
        self,
        *,
        caches: Caches,
        writer: Writer,
        scheduler: WakeupScheduler,
        metrics: ControllerMetrics,
        slots: RunSlots,
        analyzer: Analyzer,
        decide: DecideFn,
        analysis_due: DueFn,
        requeue: Callable[[Key], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        share_meter: ShareMeter | None = None,
        share_due: DueFn | None = None,
    ) -> None:
        self.caches = caches
        self.writer = writer
        self.scheduler = scheduler
        self.metrics = metrics
        self.slots = slots
        self.analyzer = analyzer
        self.decide = decide
        self.analysis_due = analysis_due
        self.requeue = requeue
        self.clock = clock
        self.share_meter = share_meter
        self.share_due = share_due
        self._failures: dict[Key, int] = {}
        self._fired_due: dict[Key, datetime] = {}
        #: Canaries whose last write got no answer (it may or may not have happened).
        self._unsure: set[Key] = set()

    def woke(self, key: Key, due: datetime) -> None:
        """A scheduled wake-up fired; remember when it was due, to measure lateness."""
        self._fired_due[key] = due

    def forget(self, key: Key) -> None:
        self.scheduler.cancel(key_text(key))
        self._failures.pop(key, None)
        self._fired_due.pop(key, None)
        self._unsure.discard(key)
        self.slots.release(key)
        self.metrics.forget_canary(*key)

    async def reconcile(self, key: Key) -> None:
        namespace, name = key
        raw = self.caches.canaries.get(namespace, name)
        if raw is None:
            self.forget(key)
            return
        structlog.contextvars.bind_contextvars(namespace=namespace, name=name)
        try:
            if key in self._unsure:
                # A write timed out: read the Canary once so the decision starts from what the server
                # has (the write may have landed), never from a cache that has not seen it yet.
                self._unsure.discard(key)
                fresh = await self.writer.refresh(CANARIES, namespace, name)
                if fresh is None:
                    self.forget(key)
                    return
                raw = self.caches.canaries.get(namespace, name) or fresh
            await self._reconcile(key, raw)
            self._failures.pop(key, None)
            self.metrics.reconciles.labels("ok").inc()
        except RouteConflict:
            self.metrics.reconciles.labels("conflict").inc()
            self.requeue(key)
        except ApiError as exc:
            self.metrics.reconciles.labels("error").inc()
            if exc.not_found and self.caches.canaries.get(namespace, name) is None:
                return
            if exc.status == 0:
                self._unsure.add(key)
            self._retry_later(key, f"API {exc.status} {exc.reason}: {exc.message}")
        except Exception as exc:
            self.metrics.reconciles.labels("error").inc()
            log.exception("reconcile failed")
            self._retry_later(key, repr(exc))
        finally:
            structlog.contextvars.unbind_contextvars("namespace", "name")

    def _retry_later(self, key: Key, why: str) -> None:
        attempts = self._failures.get(key, 0) + 1
        self._failures[key] = attempts
        delay = retry_backoff(attempts)
        log.warning("reconcile will be retried", error=why, attempt=attempts, delay=delay.total_seconds())
        self.scheduler.wake_at(key_text(key), self.clock() + delay)

    async def _reconcile(self, key: Key, raw: dict[str, Any]) -> None:
        try:
            canary = Canary.model_validate(raw)
        except ValidationError as exc:
            await self._report_invalid(raw, validation_text(exc))
            return
        slot = self.slots.available(key, self.caches.canaries, canary.status.phase)
        observed = observe(canary, raw, self.caches, slot)
        observations = observed.observations
        now = self.clock()
        if self.analysis_due(canary, observations, now):
            results = await self.analyzer(canary, observed.metrics, now)
            for result in results:
                self.metrics.analysis_verdicts.labels(key[0], key[1], result.name, result.verdict.value).inc()
            observations = replace(observations, analysis=results)
            now = self.clock()
        share_template = observed.share_template
        if (
            self.share_meter is not None
            and self.share_due is not None
            and share_template is not None
            and self.share_due(canary, observations, now)
        ):
            readings = await self.share_meter(canary, share_template, now)
            observations = replace(observations, traffic_share=readings)
            now = self.clock()
        decision = self.decide(canary, observations, now)
        if starts_run(canary.status, decision.status):
            self.slots.claim(key)  # before any await, so a concurrent decision counts this run
        try:
            await self._write_status(key, raw, canary.status, decision.status)
        finally:
            self.slots.release(key)
        for effect in decision.effects:
            await self._apply(effect, canary, observed.target, decision.status)
        self._after(key, canary.status, decision, now)

    def _after(self, key: Key, before: CanaryStatus, decision: Decision, now: datetime) -> None:
        """Metrics of the pass, and the next wake-up the decision asks for."""
        status = decision.status
        self.metrics.set_canary(key[0], key[1], status.phase, status.canary_weight)
        due = self._fired_due.pop(key, None)
        if due is not None and (status.step != before.step or status.phase != before.phase):
            self.metrics.step_lateness.observe(max(0.0, (now - due).total_seconds()))
        if decision.next_wakeup is not None:
            self.scheduler.wake_at(key_text(key), decision.next_wakeup)
        else:
            self.scheduler.cancel(key_text(key))

    async def _write_status(
        self, key: Key, raw: dict[str, Any], old: CanaryStatus, new: CanaryStatus
    ) -> None:
        if new == old:
            return
        patch = status_merge_patch(raw.get("status") or {}, new.dump())
        if patch:
            await self.writer.patch_status(key[0], key[1], patch)

    def _latest(self, canary: Canary) -> dict[str, Any]:
        latest = self.caches.canaries.get(canary.metadata.namespace, canary.metadata.name)
        if latest is None:
            raise ApiError(404, "NotFound", "the Canary is gone")
        return latest

    async def _record(self, canary: Canary, event: fx.RecordEvent, status: CanaryStatus) -> None:
        latest = self._latest(canary)
        await self.writer.record_event(
            latest, event.type, event.reason, event.message, action=str(status.phase or "")
        )

    async def _apply(
        self, effect: fx.Effect, canary: Canary, target: dict[str, Any] | None, status: CanaryStatus
    ) -> None:
        namespace = canary.metadata.namespace
        target_name = canary.spec.target_ref.name
        if isinstance(effect, fx.RecordEvent):
            await self._record(canary, effect, status)
        elif isinstance(effect, fx.AddFinalizer):
            await self.writer.add_finalizer(self._latest(canary))
        elif isinstance(effect, fx.RemoveFinalizer):
            await self.writer.remove_finalizer(self._latest(canary))
        elif isinstance(effect, fx.EnsureServices):
            if target is None:
                raise ApiError(404, "NotFound", f"target Deployment {target_name} is missing")
            for wanted in services(target, canary):
                meta = wanted["metadata"]
                if not service_matches(self.caches.services.get(namespace, meta["name"]), wanted):
                    await self.writer.ensure(SERVICES, wanted, repair=service_patch(wanted))
        elif isinstance(effect, fx.EnsurePrimary):
            await self._ensure_primary(effect.template_hash, canary, target)
        elif isinstance(effect, fx.ScaleTarget):
            await self._scale_target(effect.replicas, canary)
        elif isinstance(effect, fx.SetRouteWeights):
            await self._set_weights(effect, canary, status)
        elif isinstance(effect, fx.ReleaseOwned):
            await self._release_owned(canary)
        else:  # pragma: no cover - the Effect union is closed
            raise TypeError(f"unknown effect {effect!r}")

    async def _ensure_primary(self, revision: str, canary: Canary, target: dict[str, Any] | None) -> None:
        namespace = canary.metadata.namespace
        name = workload_names(canary.spec.target_ref.name).primary
        if target is None:
            raise ApiError(404, "NotFound", f"target Deployment {canary.spec.target_ref.name} is missing")
        if deployment_template_hash(target) != revision:
            # The target moved on since the decision; decide again with what is there now.
            self.requeue((namespace, canary.metadata.name))
            return
        existing = self.caches.deployments.get(namespace, name)
        if existing is None:
            await self.writer.ensure(DEPLOYMENTS, primary_deployment(target, canary))
        elif workload_state(existing, primary=True).template_hash != revision:
            await self.writer.patch_deployment(namespace, name, primary_template_patch(target))

    async def _release_owned(self, canary: Canary) -> None:
        """Take this Canary's ownerReference off the primary and both Services, so they outlive it."""
        namespace = canary.metadata.namespace
        names = workload_names(canary.spec.target_ref.name)
        uid = canary.metadata.uid or ""
        owned = [
            (DEPLOYMENTS, self.caches.deployments, names.primary),
            (SERVICES, self.caches.services, names.primary),
            (SERVICES, self.caches.services, names.canary_service),
        ]
        for resource, cache, name in owned:
            obj = cache.get(namespace, name)
            if obj is not None and owned_by(obj, uid):
                await self.writer.remove_owner_reference(resource, obj, uid)
                log.info("released from the Canary's ownership", kind=resource.kind, object=name)

    async def _scale_target(self, replicas: int, canary: Canary) -> None:
        namespace = canary.metadata.namespace
        target_name = canary.spec.target_ref.name
        target = self.caches.deployments.get(namespace, target_name)
        if target is None:
            raise ApiError(404, "NotFound", f"target Deployment {target_name} is missing")
        if (target.get("spec") or {}).get("replicas") != replicas:
            await self.writer.scale(namespace, target_name, replicas)

    async def _set_weights(self, effect: fx.SetRouteWeights, canary: Canary, status: CanaryStatus) -> None:
        """The guarded patch (weights and canaryd's rules and filters) on every route that needs it; a drift
        Event once a route is written."""
        namespace = canary.metadata.namespace
        names = workload_names(canary.spec.target_ref.name)
        for ref in canary.spec.route_refs:
            resource = ROUTE_RESOURCES[ref.kind]
            route = self.caches.routes[ref.kind].get(namespace, ref.name)
            if route is None:
                continue
            ops = route_patch(
                route,
                ref.kind,
                names.primary,
                names.canary_service,
                (effect.primary, effect.canary),
                effect.shape,
            )
            if not ops:
                continue
            try:
                await self.writer.patch_route(resource, namespace, ref.name, ops)
            except ApiError as exc:
                if not exc.conflict:
                    raise
                log.info("route changed under us; reading it again and deciding again", route=ref.name)
                await self.writer.refresh(resource, namespace, ref.name)
                raise RouteConflict(ref.name) from exc
            for drift in effect.drifted:
                if (drift.kind, drift.name) == (ref.kind, ref.name):
                    await self._record(canary, drift.event, status)

    async def _report_invalid(self, raw: dict[str, Any], message: str) -> None:
        """A Canary the controller cannot parse: write the report the core makes of it."""
        report = invalid_canary_report(raw, message, self.clock())
        if report is None:
            return
        meta = raw.get("metadata") or {}
        await self.writer.patch_status(str(meta.get("namespace")), str(meta.get("name")), report.status_patch)
        event = report.event
        await self.writer.record_event(raw, event.type, event.reason, event.message, action="Validate")
        log.warning("canary is invalid", error=message)


__all__ = ["Reconciler", "RouteConflict", "key_text"]
