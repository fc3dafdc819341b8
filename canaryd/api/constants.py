"""Names that are part of the public contract, kept in one place.

Group, version, kinds, the finalizer, annotations, phases, condition types and
condition reasons are read by users, scripts and dashboards; changing one is a
breaking change, so they are constants and never string literals elsewhere.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

GROUP: Final = "canaryd.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CANARY_KIND: Final = "Canary"
CANARY_PLURAL: Final = "canaries"
METRIC_TEMPLATE_KIND: Final = "MetricTemplate"
METRIC_TEMPLATE_PLURAL: Final = "metrictemplates"

GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
HTTP_ROUTE: Final = "HTTPRoute"
GRPC_ROUTE: Final = "GRPCRoute"

FINALIZER: Final = "canaryd.io/finalizer"
PRIMARY_SUFFIX: Final = "-primary"
CANARY_SUFFIX: Final = "-canary"

# Labels canaryd puts on what it creates.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGER_NAME: Final = "canaryd"
LABEL_CANARY: Final = "canaryd.io/canary"
#: On the pods of ``<target>-primary`` (``primary``) and of the target during a run (``canary``), so
#: dashboards and metrics (kube-state-metrics' ``kube_pod_labels``) can tell the two revisions apart.
LABEL_ROLE: Final = "canaryd.io/role"
ROLE_PRIMARY: Final = "primary"
ROLE_CANARY: Final = "canary"


class Phase(StrEnum):
    """Where a Canary is in its lifecycle (status.phase).

    Spelled as Kubernetes spells its own phases (American English). Statuses
    written by earlier versions may say ``Finalising``: it reads as
    ``Finalizing``, and the controller only ever writes the new spelling.
    """

    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    FINALIZING = "Finalizing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"

    @classmethod
    def _missing_(cls, value: object) -> Phase | None:
        return cls.FINALIZING if value in LEGACY_PHASE_SPELLINGS else None


#: Phase values older controllers wrote, still accepted when reading a status.
LEGACY_PHASE_SPELLINGS: Final = frozenset({"Finalising"})


def parse_phase(value: object) -> Phase | None:
    """The phase a raw ``status.phase`` value names (old spellings included), or None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return Phase(value)
    except ValueError:
        return None


#: Phases in which a run is under way (traffic may be on the canary).
ACTIVE_PHASES: Final = frozenset({Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALIZING})


class NoDataPolicy(StrEnum):
    """What a check does when Prometheus has no value for a metric."""

    FAIL = "Fail"
    HOLD = "Hold"
    PASS = "Pass"


class Verdict(StrEnum):
    """The outcome of one metric check."""

    PASS = "Pass"
    FAIL = "Fail"
    NO_DATA = "NoData"
    ERROR = "Error"
    #: A comparison with the primary that has not enough evidence either way (yet).
    INCONCLUSIVE = "Inconclusive"


class CompareJudge(StrEnum):
    """How a comparison metric judges the canary against the primary."""

    #: A fixed-sample test of the metric's last interval (Mann-Whitney U, Hodges-Lehmann shift).
    MANN_WHITNEY = "MannWhitney"
    #: An anytime-valid test of everything since the run started (may decide at any check).
    SEQUENTIAL = "Sequential"


class CompareDirection(StrEnum):
    """Which way a comparison metric must not move for the canary to be healthy."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class Classification(StrEnum):
    """What a comparison found: the canary is within tolerance, above it, below it, or not known yet."""

    PASS = "Pass"
    HIGH = "High"
    LOW = "Low"
    INCONCLUSIVE = "Inconclusive"


class OutlierStrategy(StrEnum):
    """Whether the fixed-sample judge drops samples outside 3 interquartile ranges before testing."""

    KEEP = "Keep"
    REMOVE = "Remove"


class InconclusivePolicy(StrEnum):
    """What a run does while its comparison metrics are inconclusive (or their score is marginal)."""

    #: Stay at the current weight without counting a failed check, until the progress deadline.
    HOLD = "Hold"
    #: Pause the run: a person promotes, aborts or resumes it.
    PAUSE = "Pause"


class HookType(StrEnum):
    """When a webhook is called (the ``type`` of a Canary's webhook and of its payload)."""

    #: Before a run starts; the run waits while it answers non-2xx.
    CONFIRM_ROLLOUT = "confirm-rollout"
    #: Once, before traffic first moves; a failure counts as a failed check.
    PRE_ROLLOUT = "pre-rollout"
    #: At every step, before the analysis; a failure counts as a failed check.
    ROLLOUT = "rollout"
    #: Before each weight increase; the step waits while it answers non-2xx.
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"
    #: Before promotion; promotion waits while it answers non-2xx.
    CONFIRM_PROMOTION = "confirm-promotion"
    #: After a run ends (promoted or rolled back); failures are reported, never block.
    POST_ROLLOUT = "post-rollout"
    #: When a run is rolled back; failures are reported, never block.
    ROLLBACK = "rollback"
    #: For every Event canaryd emits about the Canary; failures are reported, never block.
    EVENT = "event"


#: Hooks whose non-2xx answer holds the run until they answer 2xx.
GATE_HOOKS: Final = frozenset(
    {HookType.CONFIRM_ROLLOUT, HookType.CONFIRM_TRAFFIC_INCREASE, HookType.CONFIRM_PROMOTION}
)
#: Hooks whose failure counts as a failed check.
CHECK_HOOKS: Final = frozenset({HookType.PRE_ROLLOUT, HookType.ROLLOUT})
#: Hooks sent in the background: reported when they fail, never waited for.
BACKGROUND_HOOKS: Final = frozenset({HookType.POST_ROLLOUT, HookType.ROLLBACK, HookType.EVENT})


class HookOutcome(StrEnum):
    """How one webhook call ended (``status.webhooks[].outcome``)."""

    OK = "ok"
    HTTP_ERROR = "http-error"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    MALFORMED = "malformed"
    #: Not sent: its signing key could not be read (a missing Secret or key).
    NOT_SENT = "not-sent"


class NotificationKind(StrEnum):
    """What a chat notification is about."""

    RUN_STARTED = "run-started"
    STEP = "step"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled-back"
    WAITING_ON_GATE = "waiting-on-gate"


class Action(StrEnum):
    """Manual actions a person can ask for (``kubectl canary ACTION``)."""

    PROMOTE = "promote"
    PROMOTE_STEP = "promote-step"
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    ROUTES_READY = "RoutesReady"
    ANALYSIS_HEALTHY = "AnalysisHealthy"
    PAUSED = "Paused"
    #: Whether canaryd's last pass applied everything it decided (written only after a failure).
    RECONCILED = "Reconciled"
    #: A confirm-* webhook holds the run (True while it answers non-2xx).
    GATED = "Gated"
    #: The data plane carries the current step's weight (only with analysis.trafficShare).
    TRAFFIC_SHIFTED = "TrafficShifted"


class Reason(StrEnum):
    """Condition and Event reasons (CamelCase, as Kubernetes expects)."""

    # Ready
    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    TARGET_NOT_FOUND = "TargetNotFound"
    TARGET_INVALID = "TargetInvalid"
    PRIMARY_NOT_READY = "PrimaryNotReady"
    TEMPLATE_NOT_FOUND = "MetricTemplateNotFound"
    TEMPLATE_INVALID = "MetricTemplateInvalid"
    #: Refusals (``canaryd.core.claims``): the Canary touches nothing.
    #: A name canaryd would derive from the target cannot exist (too long, not an RFC 1035 label).
    INVALID_NAMES = "InvalidNames"
    #: The target is a Deployment canaryd manages: another Canary's primary.
    TARGET_MANAGED_BY_CANARYD = "TargetManagedByCanaryd"
    #: Another Canary that comes first acts on the same Deployment or Services.
    TARGET_CLAIMED = "TargetClaimed"
    #: Another Canary that comes first weights the same route rule.
    ROUTE_RULE_CLAIMED = "RouteRuleClaimed"
    # Routes
    ROUTES_ACCEPTED = "RoutesAccepted"
    ROUTE_NOT_FOUND = "RouteNotFound"
    ROUTE_MISSING_BACKENDS = "RouteMissingBackends"
    ROUTE_NOT_ACCEPTED = "RouteNotAccepted"
    ROUTE_WEIGHTS_DRIFTED = "RouteWeightsDrifted"
    #: A weighted backendRef is not on the Canary's port (spec.service.port).
    ROUTE_PORT_MISMATCH = "RoutePortMismatch"
    #: A route cannot take canaryd's A/B, mirror or sticky rules (too many rules or matches, ...).
    TRAFFIC_MODE_UNSUPPORTED = "TrafficModeUnsupported"
    #: A parent Gateway's GatewayClass lists its supported features without request mirroring.
    MIRROR_UNSUPPORTED = "MirrorUnsupported"
    #: The Gateway refused a route's current generation while canaryd's rules or filters were on it.
    ROUTE_REFUSED = "RouteRefused"
    # Traffic share on the data plane
    TRAFFIC_SHIFTED = "TrafficShifted"
    TRAFFIC_NOT_SHIFTED = "TrafficNotShifted"
    MEASURING_TRAFFIC_SHARE = "MeasuringTrafficShare"
    # Progressing
    NEW_REVISION = "NewRevision"
    WAITING_FOR_SLOT = "WaitingForSlot"
    CANARY_NOT_READY = "CanaryNotReady"
    STEP_ADVANCED = "StepAdvanced"
    ANALYSIS_PASSED = "AnalysisPassed"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_NO_DATA = "AnalysisNoData"
    ANALYSIS_ERROR = "AnalysisError"
    #: Comparison metrics have not enough evidence either way, or their score is marginal.
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    #: A critical or sequential comparison metric failed: the run fails at once.
    CRITICAL_METRIC_FAILED = "CriticalMetricFailed"
    REVISION_CHANGED = "RevisionChanged"
    PROMOTING = "Promoting"
    FINALIZING = "Finalizing"
    SUCCEEDED = "Succeeded"
    THRESHOLD_REACHED = "FailedChecksThresholdReached"
    ERROR_LIMIT_REACHED = "AnalysisErrorLimitReached"
    DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    ABORTED = "Aborted"
    ROLLED_BACK = "RolledBack"
    NO_NEW_REVISION = "NoNewRevision"
    #: A metric failed as many checks as its failureLimit allows.
    FAILURE_LIMIT_REACHED = "MetricFailureLimitReached"
    #: spec.skipAnalysis: the revision is promoted without steps or checks.
    ANALYSIS_SKIPPED = "AnalysisSkipped"
    # Webhooks
    #: A confirm-* webhook has not answered 2xx: the run waits for it.
    WAITING_FOR_CONFIRMATION = "WaitingForConfirmation"
    #: Every confirm-* webhook of the gate answered 2xx.
    CONFIRMED = "Confirmed"
    #: No gate holds the run (it opened, or the run left it).
    GATE_OPEN = "GateOpen"
    #: A webhook call failed (a check hook's failure also counts as a failed check).
    WEBHOOK_FAILED = "WebhookFailed"
    #: The Canary's notification Secret cannot be used.
    NOTIFICATION_FAILED = "NotificationFailed"
    # Manual actions
    PAUSED = "Paused"
    RESUMED = "Resumed"
    PROMOTED_MANUALLY = "PromotedManually"
    STEPPED_MANUALLY = "SteppedManually"
    RETRIED = "Retried"
    ACTION_IGNORED = "ActionIgnored"
    #: spec.suspend is true: canaryd leaves the target and its routes alone.
    SUSPENDED = "Suspended"
    #: The Canary does not parse (the API server's schema let through what canaryd cannot read).
    INVALID_SPEC = "InvalidSpec"
    # Deletion
    DELETING = "Deleting"
    # Reconciled: a pass that could not be finished (see canaryd.core.failures)
    RECONCILED = "Reconciled"
    #: The API server refused a write with an answer no retry changes (400, 403, 422, ...).
    API_REJECTED = "ApiRejected"
    #: The API server kept failing (5xx, 429, no answer, conflicts) for several passes in a row.
    API_UNAVAILABLE = "ApiUnavailable"
    #: An unexpected error inside canaryd.
    RECONCILE_ERROR = "ReconcileError"
