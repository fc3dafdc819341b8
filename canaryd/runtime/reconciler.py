"""One pass for one Canary: observe, decide, then do what the decision says, in its order.

The reconciler decides nothing; it interprets a core decision:

0. before deciding, the webhook round (the gate and check webhooks the core
   says are due, see ``runtime.hooks``) and the analysis round, whose results
   the decision gets as observations;
1. the status (a merge patch on /status) is written first: it is the record of
   what canaryd intends, so a controller killed at any point resumes from it
   and re-applies (idempotently) whatever effect had not happened yet, and a
   step is never taken twice; a new weight is written there as
   ``movingToWeight`` and becomes ``canaryWeight`` only once the route
   patches went through (``core.inflight``), so status never runs ahead of
   the routes. An ordinary step, whose only write besides status is its
   route's weights, patches the route first and writes status once, after
   it (``core.inflight.weights_first``). Once status is written, the
   decision's lines go to the log (``core.decision_log``: one line per phase
   change, step, verdict, manual action, rollback);
2. the effects, in the order the decision gives them (its Events first); the
   first failure stops the pass (a later effect may depend on an earlier one).
   A route that someone changed meanwhile (409/422 on the guarded patch) is
   read again and the Canary is decided again at once, so nobody's edit is lost;
3. the next wake-up, from the decision (itself computed from status), so idle
   Canaries cost nothing and a restart is on time.

Background work the decision asks for (post-rollout and rollback webhooks,
an ``event`` webhook call for every Event recorded, chat notifications) is
queued, never waited for.

A Canary that does not parse gets the report ``core.invalid`` makes of it. A
pass that fails (an API error, an exception, a route race lost again and
again) is retried with a growing backoff, and the report ``core.failures``
makes of it (``Reconciled=False`` and a Warning Event, credentials removed)
is written as soon as it is worth a person's attention: never a silent loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from canaryd.adapters.informer import Key
from canaryd.adapters.kube import AUTOSCALERS, CANARIES, DEPLOYMENTS, ROUTE_RESOURCES, SERVICES, ApiError
from canaryd.adapters.scheduler import WakeupScheduler
from canaryd.adapters.writers import Writer, status_merge_patch
from canaryd.api.constants import HookType, Reason
from canaryd.api.models import Canary, CanaryStatus, MetricTemplate, Webhook, validation_text
from canaryd.api.naming import workload_names
from canaryd.core import autoscaling, inflight
from canaryd.core import effects as fx
from canaryd.core.concurrency import starts_run
from canaryd.core.decision_log import decision_log
from canaryd.core.failures import (
    PERSISTENT_ATTEMPTS,
    PassFailure,
    describe_effect,
    failure_report,
    recovery_patch,
    worth_reporting,
)
from canaryd.core.hooks import due_webhooks
from canaryd.core.invalid import invalid_canary_report
from canaryd.core.lifecycle import Decision
from canaryd.core.observations import HookResult, MetricResult, Observations, ShareReading
from canaryd.core.redaction import redact_text
from canaryd.core.revision import deployment_template_hash
from canaryd.core.route_plan import route_patch
from canaryd.core.schedule import retry_backoff
from canaryd.core.webhooks import EventInfo
from canaryd.core.workloads import (
    primary_deployment,
    primary_template_patch,
    scale_patch,
    service_matches,
    service_patch,
    services,
    workload_state,
)
from canaryd.runtime.hooks import BackgroundHooks, with_status
from canaryd.runtime.metrics import ControllerMetrics
from canaryd.runtime.notify import ChatNotifications
from canaryd.runtime.observe import Caches, ResolvedMetric, RunSlots, observe, owned_by

log = structlog.get_logger("canaryd.reconciler")
#: The story of each rollout, one line per thing that happened (see ``core.decision_log``).
rollout_log = structlog.get_logger("canaryd.rollout")

Analyzer = Callable[[Canary, tuple[ResolvedMetric, ...], datetime], Awaitable[tuple[MetricResult, ...]]]
#: Measures the canary's share of each route's requests with the trafficShare template.
ShareMeter = Callable[[Canary, MetricTemplate, datetime], Awaitable[tuple[ShareReading, ...]]]
DecideFn = Callable[[Canary, Observations, datetime], Decision]
DueFn = Callable[[Canary, Observations, datetime], bool]
HookRound = Callable[[Canary, tuple[Webhook, ...], datetime], Awaitable[tuple[HookResult, ...]]]


@dataclass(frozen=True)
class UnconfirmedStep:
    """A step whose route patch went through and whose status write failed: what to write once it can be.

    Deciding again instead could come before the Gateway reports the route's
    new generation, hold the run, and move the route back a step.
    """

    #: The Canary's resourceVersion the step was decided from: any write since, and the step is decided again.
    canary_version: str
    route: tuple[str, str]
    #: The route's uid and generation after canaryd's patch: a spec change since, and the step is decided
    #: again (the Gateway's status writes change neither).
    route_version: tuple[str, int | None]
    status_patch: dict[str, Any]


class RouteConflict(Exception):
    """A guarded route patch lost a race; the route was read again."""

    def __init__(self, route: str, error: ApiError) -> None:
        super().__init__(route)
        self.route = route
        self.error = error


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
        hook_round: HookRound | None = None,
        background: BackgroundHooks | None = None,
        notifications: ChatNotifications | None = None,
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
        self.hook_round = hook_round
        self.background = background
        self.notifications = notifications
        self.share_meter = share_meter
        self.share_due = share_due
        self._failures: dict[Key, int] = {}
        #: Route races lost in a row, per Canary (a race lost every time is a failure, not a race).
        self._conflicts: dict[Key, int] = {}
        #: What each pass under way is doing, for the report when it fails.
        self._doing: dict[Key, str] = {}
        self._fired_due: dict[Key, datetime] = {}
        #: Canaries whose last write got no answer (it may or may not have happened).
        self._unsure: set[Key] = set()
        #: Steps whose route patch went through and whose status write did not (see ``_step_weights_first``).
        self._unconfirmed: dict[Key, UnconfirmedStep] = {}

    def woke(self, key: Key, due: datetime) -> None:
        """A scheduled wake-up fired; remember when it was due, to measure lateness."""
        self._fired_due[key] = due

    def forget(self, key: Key) -> None:
        self.scheduler.cancel(key_text(key))
        self._failures.pop(key, None)
        self._conflicts.pop(key, None)
        self._doing.pop(key, None)
        self._fired_due.pop(key, None)
        self._unsure.discard(key)
        self._unconfirmed.pop(key, None)
        self.slots.release(key)
        self.caches.parsed.forget(*key)
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
            if await self._confirm_step(key, raw):
                return
            self._doing[key] = "deciding"
            await self._reconcile(key, raw)
            self._failures.pop(key, None)
            self._conflicts.pop(key, None)
            self.metrics.reconciles.labels("ok").inc()
            await self._recovered(key)
        except RouteConflict as conflict:
            self.metrics.reconciles.labels("conflict").inc()
            lost = self._conflicts.get(key, 0) + 1
            self._conflicts[key] = lost
            if lost < PERSISTENT_ATTEMPTS:
                self.requeue(key)
            else:
                error = conflict.error
                doing = f"writing the weights of route {conflict.route}"
                await self._failed(key, PassFailure(doing, error.status, redact_text(error.message), lost))
        except ApiError as exc:
            self.metrics.reconciles.labels("error").inc()
            if exc.not_found and self.caches.canaries.get(namespace, name) is None:
                return
            if exc.status == 0:
                self._unsure.add(key)
            attempts = self._failures.get(key, 0) + 1
            detail = redact_text(f"{exc.reason}: {exc.message}" if exc.reason else exc.message)
            doing = self._doing.get(key, "reconciling")
            await self._failed(key, PassFailure(doing, exc.status, detail, attempts))
        except Exception as exc:
            self.metrics.reconciles.labels("error").inc()
            log.exception("reconcile failed")
            attempts = self._failures.get(key, 0) + 1
            detail = redact_text(f"{type(exc).__name__}: {exc}")
            await self._failed(key, PassFailure(self._doing.get(key, "reconciling"), None, detail, attempts))
        finally:
            self._doing.pop(key, None)
            structlog.contextvars.unbind_contextvars("namespace", "name")

    async def _failed(self, key: Key, failure: PassFailure) -> None:
        """Back off, and tell the Canary's readers once the failure is worth their attention."""
        self._retry_later(key, f"{failure.doing}: {failure.detail}")
        if not worth_reporting(failure):
            return
        raw = self.caches.canaries.get(*key)
        if raw is None:
            return
        generation = _generation(raw)
        report = failure_report(raw.get("status") or {}, failure, self.clock(), generation)
        if report is None:
            return
        try:
            await self.writer.patch_status(key[0], key[1], report.status_patch)
        except ApiError as exc:
            log.warning("could not write the failure to the Canary's status", status=exc.status)
        event = report.event
        await self.writer.record_event(raw, event.type, event.reason, event.message, action="Reconcile")

    async def _recovered(self, key: Key) -> None:
        """After a pass that went through: Reconciled=True where status still says it failed."""
        raw = self.caches.canaries.get(*key)
        if raw is None:
            return
        generation = _generation(raw)
        patch = recovery_patch(raw.get("status") or {}, self.clock(), generation)
        if patch is not None:
            await self.writer.patch_status(key[0], key[1], patch)

    def _retry_later(self, key: Key, why: str) -> None:
        attempts = self._failures.get(key, 0) + 1
        self._failures[key] = attempts
        delay = retry_backoff(attempts)
        log.warning("reconcile will be retried", error=why, attempt=attempts, delay=delay.total_seconds())
        self.scheduler.wake_at(key_text(key), self.clock() + delay)

    async def _reconcile(self, key: Key, raw: dict[str, Any]) -> None:
        try:
            written = self.caches.parsed.get("Canary", raw, Canary.model_validate)
        except ValidationError as exc:
            await self._report_invalid(raw, validation_text(exc))
            return
        # Decisions read the weight a run is at: the one being moved to, if a move is under way.
        canary = written.model_copy(update={"status": inflight.intended(written.status)})
        slot = self.slots.available(key, canary.status.phase)
        self._doing[key] = "reading the Canary's objects from the caches"
        observed = observe(canary, raw, self.caches, slot)
        observations = observed.observations
        now = self.clock()
        due = due_webhooks(canary, observations, now) if self.hook_round is not None else ()
        if due and self.hook_round is not None:
            self._doing[key] = "calling webhooks"
            answers = await self.hook_round(canary, due, now)
            if self.caches.canaries.get(*key) is not None:  # a Canary deleted meanwhile leaves no series
                for answer in answers:
                    self.metrics.webhook_calls.labels(*key, answer.name, answer.outcome.value).inc()
            observations = replace(observations, hooks=answers)
            now = self.clock()
        if self.analysis_due(canary, observations, now):
            self._doing[key] = "running the analysis"
            results = await self.analyzer(canary, observed.metrics, now)
            if self.caches.canaries.get(*key) is not None:
                for result in results:
                    self.metrics.analysis_verdicts.labels(*key, result.name, result.verdict.value).inc()
            observations = replace(observations, analysis=results)
            now = self.clock()
        share_template = observed.share_template
        if (
            self.share_meter is not None
            and self.share_due is not None
            and share_template is not None
            and self.share_due(canary, observations, now)
        ):
            self._doing[key] = "measuring the traffic share"
            readings = await self.share_meter(canary, share_template, now)
            observations = replace(observations, traffic_share=readings)
            now = self.clock()
        self._doing[key] = "deciding"
        decision = self.decide(canary, observations, now)
        if starts_run(canary.status, decision.status):
            self.slots.claim(key)  # before any await, so a concurrent decision counts this run
        staged = inflight.stage(
            decision.status,
            inflight.confirmed(written.status, observations.routes),
            observations.routes,
            decision.effects,
        )
        once_routed = staged.once_routed
        if once_routed is not None and inflight.weights_first(
            written.status, staged, decision.effects, len(canary.spec.route_refs)
        ):
            step = (staged.before_routes, once_routed)
            await self._step_weights_first(key, raw, canary, observed.target, written.status, decision, step)
            self._doing[key] = "scheduling the next look"
            self._after(key, canary.status, replace(decision, status=once_routed), now)
            return
        self._doing[key] = "writing the Canary's status"
        try:
            await self._write_status(key, raw, written.status, staged.before_routes)
        finally:
            self.slots.release(key)
        for line in decision_log(canary, canary.status, decision.status, decision.effects):
            rollout_log.info(line.message, kind=line.kind, **line.fields)
        for effect in decision.effects:
            self._doing[key] = self._describe(effect, canary)
            await self._apply(effect, canary, observed.target, decision.status)
        shown = staged.before_routes
        if staged.once_routed is not None:
            # Every weight patch went through: status may now say the routes carry the new weight.
            self._doing[key] = "recording the weight the routes now carry"
            patch = status_merge_patch(staged.before_routes.dump(), staged.once_routed.dump())
            await self.writer.patch_status(key[0], key[1], patch)
            shown = staged.once_routed
        self._doing[key] = "scheduling the next look"
        self._after(key, canary.status, replace(decision, status=shown), now)

    async def _step_weights_first(
        self,
        key: Key,
        raw: dict[str, Any],
        canary: Canary,
        target: dict[str, Any] | None,
        old: CanaryStatus,
        decision: Decision,
        step: tuple[CanaryStatus, CanaryStatus],
    ) -> None:
        """An ordinary step (``core.inflight.weights_first``): the route patch, status once, then the rest.

        ``step`` holds the status of the two-step write's first half and the
        one to write once the route carries the weight. A route patch that
        failed for another reason than a lost race may have gone through, and
        a failed status write leaves the route ahead of status: either way
        status then says the move (``movingToWeight``) before the failure is
        handled, as the two-step write would have.
        """
        moving, once_routed = step
        try:
            try:
                for effect in decision.effects:
                    if isinstance(effect, fx.SetRouteWeights):
                        self._doing[key] = self._describe(effect, canary)
                        await self._apply(effect, canary, target, decision.status)
                once_routed = inflight.routed_at(once_routed, old, self.clock())
                self._doing[key] = "writing the Canary's status"
                pending = self._remember_step(key, raw, canary, once_routed)
                await self.writer.patch_status(key[0], key[1], pending.status_patch)
                self._unconfirmed.pop(key, None)
            except RouteConflict:
                raise  # the route was not written: status still says what it carries
            except Exception:
                with contextlib.suppress(Exception):
                    await self._write_status(key, raw, old, moving)
                    self._unconfirmed.pop(key, None)  # status says the move: the next pass resumes it
                raise
        finally:
            self.slots.release(key)
        for line in decision_log(canary, canary.status, decision.status, decision.effects):
            rollout_log.info(line.message, kind=line.kind, **line.fields)
        for effect in decision.effects:
            if not isinstance(effect, fx.SetRouteWeights):
                self._doing[key] = self._describe(effect, canary)
                await self._apply(effect, canary, target, decision.status)

    def _remember_step(
        self, key: Key, raw: dict[str, Any], canary: Canary, once_routed: CanaryStatus
    ) -> UnconfirmedStep:
        """Keep the step's status patch until it is written; the patch is returned for writing it."""
        ref = canary.spec.route_refs[0]
        route = self.caches.routes[ref.kind].get(key[0], ref.name) or {}
        pending = self._unconfirmed[key] = UnconfirmedStep(
            canary_version=_version(raw),
            route=(ref.kind, ref.name),
            route_version=_uid_generation(route),
            status_patch=status_merge_patch(raw.get("status") or {}, once_routed.dump()),
        )
        return pending

    async def _confirm_step(self, key: Key, raw: dict[str, Any]) -> bool:
        """Write the status of a step whose route patch went through; False: nothing to confirm, decide."""
        step = self._unconfirmed.get(key)
        if step is None:
            return False
        kind, name = step.route
        route = self.caches.routes[kind].get(key[0], name) or {}
        if _version(raw) != step.canary_version or _uid_generation(route) != step.route_version:
            del self._unconfirmed[key]
            return False
        self._doing[key] = "recording the weight the route now carries"
        await self.writer.patch_status(key[0], key[1], step.status_patch)
        self._unconfirmed.pop(key, None)
        self.requeue(key)  # the next pass decides from the status just written
        return True

    @staticmethod
    def _describe(effect: fx.Effect, canary: Canary) -> str:
        return describe_effect(effect, canary.metadata.namespace, canary.spec.target_ref.name)

    def _after(self, key: Key, before: CanaryStatus, decision: Decision, now: datetime) -> None:
        """Metrics of the pass, and the next wake-up the decision asks for."""
        status = decision.status
        if self.caches.canaries.get(*key) is not None:
            # A Canary deleted while this pass ran was forgotten already: its series must not come back.
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
        if self.background is not None:
            info = EventInfo(reason=event.reason, message=event.message, type=event.type)
            self.background.send(with_status(canary, status), HookType.EVENT, info)

    async def report_webhook_failure(self, canary: Canary, webhook: Webhook, what: str) -> None:
        """A background webhook was not delivered: a Warning Event on the Canary (never raises)."""
        latest = self.caches.canaries.get(canary.metadata.namespace, canary.metadata.name)
        if latest is None:
            return
        message = f"webhook {webhook.name} ({webhook.type.value}) not delivered: {what}"
        await self.writer.record_event(
            latest, "Warning", Reason.WEBHOOK_FAILED.value, message, action="Webhook"
        )
        if self.background is not None:
            info = EventInfo(reason=Reason.WEBHOOK_FAILED.value, message=message, type="Warning")
            self.background.send(canary, HookType.EVENT, info)

    async def report_notification_problem(self, canary: Canary, message: str) -> None:
        latest = self.caches.canaries.get(canary.metadata.namespace, canary.metadata.name)
        if latest is not None:
            await self.writer.record_event(
                latest, "Warning", Reason.NOTIFICATION_FAILED.value, message, action="Notify"
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
        elif isinstance(effect, fx.MirrorAutoscaler):
            await self._mirror_autoscaler(effect.source, canary)
        elif isinstance(effect, fx.DeleteAutoscaler):
            await self.writer.delete(AUTOSCALERS, namespace, effect.name)
            log.info("deleted the primary's copy of an HPA that is gone", autoscaler=effect.name)
        elif isinstance(effect, fx.CallWebhooks):
            if self.background is not None:
                self.background.send(with_status(canary, status), effect.type)
        elif isinstance(effect, fx.Notify):
            if self.notifications is not None:
                self.notifications.notify(canary, effect.notification)
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

    async def _mirror_autoscaler(self, source_name: str, canary: Canary) -> None:
        """Create ``<source>-primary`` for the primary, or put its spec back in step with the source."""
        cache = self.caches.autoscalers
        namespace = canary.metadata.namespace
        source = cache.get(namespace, source_name) if cache is not None else None
        if cache is None or source is None:
            return
        wanted = autoscaling.primary_autoscaler(source, canary)
        name = wanted["metadata"]["name"]
        existing = cache.get(namespace, name)
        if existing is None:
            try:
                await self.writer.create(AUTOSCALERS, wanted)
                log.info("mirrored the target's HPA for the primary", source=source_name, autoscaler=name)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                # Not in the cache yet: the watch brings it, and the next decision looks at it.
                log.info("an HPA by that name exists already", autoscaler=name)
            return
        if autoscaling.copy_of(existing) is None or autoscaling.in_step(existing, wanted):
            return
        await self.writer.json_patch(AUTOSCALERS, namespace, name, autoscaling.spec_patch(wanted))
        log.info("put the primary's HPA back in step", source=source_name, autoscaler=name)

    async def _release_owned(self, canary: Canary) -> None:
        """Take this Canary's ownerReference off the primary, both Services and the HPA copy."""
        namespace = canary.metadata.namespace
        names = workload_names(canary.spec.target_ref.name)
        uid = canary.metadata.uid or ""
        owned = [
            (DEPLOYMENTS, self.caches.deployments, names.primary),
            (SERVICES, self.caches.services, names.primary),
            (SERVICES, self.caches.services, names.canary_service),
        ]
        hpas = self.caches.autoscalers
        if hpas is not None:
            for hpa in self.caches.autoscaler_index.scaling(namespace, names.primary):
                obj = hpas.get(namespace, hpa)
                if obj is not None and autoscaling.copy_of(obj) is not None:
                    owned.append((AUTOSCALERS, hpas, hpa))
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
            await self.writer.scale(namespace, target_name, replicas, scale_patch(target, replicas))

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
                raise RouteConflict(f"{ref.kind} {namespace}/{ref.name}", exc) from exc
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


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _uid_generation(obj: dict[str, Any]) -> tuple[str, int | None]:
    meta = obj.get("metadata") or {}
    generation = meta.get("generation")
    return str(meta.get("uid", "")), generation if isinstance(generation, int) else None


def _generation(raw: dict[str, Any]) -> int:
    value = (raw.get("metadata") or {}).get("generation")
    return value if isinstance(value, int) else 0


__all__ = ["Reconciler", "RouteConflict", "UnconfirmedStep", "key_text"]
