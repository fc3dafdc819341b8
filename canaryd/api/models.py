"""Typed models of Canary and MetricTemplate, in the shape the API server stores them.

The controller parses every object it reads through these models, so a
malformed object becomes a clear validation message instead of a crash deep in
a reconcile. Field names use the CRD's camelCase through aliases; the same
rules the CRD enforces with OpenAPI and CEL are enforced here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from canaryd.api.constants import (
    API_VERSION,
    CANARY_KIND,
    GATEWAY_GROUP,
    METRIC_TEMPLATE_KIND,
    Action,
    NoDataPolicy,
    Phase,
    Verdict,
)
from canaryd.api.durations import parse_duration

MIN_INTERVAL = timedelta(seconds=1)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _check_duration(value: str) -> str:
    if parse_duration(value) < MIN_INTERVAL:
        raise ValueError(f"duration {value!r} is shorter than 1s")
    return value


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta canaryd reads; everything else is kept as is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    deletion_timestamp: datetime | None = None
    creation_timestamp: datetime | None = None


class TargetRef(_Model):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    name: str = Field(min_length=1, max_length=253)


class ServiceSpec(_Model):
    port: int = Field(ge=1, le=65535)
    target_port: int | str | None = None
    port_name: str = "http"
    app_protocol: str | None = None


class RouteRef(_Model):
    group: Literal["gateway.networking.k8s.io"] = GATEWAY_GROUP
    kind: Literal["HTTPRoute", "GRPCRoute"] = "HTTPRoute"
    name: str = Field(min_length=1, max_length=253)


class TemplateRef(_Model):
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None


class ThresholdRange(_Model):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdRange:
        if self.min is None and self.max is None:
            raise ValueError("thresholdRange needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"thresholdRange min ({self.min}) is above max ({self.max})")
        return self


class MetricCheck(_Model):
    name: str = Field(min_length=1, max_length=63)
    template_ref: TemplateRef | None = None
    query: str | None = Field(default=None, min_length=1)
    threshold_range: ThresholdRange
    interval: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)

    _interval_ok = field_validator("interval")(lambda v: v if v is None else _check_duration(v))

    @model_validator(mode="after")
    def _one_source(self) -> MetricCheck:
        if (self.template_ref is None) == (self.query is None):
            raise ValueError(f"metric {self.name!r} needs exactly one of templateRef or query")
        return self


class Analysis(_Model):
    interval: str = "1m"
    threshold: int = Field(default=5, ge=1)
    error_threshold: int = Field(default=5, ge=1)
    step_weight: int | None = Field(default=None, ge=1, le=100)
    max_weight: int | None = Field(default=None, ge=1, le=100)
    step_weights: list[int] | None = Field(default=None, min_length=1, max_length=100)
    no_data_policy: NoDataPolicy = NoDataPolicy.HOLD
    metrics: list[MetricCheck] = Field(default_factory=list, max_length=20)

    _interval_ok = field_validator("interval")(_check_duration)

    @model_validator(mode="after")
    def _schedule(self) -> Analysis:
        if (self.step_weight is None) == (self.step_weights is None):
            raise ValueError("analysis needs exactly one of stepWeight or stepWeights")
        if self.step_weights is not None:
            if self.max_weight is not None:
                raise ValueError("maxWeight goes with stepWeight, not with stepWeights")
            if any(not 1 <= w <= 100 for w in self.step_weights):
                raise ValueError("stepWeights must each be within 1..100")
            if any(b <= a for a, b in zip(self.step_weights, self.step_weights[1:], strict=False)):
                raise ValueError("stepWeights must be strictly ascending")
        if (
            self.step_weight is not None
            and self.max_weight is not None
            and self.max_weight < self.step_weight
        ):
            raise ValueError(f"maxWeight ({self.max_weight}) is below stepWeight ({self.step_weight})")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("metric names must be unique")
        return self

    @property
    def interval_delta(self) -> timedelta:
        return parse_duration(self.interval)

    def weights(self) -> tuple[int, ...]:
        """The weight of each step, in order: explicit stepWeights, or stepWeight up to maxWeight."""
        if self.step_weights is not None:
            return tuple(self.step_weights)
        step = self.step_weight or 10
        top = self.max_weight if self.max_weight is not None else 50
        weights = list(range(step, top + 1, step))
        if not weights or weights[-1] != top:
            weights.append(top)
        return tuple(weights)


class CanarySpec(_Model):
    target_ref: TargetRef
    service: ServiceSpec
    route_refs: list[RouteRef] = Field(min_length=1, max_length=16)
    analysis: Analysis
    progress_deadline_seconds: int = Field(default=600, ge=1)
    suspend: bool = False


class Condition(_Model):
    """metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int = 0


class MetricStatus(_Model):
    name: str
    verdict: Verdict
    value: float | None = None
    message: str = ""
    checked_at: datetime | None = None


class ActionRecord(_Model):
    """A manual action, as requested and as acknowledged by the controller."""

    id: str
    action: Action
    result: str = ""
    at: datetime | None = None


class ActionRequestRecord(_Model):
    """A manual action as a person asked for it (written by ``kubectl canary`` to status)."""

    id: str = Field(min_length=1, max_length=128)
    action: Action
    requested_at: datetime | None = None
    requested_by: str = ""


class CanaryStatus(_Model):
    phase: Phase | None = None
    canary_weight: int = 0
    step: int = 0
    failed_checks: int = 0
    analysis_errors: int = 0
    revision: str | None = None
    last_promoted_revision: str | None = None
    last_step_time: datetime | None = None
    run_started_at: datetime | None = None
    last_progress_time: datetime | None = None
    paused: bool = False
    #: Written by ``kubectl canary`` through the status subresource; never by the controller.
    requested_action: ActionRequestRecord | None = None
    #: The controller's acknowledgement of the last action it handled (same id).
    last_action: ActionRecord | None = None
    metrics: list[MetricStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int = 0

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class Canary(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    api_version: Literal["canaryd.io/v1alpha1"] = API_VERSION
    kind: Literal["Canary"] = CANARY_KIND
    metadata: ObjectMeta
    spec: CanarySpec
    status: CanaryStatus = Field(default_factory=CanaryStatus)


class PrometheusAuth(_Model):
    secret_ref: SecretRef
    kind: Literal["Bearer", "Basic"] = "Bearer"


class SecretRef(_Model):
    name: str = Field(min_length=1)
    namespace: str | None = None


class PrometheusProvider(_Model):
    address: str | None = Field(default=None, pattern=r"^https?://")
    auth: PrometheusAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    insecure_skip_verify: bool = False
    timeout: str = "10s"

    _timeout_ok = field_validator("timeout")(_check_duration)


class MetricTemplateSpec(_Model):
    query: str = Field(min_length=1)
    provider: PrometheusProvider = Field(default_factory=PrometheusProvider)
    variables: dict[str, str] = Field(default_factory=dict)
    unit: str | None = None


class MetricTemplate(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    api_version: Literal["canaryd.io/v1alpha1"] = API_VERSION
    kind: Literal["MetricTemplate"] = METRIC_TEMPLATE_KIND
    metadata: ObjectMeta
    spec: MetricTemplateSpec


PrometheusAuth.model_rebuild()
