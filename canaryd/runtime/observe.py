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

import functools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import ValidationError

from canaryd.adapters.informer import MultiInformer
from canaryd.api.constants import ACTIVE_PHASES, FINALIZER, Phase, Reason, parse_phase
from canaryd.api.models import Canary, MetricCheck, MetricTemplate, RouteGenerations, validation_text
from canaryd.api.naming import workload_names
from canaryd.api.timestamps import parse_rfc3339
from canaryd.core import autoscaling, concurrency, gateway_support
from canaryd.core.claims import REFUSAL_REASONS, related_targets
from canaryd.core.concurrency import Key
from canaryd.core.observations import (
    AutoscalerState,
    CanaryClaim,
    Observations,
    ParentSupport,
    RouteState,
    WorkloadState,
)
from canaryd.core.routes import inspect_route
from canaryd.core.workloads import service_matches, services, target_problem, workload_state


class AutoscalerIndex:
    """HPAs by the Deployment they scale, kept from the HPA cache's events (no scan per decision)."""

    def __init__(self) -> None:
        self._by_target: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._target_of: dict[tuple[str, str], tuple[str, str]] = {}

    def on_event(self, event_type: str, obj: dict[str, Any]) -> set[tuple[str, str]]:
        """Record an HPA event; returns the (namespace, Deployment) pairs it scales or scaled."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        touched: set[tuple[str, str]] = set()
        old = self._target_of.pop(key, None)
        if old is not None:
            self._by_target[old].discard(key[1])
            touched.add(old)
        target = autoscaling.scale_target(obj)
        if event_type == "DELETED" or target is None:
            return touched
        new = (key[0], target[1])
        self._by_target[new].add(key[1])
        self._target_of[key] = new
        touched.add(new)
        return touched

    def scaling(self, namespace: str, deployment: str) -> list[str]:
        """Names of the HPAs that scale this Deployment."""
        return sorted(self._by_target.get((namespace, deployment), ()))


def _inspect(
    given: tuple[str, str, str, str, RouteGenerations | None, int | None], route: dict[str, Any]
) -> RouteState:
    kind, name, primary, canary_service, record, port = given
    return inspect_route(kind, name, route, primary, canary_service, record, port)


class ByVersion:
    """What was made of an object (its parsed model, its workload state), kept until the object changes.

    A Canary is looked at several times per step (its due wake-up, the watch
    events of its own writes) while most of what it reads has not changed, so
    parsing and summarising are done once per resourceVersion. An object
    without a resourceVersion is never remembered.
    """

    def __init__(self) -> None:
        self._made: dict[tuple[str, str, str, str], tuple[str, Any, Any]] = {}
        #: The keys of ``_made`` by object namespace and name, so forgetting one costs no scan.
        self._keys_of: dict[tuple[str, str], set[tuple[str, str, str, str]]] = defaultdict(set)

    def get(
        self,
        what: str,
        obj: dict[str, Any],
        make: Callable[[dict[str, Any]], T],
        given: Any = None,
        owner: tuple[str, str] | None = None,
    ) -> T:
        """``make(obj)``, made again only when the object's version or ``given`` (what else it used) changed.

        ``owner`` (namespace, name): forgetting it forgets this too (default: the object itself).
        """
        meta = obj.get("metadata") or {}
        version = str(meta.get("resourceVersion") or "")
        if not version:
            return make(obj)
        key = (what, str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta.get("uid", "")))
        known = self._made.get(key)
        if known is not None and known[0] == version and known[1] == given:
            value: T = known[2]
            return value
        made = make(obj)
        self._made[key] = (version, given, made)
        self._keys_of[owner or (key[1], key[2])].add(key)
        return made

    def forget(self, namespace: str, name: str) -> None:
        for key in self._keys_of.pop((namespace, name), ()):
            self._made.pop(key, None)


@dataclass
class Caches:
    """The caches a decision reads, by what they hold."""

    canaries: MultiInformer
    templates: MultiInformer
    deployments: MultiInformer
    services: MultiInformer
    routes: dict[str, MultiInformer]
    #: HorizontalPodAutoscalers (None: not watched), and the index of what each one scales.
    autoscalers: MultiInformer | None = None
    autoscaler_index: AutoscalerIndex = field(default_factory=AutoscalerIndex)
    #: Gateways (all namespaces: a route's parent may live in another) and GatewayClasses, read to know
    #: what a route's Gateways implement (None: not watched, nothing is known about them).
    gateways: MultiInformer | None = None
    gateway_classes: MultiInformer | None = None
    parsed: ByVersion = field(default_factory=ByVersion)
    #: Canaries by target and the refused ones, kept from the Canary cache's events (``ClaimIndex.track``).
    claims: ClaimIndex = field(default_factory=lambda: ClaimIndex())

    @property
    def all(self) -> list[MultiInformer]:
        found = [self.canaries, self.templates, self.deployments, self.services, *self.routes.values()]
        optional = (self.autoscalers, self.gateways, self.gateway_classes)
        return found + [cache for cache in optional if cache is not None]

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
    """The runs a decision just started, until the cache shows their phase (see ``core.concurrency``).

    The Canaries the cache shows in a run are kept as an index, updated from the
    Canary cache's events (``track``), so asking for a slot costs the same with
    ten Canaries or ten thousand.
    """

    limit: int
    reserved: set[Key] = field(default_factory=set)
    running: set[Key] = field(default_factory=set)

    def track(self, event_type: str, obj: dict[str, Any]) -> None:
        """Keep ``running`` current: a handler for the Canary cache."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if event_type != "DELETED" and parse_phase((obj.get("status") or {}).get("phase")) in ACTIVE_PHASES:
            self.running.add(key)
        else:
            self.running.discard(key)

    def available(self, key: Key, phase: Phase | None) -> bool:
        """Whether ``key`` (now in ``phase``) may start a run, counting the runs the cache shows."""
        return concurrency.run_slot_available(self.limit, key, phase, self.running, self.reserved)

    def claim(self, key: Key) -> None:
        """A decision started a run: count it until its status (and so the cache) says so."""
        if self.limit > 0:
            self.reserved.add(key)

    def release(self, key: Key) -> None:
        self.reserved.discard(key)


T = TypeVar("T")

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
    canary: Canary, templates: MultiInformer, parsed: ByVersion | None = None
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
            template = (
                parsed.get("MetricTemplate", raw, MetricTemplate.model_validate)
                if parsed is not None
                else MetricTemplate.model_validate(raw)
            )
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


def other_claims(
    canary: Canary, canaries: MultiInformer, index: ClaimIndex, routes: tuple[RouteState, ...]
) -> tuple[CanaryClaim, ...]:
    """The other Canaries of the namespace that could contest this one's objects, read leniently.

    Only the Canaries of the targets ``core.claims.related_targets`` names
    are looked at (through the index, not a scan of the cache); one that
    does not parse still claims its target.
    """
    namespace, uid, name = canary.metadata.namespace, canary.metadata.uid, canary.metadata.name
    related = related_targets(canary.spec.target_ref.name, routes)
    claims: list[CanaryClaim] = []
    for other_namespace, other_name in sorted(index.targeting(namespace, related)):
        obj = canaries.get(other_namespace, other_name)
        if obj is None:
            continue
        meta = obj.get("metadata") or {}
        if meta.get("name") == name and meta.get("uid") == uid:
            continue
        if meta.get("deletionTimestamp") and FINALIZER not in (meta.get("finalizers") or []):
            continue  # going away without any more work from canaryd
        target = _target_of(obj)
        if target is None:
            continue
        created = meta.get("creationTimestamp")
        status = obj.get("status") or {}
        claims.append(
            CanaryClaim(
                name=str(meta.get("name", "")),
                uid=str(meta.get("uid") or ""),
                created=parse_rfc3339(created) if isinstance(created, str) else None,
                target=target,
                started=isinstance(status, dict) and parse_phase(status.get("phase")) is not None,
            )
        )
    return tuple(claims)


def _target_of(obj: dict[str, Any]) -> str | None:
    """The Deployment a Canary object names in spec.targetRef, read leniently (None: it names none)."""
    spec = obj.get("spec")
    target_ref = spec.get("targetRef") if isinstance(spec, dict) else None
    target = target_ref.get("name") if isinstance(target_ref, dict) else None
    return target if isinstance(target, str) and target else None


class ClaimIndex:
    """The Canaries of each namespace by the Deployment they target, and those refused, from cache events.

    The claims decision (``core.claims``) needs the few other Canaries whose
    targets are related to a Canary's own; a deleted Canary wakes only the
    Canaries that were refused. Both are kept as indexes updated from the
    Canary cache's events (``track``) instead of scans of the whole cache,
    which cost every step time in proportion to the number of Canaries.
    """

    def __init__(self) -> None:
        self._by_target: dict[tuple[str, str], set[Key]] = defaultdict(set)
        self._target_of: dict[Key, tuple[str, str]] = {}
        self._refused: dict[str, set[Key]] = defaultdict(set)

    def track(self, event_type: str, obj: dict[str, Any]) -> None:
        """Keep the indexes current: a handler for the Canary cache."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        old = self._target_of.pop(key, None)
        if old is not None:
            keys = self._by_target[old]
            keys.discard(key)
            if not keys:
                del self._by_target[old]
        refused = self._refused[key[0]]
        refused.discard(key)
        if event_type == "DELETED":
            if not refused:
                del self._refused[key[0]]
            return
        target = _target_of(obj)
        if target is not None:
            self._by_target[(key[0], target)].add(key)
            self._target_of[key] = (key[0], target)
        if _ready_reason(obj) in REFUSAL_REASONS:
            refused.add(key)
        elif not refused:
            del self._refused[key[0]]

    def targeting(self, namespace: str, targets: frozenset[str] | set[str]) -> set[Key]:
        """The Canaries of the namespace whose target is one of ``targets``."""
        found: set[Key] = set()
        for target in targets:
            found |= self._by_target.get((namespace, target), set())
        return found

    def refused(self, namespace: str) -> set[Key]:
        """The Canaries of the namespace whose Ready condition says a claim keeps them from acting."""
        return set(self._refused.get(namespace, ()))


def _ready_reason(obj: dict[str, Any]) -> Any:
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    for condition in conditions if isinstance(conditions, list) else ():
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return condition.get("reason")
    return None


def owned_by(obj: dict[str, Any] | None, owner_uid: str) -> bool:
    """The object carries an ownerReference to the owner with this uid."""
    if obj is None or not owner_uid:
        return False
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(ref, dict) and ref.get("uid") == owner_uid for ref in refs)


def primary_workload(deployment: dict[str, Any]) -> WorkloadState:
    return workload_state(deployment, primary=True)


@dataclass(frozen=True)
class ObservedAutoscaling:
    state: AutoscalerState | None = None
    stale: tuple[str, ...] = ()
    #: A copy canaryd made for the primary still carries this Canary's ownerReference.
    owns_copy: bool = False


def observe_autoscaling(canary: Canary, caches: Caches) -> ObservedAutoscaling:
    """The HPA that scales the target (the first by name) and canaryd's copies for the primary."""
    hpas = caches.autoscalers
    if hpas is None:
        return ObservedAutoscaling()
    namespace = canary.metadata.namespace
    target = canary.spec.target_ref.name
    uid = canary.metadata.uid or ""
    index = caches.autoscaler_index

    def load(name: str) -> dict[str, Any] | None:
        return hpas.get(namespace, name)

    sources = [h for h in map(load, index.scaling(namespace, target)) if h and autoscaling.copy_of(h) is None]
    source = autoscaling.source_autoscaler(sources)
    copies = [
        h
        for h in map(load, index.scaling(namespace, workload_names(target).primary))
        if h and autoscaling.copy_of(h) is not None and owned_by(h, uid)
    ]
    state = None
    wanted_name = None
    if source is not None:
        wanted = autoscaling.primary_autoscaler(source, canary)
        wanted_name = wanted["metadata"]["name"]
        actual = load(wanted_name)
        # Someone else's HPA with that name is left alone (canaryd never edits what it did not make).
        foreign = actual is not None and autoscaling.copy_of(actual) is None
        state = AutoscalerState(
            source=source["metadata"]["name"], mirror_in_step=foreign or autoscaling.in_step(actual, wanted)
        )
    stale = tuple(sorted(h["metadata"]["name"] for h in copies if h["metadata"]["name"] != wanted_name))
    return ObservedAutoscaling(state=state, stale=stale, owns_copy=bool(copies))


def route_parents(route: dict[str, Any] | None, namespace: str, caches: Caches) -> tuple[ParentSupport, ...]:
    """The route's parent Gateways, with what their classes list in status.supportedFeatures."""
    if route is None or caches.gateways is None:
        return ()
    parents: list[ParentSupport] = []
    for key in gateway_support.parent_gateways(route, namespace):
        gateway = caches.gateways.get(*key)
        class_name = gateway_support.gateway_class_name(gateway)
        gateway_class = (
            caches.gateway_classes.get("", class_name)
            if class_name and caches.gateway_classes is not None
            else None
        )
        parents.append(gateway_support.parent_support(key, gateway, gateway_class))
    return tuple(parents)


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
        target_state = caches.parsed.get("target", target, workload_state)
        problem = target_problem(target)
        if problem:
            problems.append((Reason.TARGET_INVALID, problem))
        else:
            services_ready = all(
                service_matches(caches.services.get(namespace, wanted["metadata"]["name"]), wanted)
                for wanted in services(target, canary)
            )
    primary_state = caches.parsed.get("primary", primary, primary_workload) if primary is not None else None

    routes: list[RouteState] = []
    for ref in canary.spec.route_refs:
        cache = caches.routes.get(ref.kind)
        route = cache.get(namespace, ref.name) if cache is not None else None
        record = canary.status.route_record(ref.kind, ref.name)
        port = canary.spec.service.port
        if route is None:
            state = inspect_route(ref.kind, ref.name, None, names.primary, names.canary_service, record, port)
        else:
            # Per Canary (another one weighting the same route names other Services), per what it was given;
            # forgotten with the Canary.
            given = (ref.kind, ref.name, names.primary, names.canary_service, record, port)
            state = caches.parsed.get(
                f"{ref.kind} of {canary.metadata.uid or canary.metadata.name}",
                route,
                functools.partial(_inspect, given),
                given=given,
                owner=(namespace, canary.metadata.name),
            )
        routes.append(replace(state, parents=route_parents(route, namespace, caches)))

    uid = canary.metadata.uid or ""
    autoscaled = observe_autoscaling(canary, caches)
    owns_workloads = (
        owned_by(primary, uid)
        or any(owned_by(caches.services.get(namespace, service), uid) for service in names)
        or autoscaled.owns_copy
    )

    metrics, template_problems = resolve_metrics(canary, caches.templates, caches.parsed)
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
        others=other_claims(canary, caches.canaries, caches.claims, tuple(routes)),
        autoscaler=autoscaled.state,
        stale_autoscalers=autoscaled.stale,
    )
    return Observed(observations=observations, metrics=metrics, target=target, share_template=share_template)
