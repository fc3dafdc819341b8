"""The CRDs and the pydantic models accept and refuse the same objects, and default them alike.

A Canary that a cluster accepts must parse in the controller, and one the
controller would refuse must never get into the cluster: otherwise a user
gets a Canary that `kubectl apply` took but that silently never runs. Every
sample and every object of a corpus (at least one per CRD rule, plus type,
enum, bound and required-field violations) is judged three times: by the CRD
schema with its CEL rules through the sandbox's validator (after pruning and
defaults), by a real kube-apiserver with the CRDs installed (server-side dry
run, on the cluster harness), and by the models. The verdicts must match, the
real server's causes (field and message) must be the sandbox's, and what the
real server would store must be what the models default to.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from canaryd.api.models import CanarySpec, MetricTemplateSpec
from canaryd.sandbox.server import openapi
from tests.api.crd_support import (
    ANALYSIS_DIR,
    CRD_DIR,
    RealApiServer,
    base_canary,
    base_template,
    linear_canary,
    model_error,
    samples,
    sandbox_causes,
    schema,
    server_errors,
    stored,
    valid_status,
)
from tests.api.crd_support import (
    crd as _crd,
)

_DELETE = object()


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set (or, with _DELETE, remove) a dotted path; numeric parts index lists."""
    parts = path.split(".")
    node: Any = obj
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is _DELETE:
        del node[last]
    else:
        node[last] = value


def _with(factory: Callable[[], dict[str, Any]], **changes: Any) -> Callable[[], dict[str, Any]]:
    """A factory of ``factory()`` with dotted-path changes (``__`` stands for ``.``)."""

    def build() -> dict[str, Any]:
        obj = factory()
        for key, value in changes.items():
            _set(obj, key.replace("__", "."), value)
        return obj

    return build


def _with_status(**changes: Any) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        obj = base_canary()
        obj["status"] = valid_status()
        for key, value in changes.items():
            _set(obj, key.replace("__", "."), value)
        return obj

    return build


API = "canaryd.io/v1alpha1"
SPEC = "spec"
AN = "spec__analysis"
M0 = "spec__analysis__metrics__0"

# (case id, object factory, field path the API server must name, fragment of its message)
INVALID: list[tuple[str, Callable[[], dict[str, Any]], str, str]] = [
    # --- CEL: exactly one of stepWeight or stepWeights
    (
        "both-schedules",
        _with(base_canary, **{f"{AN}__stepWeight": 10}),
        "spec.analysis",
        "exactly one of stepWeight",
    ),
    (
        "no-schedule",
        _with(base_canary, **{f"{AN}__stepWeights": _DELETE}),
        "spec.analysis",
        "exactly one of stepWeight",
    ),
    # --- CEL: stepWeights strictly ascending within 1..100
    (
        "descending",
        _with(base_canary, **{f"{AN}__stepWeights": [10, 5]}),
        "spec.analysis.stepWeights",
        "strictly ascending",
    ),
    (
        "repeated-weight",
        _with(base_canary, **{f"{AN}__stepWeights": [5, 5, 10]}),
        "spec.analysis.stepWeights",
        "strictly ascending",
    ),
    (
        "weight-zero",
        _with(base_canary, **{f"{AN}__stepWeights": [0, 10]}),
        "spec.analysis.stepWeights[0]",
        "greater than or equal to 1",
    ),
    (
        "weight-over-100",
        _with(base_canary, **{f"{AN}__stepWeights": [50, 101]}),
        "spec.analysis.stepWeights[1]",
        "less than or equal to 100",
    ),
    (
        "no-weights",
        _with(base_canary, **{f"{AN}__stepWeights": []}),
        "spec.analysis.stepWeights",
        "at least 1 items",
    ),
    (
        "too-many-weights",
        _with(base_canary, **{f"{AN}__stepWeights": list(range(1, 102))}),
        "spec.analysis.stepWeights",
        "at most 100 items",
    ),
    # --- maxWeight within 1..100 and not below stepWeight
    (
        "max-zero",
        _with(linear_canary, **{f"{AN}__maxWeight": 0}),
        "spec.analysis.maxWeight",
        "greater than or equal to 1",
    ),
    (
        "max-over-100",
        _with(linear_canary, **{f"{AN}__maxWeight": 101}),
        "spec.analysis.maxWeight",
        "less than or equal to 100",
    ),
    (
        "max-below-step",
        _with(linear_canary, **{f"{AN}__stepWeight": 20, f"{AN}__maxWeight": 10}),
        "spec.analysis.maxWeight",
        "must not be below stepWeight",
    ),
    (
        "step-above-default-max",
        _with(linear_canary, **{f"{AN}__stepWeight": 60, f"{AN}__maxWeight": _DELETE}),
        "spec.analysis.maxWeight",
        "maxWeight (50 when not set) must not be below stepWeight",
    ),
    (
        "max-with-step-weights",
        _with(base_canary, **{f"{AN}__maxWeight": 50}),
        "spec.analysis.maxWeight",
        "maxWeight goes with stepWeight",
    ),
    (
        "step-zero",
        _with(linear_canary, **{f"{AN}__stepWeight": 0}),
        "spec.analysis.stepWeight",
        "greater than or equal to 1",
    ),
    (
        "step-over-100",
        _with(linear_canary, **{f"{AN}__stepWeight": 101, f"{AN}__maxWeight": 100}),
        "spec.analysis.stepWeight",
        "less than or equal to 100",
    ),
    # --- threshold >= 1
    (
        "threshold-zero",
        _with(base_canary, **{f"{AN}__threshold": 0}),
        "spec.analysis.threshold",
        "greater than or equal to 1",
    ),
    (
        "error-threshold-zero",
        _with(base_canary, **{f"{AN}__errorThreshold": 0}),
        "spec.analysis.errorThreshold",
        "greater than or equal to 1",
    ),
    # --- CEL: each metric has exactly one of templateRef or query
    (
        "template-and-query",
        _with(base_canary, **{f"{M0}__query": "up"}),
        "spec.analysis.metrics[0]",
        "exactly one of templateRef or query",
    ),
    (
        "neither-template-nor-query",
        _with(base_canary, **{f"{M0}__templateRef": _DELETE}),
        "spec.analysis.metrics[0]",
        "exactly one of templateRef or query",
    ),
    (
        "empty-query",
        _with(linear_canary, **{"spec__analysis__metrics__1__query": ""}),
        "spec.analysis.metrics[1].query",
        "at least 1 chars",
    ),
    # --- CEL: thresholdRange has min or max, and min <= max
    (
        "empty-range",
        _with(base_canary, **{f"{M0}__thresholdRange": {}}),
        "spec.analysis.metrics[0].thresholdRange",
        "set min, max or both",
    ),
    (
        "min-above-max",
        _with(base_canary, **{f"{M0}__thresholdRange": {"min": 99.5, "max": 99}}),
        "spec.analysis.metrics[0].thresholdRange",
        "min must not be above max",
    ),
    # --- CEL: each metric is judged by exactly one of thresholdRange or compare
    (
        "no-range",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE}),
        "spec.analysis.metrics[0]",
        "exactly one of thresholdRange or compare",
    ),
    (
        "range-and-compare",
        _with(base_canary, **{f"{M0}__compare": {"judge": "Sequential"}}),
        "spec.analysis.metrics[0]",
        "exactly one of thresholdRange or compare",
    ),
    # --- comparison metrics
    (
        "compare-resolution-sub-second",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"resolution": "100ms"}}),
        "spec.analysis.metrics[0].compare.resolution",
        "resolution must be a duration of at least 1s",
    ),
    (
        "compare-resolution-garbage",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"resolution": "fast"}}),
        "spec.analysis.metrics[0].compare.resolution",
        "resolution must be a duration of at least 1s",
    ),
    (
        "compare-judge",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"judge": "TTest"}}),
        "spec.analysis.metrics[0].compare.judge",
        "supported values",
    ),
    (
        "compare-direction",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"direction": "up"}}),
        "spec.analysis.metrics[0].compare.direction",
        "supported values",
    ),
    (
        "compare-negative-tolerance",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"tolerance": -0.1}}),
        "spec.analysis.metrics[0].compare.tolerance",
        "greater than or equal to 0",
    ),
    (
        "compare-negative-absolute-tolerance",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"absoluteTolerance": -1}}),
        "spec.analysis.metrics[0].compare.absoluteTolerance",
        "greater than or equal to 0",
    ),
    (
        "compare-zero-weight",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"weight": 0}}),
        "spec.analysis.metrics[0].compare.weight",
        "should be greater than 0",
    ),
    (
        "compare-confidence-one",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"confidence": 1}}),
        "spec.analysis.metrics[0].compare.confidence",
        "should be less than 1",
    ),
    (
        "compare-confidence-low",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"confidence": 0.3}}),
        "spec.analysis.metrics[0].compare.confidence",
        "greater than or equal to 0.5",
    ),
    (
        "compare-critical-string",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"critical": "yes"}}),
        "spec.analysis.metrics[0].compare.critical",
        "must be of type boolean",
    ),
    (
        "compare-outliers",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"outliers": "Trim"}}),
        "spec.analysis.metrics[0].compare.outliers",
        "supported values",
    ),
    # --- CEL: scoreThresholds marginal <= pass
    (
        "score-marginal-above-pass",
        _with(base_canary, **{f"{AN}__scoreThresholds": {"pass": 80, "marginal": 90}}),
        "spec.analysis.scoreThresholds",
        "marginal must not be above pass",
    ),
    (
        "score-default-pass-below-marginal",
        _with(base_canary, **{f"{AN}__scoreThresholds": {"marginal": 96}}),
        "spec.analysis.scoreThresholds",
        "marginal must not be above pass",
    ),
    (
        "score-over-100",
        _with(base_canary, **{f"{AN}__scoreThresholds": {"pass": 101}}),
        "spec.analysis.scoreThresholds.pass",
        "less than or equal to 100",
    ),
    (
        "inconclusive-policy",
        _with(base_canary, **{f"{AN}__inconclusivePolicy": "Fail"}),
        "spec.analysis.inconclusivePolicy",
        "supported values",
    ),
    # --- CEL: durations valid and >= 1s
    (
        "interval-sub-second",
        _with(base_canary, **{f"{AN}__interval": "500ms"}),
        "spec.analysis.interval",
        "at least 1s",
    ),
    (
        "interval-fraction-below-1s",
        _with(base_canary, **{f"{AN}__interval": "0.999s"}),
        "spec.analysis.interval",
        "at least 1s",
    ),
    (
        "interval-zero",
        _with(base_canary, **{f"{AN}__interval": "0"}),
        "spec.analysis.interval",
        "at least 1s",
    ),
    (
        "interval-negative",
        _with(base_canary, **{f"{AN}__interval": "-1m"}),
        "spec.analysis.interval",
        "at least 1s",
    ),
    (
        "interval-no-unit",
        _with(base_canary, **{f"{AN}__interval": "60"}),
        "spec.analysis.interval",
        "at least 1s",
    ),
    (
        "interval-days",
        _with(base_canary, **{f"{AN}__interval": "1d"}),
        "spec.analysis.interval",
        "at least 1s",
    ),
    (
        "interval-garbage",
        _with(base_canary, **{f"{AN}__interval": "soon"}),
        "spec.analysis.interval",
        "at least 1s",
    ),
    (
        "interval-empty",
        _with(base_canary, **{f"{AN}__interval": ""}),
        "spec.analysis.interval",
        "at least 1s",
    ),
    (
        "interval-overflow",
        _with(base_canary, **{f"{AN}__interval": "3000000h"}),
        "spec.analysis.interval",
        "type conversion error from 'string' to 'google.protobuf.Duration'",
    ),
    (
        "interval-too-long",
        _with(base_canary, **{f"{AN}__interval": "1m" + "0s" * 20}),
        "spec.analysis.interval",
        "may not be more than 32",
    ),
    (
        "metric-interval-zero",
        _with(base_canary, **{f"{M0}__interval": "0s"}),
        "spec.analysis.metrics[0].interval",
        "at least 1s",
    ),
    (
        "metric-interval-bad",
        _with(base_canary, **{f"{M0}__interval": "1 minute"}),
        "spec.analysis.metrics[0].interval",
        "at least 1s",
    ),
    # --- upper bounds: every duration and count has one, so no arithmetic on them can overflow
    (
        "interval-over-a-day",
        _with(base_canary, **{f"{AN}__interval": "24h0m1s"}),
        "spec.analysis.interval",
        "at most 24h",
    ),
    (
        "metric-interval-over-a-week",
        _with(base_canary, **{f"{M0}__interval": "169h"}),
        "spec.analysis.metrics[0].interval",
        "at most 168h",
    ),
    (
        "resolution-over-a-day",
        _with(
            base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {"resolution": "25h"}}
        ),
        "spec.analysis.metrics[0].compare.resolution",
        "at most 24h",
    ),
    (
        "deadline-2-to-the-62",
        _with(base_canary, **{"spec__progressDeadlineSeconds": 2**62}),
        "spec.progressDeadlineSeconds",
        "less than or equal to 2592000",
    ),
    (
        "deadline-over-30-days",
        _with(base_canary, **{"spec__progressDeadlineSeconds": 2592001}),
        "spec.progressDeadlineSeconds",
        "less than or equal to 2592000",
    ),
    (
        "threshold-over-1000",
        _with(base_canary, **{f"{AN}__threshold": 1001}),
        "spec.analysis.threshold",
        "less than or equal to 1000",
    ),
    (
        "error-threshold-over-1000",
        _with(base_canary, **{f"{AN}__errorThreshold": 10**12}),
        "spec.analysis.errorThreshold",
        "less than or equal to 1000",
    ),
    (
        "too-many-variables",
        _with(base_canary, **{f"{M0}__variables": {f"v{i}": "x" for i in range(33)}}),
        "spec.analysis.metrics[0].variables",
        "at most 32",
    ),
    (
        "variable-too-long",
        _with(base_canary, **{f"{M0}__variables": {"v": "x" * 1025}}),
        "spec.analysis.metrics[0].variables.v",
        "may not be more than 1024",
    ),
    (
        "status-step-over-int32",
        _with_status(status__step=2**31),
        "status.step",
        "less than or equal to 2147483647",
    ),
    (
        "template-timeout-over-10m",
        _with(base_template, **{"spec__provider__timeout": "11m"}),
        "spec.provider.timeout",
        "at most 10m",
    ),
    (
        "template-too-many-headers",
        _with(base_template, **{"spec__provider__headers": {f"X-H{i}": "v" for i in range(33)}}),
        "spec.provider.headers",
        "at most 32",
    ),
    (
        "template-variable-too-long",
        _with(base_template, **{"spec__variables": {"v": "x" * 1025}}),
        "spec.variables.v",
        "may not be more than 1024",
    ),
    # --- types
    (
        "weight-as-string",
        _with(linear_canary, **{f"{AN}__stepWeight": "10"}),
        "spec.analysis.stepWeight",
        "must be of type integer",
    ),
    (
        "threshold-fraction",
        _with(base_canary, **{f"{AN}__threshold": 2.5}),
        "spec.analysis.threshold",
        "must be of type integer",
    ),
    (
        "threshold-bool",
        _with(base_canary, **{f"{AN}__threshold": True}),
        "spec.analysis.threshold",
        "must be of type integer",
    ),
    (
        "suspend-as-string",
        _with(base_canary, **{"spec__suspend": "yes"}),
        "spec.suspend",
        "must be of type boolean",
    ),
    (
        "min-as-string",
        _with(base_canary, **{f"{M0}__thresholdRange": {"min": "99"}}),
        "spec.analysis.metrics[0].thresholdRange.min",
        "must be of type number",
    ),
    (
        "port-as-string",
        _with(base_canary, **{"spec__service__port": "8080"}),
        "spec.service.port",
        "must be of type integer",
    ),
    (
        "route-refs-object",
        _with(base_canary, **{"spec__routeRefs": {"kind": "HTTPRoute", "name": "x"}}),
        "spec.routeRefs",
        "must be of type array",
    ),
    (
        "variables-not-strings",
        _with(base_canary, **{f"{M0}__variables": {"quantile": 0.99}}),
        "spec.analysis.metrics[0].variables.quantile",
        "must be of type string",
    ),
    (
        "interval-number",
        _with(base_canary, **{f"{AN}__interval": 60}),
        "spec.analysis.interval",
        "must be of type string",
    ),
    (
        "target-port-bool",
        _with(base_canary, **{"spec__service__targetPort": True}),
        "spec.service.targetPort",
        "must be of type integer,string",
    ),
    # --- enums
    (
        "route-kind",
        _with(base_canary, **{"spec__routeRefs__0__kind": "TCPRoute"}),
        "spec.routeRefs[0].kind",
        "supported values",
    ),
    (
        "route-group",
        _with(base_canary, **{"spec__routeRefs__0__group": "networking.istio.io"}),
        "spec.routeRefs[0].group",
        "supported values",
    ),
    (
        "target-kind",
        _with(base_canary, **{"spec__targetRef__kind": "StatefulSet"}),
        "spec.targetRef.kind",
        "supported values",
    ),
    (
        "target-api-version",
        _with(base_canary, **{"spec__targetRef__apiVersion": "apps/v1beta1"}),
        "spec.targetRef.apiVersion",
        "supported values",
    ),
    (
        "no-data-policy",
        _with(base_canary, **{f"{AN}__noDataPolicy": "Ignore"}),
        "spec.analysis.noDataPolicy",
        "supported values",
    ),
    # --- bounds, lengths, patterns
    (
        "port-zero",
        _with(base_canary, **{"spec__service__port": 0}),
        "spec.service.port",
        "greater than or equal to 1",
    ),
    (
        "port-too-high",
        _with(base_canary, **{"spec__service__port": 65536}),
        "spec.service.port",
        "less than or equal to 65535",
    ),
    (
        "target-port-too-high",
        _with(base_canary, **{"spec__service__targetPort": 70000}),
        "spec.service.targetPort",
        "port number within",
    ),
    (
        "target-port-name-too-long",
        _with(base_canary, **{"spec__service__targetPort": "a-very-long-port-name"}),
        "spec.service.targetPort",
        "port number within",
    ),
    (
        "port-name-pattern",
        _with(base_canary, **{"spec__service__portName": "HTTP_2"}),
        "spec.service.portName",
        "should match",
    ),
    (
        "deadline-zero",
        _with(base_canary, **{"spec__progressDeadlineSeconds": 0}),
        "spec.progressDeadlineSeconds",
        "greater than or equal to 1",
    ),
    ("no-routes", _with(base_canary, **{"spec__routeRefs": []}), "spec.routeRefs", "at least 1 items"),
    (
        "too-many-routes",
        _with(base_canary, **{"spec__routeRefs": [{"name": f"r{i}"} for i in range(17)]}),
        "spec.routeRefs",
        "at most 16 items",
    ),
    (
        "target-name-pattern",
        _with(base_canary, **{"spec__targetRef__name": "Payments_API"}),
        "spec.targetRef.name",
        "should match",
    ),
    (
        "target-name-newline",
        _with(base_canary, **{"spec__targetRef__name": "payments-api\n"}),
        "spec.targetRef.name",
        "should match",
    ),
    (
        "target-name-empty",
        _with(base_canary, **{"spec__targetRef__name": ""}),
        "spec.targetRef.name",
        "at least 1 chars",
    ),
    (
        "target-name-too-long",
        _with(base_canary, **{"spec__targetRef__name": "a" * 254}),
        "spec.targetRef.name",
        "may not be more than 253",
    ),
    (
        "metric-name-uppercase",
        _with(base_canary, **{f"{M0}__name": "SuccessRate"}),
        "spec.analysis.metrics[0].name",
        "should match",
    ),
    (
        "metric-name-too-long",
        _with(base_canary, **{f"{M0}__name": "m" * 64}),
        "spec.analysis.metrics[0].name",
        "may not be more than 63",
    ),
    (
        "template-namespace-pattern",
        _with(base_canary, **{f"{M0}__templateRef__namespace": "Canaryd.System"}),
        "spec.analysis.metrics[0].templateRef.namespace",
        "should match",
    ),
    (
        "too-many-metrics",
        _with(
            base_canary,
            **{
                f"{AN}__metrics": [
                    {"name": f"m{i}", "query": "up", "thresholdRange": {"min": 1}} for i in range(21)
                ]
            },
        ),
        "spec.analysis.metrics",
        "at most 20 items",
    ),
    # --- uniqueness (list-type map)
    (
        "duplicate-metric",
        _with(base_canary, **{"spec__analysis__metrics__1__name": "success-rate"}),
        "spec.analysis.metrics[1]",
        "Duplicate value",
    ),
    (
        "duplicate-route",
        _with(base_canary, **{"spec__routeRefs": [{"name": "a"}, {"kind": "HTTPRoute", "name": "a"}]}),
        "spec.routeRefs[1]",
        "Duplicate value",
    ),
    # --- required fields
    ("no-spec", _with(base_canary, spec=_DELETE), "spec", "Required"),
    ("no-target", _with(base_canary, **{"spec__targetRef": _DELETE}), "spec.targetRef", "Required"),
    (
        "no-target-name",
        _with(base_canary, **{"spec__targetRef__name": _DELETE}),
        "spec.targetRef.name",
        "Required",
    ),
    ("no-service", _with(base_canary, **{"spec__service": _DELETE}), "spec.service", "Required"),
    ("no-port", _with(base_canary, **{"spec__service": {}}), "spec.service.port", "Required"),
    ("no-route-refs", _with(base_canary, **{"spec__routeRefs": _DELETE}), "spec.routeRefs", "Required"),
    (
        "no-route-name",
        _with(base_canary, **{"spec__routeRefs": [{"kind": "HTTPRoute"}]}),
        "spec.routeRefs[0].name",
        "Required",
    ),
    ("no-analysis", _with(base_canary, **{"spec__analysis": _DELETE}), "spec.analysis", "Required"),
    ("null-analysis", _with(base_canary, **{"spec__analysis": None}), "spec.analysis", "Required"),
    (
        "no-metric-name",
        _with(base_canary, **{f"{M0}__name": _DELETE}),
        "spec.analysis.metrics[0].name",
        "Required",
    ),
    (
        "no-template-name",
        _with(base_canary, **{f"{M0}__templateRef": {"namespace": "canaryd-system"}}),
        "spec.analysis.metrics[0].templateRef.name",
        "Required",
    ),
    (
        "typo-hides-schedule",
        _with(base_canary, **{f"{AN}__stepWeights": _DELETE, f"{AN}__stepWieghts": [5, 10]}),
        "spec.analysis",
        "exactly one of stepWeight",
    ),
    # --- status (written by the controller and `kubectl canary`)
    ("status-phase", _with_status(status__phase="Paused"), "status.phase", "supported values"),
    (
        "status-weight",
        _with_status(status__canaryWeight=101),
        "status.canaryWeight",
        "less than or equal to 100",
    ),
    (
        "status-negative-failures",
        _with_status(status__failedChecks=-1),
        "status.failedChecks",
        "greater than or equal to 0",
    ),
    (
        "status-time",
        _with_status(status__lastStepTime="2026-05-01 10:00"),
        "status.lastStepTime",
        "date-time",
    ),
    (
        "status-time-newline",
        _with_status(status__lastStepTime="2026-05-01T10:00:00Z\n"),
        "status.lastStepTime",
        "date-time",
    ),
    (
        "status-naive-time",
        _with_status(status__runStartedAt="2026-05-01T10:00:00"),
        "status.runStartedAt",
        "date-time",
    ),
    (
        "status-time-number",
        _with_status(status__lastProgressTime=1767225600),
        "status.lastProgressTime",
        'must be of type date-time: "int64"',
    ),
    (
        "status-paused-string",
        _with_status(status__paused="false"),
        "status.paused",
        "must be of type boolean",
    ),
    (
        "status-action",
        _with_status(status__requestedAction__action="deploy"),
        "status.requestedAction.action",
        "supported values",
    ),
    (
        "status-action-no-id",
        _with_status(status__requestedAction={"action": "abort"}),
        "status.requestedAction.id",
        "Required",
    ),
    (
        "status-ack-empty-id",
        _with_status(status__lastAction__id=""),
        "status.lastAction.id",
        "at least 1 chars",
    ),
    (
        "status-verdict",
        _with_status(status__metrics__0__verdict="Unknown"),
        "status.metrics[0].verdict",
        "supported values",
    ),
    (
        "status-comparison-classification",
        _with_status(
            status__metrics__0__comparison={"judge": "Sequential", "classification": "Worse"}
        ),
        "status.metrics[0].comparison.classification",
        "supported values",
    ),
    (
        "status-comparison-no-judge",
        _with_status(status__metrics__0__comparison={"classification": "Pass"}),
        "status.metrics[0].comparison.judge",
        "Required",
    ),
    (
        "status-condition-status",
        _with_status(status__conditions__0__status="Maybe"),
        "status.conditions[0].status",
        "supported values",
    ),
    (
        "status-condition-reason",
        _with_status(status__conditions__0__reason="not a reason"),
        "status.conditions[0].reason",
        "should match",
    ),
    (
        "status-condition-no-time",
        _with_status(status__conditions__0__lastTransitionTime=_DELETE),
        "status.conditions[0].lastTransitionTime",
        "Required",
    ),
    (
        "status-condition-duplicate",
        _with_status(status__conditions__1__type="Ready"),
        "status.conditions[1]",
        "Duplicate value",
    ),
    (
        "status-route-kind",
        _with_status(status__routeGenerations__0__kind="Ingress"),
        "status.routeGenerations[0].kind",
        "supported values",
    ),
    (
        "status-route-generation-negative",
        _with_status(status__routeGenerations__0__first=-1),
        "status.routeGenerations[0].first",
        "greater than or equal to 0",
    ),
    (
        "status-route-no-hash",
        _with_status(status__routeGenerations__0__specHash=_DELETE),
        "status.routeGenerations[0].specHash",
        "Required",
    ),
    (
        "status-generation",
        _with_status(status__observedGeneration=-1),
        "status.observedGeneration",
        "greater than or equal to 0",
    ),
    # --- MetricTemplate
    ("template-no-query", _with(base_template, **{"spec__query": _DELETE}), "spec.query", "Required"),
    ("template-empty-query", _with(base_template, **{"spec__query": ""}), "spec.query", "at least 1 chars"),
    (
        "template-query-too-long",
        _with(base_template, **{"spec__query": "x" * 8193}),
        "spec.query",
        "may not be more than 8192",
    ),
    (
        "template-address-scheme",
        _with(base_template, **{"spec__provider__address": "prometheus:9090"}),
        "spec.provider.address",
        "should match",
    ),
    (
        "template-timeout-short",
        _with(base_template, **{"spec__provider__timeout": "100ms"}),
        "spec.provider.timeout",
        "at least 1s",
    ),
    (
        "template-timeout-bad",
        _with(base_template, **{"spec__provider__timeout": "ten seconds"}),
        "spec.provider.timeout",
        "at least 1s",
    ),
    (
        "template-auth-no-secret",
        _with(base_template, **{"spec__provider__auth": {"kind": "Basic"}}),
        "spec.provider.auth.secretRef",
        "Required",
    ),
    (
        "template-auth-kind",
        _with(base_template, **{"spec__provider__auth": {"kind": "Digest", "secretRef": {"name": "s"}}}),
        "spec.provider.auth.kind",
        "supported values",
    ),
    (
        "template-header-number",
        _with(base_template, **{"spec__provider__headers": {"X-Retries": 3}}),
        "spec.provider.headers.X-Retries",
        "must be of type string",
    ),
    (
        "template-insecure-string",
        _with(base_template, **{"spec__provider__insecureSkipVerify": "true"}),
        "spec.provider.insecureSkipVerify",
        "must be of type boolean",
    ),
    (
        "template-counts-without-total",
        _with(base_template, **{"spec__counts": {"matching": "sum(x)"}}),
        "spec.counts.total",
        "Required",
    ),
    (
        "template-counts-empty-matching",
        _with(base_template, **{"spec__counts": {"total": "sum(x)", "matching": ""}}),
        "spec.counts.matching",
        "at least 1 chars",
    ),
    (
        "template-unit-too-long",
        _with(base_template, **{"spec__unit": "u" * 33}),
        "spec.unit",
        "may not be more than 32",
    ),
]

# Objects both must accept, at the edges of the rules.
VALID: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    (
        "step-weight-default-max",
        _with(linear_canary, **{f"{AN}__maxWeight": _DELETE, f"{AN}__stepWeight": 50}),
    ),
    ("step-equals-max", _with(linear_canary, **{f"{AN}__stepWeight": 30, f"{AN}__maxWeight": 30})),
    ("single-step", _with(base_canary, **{f"{AN}__stepWeights": [100]})),
    ("full-range", _with(base_canary, **{f"{AN}__stepWeights": list(range(1, 101))})),
    ("interval-1s", _with(base_canary, **{f"{AN}__interval": "1s"})),
    ("interval-fraction", _with(base_canary, **{f"{AN}__interval": "1.5s"})),
    ("interval-compound", _with(base_canary, **{f"{AN}__interval": "1h2m3s"})),
    ("interval-micro-units", _with(base_canary, **{f"{AN}__interval": "1000000us"})),
    ("interval-greek-mu", _with(base_canary, **{f"{AN}__interval": "1000000μs"})),
    ("interval-plus-sign", _with(base_canary, **{f"{AN}__interval": "+2m"})),
    ("interval-half-minute", _with(base_canary, **{f"{AN}__interval": ".5m"})),
    ("interval-null-takes-default", _with(base_canary, **{f"{AN}__interval": None})),
    ("interval-a-day", _with(base_canary, **{f"{AN}__interval": "24h"})),
    ("interval-a-day-in-minutes", _with(base_canary, **{f"{AN}__interval": "1440m"})),
    ("metric-interval-a-week", _with(base_canary, **{f"{M0}__interval": "168h"})),
    ("deadline-30-days", _with(base_canary, **{"spec__progressDeadlineSeconds": 2592000})),
    ("thresholds-1000", _with(base_canary, **{f"{AN}__threshold": 1000, f"{AN}__errorThreshold": 1000})),
    ("template-timeout-10m", _with(base_template, **{"spec__provider__timeout": "10m"})),
    ("min-only", _with(base_canary, **{f"{M0}__thresholdRange": {"min": 0}})),
    ("min-equals-max", _with(base_canary, **{f"{M0}__thresholdRange": {"min": 1, "max": 1.0}})),
    ("negative-bounds", _with(base_canary, **{f"{M0}__thresholdRange": {"min": -5.5, "max": -1}})),
    ("whole-float-integer", _with(base_canary, **{f"{AN}__threshold": 3.0})),
    ("target-port-number", _with(base_canary, **{"spec__service__targetPort": 8081})),
    ("target-port-name", _with(base_canary, **{"spec__service__targetPort": "http-alt"})),
    ("no-metrics", _with(base_canary, **{f"{AN}__metrics": _DELETE})),
    (
        "same-name-other-kind",
        _with(base_canary, **{"spec__routeRefs": [{"name": "a"}, {"kind": "GRPCRoute", "name": "a"}]}),
    ),
    ("unknown-spec-field", _with(base_canary, **{"spec__replicas": 3, f"{AN}__webhooks": []})),
    ("unknown-top-level-field", _with(base_canary, extra={"x": 1})),
    (
        "compare-defaults",
        _with(base_canary, **{f"{M0}__thresholdRange": _DELETE, f"{M0}__compare": {}}),
    ),
    (
        "compare-everything",
        _with(
            base_canary,
            **{
                f"{M0}__thresholdRange": _DELETE,
                f"{M0}__compare": {
                    "judge": "Sequential", "direction": "either", "tolerance": 0, "critical": True,
                    "absoluteTolerance": 0.5,
                    "weight": 0.5, "resolution": "1m", "confidence": 0.5, "outliers": "Remove",
                },
                f"{AN}__scoreThresholds": {"pass": 75, "marginal": 75},
                f"{AN}__inconclusivePolicy": "Pause",
            },
        ),
    ),
    ("score-thresholds-defaults", _with(base_canary, **{f"{AN}__scoreThresholds": {}})),
    ("status", _with_status()),
    (
        "status-comparison",
        _with_status(
            status__metrics__0__verdict="Inconclusive",
            status__metrics__0__comparison={
                "judge": "MannWhitney", "classification": "Inconclusive", "canary": 1.5, "primary": 1.0,
                "shift": 0.5, "shiftLower": None, "shiftUpper": None, "score": None, "canarySamples": 3,
            },
        ),
    ),
    (
        "template-counts",
        _with(base_template, **{"spec__counts": {"total": "sum(a)", "matching": "sum(b)"}}),
    ),
    ("status-nan-value", _with_status(status__metrics__0__value=None)),
    ("status-finalizing", _with_status(status__phase="Finalizing")),
    ("status-finalising-as-written-before", _with_status(status__phase="Finalising")),
    ("status-only-action", _with(base_canary, status={"requestedAction": {"id": "r1", "action": "promote"}})),
    (
        "template-minimal",
        lambda: {
            "apiVersion": "canaryd.io/v1alpha1",
            "kind": "MetricTemplate",
            "metadata": {"name": "m"},
            "spec": {"query": "up"},
        },
    ),
    (
        "template-basic-auth",
        _with(
            base_template, **{"spec__provider__auth": {"kind": "Basic", "secretRef": {"name": "prom-creds"}}}
        ),
    ),
]


def _sample_cases() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj)
        for kind in ("Canary", "MetricTemplate")
        for obj in samples(kind)
    ]


def test_the_samples_hold_a_canary_of_each_schedule_and_templates_with_and_without_a_provider() -> None:
    canaries = samples("Canary")
    assert {"stepWeights" in c["spec"]["analysis"] for c in canaries} == {True, False}
    assert {c["spec"]["routeRefs"][0]["kind"] for c in canaries} == {"HTTPRoute", "GRPCRoute"}
    templates = samples("MetricTemplate")
    assert {"address" in t["spec"].get("provider", {}) for t in templates} == {True, False}


@pytest.mark.parametrize(("name", "obj"), _sample_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_sample_is_accepted_by_both(name: str, obj: dict[str, Any]) -> None:
    assert server_errors(obj) == [], name
    assert model_error(obj) is None, name


def _shipped_templates() -> list[dict[str, Any]]:
    return samples("MetricTemplate", ANALYSIS_DIR) if ANALYSIS_DIR.is_dir() else []


@pytest.mark.parametrize(
    "template",
    _shipped_templates(),
    ids=lambda t: f"{t['metadata'].get('namespace')}/{t['metadata']['name']}",
)
def test_every_ready_made_template_in_analysis_is_accepted_by_both(template: dict[str, Any]) -> None:
    assert [str(e) for e in server_errors(template)] == []
    assert model_error(template) is None


def test_every_template_a_sample_canary_references_is_shipped_with_the_samples_or_in_analysis() -> None:
    available = {
        (t["metadata"].get("namespace"), t["metadata"]["name"])
        for t in samples("MetricTemplate") + _shipped_templates()
    }
    for canary in samples("Canary"):
        for metric in canary["spec"]["analysis"].get("metrics", []):
            ref = metric.get("templateRef")
            if ref:
                key = (ref.get("namespace", canary["metadata"]["namespace"]), ref["name"])
                assert key in available, f"{canary['metadata']['name']}: no MetricTemplate {key}"


@pytest.mark.parametrize(("case", "build", "path", "fragment"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_objects_are_refused_by_both(
    case: str, build: Callable[[], dict[str, Any]], path: str, fragment: str
) -> None:
    obj = build()
    errors = server_errors(obj)
    assert errors, f"{case}: the CRD accepted it"
    assert any(e.path == path and fragment in str(e) for e in errors), [str(e) for e in errors]
    assert model_error(obj) is not None, f"{case}: the models accepted what the CRD refuses: {errors}"


@pytest.mark.parametrize(("case", "build"), VALID, ids=[c[0] for c in VALID])
def test_edge_objects_are_accepted_by_both(case: str, build: Callable[[], dict[str, Any]]) -> None:
    obj = build()
    assert [str(e) for e in server_errors(obj)] == []
    assert model_error(obj) is None


def test_every_cel_rule_of_the_crds_is_refused_by_some_corpus_case() -> None:
    """The corpus names each rule's message, so a rule added without a case fails here."""
    fragments = [fragment for _, _, _, fragment in INVALID]
    for kind in ("Canary", "MetricTemplate"):
        for rule in _rules(schema(kind)):
            message = rule.get("message", "")
            covered = any(fragment in message for fragment in fragments)
            assert covered, f"{kind}: no corpus case for rule {rule['rule']!r} ({message!r})"


def _rules(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.extend(node.get("x-kubernetes-validations") or [])
        for key in ("properties", "items", "additionalProperties"):
            child = node.get(key)
            if key == "properties" and isinstance(child, dict):
                for sub in child.values():
                    found.extend(_rules(sub))
            elif isinstance(child, dict):
                found.extend(_rules(child))
    return found


def test_the_crd_rules_compile_in_the_cel_evaluator() -> None:
    assert openapi.check_schema(schema("Canary")) == []
    assert openapi.check_schema(schema("MetricTemplate")) == []
    assert len(_rules(schema("Canary"))) >= 9


@pytest.mark.parametrize(("name", "obj"), _sample_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_defaults_from_the_crd_equal_defaults_from_the_models(name: str, obj: dict[str, Any]) -> None:
    """Parsing the object as written gives the spec the API server would store."""
    spec_model = CanarySpec if obj["kind"] == "Canary" else MetricTemplateSpec
    assert spec_model.model_validate(obj["spec"]).dump() == stored(obj)["spec"]


@pytest.mark.parametrize(
    "spec",
    [
        {
            "targetRef": {"name": "api"},
            "service": {"port": 80},
            "routeRefs": [{"name": "api"}],
            "analysis": {"stepWeight": 20},
        },
        {
            "targetRef": {"name": "api"},
            "service": {"port": 80},
            "routeRefs": [{"name": "api"}],
            "analysis": {
                "stepWeights": [50],
                "metrics": [{"name": "m", "query": "up", "thresholdRange": {"max": 1}}],
            },
        },
    ],
)
def test_minimal_canaries_get_every_default_from_both(spec: dict[str, Any]) -> None:
    obj = {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary", "metadata": {"name": "api"}, "spec": spec}
    from_crd = stored(obj)["spec"]
    assert CanarySpec.model_validate(spec).dump() == from_crd
    assert from_crd["analysis"]["interval"] == "1m"
    assert from_crd["analysis"]["noDataPolicy"] == "Hold"
    assert from_crd["routeRefs"][0] == {
        "group": "gateway.networking.k8s.io",
        "kind": "HTTPRoute",
        "name": "api",
    }
    assert from_crd["progressDeadlineSeconds"] == 600


def test_a_minimal_template_gets_provider_defaults_from_both() -> None:
    obj = {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "MetricTemplate",
        "metadata": {"name": "m"},
        "spec": {"query": "up"},
    }
    from_crd = stored(obj)["spec"]
    assert from_crd["provider"] == {"headers": {}, "insecureSkipVerify": False, "timeout": "10s"}
    assert MetricTemplateSpec.model_validate(obj["spec"]).dump() == from_crd


def test_an_unknown_field_is_pruned_by_the_server_and_ignored_by_the_models_alike() -> None:
    obj = base_canary()
    obj["spec"]["analysis"]["stepWieghts"] = [1, 2]  # a typo beside the real field
    schema_ = schema("Canary")
    assert openapi.unknown_fields(schema_, obj) == ["spec.analysis.stepWieghts"]
    as_stored = stored(obj)
    assert "stepWieghts" not in as_stored["spec"]["analysis"]
    assert CanarySpec.model_validate(obj["spec"]).dump() == as_stored["spec"]


def test_a_status_round_trips_through_the_models_unchanged() -> None:
    """What the controller writes (a model dump) is what the status schema accepts, field for field."""
    from canaryd.api.models import CanaryStatus

    status = valid_status()
    dumped = CanaryStatus.model_validate(status).dump()
    obj = base_canary()
    obj["status"] = dumped
    assert server_errors(obj) == []
    assert CanaryStatus.model_validate(dumped).dump() == dumped


def test_the_old_spelling_finalising_reads_as_finalizing_and_is_never_written() -> None:
    from canaryd.api.constants import Phase, parse_phase
    from canaryd.api.models import CanaryStatus

    status = CanaryStatus.model_validate({**valid_status(), "phase": "Finalising"})
    assert status.phase is Phase.FINALIZING
    assert status.dump()["phase"] == "Finalizing"
    assert parse_phase("Finalising") is Phase.FINALIZING and parse_phase("Paused") is None


def test_a_nan_metric_value_is_written_as_null_which_the_schema_accepts() -> None:
    import json

    from canaryd.api.models import CanaryStatus, MetricStatus

    status = CanaryStatus(metrics=[MetricStatus(name="success-rate", verdict="Fail", value=float("nan"))])
    dumped = status.dump()
    assert dumped["metrics"][0]["value"] is None
    json.dumps(dumped, allow_nan=False)  # what an API server can parse
    obj = base_canary()
    obj["status"] = dumped
    assert server_errors(obj) == []


def test_naive_times_from_the_controller_are_written_as_utc() -> None:
    from datetime import datetime

    from canaryd.api.models import CanaryStatus

    dumped = CanaryStatus(last_step_time=datetime(2026, 5, 1, 10, 0)).dump()
    assert dumped["lastStepTime"] == "2026-05-01T10:00:00Z"
    obj = base_canary()
    obj["status"] = dumped
    assert server_errors(obj) == []


def test_the_corpus_does_not_mutate_the_samples() -> None:
    before = copy.deepcopy(samples("Canary"))
    for _, build, _, _ in INVALID[:5]:
        build()
    assert samples("Canary") == before


# --- the real kube-apiserver's verdict ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_server(real_cluster: Any) -> Iterator[RealApiServer]:
    """canaryd's CRDs applied (server-side, idempotent) to the shared real cluster, and a namespace."""
    real_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(CRD_DIR))
    real_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/canaries.canaryd.io", "crd/metrictemplates.canaryd.io"
    )
    namespace = f"crd-conformance-{uuid.uuid4().hex[:8]}"
    real_cluster.kubectl("create", "namespace", namespace)
    server = RealApiServer(real_cluster, namespace)
    try:
        yield server
    finally:
        server.close()
        real_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize(("case", "build", "path", "fragment"), INVALID, ids=[c[0] for c in INVALID])
def test_the_real_api_server_refuses_every_invalid_object_with_the_sandboxs_causes(
    real_server: RealApiServer, case: str, build: Callable[[], dict[str, Any]], path: str, fragment: str
) -> None:
    obj = build()
    verdict = real_server.verdict(obj)
    assert verdict.refused, f"{case}: the real API server accepted it"
    assert any(field == path and fragment in message for field, message in verdict.causes), verdict.causes
    assert verdict.causes == sandbox_causes(obj)


def _accepted_cases() -> list[tuple[str, dict[str, Any]]]:
    return [(case, build()) for case, build in VALID] + _sample_cases() + [
        (f"analysis/{t['metadata']['name']}", t) for t in _shipped_templates()
    ]


@pytest.mark.parametrize(("name", "obj"), _accepted_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_real_api_server_accepts_every_sample_and_edge_object_and_defaults_it_like_the_models(
    real_server: RealApiServer, name: str, obj: dict[str, Any]
) -> None:
    verdict = real_server.verdict(obj)
    assert not verdict.refused, f"{name}: {verdict.causes}"
    assert verdict.stored is not None
    if verdict.stored["spec"] is None:
        return  # judged through its status; the spec is the base sample's, checked as a sample
    spec_model = CanarySpec if obj["kind"] == "Canary" else MetricTemplateSpec
    assert verdict.stored["spec"] == stored(obj)["spec"], "the real server and the sandbox default unlike"
    # The models keep every default the server filled in (and add none of their own).
    assert spec_model.model_validate(verdict.stored["spec"]).dump() == verdict.stored["spec"]


def test_the_real_api_server_gives_minimal_objects_every_default_the_models_give(
    real_server: RealApiServer,
) -> None:
    common = {"targetRef": {"name": "api"}, "service": {"port": 80}, "routeRefs": [{"name": "api"}]}
    metric = {"name": "m", "query": "up", "thresholdRange": {"max": 1}}
    minimal = [
        {**common, "analysis": {"stepWeight": 20}},
        {**common, "analysis": {"stepWeights": [50], "metrics": [metric]}},
    ]
    for spec in minimal:
        obj = {"apiVersion": API, "kind": "Canary", "metadata": {"name": "api"}, "spec": spec}
        verdict = real_server.verdict(obj)
        assert verdict.stored is not None, verdict.causes
        assert verdict.stored["spec"] == CanarySpec.model_validate(spec).dump()
    template = {"apiVersion": API, "kind": "MetricTemplate", "metadata": {"name": "m"}}
    template["spec"] = {"query": "up"}
    verdict = real_server.verdict(template)
    assert verdict.stored is not None, verdict.causes
    assert verdict.stored["spec"] == MetricTemplateSpec.model_validate(template["spec"]).dump()


def test_the_real_api_server_prunes_an_unknown_field_like_the_sandbox(real_server: RealApiServer) -> None:
    obj = base_canary()
    obj["spec"]["analysis"]["stepWieghts"] = [1, 2]
    verdict = real_server.verdict(obj)
    assert verdict.stored is not None, verdict.causes
    assert verdict.stored["spec"] == stored(obj)["spec"]
    assert "stepWieghts" not in verdict.stored["spec"]["analysis"]


# --- CRDs: what the real server refuses to install, the sandbox refuses alike ------------------------------


def _probe_crd(rule: str, message_expression: str | None = None, **schema_changes: Any) -> dict[str, Any]:
    validation: dict[str, Any] = {"rule": rule, "message": "m"}
    if message_expression:
        validation["messageExpression"] = message_expression
    spec_schema: dict[str, Any] = {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "s": {"type": "string", "maxLength": 10}},
        "x-kubernetes-validations": [validation],
        **schema_changes,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "probes.conformance.example"},
        "spec": {
            "group": "conformance.example",
            "scope": "Namespaced",
            "names": {"plural": "probes", "kind": "Probe"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}}},
                }
            ],
        },
    }


def _canary_crd_with_its_old_message_expression() -> dict[str, Any]:
    """The Canary CRD with the maxWeight messageExpression a real server refused (now a static message)."""
    crd = copy.deepcopy(_crd("Canary"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    analysis = spec["properties"]["analysis"]
    rule = next(r for r in analysis["x-kubernetes-validations"] if r.get("fieldPath") == ".maxWeight")
    rule["messageExpression"] = (
        "'maxWeight (' + (has(self.maxWeight) ? string(self.maxWeight) : '50, the default') + "
        "') must not be below stepWeight (' + string(self.stepWeight) + ')'"
    )
    crd["metadata"]["name"] = "canaries.old.canaryd.io"
    crd["spec"]["group"] = "old.canaryd.io"
    return crd


CRD_CASES: list[tuple[str, Callable[[], dict[str, Any]], bool]] = [
    ("concatenated-conversion-in-message", _canary_crd_with_its_old_message_expression, False),
    ("concatenated-conversion-in-rule", lambda: _probe_crd("'a' + string(self.x) != ''"), False),
    ("conversion-alone-in-message", lambda: _probe_crd("self.x > 0", "string(self.x)"), True),
    ("concatenated-bounded-string", lambda: _probe_crd("self.x > 0", "'a' + self.s"), True),
    ("method-of-a-conversion", lambda: _probe_crd("string(self.x).size() + 1 < 5"), True),
]


@pytest.mark.parametrize(("case", "build", "accepted"), CRD_CASES, ids=[c[0] for c in CRD_CASES])
def test_the_sandbox_refuses_the_crds_the_real_api_server_refuses_with_its_causes(
    real_cluster: Any, case: str, build: Callable[[], dict[str, Any]], accepted: bool
) -> None:
    from canaryd.sandbox.server.errors import ApiError
    from canaryd.sandbox.server.store import ObjectStore

    crd = build()
    code, answer = real_cluster.api(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions?dryRun=All", crd
    )
    assert code == (201 if accepted else 422), answer
    try:
        ObjectStore(gateway_api=False).create("customresourcedefinitions", crd)
    except ApiError as error:
        assert not accepted, f"{case}: the sandbox refused what the real server accepts: {error}"
        real = sorted((c["field"], c["message"]) for c in answer["details"]["causes"])
        assert sorted((c["field"], c["message"]) for c in error.causes or []) == real
    else:
        assert accepted, f"{case}: the sandbox accepted what the real server refuses: {answer}"
