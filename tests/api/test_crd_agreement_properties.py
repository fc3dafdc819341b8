"""Random Canaries and MetricTemplates get the same verdict from the CRD and from the models.

The hand-written corpus covers each rule once; this explores their
combinations and the values between the rules (durations a Go parser reads
differently from a naive one, bounds next to each other, wrong JSON types),
where a schema and a model written apart usually drift.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.api.models import CanarySpec, MetricTemplateSpec
from tests.api.crd_support import model_error, server_errors, stored

ABSENT = object()

DURATIONS = st.one_of(
    st.sampled_from(
        [
            "1m",
            "30s",
            "1s",
            "0.5s",
            "1.5s",
            "999ms",
            "1000ms",
            "0",
            "-1s",
            "+1s",
            "1d",
            "",
            "1h30m",
            "5",
            ".5s",
            "1.s",
            "1000000μs",
            "1000000µs",
            "2562048h",
            "1m 30s",
            "1S",
            "1e3s",
            "0.0000001h",
            "24h",
            "24h0m1s",
            "1440m",
            "168h",
            "169h",
            "10m",
            "10m0.001s",
        ]
    ),
    st.text(alphabet="0123456789.smhun+-", max_size=6),
)
SMALL_INTS = st.one_of(
    st.integers(-2, 103), st.sampled_from(["10", 10.0, 10.5, True, 1000, 1001, 2**62, 1000.0])
)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(ABSENT), strategy)


def _pack(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not ABSENT}


thresholds = st.builds(
    _pack,
    min=_optional(st.one_of(st.integers(-10, 110), st.floats(-10, 110), st.just("99"))),
    max=_optional(st.one_of(st.integers(-10, 110), st.floats(-10, 110))),
)
comparisons = st.builds(
    _pack,
    judge=_optional(st.sampled_from(["MannWhitney", "Sequential", "mannwhitney"])),
    direction=_optional(st.sampled_from(["increase", "decrease", "either", "up"])),
    tolerance=_optional(st.one_of(st.floats(-1, 2), st.just("0.1"))),
    absoluteTolerance=_optional(st.sampled_from([0, 0.5, -0.1, "1"])),
    critical=_optional(st.sampled_from([True, False, "true"])),
    weight=_optional(st.sampled_from([0, 0.5, 1, -1, 1001, "1"])),
    resolution=_optional(DURATIONS),
    confidence=_optional(st.sampled_from([0.5, 0.95, 0.99, 1, 0.49, 1.5])),
    outliers=_optional(st.sampled_from(["Keep", "Remove", "remove"])),
)
metrics = st.builds(
    _pack,
    name=st.sampled_from(["success-rate", "latency", "Bad_Name", ""]),
    compare=_optional(comparisons),
    templateRef=_optional(
        st.builds(_pack, name=st.sampled_from(["t", "T"]), namespace=_optional(st.just("ns")))
    ),
    query=_optional(st.sampled_from(["up", ""])),
    thresholdRange=_optional(thresholds),
    interval=_optional(DURATIONS),
    variables=_optional(st.sampled_from([{}, {"a": "b"}, {"a": 1}])),
)
analyses = st.builds(
    _pack,
    interval=_optional(DURATIONS),
    threshold=_optional(SMALL_INTS),
    errorThreshold=_optional(SMALL_INTS),
    stepWeight=_optional(SMALL_INTS),
    maxWeight=_optional(SMALL_INTS),
    stepWeights=_optional(st.lists(st.integers(-1, 102), max_size=6)),
    noDataPolicy=_optional(st.sampled_from(["Hold", "Fail", "Pass", "hold"])),
    inconclusivePolicy=_optional(st.sampled_from(["Hold", "Pause", "Fail"])),
    scoreThresholds=_optional(
        st.builds(
            _pack,
            **{"pass": _optional(st.integers(-5, 105))},
            marginal=_optional(st.one_of(st.integers(-5, 105), st.floats(0, 100))),
        )
    ),
    metrics=_optional(st.lists(metrics, max_size=3)),
    match=_optional(
        st.sampled_from([[{"method": "GET"}], [{}], [], [{"headers": [{"name": "x", "value": ""}]}]])
    ),
    grpcMatch=_optional(st.sampled_from([[{"method": {"service": "a.B"}}], [{"method": {}}]])),
    iterations=_optional(SMALL_INTS),
    mirror=_optional(st.sampled_from([{}, {"percent": 0}, {"percent": 50}, {"percent": "50"}])),
    sessionAffinity=_optional(st.sampled_from([{"cookieName": "c"}, {"cookieName": "c", "maxAge": "0"}, {}])),
    trafficShare=_optional(st.sampled_from([{"templateRef": {"name": "t"}}, {"templateRef": {"name": "t"},
                                            "tolerance": -1}, {}])),
    unknownKnob=_optional(st.just(1)),
)
specs = st.builds(
    _pack,
    targetRef=_optional(
        st.builds(_pack, name=st.sampled_from(["api", "API", ""]), kind=_optional(st.just("Deployment")))
    ),
    service=_optional(
        st.builds(
            _pack,
            port=st.sampled_from([80, 0, 65536, "80"]),
            targetPort=_optional(st.sampled_from([8080, "http", 0, True])),
        )
    ),
    routeRefs=_optional(
        st.lists(
            st.builds(
                _pack,
                name=st.sampled_from(["a", "b"]),
                kind=_optional(st.sampled_from(["HTTPRoute", "GRPCRoute", "TCPRoute"])),
            ),
            max_size=3,
        )
    ),
    analysis=_optional(analyses),
    progressDeadlineSeconds=_optional(st.sampled_from([1, 0, 600, "600", 2592000, 2592001, 2**62])),
    suspend=_optional(st.sampled_from([True, False, "false"])),
    revertOnDeletion=_optional(st.sampled_from([True, False, "false"])),
)
templates = st.builds(
    _pack,
    query=_optional(st.sampled_from(["up", ""])),
    unit=_optional(st.sampled_from(["percent", "u" * 33])),
    provider=_optional(
        st.builds(
            _pack,
            address=_optional(
                st.sampled_from(["http://prometheus:9090", "https://p", "prometheus:9090", "http://"])
            ),
            timeout=_optional(DURATIONS),
            insecureSkipVerify=_optional(st.sampled_from([True, "true"])),
            auth=_optional(
                st.sampled_from(
                    [
                        {"secretRef": {"name": "s"}},
                        {"kind": "Basic"},
                        {"secretRef": {"name": "s"}, "kind": "Digest"},
                    ]
                )
            ),
        )
    ),
)

VALID_DURATIONS = st.sampled_from(["1m", "30s", "1s", "1.5s", "1000ms", "1h30m", "+1s", ".5m", "1000000µs"])
valid_metrics = st.one_of(
    st.builds(
        _pack,
        name=st.just("m"),
        templateRef=st.just({"name": "t"}),
        thresholdRange=st.one_of(
            st.builds(_pack, min=st.integers(0, 100)),
            st.builds(_pack, max=st.floats(0, 1000)),
            st.integers(0, 50).map(lambda low: {"min": low, "max": low + 10}),
        ),
        interval=_optional(VALID_DURATIONS),
    ),
    st.builds(
        _pack,
        name=st.just("m"),
        templateRef=st.just({"name": "t"}),
        compare=st.builds(
            _pack,
            judge=_optional(st.sampled_from(["MannWhitney", "Sequential"])),
            tolerance=_optional(st.floats(0, 5)),
            resolution=_optional(VALID_DURATIONS),
            confidence=_optional(st.floats(0.5, 0.999)),
        ),
        interval=_optional(VALID_DURATIONS),
    ),
)
valid_schedules = st.one_of(
    st.lists(st.integers(1, 100), unique=True, min_size=1, max_size=8).map(
        lambda w: {"stepWeights": sorted(w)}
    ),
    st.integers(1, 50).flatmap(
        lambda step: st.builds(_pack, stepWeight=st.just(step), maxWeight=_optional(st.integers(step, 100)))
    ),
)


@st.composite
def near_valid_analyses(draw: st.DrawFn) -> dict[str, Any]:
    """A valid analysis with up to two fields replaced by arbitrary (often invalid) values."""
    analysis: dict[str, Any] = {
        **draw(valid_schedules),
        "interval": draw(VALID_DURATIONS),
        "threshold": draw(st.integers(1, 10)),
        "metrics": [{**m, "name": f"m{i}"} for i, m in enumerate(draw(st.lists(valid_metrics, max_size=3)))],
    }
    wild = {
        "interval": DURATIONS,
        "threshold": SMALL_INTS,
        "errorThreshold": SMALL_INTS,
        "stepWeight": SMALL_INTS,
        "maxWeight": SMALL_INTS,
        "stepWeights": st.lists(st.integers(-1, 102), max_size=6),
        "noDataPolicy": st.sampled_from(["Hold", "Fail", "Pass", "hold"]),
        "metrics": st.lists(metrics, max_size=2),
    }
    for field in draw(st.lists(st.sampled_from(sorted(wild)), max_size=2, unique=True)):
        value = draw(_optional(wild[field]))
        if value is ABSENT:
            analysis.pop(field, None)
        else:
            analysis[field] = value
    return analysis


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _canary(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary", "metadata": {"name": "c"}, "spec": spec}


def _template(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "MetricTemplate",
        "metadata": {"name": "t"},
        "spec": spec,
    }


def _agree(obj: dict[str, Any], spec_model: Any) -> None:
    errors = server_errors(obj)
    refused_by_model = model_error(obj)
    assert (not errors) == (refused_by_model is None), (
        f"CRD: {[str(e) for e in errors] or 'accepted'}\nmodels: {refused_by_model or 'accepted'}"
    )
    if not errors:
        assert spec_model.model_validate(stored(obj)["spec"]).dump() == stored(obj)["spec"]


@SETTINGS
@given(specs)
def test_random_canaries_get_the_same_verdict(spec: dict[str, Any]) -> None:
    _agree(_canary(spec), CanarySpec)


@SETTINGS
@given(
    st.builds(
        _pack,
        targetRef=st.just({"name": "api"}),
        service=st.just({"port": 80}),
        routeRefs=st.just([{"name": "r"}]),
        analysis=analyses,
    )
)
def test_random_analyses_of_otherwise_valid_canaries_get_the_same_verdict(spec: dict[str, Any]) -> None:
    _agree(_canary(spec), CanarySpec)


@SETTINGS
@given(templates)
def test_random_metric_templates_get_the_same_verdict(spec: dict[str, Any]) -> None:
    _agree(_template(spec), MetricTemplateSpec)
