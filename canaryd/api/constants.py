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

# Sandbox knobs (read only by the sandbox's simulators).
ANNOTATION_ERROR_RATE: Final = "sandbox.canaryd.io/error-rate"
ANNOTATION_LATENCY_MS: Final = "sandbox.canaryd.io/latency-ms"
ANNOTATION_RPS: Final = "sandbox.canaryd.io/rps"
ANNOTATION_NEVER_READY: Final = "sandbox.canaryd.io/never-ready"
#: On a route: the share of requests that carry the headers its header-matching rule asks for.
ANNOTATION_HEADER_SHARE: Final = "sandbox.canaryd.io/header-share"


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
