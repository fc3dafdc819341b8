"""What the runtime saw of the world before asking the core for a decision.

These are plain, immutable values built by the runtime from its caches and
from Prometheus. Keeping them apart from the Kubernetes objects means the core
can be tested exhaustively by constructing observations directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from canaryd.api.constants import HookOutcome, HookType, Reason, Verdict
from canaryd.api.models import ActionRequest, ComparisonStatus


@dataclass(frozen=True)
class WorkloadState:
    """A Deployment as far as a decision needs it."""

    name: str
    template_hash: str
    desired_replicas: int
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    #: status.replicas: every pod of the Deployment, those of previous templates included.
    replicas: int = 0
    generation: int = 0
    observed_generation: int = 0
    #: The Canary that created this Deployment as its primary (from its ownerReference or canaryd's
    #: labels); "" for a Deployment canaryd does not manage.
    managed_by: str = ""

    @property
    def rolled_out(self) -> bool:
        """The Deployment controller has caught up with the spec and every replica is ready."""
        return self.rolled_out_at(100)

    def ready_needed(self, ready_percent: int) -> int:
        """How many ready replicas ``ready_percent`` % of the desired ones is (rounded up)."""
        return math.ceil(self.desired_replicas * ready_percent / 100)

    @property
    def old_replicas(self) -> int:
        """Pods of a previous template still running (readyReplicas counts them too)."""
        return max(self.replicas - self.updated_replicas, 0)

    def rolled_out_at(self, ready_percent: int) -> bool:
        """Caught up with the spec, every replica updated, no pod of an older template left, and
        ``ready_percent`` % of them ready.

        The old pods must be gone because readyReplicas counts them: without that rule a primary
        whose new pods are not ready yet would count as serving the new revision on its old pods.
        """
        needed = self.ready_needed(ready_percent)
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas >= self.desired_replicas
            and self.old_replicas == 0
            and self.ready_replicas >= needed
            and self.available_replicas >= needed
        )


@dataclass(frozen=True)
class ParentSupport:
    """One parent Gateway of a route and what its GatewayClass says it implements."""

    #: ``namespace/name`` of the Gateway.
    gateway: str
    #: The Gateway's ``spec.gatewayClassName`` ("" when the Gateway is not in the cache).
    gateway_class: str = ""
    #: The class's ``status.supportedFeatures`` names; None when the class lists none (or is not cached).
    features: frozenset[str] | None = None


@dataclass(frozen=True)
class RouteState:
    """One referenced HTTPRoute or GRPCRoute, checked against the routing contract."""

    kind: str
    name: str
    exists: bool
    #: canaryd can weight the route: at least one rule lists both Services once each, and no rule of the
    #: team's sends traffic to the canary Service without the primary.
    has_backends: bool = False
    #: Every parent in status.parents has Accepted=True (for the current generation where set).
    accepted: bool = False
    #: What is wrong, in words a person can act on; empty when the route is usable.
    problem: str = ""
    #: The weights currently written on the route (None when they differ between rules).
    primary_weight: int | None = None
    canary_weight: int | None = None
    #: metadata.uid and metadata.generation (None when the server set none).
    uid: str = ""
    generation: int | None = None
    #: A hash of the spec without the parts canaryd owns (see ``canaryd.core.routes``).
    spec_hash: str = ""
    #: The other Services named by the rules that name canaryd's two (another Canary's, say).
    shared_backends: tuple[str, ...] = ()
    #: Why canaryd's backendRefs would send traffic nowhere (not on the Canary's port); "" if they do not.
    port_problem: str = ""
    #: The two Services' names, and the route as read (None in tests that model routes abstractly);
    #: the core computes from it whether the route already has the shape a decision wants.
    primary_service: str = ""
    canary_service: str = ""
    route: Mapping[str, Any] | None = field(default=None, compare=True, repr=False)
    #: How many rules canaryd weights, and what canaryd has added to the route (see core.route_plan).
    weighted_rules: int = 0
    canaryd_rules: tuple[str, ...] = ()
    mirrored: bool = False
    sticky: bool = False
    #: The Gateway reported on the route's current generation and did not accept it.
    refused: bool = False
    #: The route's parent Gateways and their classes' supported features (see core.gateway_support).
    parents: tuple[ParentSupport, ...] = ()

    @property
    def usable(self) -> bool:
        return self.exists and self.has_backends and self.accepted and not self.port_problem

    @property
    def has_additions(self) -> bool:
        """canaryd's own rules or filters are on the route."""
        return bool(self.canaryd_rules) or self.mirrored or self.sticky


@dataclass(frozen=True)
class ShareReading:
    """The canary's share of one route's requests in percent, as measured (None: no value, and why)."""

    route: str
    value: float | None
    message: str = ""


@dataclass(frozen=True)
class MetricResult:
    """The outcome of one metric check in this analysis round."""

    name: str
    verdict: Verdict
    value: float | None = None
    message: str = ""
    #: For a metric judged against the primary: both sides, the shift, the classification.
    comparison: ComparisonStatus | None = None
    #: A dry-run metric: recorded and shown, never counted.
    dry_run: bool = False


@dataclass(frozen=True)
class HookResult:
    """How one call of a gate or check webhook ended, made by the runtime before a decision."""

    name: str
    type: HookType
    outcome: HookOutcome
    called_at: datetime
    #: The HTTP status of the answer (None when there was none).
    code: int | None = None
    message: str = ""
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.outcome is HookOutcome.OK


@dataclass(frozen=True)
class AutoscalerState:
    """The HorizontalPodAutoscaler that targets the target Deployment, and canaryd's copy for the primary."""

    #: The app team's HPA (its scaleTargetRef names the target).
    source: str
    #: ``<source>-primary`` exists with the spec mirrored from the source, scaling ``<target>-primary``.
    mirror_in_step: bool = False


@dataclass(frozen=True)
class CanaryClaim:
    """A Canary of the namespace as far as deciding who may act on which objects needs it."""

    name: str
    uid: str
    created: datetime | None
    #: The Deployment it targets.
    target: str
    #: Its status has a phase: it has started acting on its target.
    started: bool = False


@dataclass(frozen=True)
class Observations:
    """Everything a decision may depend on, besides the Canary itself and ``now``."""

    #: The target Deployment (the one the app team edits); None when it does not exist.
    target: WorkloadState | None
    #: ``<target>-primary``; None until canaryd has created it.
    primary: WorkloadState | None = None
    #: Both ``-primary`` and ``-canary`` Services exist with the right selectors and port.
    services_ready: bool = False
    routes: tuple[RouteState, ...] = ()
    #: Results of the analysis round run for this decision; None when no round was run.
    analysis: tuple[MetricResult, ...] | None = None
    #: The canary's measured share of each route's requests, when a measurement was due (core.traffic_share).
    traffic_share: tuple[ShareReading, ...] | None = None
    #: Problems with the Canary's references that no retry will fix (missing template, ...).
    config_problems: tuple[str, ...] = ()
    #: The condition reason that best names ``config_problems`` (e.g. MetricTemplateNotFound).
    config_reason: Reason = Reason.TEMPLATE_NOT_FOUND
    #: A pending manual action, not yet acknowledged in status.last_action (``id`` makes it idempotent).
    action: ActionRequest | None = None
    #: The max-concurrent-runs limit leaves room for this Canary to start a run.
    run_slot_available: bool = True
    #: metadata.deletionTimestamp is set.
    deleting: bool = False
    #: canaryd's finalizer is on the object.
    has_finalizer: bool = True
    #: ``<target>-primary`` or one of the two Services still has an ownerReference to this Canary
    #: (deleting the Canary would let the garbage collector delete it).
    owns_workloads: bool = False
    #: The other Canaries of the namespace (see ``canaryd.core.claims``).
    others: tuple[CanaryClaim, ...] = ()
    #: Results of the webhook round run for this decision (gates and check hooks); None: none was run.
    hooks: tuple[HookResult, ...] | None = None
    #: The HPA that scales the target, if any (then canaryd leaves the canary's count to it during a run).
    autoscaler: AutoscalerState | None = None
    #: Copies of HPAs canaryd made for the primary whose source HPA is gone (to be deleted).
    stale_autoscalers: tuple[str, ...] = ()

    @property
    def routes_usable(self) -> bool:
        return bool(self.routes) and all(r.usable for r in self.routes)


__all__ = [
    "AutoscalerState",
    "CanaryClaim",
    "HookResult",
    "MetricResult",
    "Observations",
    "ParentSupport",
    "RouteState",
    "ShareReading",
    "WorkloadState",
]
