"""Typed models of Canary and MetricTemplate, in the shape the API server stores them.

The controller parses every object it reads through these models, so a
malformed object becomes a clear validation message instead of a crash deep in
a reconcile. Field names use the CRD's camelCase through aliases; the same
rules the CRD enforces with OpenAPI and CEL are enforced here, and
``tests/api`` proves that both give every object the same verdict and the same
defaults.

Two choices keep that agreement exact:

- Unknown fields are ignored, not refused. A real API server prunes fields
  its schema does not declare, so the controller only ever reads pruned
  objects; ignoring keeps it working when the installed CRD is newer than the
  controller, and an object the API server accepts is never one the
  controller cannot parse.
- Scalars are read as JSON types, not coerced: ``"5"`` is not an integer and
  ``"true"`` not a boolean, as in the CRD (whole floats such as ``5.0`` are
  integers, as the API server's OpenAPI validation accepts them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from canaryd.api.constants import (
    CANARY_KIND,
    GATEWAY_GROUP,
    METRIC_TEMPLATE_KIND,
    Action,
    Classification,
    CompareDirection,
    CompareJudge,
    HookOutcome,
    HookType,
    InconclusivePolicy,
    NoDataPolicy,
    NotificationKind,
    OutlierStrategy,
    Phase,
    Verdict,
)
from canaryd.api.durations import NANOSECONDS_PER_SECOND, parse_duration, parse_duration_ns
from canaryd.api.limits import (
    MAX_CHECK_THRESHOLD,
    MAX_HEADER_LENGTH,
    MAX_HEADERS,
    MAX_INT32,
    MAX_INT64,
    MAX_INTERVAL,
    MAX_LOOKBACK,
    MAX_PROGRESS_DEADLINE_SECONDS,
    MAX_QUERY_TIMEOUT,
    MAX_VARIABLE_LENGTH,
    MAX_VARIABLES,
)
from canaryd.api.timestamps import format_rfc3339, parse_rfc3339

#: The maxWeight a stepWeight schedule climbs to when maxWeight is not given.
DEFAULT_MAX_WEIGHT: Final = 50
#: Longest duration string the CRD accepts (bounds the cost of its CEL rules).
MAX_DURATION_LENGTH: Final = 32
MAX_QUERY_LENGTH: Final = 8192
#: A DNS-1123 subdomain (object names) and label (namespaces, metric names).
DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: An IANA service name, as a Service port name must be.
PORT_NAME: Final = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
#: metav1.Condition type and reason grammars.
CONDITION_TYPE: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
#: A webhook's address: http or https with a host, as the CRD checks it.
WEBHOOK_URL: Final = r"^https?://[^\s/?#]+([/?#]\S*)?$"
#: A key in a Secret's data.
SECRET_KEY: Final = r"^[-._a-zA-Z0-9]+$"
#: Most webhooks a Canary may have, and the longest name (status.metrics names a rollout hook
#: ``webhook/<name>``, within the 63 characters of a metric name).
MAX_WEBHOOKS: Final = 32
MAX_WEBHOOK_NAME: Final = 48
MAX_WEBHOOK_METADATA: Final = 64
MAX_WEBHOOK_METADATA_VALUE: Final = 4096


def _json_integer(value: object) -> object:
    """Refuse what JSON would not call an integer (strings, booleans, fractions)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be of type integer, not {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"must be of type integer, not {value}")
    return int(value)


def _json_number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be of type number, not {type(value).__name__}")
    return float(value)


def _json_int_or_string(value: object) -> object:
    if isinstance(value, str):
        return value
    return _json_integer(value)


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        parsed = parse_rfc3339(value)
        if parsed is not None:
            return parsed
    raise ValueError(f"must be an RFC 3339 date-time such as 2024-05-01T10:00:00Z, not {value!r}")


def _finite_or_null(value: float | None) -> float | None:
    """JSON has no NaN or infinity (Prometheus returns NaN for 0/0): such a value is written as null."""
    return value if value is None or math.isfinite(value) else None


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
JsonFloat = Annotated[float, BeforeValidator(_json_number)]
IntOrString = Annotated[int | str, BeforeValidator(_json_int_or_string)]
#: A time as the CRD stores it: RFC 3339 in, RFC 3339 (UTC, "Z") out; naive times count as UTC.
Timestamp = Annotated[
    datetime, BeforeValidator(_rfc3339), PlainSerializer(format_rfc3339, return_type=str, when_used="json")
]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _duration_within(limit: str) -> Callable[[str], str]:
    """A validator for a duration of at least 1s and at most ``limit`` (see ``canaryd.api.limits``)."""
    longest = parse_duration_ns(limit)

    def check(value: str) -> str:
        nanoseconds = parse_duration_ns(value)
        if nanoseconds < NANOSECONDS_PER_SECOND:
            raise ValueError(f"duration {value!r} is shorter than 1s")
        if nanoseconds > longest:
            raise ValueError(f"duration {value!r} is longer than {limit}")
        return value

    return check


Duration = Annotated[str, Field(max_length=MAX_DURATION_LENGTH)]
#: User variables of a template or a check: a bounded number of bounded strings.
Variables = Annotated[
    dict[str, Annotated[str, Field(max_length=MAX_VARIABLE_LENGTH)]], Field(max_length=MAX_VARIABLES)
]


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


ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]


class TargetRef(_Model):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    name: ObjectName


class ServiceSpec(_Model):
    port: JsonInt = Field(ge=1, le=65535)
    target_port: IntOrString | None = None
    port_name: str = Field(default="http", min_length=1, max_length=15, pattern=PORT_NAME)
    app_protocol: str | None = Field(default=None, min_length=1, max_length=253)

    @field_validator("target_port")
    @classmethod
    def _target_port(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 65535:
            raise ValueError("targetPort must be a port number within 1..65535 or a port name")
        if isinstance(value, str) and not 1 <= len(value) <= 15:
            raise ValueError("targetPort must be a port number within 1..65535 or a port name")
        return value


#: The route kinds canaryd weights.
RouteKind = Literal["HTTPRoute", "GRPCRoute"]


class RouteRef(_Model):
    group: Literal["gateway.networking.k8s.io"] = GATEWAY_GROUP
    kind: RouteKind = "HTTPRoute"
    name: ObjectName


class TemplateRef(_Model):
    name: ObjectName
    namespace: NamespaceName | None = None


class ThresholdRange(_Model):
    min: JsonFloat | None = None
    max: JsonFloat | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdRange:
        if self.min is None and self.max is None:
            raise ValueError("thresholdRange needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"thresholdRange min ({self.min}) is above max ({self.max})")
        return self


#: The confidence a comparison uses when the metric sets none, per judge.
DEFAULT_CONFIDENCE: Final = {CompareJudge.MANN_WHITNEY: 0.95, CompareJudge.SEQUENTIAL: 0.95}


class Comparison(_Model):
    """How a metric is judged against the primary instead of a fixed range."""

    judge: CompareJudge = CompareJudge.MANN_WHITNEY
    direction: CompareDirection = CompareDirection.INCREASE
    #: How far the canary may move in the bad direction, relative to the primary (0.25 = 25 %).
    tolerance: JsonFloat = Field(default=0.25, ge=0, le=100)
    #: A move the canary may make whatever the relative tolerance, in the metric's unit (0: none);
    #: what lets a comparison pass a canary against a primary at 0 (a service without errors).
    absolute_tolerance: JsonFloat = Field(default=0.0, ge=0)
    #: A failure of this metric fails the run at once (and zeroes the comparison score).
    critical: StrictBool = False
    #: This metric's share of the comparison score.
    weight: JsonFloat = Field(default=1.0, gt=0, le=1000)
    #: The step of the range query, and the window each sample covers (``{{ interval }}``).
    resolution: Duration = "30s"
    #: MannWhitney: the confidence of the shift's interval; Sequential: 1 - the false alarm probability.
    confidence: JsonFloat | None = Field(default=None, ge=0.5, lt=1)
    outliers: OutlierStrategy = OutlierStrategy.KEEP

    _resolution_ok = field_validator("resolution")(_duration_within(MAX_INTERVAL))

    @property
    def resolution_delta(self) -> timedelta:
        return parse_duration(self.resolution)

    @property
    def effective_confidence(self) -> float:
        return self.confidence if self.confidence is not None else DEFAULT_CONFIDENCE[self.judge]


class MetricCheck(_Model):
    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    template_ref: TemplateRef | None = None
    query: str | None = Field(default=None, min_length=1, max_length=MAX_QUERY_LENGTH)
    threshold_range: ThresholdRange | None = None
    #: Judge the metric against the primary (the template is rendered once for each side).
    compare: Comparison | None = None
    interval: Duration | None = None
    variables: Variables = Field(default_factory=dict)
    #: Measured and shown, never counted: the run goes on whatever this metric says.
    dry_run: StrictBool = False
    #: Values outside thresholdRange but within this range are inconclusive: the run pauses for a person.
    inconclusive_range: ThresholdRange | None = None
    #: After each step, the first check waits this long (the longest of the metrics' delays).
    initial_delay: Duration | None = None
    #: The run fails once this metric has failed this many checks, whatever the analysis threshold.
    failure_limit: JsonInt | None = Field(default=None, ge=1, le=MAX_CHECK_THRESHOLD)

    _initial_delay_ok = field_validator("initial_delay")(
        lambda v: v if v is None else _duration_within(MAX_INTERVAL)(v)
    )
    _interval_ok = field_validator("interval")(
        lambda v: v if v is None else _duration_within(MAX_LOOKBACK)(v)
    )

    @model_validator(mode="after")
    def _one_source(self) -> MetricCheck:
        if (self.template_ref is None) == (self.query is None):
            raise ValueError(f"metric {self.name!r} needs exactly one of templateRef or query")
        if (self.threshold_range is None) == (self.compare is None):
            raise ValueError(f"metric {self.name!r} needs exactly one of thresholdRange or compare")
        if self.inconclusive_range is not None and self.threshold_range is None:
            raise ValueError(f"metric {self.name!r}: inconclusiveRange goes with thresholdRange")
        return self

    @property
    def initial_delay_delta(self) -> timedelta:
        return parse_duration(self.initial_delay) if self.initial_delay is not None else timedelta(0)


#: An HTTP header or query parameter name, as Gateway API spells its pattern.
HEADER_NAME: Final = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$"
HTTP_METHODS = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
MatchType = Literal["Exact", "RegularExpression"]
#: At most this many matches in analysis.match or analysis.grpcMatch.
MAX_AB_MATCHES: Final = 8
#: A gRPC service and method name (Gateway API's GRPCMethodMatch patterns for Exact).
GRPC_SERVICE: Final = r"^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$"
GRPC_METHOD: Final = r"^[A-Za-z_][A-Za-z_0-9]*$"
#: A cookie name canaryd can both set and match with a regular expression.
COOKIE_NAME: Final = r"^[A-Za-z0-9_.-]+$"


class HeaderMatch(_Model):
    """Gateway API's HTTPHeaderMatch / GRPCHeaderMatch: a request header and the value it must have."""

    name: str = Field(min_length=1, max_length=256, pattern=HEADER_NAME)
    value: str = Field(min_length=1, max_length=4096)
    type: MatchType | None = None


class QueryParamMatch(_Model):
    """Gateway API's HTTPQueryParamMatch."""

    name: str = Field(min_length=1, max_length=256, pattern=HEADER_NAME)
    value: str = Field(min_length=1, max_length=1024)
    type: MatchType | None = None


def _unique_names(items: list[HeaderMatch] | list[QueryParamMatch] | None, what: str) -> None:
    names = [item.name for item in items or []]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} must not name the same one twice")


class HTTPMatch(_Model):
    """A/B: requests an HTTPRoute sends to the canary (Gateway API's HTTPRouteMatch, without path:
    the weighted rule's own paths apply)."""

    headers: list[HeaderMatch] | None = Field(default=None, min_length=1, max_length=16)
    query_params: list[QueryParamMatch] | None = Field(default=None, min_length=1, max_length=16)
    method: HTTP_METHODS | None = None

    @model_validator(mode="after")
    def _some_condition(self) -> HTTPMatch:
        if self.headers is None and self.query_params is None and self.method is None:
            raise ValueError("a match needs headers, queryParams or method (an empty one matches everything)")
        _unique_names(self.headers, "headers")
        _unique_names(self.query_params, "queryParams")
        return self


class GRPCMethodMatch(_Model):
    type: Literal["Exact"] | None = None
    service: str | None = Field(default=None, max_length=1024, pattern=GRPC_SERVICE)
    method: str | None = Field(default=None, max_length=1024, pattern=GRPC_METHOD)

    @model_validator(mode="after")
    def _service_or_method(self) -> GRPCMethodMatch:
        if self.service is None and self.method is None:
            raise ValueError("a gRPC method match needs service, method or both")
        return self


class GRPCMatch(_Model):
    """A/B: requests a GRPCRoute sends to the canary (Gateway API's GRPCRouteMatch)."""

    headers: list[HeaderMatch] | None = Field(default=None, min_length=1, max_length=16)
    method: GRPCMethodMatch | None = None

    @model_validator(mode="after")
    def _some_condition(self) -> GRPCMatch:
        if self.headers is None and self.method is None:
            raise ValueError("a match needs headers or method: an empty one matches every request")
        _unique_names(self.headers, "headers")
        return self


class Mirror(_Model):
    """Mirror a share of live requests to the canary before any weight moves."""

    percent: JsonInt = Field(default=100, ge=1, le=100)


class SessionAffinity(_Model):
    """A client the canary served keeps the canary until the run ends (by a cookie)."""

    cookie_name: str = Field(min_length=1, max_length=64, pattern=COOKIE_NAME)
    max_age: Duration = "24h"

    _max_age_ok = field_validator("max_age")(_duration_within(MAX_LOOKBACK))

    @property
    def max_age_seconds(self) -> int:
        return int(parse_duration(self.max_age).total_seconds())


class TrafficShareCheck(_Model):
    """Verify on the data plane that the canary receives its weight before a step's analysis counts."""

    template_ref: TemplateRef
    #: How far the measured share may be from the weight, in percentage points.
    tolerance: JsonFloat = Field(default=5.0, ge=0, le=100)
    #: The window the share is measured over (``{{ interval }}``); default: the analysis interval.
    interval: Duration | None = None
    variables: Variables = Field(default_factory=dict)

    _interval_ok = field_validator("interval")(
        lambda v: v if v is None else _duration_within(MAX_LOOKBACK)(v)
    )


class ScoreThresholds(_Model):
    """The comparison score (0-100) a round needs to pass, and below which it fails."""

    pass_: JsonFloat = Field(default=95.0, ge=0, le=100, alias="pass")
    marginal: JsonFloat = Field(default=75.0, ge=0, le=100)

    @model_validator(mode="after")
    def _order(self) -> ScoreThresholds:
        if self.marginal > self.pass_:
            raise ValueError(f"scoreThresholds marginal ({self.marginal:g}) is above pass ({self.pass_:g})")
        return self


class LocalSecretRef(_Model):
    """A Secret in the Canary's own namespace (never another: a Canary cannot read other teams' Secrets)."""

    name: ObjectName


class SecretKeyRef(_Model):
    """One key of a Secret in the Canary's namespace."""

    name: ObjectName
    key: str = Field(default="key", min_length=1, max_length=253, pattern=SECRET_KEY)


WebhookName = Annotated[str, Field(min_length=1, max_length=MAX_WEBHOOK_NAME, pattern=DNS_LABEL)]
MetadataValue = Annotated[str, Field(max_length=MAX_WEBHOOK_METADATA_VALUE)]


class Webhook(_Model):
    """A URL canaryd POSTs the ``webhooks.canaryd.io/v1`` payload to at one moment of a run."""

    name: WebhookName
    type: HookType
    url: str = Field(min_length=1, max_length=2048, pattern=WEBHOOK_URL)
    #: The longest one call may take, retries included.
    timeout: Duration = "10s"
    #: Further attempts after a quick failure (no connection, 408, 425, 429, 5xx), within the timeout.
    retries: JsonInt = Field(default=2, ge=0, le=10)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=MAX_WEBHOOK_METADATA)
    #: An HMAC-SHA256 key: the body is signed in X-Canaryd-Signature.
    signing_key_secret_ref: SecretKeyRef | None = None

    _timeout_ok = field_validator("timeout")(_duration_within(MAX_QUERY_TIMEOUT))

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout).total_seconds()


class Analysis(_Model):
    interval: Duration = "1m"
    threshold: JsonInt = Field(default=5, ge=1, le=MAX_CHECK_THRESHOLD)
    error_threshold: JsonInt = Field(default=5, ge=1, le=MAX_CHECK_THRESHOLD)
    step_weight: JsonInt | None = Field(default=None, ge=1, le=100)
    max_weight: JsonInt | None = Field(default=None, ge=1, le=100)
    step_weights: list[Annotated[JsonInt, Field(ge=1, le=100)]] | None = Field(
        default=None, min_length=1, max_length=100
    )
    no_data_policy: NoDataPolicy = NoDataPolicy.HOLD
    #: What a round does when its comparison metrics are inconclusive or their score is marginal.
    inconclusive_policy: InconclusivePolicy = InconclusivePolicy.HOLD
    #: The comparison score a round needs (95 to pass, 75 not to fail when not set).
    score_thresholds: ScoreThresholds | None = None
    metrics: list[MetricCheck] = Field(default_factory=list, max_length=20)
    webhooks: list[Webhook] = Field(default_factory=list, max_length=MAX_WEBHOOKS)
    #: A/B testing: requests matching these go to the canary only, for ``iterations`` checks.
    match: list[HTTPMatch] | None = Field(default=None, min_length=1, max_length=MAX_AB_MATCHES)
    grpc_match: list[GRPCMatch] | None = Field(default=None, min_length=1, max_length=MAX_AB_MATCHES)
    #: A/B and mirror: the number of checks run before weights move (or promotion).
    iterations: JsonInt | None = Field(default=None, ge=1, le=1000)
    mirror: Mirror | None = None
    session_affinity: SessionAffinity | None = None
    traffic_share: TrafficShareCheck | None = None

    _interval_ok = field_validator("interval")(_duration_within(MAX_INTERVAL))

    @property
    def ab_testing(self) -> bool:
        return self.match is not None or self.grpc_match is not None

    @model_validator(mode="after")
    def _schedule(self) -> Analysis:
        steps = self.step_weight is not None or self.step_weights is not None
        if self.ab_testing:
            if steps or self.max_weight is not None or self.mirror is not None or self.session_affinity:
                raise ValueError(
                    "A/B testing (match, grpcMatch) runs iterations, not weight steps: leave out stepWeight, "
                    "stepWeights, maxWeight, mirror and sessionAffinity"
                )
        elif self.mirror is not None:
            if self.step_weight is not None and self.step_weights is not None:
                raise ValueError("analysis needs exactly one of stepWeight or stepWeights")
            if self.max_weight is not None and self.step_weight is None:
                raise ValueError("maxWeight goes with stepWeight, not with stepWeights")
        elif (self.step_weight is None) == (self.step_weights is None):
            raise ValueError("analysis needs exactly one of stepWeight or stepWeights")
        if (self.ab_testing or self.mirror is not None) != (self.iterations is not None):
            raise ValueError(
                "iterations goes with match, grpcMatch or mirror (the checks before any weight moves), "
                "and they need it"
            )
        if self.session_affinity is not None and not steps:
            raise ValueError("sessionAffinity needs weight steps (stepWeight or stepWeights)")
        if self.step_weights is not None:
            if self.max_weight is not None:
                raise ValueError("maxWeight goes with stepWeight, not with stepWeights")
            if any(b <= a for a, b in zip(self.step_weights, self.step_weights[1:], strict=False)):
                raise ValueError("stepWeights must be strictly ascending")
        if self.step_weight is not None:
            top = self.max_weight if self.max_weight is not None else DEFAULT_MAX_WEIGHT
            if top < self.step_weight:
                raise ValueError(f"maxWeight ({top}) is below stepWeight ({self.step_weight})")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("metric names must be unique")
        hooks = [w.name for w in self.webhooks]
        if len(set(hooks)) != len(hooks):
            raise ValueError("webhook names must be unique")
        return self

    @property
    def initial_delay(self) -> timedelta:
        """How long after a step its first check waits at least: the longest initialDelay of the metrics."""
        return max((m.initial_delay_delta for m in self.metrics), default=timedelta(0))

    def webhooks_of(self, kind: HookType) -> tuple[Webhook, ...]:
        return tuple(w for w in self.webhooks if w.type is kind)

    @property
    def interval_delta(self) -> timedelta:
        return parse_duration(self.interval)

    @property
    def scoring(self) -> ScoreThresholds:
        return self.score_thresholds if self.score_thresholds is not None else ScoreThresholds()

    def weights(self) -> tuple[int, ...]:
        """The weight of each weight step, in order: explicit stepWeights, or stepWeight up to maxWeight.

        Empty for A/B testing, and for a mirror phase followed by promotion without weight steps.
        """
        if self.step_weights is not None:
            return tuple(self.step_weights)
        if self.step_weight is None:
            return ()
        step = self.step_weight
        top = self.max_weight if self.max_weight is not None else DEFAULT_MAX_WEIGHT
        weights = list(range(step, top + 1, step))
        if not weights or weights[-1] != top:
            weights.append(top)
        return tuple(weights)


class NotificationsSpec(_Model):
    """Where and what this Canary's chat notifications go (the controller's settings when not set)."""

    #: A Secret in the Canary's namespace holding provider URLs; it replaces the controller's.
    secret_ref: LocalSecretRef | None = None
    #: What to send; each kind at most once. Default: the Secret's ``kinds``, else all but each step.
    kinds: list[NotificationKind] | None = Field(default=None, max_length=len(NotificationKind))

    @field_validator("kinds")
    @classmethod
    def _distinct_kinds(cls, value: list[NotificationKind] | None) -> list[NotificationKind] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("notification kinds must not repeat")
        return value


class CanarySpec(_Model):
    target_ref: TargetRef
    service: ServiceSpec
    route_refs: list[RouteRef] = Field(min_length=1, max_length=16)
    analysis: Analysis
    progress_deadline_seconds: JsonInt = Field(default=600, ge=1, le=MAX_PROGRESS_DEADLINE_SECONDS)
    suspend: StrictBool = False
    #: Promote a new revision without steps or checks once it is ready (an Event says so).
    skip_analysis: StrictBool = False
    #: How long a rolled-back canary keeps running (without traffic) for inspection before it goes to 0.
    abort_scale_down_delay: Duration | None = None
    #: Percent of the primary's replicas that must be ready for it to count as serving.
    primary_ready_threshold: JsonInt = Field(default=100, ge=1, le=100)
    notifications: NotificationsSpec | None = None

    _delay_ok = field_validator("abort_scale_down_delay")(
        lambda v: v if v is None else _duration_within(MAX_INTERVAL)(v)
    )

    @property
    def abort_scale_down_delta(self) -> timedelta:
        if self.abort_scale_down_delay is None:
            return timedelta(0)
        return parse_duration(self.abort_scale_down_delay)
    #: On deletion, scale the target back to the primary's replicas and wait until it is ready before
    #: releasing the primary and the Services (see ``core.leaving``).
    revert_on_deletion: StrictBool = True

    @model_validator(mode="after")
    def _distinct_routes(self) -> CanarySpec:
        keys = [(r.kind, r.name) for r in self.route_refs]
        if len(set(keys)) != len(keys):
            raise ValueError("routeRefs must not name the same route twice")
        return self


class Condition(_Model):
    """metav1.Condition."""

    type: str = Field(min_length=1, max_length=316, pattern=CONDITION_TYPE)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON)
    message: str = Field(default="", max_length=32768)
    last_transition_time: Timestamp
    observed_generation: JsonInt = Field(default=0, ge=0, le=MAX_INT64)


#: A number that may be NaN or infinite in memory and is written as null.
FiniteOrNull = Annotated[
    JsonFloat | None, PlainSerializer(_finite_or_null, return_type=float | None, when_used="json")
]


class ComparisonStatus(_Model):
    """Why a comparison metric got its verdict: both sides' values, the shift and the score."""

    judge: CompareJudge
    classification: Classification
    direction: CompareDirection = CompareDirection.INCREASE
    #: The canary's and the primary's values over the samples judged (their median or their share).
    canary: FiniteOrNull = None
    primary: FiniteOrNull = None
    #: The estimated shift of the canary relative to the primary (0.2 = 20 % higher), and its interval.
    shift: FiniteOrNull = None
    shift_lower: FiniteOrNull = None
    shift_upper: FiniteOrNull = None
    tolerance: JsonFloat = Field(default=0.0, ge=0)
    confidence: JsonFloat = Field(default=0.95, ge=0, le=1)
    canary_samples: JsonInt = Field(default=0, ge=0, le=MAX_INT32)
    primary_samples: JsonInt = Field(default=0, ge=0, le=MAX_INT32)
    critical: StrictBool = False
    weight: JsonFloat = Field(default=1.0, ge=0)
    #: The weighted score (0-100) of the round's comparison metrics; None when none was decided.
    score: FiniteOrNull = None


class MetricStatus(_Model):
    name: str = Field(min_length=1, max_length=63)
    verdict: Verdict
    #: The measured value (a comparison's: the canary's); NaN or infinity (kept in memory) is written as null.
    value: FiniteOrNull = None
    message: str = Field(default="", max_length=32768)
    checked_at: Timestamp | None = None
    comparison: ComparisonStatus | None = None
    #: A dry-run metric: shown, never counted.
    dry_run: StrictBool = False
    #: Checks this metric failed in the current run.
    failures: JsonInt = Field(default=0, ge=0)


ActionId = Annotated[str, Field(min_length=1, max_length=128)]


class ActionRequest(_Model):
    """``status.requestedAction``: a manual action as a person asked for it (by ``kubectl canary``)."""

    id: ActionId
    action: Action
    requested_at: Timestamp | None = None
    requested_by: str = Field(default="", max_length=253)


class ActionAcknowledgement(_Model):
    """``status.lastAction``: the controller's answer to the request with the same id."""

    id: ActionId
    action: Action
    result: str = Field(default="", max_length=1024)
    at: Timestamp | None = None


def action_pending(requested_id: object, acknowledged_id: object) -> bool:
    """A request is pending exactly while ``requestedAction.id != lastAction.id`` (and it has an id).

    The one statement of the rule: the controller, the lifecycle and
    ``kubectl canary`` (which reads statuses leniently, hence plain values) all
    ask here.
    """
    return bool(requested_id) and requested_id != acknowledged_id


class RouteGenerations(_Model):
    """Generations of one route that differ from each other only in the two weights canaryd writes.

    ``first`` is a generation canaryd saw; every generation up to ``last`` has
    the same spec apart from those weights, whose hash is ``specHash``. An
    Accepted condition the Gateway reported for a generation in that range
    still holds for the route as it is now (see ``canaryd.core.routes``), also
    after a restart of the controller.
    """

    kind: RouteKind
    name: ObjectName
    uid: str = Field(min_length=1, max_length=128)
    first: JsonInt = Field(ge=0, le=MAX_INT64)
    last: JsonInt = Field(ge=0, le=MAX_INT64)
    spec_hash: str = Field(min_length=1, max_length=64)


GateType = Literal["confirm-rollout", "confirm-traffic-increase", "confirm-promotion"]


class GateStatus(_Model):
    """``status.gate``: the confirm-* webhooks the run waits for, and since when."""

    type: GateType
    since: Timestamp


class WebhookStatus(_Model):
    """``status.webhooks[]``: the latest call of one gate or check webhook."""

    name: WebhookName
    type: HookType
    outcome: HookOutcome
    #: The HTTP status of the answer (none when there was no answer).
    code: JsonInt | None = Field(default=None, ge=100, le=599)
    message: str = Field(default="", max_length=1024)
    attempts: JsonInt = Field(default=0, ge=0, le=MAX_INT32)
    called_at: Timestamp

    @property
    def ok(self) -> bool:
        return self.outcome is HookOutcome.OK
#: What a run's current step does with traffic (status.traffic.mode).
TrafficMode = Literal["Canary", "ABTest", "Mirror"]


class RouteAdditions(_Model):
    """What canaryd has added to one route besides the two weights, as last observed."""

    kind: RouteKind
    name: ObjectName
    #: Names of the rules canaryd added (``abtest-<k>.canaryd.io``, ``sticky-<k>.canaryd.io``).
    added_rules: list[Annotated[str, Field(max_length=253)]] = Field(default_factory=list, max_length=16)
    #: A RequestMirror filter to the canary Service on the weighted rules.
    mirror: StrictBool = False
    #: A Set-Cookie filter on the canary backendRef of the weighted rules (session affinity).
    sets_cookie: StrictBool = False


class TrafficShareStatus(_Model):
    """The canary's share of the requests as last measured on the data plane, against its weight."""

    #: The step it was measured for (the weight it is checked against is the step's).
    step: JsonInt = Field(ge=0)
    expected: JsonFloat = Field(ge=0, le=100)
    #: Percent of the requests the canary received (the farthest from expected over the routes).
    measured: FiniteOrNull = None
    tolerance: JsonFloat = Field(default=5.0, ge=0, le=100)
    #: The measured share was within tolerance: the step's analysis counts from now on.
    verified: StrictBool = False
    checked_at: Timestamp | None = None
    message: str = Field(default="", max_length=1024)


class TrafficStatus(_Model):
    """How the run sends traffic to the canary (only written for a run that does more than weights)."""

    mode: TrafficMode = "Canary"
    routes: list[RouteAdditions] = Field(default_factory=list, max_length=16)
    mirror_percent: JsonInt | None = Field(default=None, ge=1, le=100)
    #: The session-affinity cookie while it pins clients to the canary (``name=value``).
    session_cookie: str | None = Field(default=None, max_length=256)
    share: TrafficShareStatus | None = None


class CanaryStatus(_Model):
    phase: Phase | None = None
    #: The weight the routes carry (see ``canaryd.core.inflight``).
    canary_weight: JsonInt = Field(default=0, ge=0, le=100)
    #: The weight canaryd is putting on the routes; None once they carry it.
    moving_to_weight: JsonInt | None = Field(default=None, ge=0, le=100)
    step: JsonInt = Field(default=0, ge=0, le=MAX_INT32)
    failed_checks: JsonInt = Field(default=0, ge=0, le=MAX_INT32)
    analysis_errors: JsonInt = Field(default=0, ge=0, le=MAX_INT32)
    revision: str | None = Field(default=None, max_length=253)
    last_promoted_revision: str | None = Field(default=None, max_length=253)
    last_step_time: Timestamp | None = None
    run_started_at: Timestamp | None = None
    last_progress_time: Timestamp | None = None
    paused: StrictBool = False
    #: When the last run was rolled back (the canary stays up abortScaleDownDelay after it).
    rolled_back_at: Timestamp | None = None
    #: The gate a run waits at: its confirm-* webhooks are asked until they all answer 2xx.
    gate: GateStatus | None = None
    #: The latest call of each gate and check webhook.
    webhooks: list[WebhookStatus] = Field(default_factory=list, max_length=MAX_WEBHOOKS)
    #: Written by ``kubectl canary`` through the status subresource; never by the controller.
    requested_action: ActionRequest | None = None
    #: The controller's acknowledgement of the last action it handled (same id).
    last_action: ActionAcknowledgement | None = None
    metrics: list[MetricStatus] = Field(default_factory=list, max_length=64)
    #: For each weighted route, the generations that differ only in canaryd's two weights.
    route_generations: list[RouteGenerations] = Field(default_factory=list, max_length=16)
    #: The traffic mode, canaryd's additions to the routes and the measured traffic share.
    traffic: TrafficStatus | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    observed_generation: JsonInt = Field(default=0, ge=0, le=MAX_INT64)

    @model_validator(mode="after")
    def _distinct_conditions(self) -> CanaryStatus:
        types = [c.type for c in self.conditions]
        if len(set(types)) != len(types):
            raise ValueError("conditions must not repeat a type")
        return self

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def pending_action(self) -> ActionRequest | None:
        """The requested action the controller has not answered yet."""
        request = self.requested_action
        answered = self.last_action.id if self.last_action is not None else None
        return request if request is not None and action_pending(request.id, answered) else None

    def route_record(self, kind: str, name: str) -> RouteGenerations | None:
        return next((r for r in self.route_generations if (r.kind, r.name) == (kind, name)), None)

    def webhook_record(self, name: str) -> WebhookStatus | None:
        return next((w for w in self.webhooks if w.name == name), None)


class Canary(_Model):
    api_version: Literal["canaryd.io/v1alpha1"] = "canaryd.io/v1alpha1"
    kind: Literal["Canary"] = CANARY_KIND
    metadata: ObjectMeta
    spec: CanarySpec
    status: CanaryStatus = Field(default_factory=CanaryStatus)


class SecretRef(_Model):
    name: ObjectName
    namespace: NamespaceName | None = None


class PrometheusAuth(_Model):
    secret_ref: SecretRef
    kind: Literal["Bearer", "Basic"] = "Bearer"


class PrometheusProvider(_Model):
    address: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s/]+")
    auth: PrometheusAuth | None = None
    headers: Annotated[
        dict[str, Annotated[str, Field(max_length=MAX_HEADER_LENGTH)]], Field(max_length=MAX_HEADERS)
    ] = Field(default_factory=dict)
    insecure_skip_verify: StrictBool = False
    timeout: Duration = "10s"

    _timeout_ok = field_validator("timeout")(_duration_within(MAX_QUERY_TIMEOUT))


class EventCounts(_Model):
    """The event counts a template's value is a share of, over each sample's window."""

    #: All events in the window (e.g. requests).
    total: str = Field(min_length=1, max_length=MAX_QUERY_LENGTH)
    #: The events the value counts (e.g. failed requests).
    matching: str = Field(min_length=1, max_length=MAX_QUERY_LENGTH)


class MetricTemplateSpec(_Model):
    query: str = Field(min_length=1, max_length=MAX_QUERY_LENGTH)
    #: Lets the Sequential judge test a share of events as counts (Poisson) rather than as ratios.
    counts: EventCounts | None = None
    provider: PrometheusProvider = Field(default_factory=PrometheusProvider)
    variables: Variables = Field(default_factory=dict)
    unit: str | None = Field(default=None, max_length=32)


class MetricTemplate(_Model):
    api_version: Literal["canaryd.io/v1alpha1"] = "canaryd.io/v1alpha1"
    kind: Literal["MetricTemplate"] = METRIC_TEMPLATE_KIND
    metadata: ObjectMeta
    spec: MetricTemplateSpec


def validation_text(exc: ValidationError) -> str:
    """A validation error as one line a person can act on: ``spec.analysis.interval: ...; ...``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', '')}" if where else str(error.get("msg", "")))
    return "; ".join(parts)
