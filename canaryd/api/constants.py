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
LABEL_APP: Final = "app"

class Phase(StrEnum):
    """Where a Canary is in its lifecycle (status.phase)."""

    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"


#: Phases in which a run is under way (traffic may be on the canary).
ACTIVE_PHASES: Final = frozenset({Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALISING})


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
    # Progressing
    NEW_REVISION = "NewRevision"
    WAITING_FOR_SLOT = "WaitingForSlot"
    CANARY_NOT_READY = "CanaryNotReady"
    STEP_ADVANCED = "StepAdvanced"
    ANALYSIS_PASSED = "AnalysisPassed"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_NO_DATA = "AnalysisNoData"
    ANALYSIS_ERROR = "AnalysisError"
    REVISION_CHANGED = "RevisionChanged"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
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
