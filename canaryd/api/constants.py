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
    # Routes
    ROUTES_ACCEPTED = "RoutesAccepted"
    ROUTE_NOT_FOUND = "RouteNotFound"
    ROUTE_MISSING_BACKENDS = "RouteMissingBackends"
    ROUTE_NOT_ACCEPTED = "RouteNotAccepted"
    ROUTE_WEIGHTS_DRIFTED = "RouteWeightsDrifted"
    #: A route cannot take canaryd's A/B, mirror or sticky rules (too many rules or matches, ...).
    TRAFFIC_MODE_UNSUPPORTED = "TrafficModeUnsupported"
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
