"""One pass for one Canary: observe, decide, write status, apply the effects, schedule the next look.

This is the only place that turns a core decision into writes, in this order:

1. the status (a merge patch on /status) is written first: it is the record of
   what canaryd intends, so a controller killed at any point resumes from it
   and re-applies (idempotently) whatever effect had not happened yet, and a
   step is never taken twice;
2. the effects, in the order the decision gives them; the first failure
   stops the pass (a later effect may depend on an earlier one). A route that
   someone changed meanwhile (409/422 on the guarded patch) is read again and
   the Canary is decided again at once, so nobody's edit is lost;
3. the next wake-up, from the decision (itself computed from status), so idle
   Canaries cost nothing and a restart is on time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from canaryd.adapters.kube import CANARIES, DEPLOYMENTS, ROUTE_RESOURCES, SERVICES, ApiError
from canaryd.adapters.scheduler import WakeupScheduler
from canaryd.adapters.writers import Writer, status_merge_patch
from canaryd.api.constants import ACTIVE_PHASES, ConditionType, Reason
from canaryd.api.models import Canary, CanaryStatus
from canaryd.core import effects as fx
from canaryd.core.lifecycle import Decision
from canaryd.core.observations import MetricResult, Observations
from canaryd.core.revision import deployment_template_hash
from canaryd.core.routes import inspect_route, weight_patch, weights_match
from canaryd.core.workloads import (
    canary_replicas,
    canary_service_name,
    primary_deployment,
    primary_name,
    primary_template_patch,
    service_matches,
    service_patch,
    services,
    workload_state,
)
from canaryd.runtime.metrics import ControllerMetrics
from canaryd.runtime.observe import Caches, ResolvedMetric, RunSlots, observe, owned_by, validation_text

log = structlog.get_logger("canaryd.reconciler")

Key = tuple[str, str]
Analyzer = Callable[[Canary, tuple[ResolvedMetric, ...], datetime], Awaitable[tuple[MetricResult, ...]]]
DecideFn = Callable[[Canary, Observations, datetime], Decision]
DueFn = Callable[[Canary, Observations, datetime], bool]

MAX_BACKOFF = timedelta(seconds=60)


class RouteConflict(Exception):
    """A guarded route patch lost a race; the route was read again."""


def key_text(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


#: Conditions whose turning False (or changing reason while False) a person must hear about.
_WATCHED_CONDITIONS = (ConditionType.READY, ConditionType.ROUTES_READY)
#: False for a while in every healthy life, or already announced by the lifecycle's own Event.
_ROUTINE_REASONS = frozenset(
    {Reason.INITIALIZING, Reason.PRIMARY_NOT_READY, Reason.DELETING, Reason.ROLLED_BACK}
)


def problem_events(old: CanaryStatus, new: CanaryStatus, already: set[str]) -> list[fx.RecordEvent]:
    """Warning Events for problems that newly appear in conditions (a missing target, route, template).

    The lifecycle records these as conditions; an Event makes them visible in
    ``kubectl describe`` and ``kubectl get events`` too, once per new problem.
    """
    found: list[fx.RecordEvent] = []
    for type_ in _WATCHED_CONDITIONS:
        now = new.condition(type_)
        if now is None or now.status != "False" or now.reason in already or now.reason in _ROUTINE_REASONS:
            continue
        before = old.condition(type_)
        if before is not None and (before.status, before.reason, before.message) == (
            now.status,
            now.reason,
            now.message,
        ):
            continue
        found.append(fx.RecordEvent(type="Warning", reason=now.reason, message=now.message))
    return found


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
        self.slots.reserved.discard(key)
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
        delay = min(timedelta(seconds=0.5 * 2 ** (attempts - 1)), MAX_BACKOFF)
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
        decision = self.decide(canary, observations, now)
        status = decision.status
        if status.phase in ACTIVE_PHASES and canary.status.phase not in ACTIVE_PHASES:
            self.slots.claim(key)  # before any await, so a concurrent decision counts this run
        try:
            await self._write_status(key, raw, canary.status, status)
        finally:
            self.slots.release(key)
        # The Events describe the status just written, so they go out even if an effect fails below
        # (the next decision, handed its own status, would not emit them again).
        events = [e for e in decision.effects if isinstance(e, fx.RecordEvent)]
        events += problem_events(canary.status, status, {e.reason for e in events})
        changes = [e for e in decision.effects if not isinstance(e, fx.RecordEvent)]
        for effect in (*events, *changes):
            await self._apply(effect, canary, observed.target, status)

        self.metrics.set_canary(key[0], key[1], status.phase, status.canary_weight)
        due = self._fired_due.pop(key, None)
        if due is not None and (status.step != canary.status.step or status.phase != canary.status.phase):
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

    async def _apply(
        self, effect: fx.Effect, canary: Canary, target: dict[str, Any] | None, status: CanaryStatus
    ) -> None:
        namespace = canary.metadata.namespace
        target_name = canary.spec.target_ref.name
        if isinstance(effect, fx.RecordEvent):
            await self.writer.record_event(
                self._latest(canary),
                effect.type,
                effect.reason,
                effect.message,
                action=str(status.phase or ""),
            )
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
            await self._set_weights(effect.primary, effect.canary, canary, status)
        elif isinstance(effect, fx.ReleaseOwned):
            await self._release_owned(canary)
        else:  # pragma: no cover - the Effect union is closed
            raise TypeError(f"unknown effect {effect!r}")

    async def _ensure_primary(self, revision: str, canary: Canary, target: dict[str, Any] | None) -> None:
        namespace = canary.metadata.namespace
        name = primary_name(canary.spec.target_ref.name)
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
        target_name = canary.spec.target_ref.name
        uid = canary.metadata.uid or ""
        owned = [
            (DEPLOYMENTS, self.caches.deployments, primary_name(target_name)),
            (SERVICES, self.caches.services, primary_name(target_name)),
            (SERVICES, self.caches.services, canary_service_name(target_name)),
        ]
        for resource, cache, name in owned:
            obj = cache.get(namespace, name)
            if obj is not None and owned_by(obj, uid):
                await self.writer.remove_owner_reference(resource, obj, uid)
                log.info("released from the Canary's ownership", kind=resource.kind, object=name)

    async def _scale_target(self, replicas: int | None, canary: Canary) -> None:
        namespace = canary.metadata.namespace
        target_name = canary.spec.target_ref.name
        target = self.caches.deployments.get(namespace, target_name)
        if target is None:
            raise ApiError(404, "NotFound", f"target Deployment {target_name} is missing")
        if replicas is None:
            primary = self.caches.deployments.get(namespace, primary_name(target_name))
            replicas = canary_replicas(primary)
        if (target.get("spec") or {}).get("replicas") != replicas:
            await self.writer.scale(namespace, target_name, replicas)

    async def _set_weights(
        self, primary_weight: int, canary_weight: int, canary: Canary, status: CanaryStatus
    ) -> None:
        namespace = canary.metadata.namespace
        target_name = canary.spec.target_ref.name
        primary_svc, canary_svc = primary_name(target_name), canary_service_name(target_name)
        # What canaryd itself last put on the routes; anything else there was written by someone else.
        last_canary = canary.status.canary_weight
        for ref in canary.spec.route_refs:
            resource = ROUTE_RESOURCES[ref.kind]
            route = self.caches.routes[ref.kind].get(namespace, ref.name)
            if route is None:
                continue
            ops = weight_patch(route, primary_svc, canary_svc, primary_weight, canary_weight)
            if not ops:
                continue
            state = inspect_route(ref.kind, ref.name, route, primary_svc, canary_svc)
            drifted = not weights_match(state, 100 - last_canary, last_canary)
            try:
                written = await self.writer.patch_route(resource, namespace, ref.name, ops)
            except ApiError as exc:
                if not exc.conflict:
                    raise
                log.info("route changed under us; reading it again and deciding again", route=ref.name)
                await self.writer.refresh(resource, namespace, ref.name)
                raise RouteConflict(ref.name) from exc
            generation = (written.get("metadata") or {}).get("generation")
            if isinstance(generation, int):
                self.caches.remember_own_generation(ref.kind, namespace, ref.name, generation)
            if drifted:
                found = (
                    f"primary {state.primary_weight}, canary {state.canary_weight}"
                    if state.primary_weight is not None and state.canary_weight is not None
                    else "different weights in different rules"
                )
                await self.writer.record_event(
                    self._latest(canary),
                    "Warning",
                    Reason.ROUTE_WEIGHTS_DRIFTED,
                    f"{ref.kind} {ref.name} weights were changed outside canaryd ({found}); put back to "
                    f"primary {primary_weight}, canary {canary_weight}. Other fields of the route were kept.",
                    action=str(status.phase or ""),
                )

    async def _report_invalid(self, raw: dict[str, Any], message: str) -> None:
        """A Canary the controller cannot parse: say why in a condition and an Event, once per change."""
        meta = raw.get("metadata") or {}
        status = raw.get("status") if isinstance(raw.get("status"), dict) else {}
        conditions = [c for c in (status or {}).get("conditions") or [] if isinstance(c, dict)]
        ready = next((c for c in conditions if c.get("type") == ConditionType.READY), None)
        text = f"the Canary cannot be processed: {message}"
        if ready is not None and ready.get("reason") == Reason.INVALID_SPEC and ready.get("message") == text:
            return
        now = self.clock().astimezone(UTC).isoformat().replace("+00:00", "Z")
        condition = {
            "type": ConditionType.READY.value,
            "status": "False",
            "reason": Reason.INVALID_SPEC.value,
            "message": text,
            "lastTransitionTime": now
            if ready is None or ready.get("status") != "False"
            else ready.get("lastTransitionTime", now),
            "observedGeneration": int(meta.get("generation") or 0),
        }
        others = [c for c in conditions if c.get("type") != ConditionType.READY]
        await self.writer.patch_status(
            str(meta.get("namespace")),
            str(meta.get("name")),
            {"conditions": [condition, *others], "observedGeneration": int(meta.get("generation") or 0)},
        )
        await self.writer.record_event(raw, "Warning", Reason.INVALID_SPEC.value, text, action="Validate")
        log.warning("canary is invalid", error=message)


__all__ = ["Reconciler", "RouteConflict", "key_text"]
