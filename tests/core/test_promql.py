"""Template rendering cannot be used to rewrite a query, and answers become the right verdicts."""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryd.api.constants import Verdict
from canaryd.api.models import ThresholdRange
from canaryd.core.promql import (
    MissingVariableError,
    NoData,
    NoDataReason,
    QueryError,
    QueryErrorKind,
    RangeSeries,
    TemplateError,
    UnsafeValueError,
    Value,
    analysis_variables,
    check_queries,
    classify_number,
    interpret_range_result,
    interpret_result,
    judge,
    placeholders,
    render,
)

BUILTINS = {
    "namespace": "shop",
    "target": "checkout",
    "service": "checkout-canary",
    "route": "checkout",
    "interval": "1m",
}


def _builtins(**overrides: str) -> dict[str, str]:
    return analysis_variables(
        namespace=overrides.get("namespace", "shop"),
        target=overrides.get("target", "checkout"),
        service=overrides.get("service", "checkout-canary"),
        route=overrides.get("route", "checkout"),
        interval=overrides.get("interval", "1m"),
    )


# -- rendering -------------------------------------------------------------------------------------


def test_builtin_variables_render_with_or_without_spaces() -> None:
    template = 'sum(rate(x{namespace="{{namespace}}", service="{{   service }}"}[{{ interval}}]))'

    assert render(template, _builtins()) == 'sum(rate(x{namespace="shop", service="checkout-canary"}[1m]))'


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(MissingVariableError, match="'quantile'") as caught:
        render("histogram_quantile({{ quantile }}, x)", BUILTINS)
    assert caught.value.name == "quantile"


def test_malformed_placeholders_are_rejected() -> None:
    with pytest.raises(TemplateError, match="malformed placeholder"):
        render('x{namespace="{{ .Namespace }}"}', BUILTINS)
    with pytest.raises(TemplateError, match="unclosed placeholder"):
        render('x{namespace="{{ namespace "}', BUILTINS)


def test_unterminated_string_in_template_is_an_error() -> None:
    with pytest.raises(TemplateError, match="unterminated"):
        render('x{namespace="{{ namespace }}}', BUILTINS)


def test_placeholders_lists_each_name_once_in_order() -> None:
    template = 'a{n="{{ namespace }}"} / b{n="{{namespace}}", c="{{ code_label }}"}[{{ interval }}]'

    assert placeholders(template) == ["namespace", "code_label", "interval"]


@pytest.mark.parametrize(
    "payload",
    [
        '"} or vector(100) #',
        'x\\"} or vector(100)',
        "\\",
        'line\nbreak"}',
        "tab\tand\x01control",
    ],
)
def test_values_inside_double_quotes_cannot_close_the_string(payload: str) -> None:
    rendered = render('up{job="{{ job }}"}', {"job": payload})

    literal = rendered[len("up{job=") : -1]
    assert json.loads(literal) == payload


@given(st.text())
def test_any_value_inside_double_quotes_decodes_back_to_itself(payload: str) -> None:
    rendered = render('up{job="{{ job }}"} > 0', {"job": payload})

    assert rendered.startswith('up{job="') and rendered.endswith('"} > 0')
    assert json.loads(rendered[len("up{job=") : -len("} > 0")]) == payload


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_values_inside_a_regex_matcher_match_only_themselves(payload: str) -> None:
    rendered = render('up{pod=~"{{ target }}-[a-z0-9]+"}', {"target": payload})

    regex = json.loads(rendered[len("up{pod=~") : -1])
    assert re.fullmatch(regex, payload + "-abc12", flags=re.DOTALL)
    if payload:
        assert not re.fullmatch(regex, "z" + payload + "-abc12", flags=re.DOTALL)


def test_a_dot_in_a_name_is_literal_in_a_regex_matcher() -> None:
    rendered = render('up{pod=~"{{ target }}-.*"}', {"target": "api.v2"})

    assert rendered == 'up{pod=~"api\\\\.v2-.*"}'


def test_single_quoted_strings_escape_single_quotes() -> None:
    assert render("up{job='{{ job }}'}", {"job": "it's"}) == "up{job='it\\'s'}"


def test_raw_strings_refuse_backticks() -> None:
    assert render("up{job=`{{ job }}`}", {"job": 'a"b'}) == 'up{job=`a"b`}'
    with pytest.raises(UnsafeValueError, match="backtick"):
        render("up{job=`{{ job }}`}", {"job": "a`} or vector(1) #"})


@pytest.mark.parametrize(
    "value", ["5m", "1m30s", "250ms", "0.99", "42", "1e3", "http_requests_total", "code"]
)
def test_safe_values_are_allowed_outside_quotes(value: str) -> None:
    assert render("x[{{ v }}]", {"v": value}) == f"x[{value}]"


@pytest.mark.parametrize(
    "value",
    ["1m]) or vector(100", "or", "OR", "unless", "5 m", "-1", "x{a='b'}", "", "checkout-canary", "a b"],
)
def test_other_values_are_refused_outside_quotes(value: str) -> None:
    with pytest.raises(UnsafeValueError, match="outside quotes"):
        render("rate(x[{{ v }}])", {"v": value})


def test_values_in_comments_cannot_start_a_new_line() -> None:
    assert render("# for {{ target }}\nup", {"target": "x"}) == "# for x\nup"
    with pytest.raises(UnsafeValueError, match="comment"):
        render("# for {{ target }}\nup", {"target": "x\nvector(100)"})


def test_builtin_names_must_be_kubernetes_names() -> None:
    with pytest.raises(UnsafeValueError, match="namespace"):
        _builtins(namespace='shop"} or vector(100) #')
    with pytest.raises(UnsafeValueError, match="Service"):
        _builtins(service="Checkout")


def test_interval_becomes_a_promql_duration_of_at_least_a_second() -> None:
    assert _builtins(interval="1m30s")["interval"] == "90s"
    assert analysis_variables(
        namespace="a", target="b", service="c", route="d", interval=timedelta(minutes=2)
    )["interval"] == "2m"
    with pytest.raises(UnsafeValueError, match="shorter than 1s"):
        _builtins(interval="500ms")
    with pytest.raises(ValueError, match="invalid duration"):
        _builtins(interval="1m] or vector(1)")


def test_user_variables_layer_over_template_defaults_but_not_over_builtins() -> None:
    variables = analysis_variables(
        namespace="shop", target="checkout", service="checkout-canary", route="checkout", interval="1m",
        template_defaults={"code_label": "code", "quantile": "0.99"},
        overrides={"quantile": "0.95"},
    )
    assert variables["code_label"] == "code"
    assert variables["quantile"] == "0.95"

    with pytest.raises(TemplateError, match="'namespace' is set by canaryd"):
        analysis_variables(
            namespace="shop", target="checkout", service="checkout-canary", route="checkout", interval="1m",
            overrides={"namespace": "payments"},
        )


def _queries(query: str, routes: list[str]) -> list[tuple[str, str]]:
    return check_queries(
        query, namespace="shop", target="checkout", service="checkout-canary", routes=routes, interval="1m"
    )


def test_a_query_about_the_route_is_asked_for_every_route_in_order() -> None:
    query = 'sum(rate(x{route="{{ route }}", service="{{ service }}"}[{{ interval }}]))'
    assert _queries(query, ["checkout", "checkout-grpc", "checkout"]) == [
        ("checkout", 'sum(rate(x{route="checkout", service="checkout-canary"}[1m]))'),
        ("checkout-grpc", 'sum(rate(x{route="checkout-grpc", service="checkout-canary"}[1m]))'),
    ]


def test_a_query_without_the_route_is_asked_once() -> None:
    query = 'sum(rate(x{service="{{ service }}"}[{{ interval }}]))'
    assert _queries(query, ["checkout", "checkout-grpc"]) == [
        ("checkout", 'sum(rate(x{service="checkout-canary"}[1m]))')
    ]


def test_each_route_name_is_escaped_where_it_stands() -> None:
    query = 'x{route=~"{{ route }}|legacy", cluster="httproute/shop/{{ route }}/rule/0"}'
    (_, one), (_, two) = _queries(query, ["a.b", "c"])
    assert one == r'x{route=~"a\\.b|legacy", cluster="httproute/shop/a.b/rule/0"}'  # the dot is literal
    assert two == 'x{route=~"c|legacy", cluster="httproute/shop/c/rule/0"}'


# -- answers ---------------------------------------------------------------------------------------


def _vector(*values: str) -> list[dict[str, object]]:
    return [{"metric": {"n": str(i)}, "value": [1700003600, v]} for i, v in enumerate(values)]


def test_one_series_is_a_value() -> None:
    assert interpret_result(_vector("99.5"), "vector") == Value(99.5)
    assert interpret_result(_vector("99.5")) == Value(99.5)


def test_nan_is_no_data() -> None:
    assert interpret_result(_vector("NaN"), "vector") == NoData(NoDataReason.NAN)


@pytest.mark.parametrize(("raw", "number"), [("+Inf", math.inf), ("-Inf", -math.inf), ("Inf", math.inf)])
def test_infinities_are_values_not_missing_data(raw: str, number: float) -> None:
    # histogram_quantile answers +Inf when the latency is beyond the highest bucket: the worst
    # result there is, not an absence of one.
    assert interpret_result(_vector(raw), "vector") == Value(number)


@pytest.mark.parametrize(
    ("number", "threshold", "verdict", "message"),
    [
        (math.inf, ThresholdRange(max=500), Verdict.FAIL, "+Inf is above the maximum 500"),
        (-math.inf, ThresholdRange(min=99), Verdict.FAIL, "-Inf is below the minimum 99"),
        (math.inf, ThresholdRange(min=99), Verdict.PASS, "+Inf is within [99, +inf]"),
        (-math.inf, ThresholdRange(max=500), Verdict.PASS, "-Inf is within [-inf, 500]"),
        (math.inf, ThresholdRange(min=10, max=500), Verdict.FAIL, "+Inf is above the maximum 500"),
    ],
)
def test_infinities_fail_the_bound_their_direction_crosses(
    number: float, threshold: ThresholdRange, verdict: Verdict, message: str
) -> None:
    result = judge("latency-p99", classify_number("+Inf" if number > 0 else "-Inf"), threshold)
    assert (result.verdict, result.message) == (verdict, message)
    assert result.value == number


def test_an_empty_vector_is_no_data() -> None:
    assert interpret_result([], "vector") == NoData(NoDataReason.EMPTY)


def test_several_series_are_an_unexpected_shape_that_names_them() -> None:
    result = interpret_result(_vector("1", "2"), "vector")

    assert isinstance(result, QueryError)
    assert result.kind is QueryErrorKind.UNEXPECTED_SHAPE
    assert "2 series" in result.message and "'n': '1'" in result.message


def test_range_vectors_and_strings_are_unexpected_shapes() -> None:
    matrix = [{"metric": {}, "values": [[1700003600, "1"]]}]
    for result in (interpret_result(matrix), interpret_result(matrix, "matrix"),
                   interpret_result([1700003600, "hello"], "string")):
        assert isinstance(result, QueryError) and result.kind is QueryErrorKind.UNEXPECTED_SHAPE


def test_a_scalar_is_a_value() -> None:
    assert interpret_result([1700003600, "3"]) == Value(3.0)
    assert interpret_result([1700003600, "NaN"], "scalar") == NoData(NoDataReason.NAN)


# -- verdicts --------------------------------------------------------------------------------------


def test_values_on_the_bounds_pass() -> None:
    at_least_99 = ThresholdRange(min=99)
    at_most_500 = ThresholdRange(max=500)

    assert judge("success-rate", Value(99.0), at_least_99).verdict is Verdict.PASS
    assert judge("latency-p99", Value(500.0), at_most_500).verdict is Verdict.PASS
    both = judge("latency-p99", Value(500.0), ThresholdRange(min=10, max=500))
    assert both.message == "500 is within [10, 500]"


def test_values_outside_the_range_fail_with_the_value_and_bound() -> None:
    low = judge("success-rate", Value(95.0), ThresholdRange(min=99))
    high = judge("latency-p99", Value(612.5), ThresholdRange(max=500))

    assert (low.verdict, low.value, low.message) == (Verdict.FAIL, 95.0, "95 is below the minimum 99")
    assert (high.verdict, high.value, high.message) == (Verdict.FAIL, 612.5, "612.5 is above the maximum 500")


def test_no_data_is_its_own_verdict_not_a_failure() -> None:
    result = judge("success-rate", NoData(NoDataReason.NAN), ThresholdRange(min=99))

    assert result.verdict is Verdict.NO_DATA
    assert result.value is None
    assert "NaN" in result.message


def test_errors_are_their_own_verdict_with_the_kind() -> None:
    error = QueryError(QueryErrorKind.UNREACHABLE, "connection refused")

    result = judge("success-rate", error, ThresholdRange(min=99))

    assert result.verdict is Verdict.ERROR
    assert result.message == "unreachable: connection refused"
    assert math.isclose(judge("x", Value(1.0), ThresholdRange(min=0)).value or 0, 1.0)


# -- range results and the workload variable --------------------------------------------------------------


def test_a_range_result_of_one_series_is_its_points_in_time_order() -> None:
    raw = [{"metric": {}, "values": [[1700000030, "2"], [1700000000, "1.5"], [1700000060, "NaN"]]}]
    result = interpret_range_result(raw)
    assert isinstance(result, RangeSeries)
    assert result.points[:2] == ((1700000000.0, 1.5), (1700000030.0, 2.0))
    assert math.isnan(result.by_time()[1700000060.0])


def test_a_range_result_without_series_is_no_data_and_with_several_an_error() -> None:
    assert interpret_range_result([]) == NoData(NoDataReason.EMPTY)
    two = [{"metric": {"a": "1"}, "values": []}, {"metric": {"a": "2"}, "values": []}]
    several = interpret_range_result(two)
    assert isinstance(several, QueryError) and "2 series" in several.message
    for broken in ("x", [{"metric": {}}], [{"values": [[1, "x"]]}], [{"values": [[1]]}]):
        assert isinstance(interpret_range_result(broken), QueryError), broken


def test_the_workload_variable_is_the_target_unless_a_side_names_another() -> None:
    common = {
        "namespace": "shop", "target": "api", "service": "api-primary", "route": "api", "interval": "1m"
    }
    assert analysis_variables(**common)["workload"] == "api"
    assert analysis_variables(**common, workload="api-primary")["workload"] == "api-primary"
    with pytest.raises(TemplateError, match="cannot be overridden"):
        analysis_variables(**common, overrides={"workload": "x"})


def test_a_remembered_rendering_follows_its_variables_and_a_bad_one_fails_every_time() -> None:
    def rendered(**overrides: str) -> list[tuple[str, str]]:
        return check_queries(
            'sum(rate(x{namespace="{{ namespace }}", code=~"{{ codes }}"}[{{ interval }}]))',
            namespace="shop",
            target="web",
            service="web-canary",
            routes=["web"],
            interval="1m",
            template_defaults={"codes": "5.."},
            overrides=overrides,
        )

    assert rendered() == rendered()
    assert 'code=~"5\\\\.\\\\."' in rendered()[0][1]  # the value is escaped for a regex in a string
    assert 'code=~"4\\\\.\\\\."' in rendered(codes="4..")[0][1]
    for _ in range(2):
        with pytest.raises(TemplateError, match="set by canaryd"):
            rendered(namespace="other")
