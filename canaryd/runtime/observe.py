"""What the controller sees of one Canary's world, read from the caches only.

A step must cost no reads: the target and primary Deployments, the Services,
the routes and the MetricTemplates all come from the list+watch caches, and
are turned into the plain values the core decides on. Anything that makes the
Canary unworkable (a missing or malformed template, a target without selectors)
becomes a ``config_problems`` entry in words a person can act on, and the
first of them names the condition reason (``config_reason``). Nothing here
decides: every rule applied to these values lives in ``canaryd.core``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from canaryd.adapters.informer import MultiInformer
from canaryd.api.constants import ACTIVE_PHASES, FINALIZER, Phase, Reason, parse_phase
from canaryd.api.models import Canary, MetricCheck, MetricTemplate, validation_text
from canaryd.api.naming import workload_names
from canaryd.core import concurrency
from canaryd.core.concurrency import Key
from canaryd.core.observations import Observations, RouteState
from canaryd.core.routes import inspect_route
from canaryd.core.workloads import service_matches, services, target_problem, workload_state


@dataclass
class Caches:
    """The caches a decision reads, by what they hold."""

    canaries: MultiInformer
    templates: MultiInformer
    deployments: MultiInformer
    services: MultiInformer
    routes: dict[str, MultiInformer]

    @property
    def all(self) -> list[MultiInformer]:
        return [self.canaries, self.templates, self.deployments, self.services, *self.routes.values()]

    @property
    def synced(self) -> bool:
        return all(c.synced for c in self.all)


@dataclass(frozen=True)
class ResolvedMetric:
    """One metric check with the template it names (None for an inline query)."""

    check: MetricCheck
    template: MetricTemplate | None


@dataclass
class Observed:
    observations: Observations
    metrics: tuple[ResolvedMetric, ...] = ()
    target: dict[str, Any] | None = None
    #: The MetricTemplate of analysis.trafficShare (None when the Canary verifies no traffic share).
    share_template: MetricTemplate | None = None


@dataclass
class RunSlots:
    """The runs a decision just started, until the cache shows their phase (see ``core.concurrency``)."""

    limit: int
    reserved: set[Key] = field(default_factory=set)

    def available(self, key: Key, canaries: MultiInformer, phase: Phase | None) -> bool:
        """Whether ``key`` (now in ``phase``) may start a run, counting the runs the cache shows."""
        running = {
            (obj["metadata"].get("namespace", ""), obj["metadata"].get("name", ""))
            for obj in canaries.items()
            if parse_phase((obj.get("status") or {}).get("phase")) in ACTIVE_PHASES
        }
        return concurrency.run_slot_available(self.limit, key, phase, running, self.reserved)

    def claim(self, key: Key) -> None:
        """A decision started a run: count it until its status (and so the cache) says so."""
        if self.limit > 0:
            self.reserved.add(key)

    def release(self, key: Key) -> None:
        self.reserved.discard(key)


#: A problem with the Canary's references: the condition reason that names it, and what to fix.
Problem = tuple[Reason, str]


def _template(
    templates: MultiInformer, namespace: str, name: str, what: str
) -> tuple[MetricTemplate | None, Problem | None]:
    raw = templates.get(namespace, name)
    if raw is None:
        return None, (
            Reason.TEMPLATE_NOT_FOUND,
            f"{what}: MetricTemplate {namespace}/{name} not found; "
            "apply it (e.g. kubectl apply -f analysis/) or fix templateRef",
        )
    try:
        return MetricTemplate.model_validate(raw), None
    except ValidationError as exc:
        return None, (
            Reason.TEMPLATE_INVALID,
            f"{what}: MetricTemplate {namespace}/{name} is invalid: {validation_text(exc)}",
        )


def resolve_share_template(
    canary: Canary, templates: MultiInformer
) -> tuple[MetricTemplate | None, Problem | None]:
    """The MetricTemplate analysis.trafficShare names, or the problem with it."""
    check = canary.spec.analysis.traffic_share
    if check is None:
        return None, None
    namespace = check.template_ref.namespace or canary.metadata.namespace
    return _template(templates, namespace, check.template_ref.name, "trafficShare")


def resolve_metrics(
    canary: Canary, templates: MultiInformer
) -> tuple[tuple[ResolvedMetric, ...], list[Problem]]:
    resolved: list[ResolvedMetric] = []
    problems: list[Problem] = []
    for check in canary.spec.analysis.metrics:
        if check.template_ref is None:
            resolved.append(ResolvedMetric(check, None))
            continue
        namespace = check.template_ref.namespace or canary.metadata.namespace
        raw = templates.get(namespace, check.template_ref.name)
        if raw is None:
            problems.append(
                (
                    Reason.TEMPLATE_NOT_FOUND,
                    f"metric {check.name}: MetricTemplate {namespace}/{check.template_ref.name} not found; "
                    "apply it (e.g. kubectl apply -f analysis/) or fix templateRef",
                )
            )
            continue
        try:
            template = MetricTemplate.model_validate(raw)
        except ValidationError as exc:
            problems.append(
                (
                    Reason.TEMPLATE_INVALID,
                    f"metric {check.name}: MetricTemplate {namespace}/{check.template_ref.name} is invalid: "
                    f"{validation_text(exc)}",
                )
            )
            continue
        resolved.append(ResolvedMetric(check, template))
    return tuple(resolved), problems


def owned_by(obj: dict[str, Any] | None, owner_uid: str) -> bool:
    """The object carries an ownerReference to the owner with this uid."""
    if obj is None or not owner_uid:
        return False
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(ref, dict) and ref.get("uid") == owner_uid for ref in refs)


def observe(canary: Canary, raw: dict[str, Any], caches: Caches, run_slot_available: bool = True) -> Observed:
    namespace = canary.metadata.namespace
    target_name = canary.spec.target_ref.name
    names = workload_names(target_name)
    target = caches.deployments.get(namespace, target_name)
    primary = caches.deployments.get(namespace, names.primary)
    problems: list[Problem] = []
    target_state = None
    services_ready = False
    if target is not None:
        target_state = workload_state(target)
        problem = target_problem(target)
        if problem:
            problems.append((Reason.TARGET_INVALID, problem))
        else:
            services_ready = all(
                service_matches(caches.services.get(namespace, wanted["metadata"]["name"]), wanted)
                for wanted in services(target, canary)
            )
    primary_state = workload_state(primary, primary=True) if primary is not None else None

    routes: list[RouteState] = []
    for ref in canary.spec.route_refs:
        cache = caches.routes.get(ref.kind)
        route = cache.get(namespace, ref.name) if cache is not None else None
        record = canary.status.route_record(ref.kind, ref.name)
        routes.append(inspect_route(ref.kind, ref.name, route, names.primary, names.canary_service, record))

    uid = canary.metadata.uid or ""
    owns_workloads = owned_by(primary, uid) or any(
        owned_by(caches.services.get(namespace, service), uid) for service in names
    )

    metrics, template_problems = resolve_metrics(canary, caches.templates)
    problems.extend(template_problems)
    share_template, share_problem = resolve_share_template(canary, caches.templates)
    if share_problem is not None:
        problems.append(share_problem)
    meta = raw.get("metadata") or {}
    observations = Observations(
        target=target_state,
        primary=primary_state,
        services_ready=services_ready,
        routes=tuple(routes),
        config_problems=tuple(text for _, text in problems),
        # The first problem names the condition: a broken target comes before its templates.
        config_reason=problems[0][0] if problems else Reason.TEMPLATE_NOT_FOUND,
        action=canary.status.pending_action,
        run_slot_available=run_slot_available,
        deleting=bool(meta.get("deletionTimestamp")),
        has_finalizer=FINALIZER in (meta.get("finalizers") or []),
        owns_workloads=owns_workloads,
    )
    return Observed(observations=observations, metrics=metrics, target=target, share_template=share_template)
