"""MetricTemplate rendering and the verdict on a Prometheus answer, as pure functions.

Two decisions live here because they are where canary analysis goes wrong:

1. Rendering a template must never let a value change the query's structure.
   Resource names, route names and user variables end up in PromQL, and a
   Deployment named ``x"} or vector(100) #`` must not turn a failing canary
   into a passing one.
2. Turning an answer into a verdict must tell "no data" apart from "bad" and
   from "broken": an idle canary is not a failing one, and an unreachable
   Prometheus is not a failing canary either.

Template syntax
---------------
``{{ name }}`` (spaces optional) where ``name`` matches ``[A-Za-z_][A-Za-z0-9_]*``.
Built-in variables, set by canaryd for each check (see ``analysis_variables``):

- ``namespace``: the Canary's namespace;
- ``target``: the target Deployment (it runs the revision under analysis);
- ``service``: the canary Service, ``<target>-canary``;
- ``workload``: the Deployment serving the side measured: ``<target>`` (the
  canary), or ``<target>-primary`` when a comparison renders the primary's side;
- ``route``: the name of a route the Canary weights. A template that uses it
  is rendered once per route in ``spec.routeRefs``, each rendering asked and
  judged on its own, and the check's verdict is the worst of them (see
  ``canaryd.core.verdicts.worst_per_route``): a metric about "the route" holds
  only if it holds on every route that carries the canary's traffic. A
  template without ``{{ route }}`` is asked once;
- ``interval``: the metric's interval as a PromQL duration (``1m``, ``90s``).

User variables come from the MetricTemplate's ``spec.variables`` (defaults)
overridden by the Canary metric's ``variables``; they cannot shadow built-ins.
A placeholder without a value is an error naming the variable.

Escaping rules (the context is read from the template with a small PromQL lexer)
--------------------------------------------------------------------------------
- Inside a double- or single-quoted string literal (label matcher values):
  backslash, the enclosing quote and control characters are escaped, so the
  value can never close the string.
- Inside a string that is the right-hand side of ``=~`` or ``!~``: the value is
  first regex-escaped (RE2 metacharacters get a backslash) so it matches
  itself literally, then string-escaped. ``{{ target }}-[a-z0-9]+`` keeps its
  own regex and the name inside it is literal.
- Inside a backtick raw string: the value may not contain a backtick.
- Outside any string (e.g. ``[{{ interval }}]`` or a quantile): the value
  must be a PromQL duration (``5m``, ``1m30s``), an unsigned number, or an
  identifier (metric or label name) that is not a PromQL keyword. Anything
  else is rejected: put such values inside a label matcher's quotes.
- Inside a ``#`` comment: the value may not contain a line break.

Built-in values are also validated: namespace and Service names as DNS-1123
labels, Deployment and route names as DNS-1123 subdomains, the interval as a
duration of at least one second.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from canaryd.api.constants import Verdict
from canaryd.api.durations import format_duration, parse_duration
from canaryd.api.models import ThresholdRange
from canaryd.core.observations import MetricResult

BUILTIN_VARIABLES = ("namespace", "target", "service", "workload", "route", "interval")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLACEHOLDER_BODY = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PROM_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+\Z")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*\Z")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "offset", "bool", "atan2", "start", "end",
    }
)
_RE2_META = frozenset("\\.+*?()|[]{}^$")
_MIN_INTERVAL = timedelta(seconds=1)


class TemplateError(ValueError):
    """A template cannot be rendered; the message says what to fix."""


class MissingVariableError(TemplateError):
    """A placeholder has no value."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"template variable {name!r} has no value: set it in the MetricTemplate's spec.variables "
            f"or in the Canary metric's variables"
        )
        self.name = name


class UnsafeValueError(TemplateError):
    """A value cannot be placed where the template puts it without changing the query."""


# -- rendering ---------------------------------------------------------------------------------------------


class _Context(StrEnum):
    BARE = "bare"
    DOUBLE = '"'
    SINGLE = "'"
    RAW = "`"
    COMMENT = "#"


@dataclass(frozen=True)
class _Slot:
    start: int
    end: int
    name: str
    context: _Context
    regex: bool


def _placeholder_at(template: str, index: int) -> tuple[str, int]:
    match = _PLACEHOLDER_BODY.match(template, index)
    if match is None:
        raise TemplateError(f"unclosed placeholder at offset {index}: {template[index:index + 30]!r}")
    name = match.group(1).strip()
    if not _NAME.match(name):
        raise TemplateError(
            f"malformed placeholder {match.group(0)!r}: write {{{{ name }}}} with a name of letters, "
            f"digits and underscores"
        )
    return name, match.end()


def _follows_regex_operator(template: str, quote_index: int) -> bool:
    before = template[:quote_index].rstrip()
    return before.endswith("=~") or before.endswith("!~")


def _slots(template: str) -> list[_Slot]:
    """Every placeholder with the lexical context it sits in."""
    slots: list[_Slot] = []
    context = _Context.BARE
    regex = False
    i = 0
    length = len(template)
    while i < length:
        if template.startswith("{{", i):
            name, end = _placeholder_at(template, i)
            slots.append(_Slot(i, end, name, context, regex))
            i = end
            continue
        char = template[i]
        if context is _Context.BARE:
            if char in "\"'`":
                context = _Context(char)
                regex = _follows_regex_operator(template, i)
            elif char == "#":
                context = _Context.COMMENT
        elif context is _Context.COMMENT:
            if char == "\n":
                context = _Context.BARE
        elif context is _Context.RAW:
            if char == "`":
                context = _Context.BARE
        else:
            if char == "\\":
                i += 2
                continue
            if char == context.value:
                context = _Context.BARE
            elif char == "\n":
                raise TemplateError(f"line break inside a quoted string at offset {i}")
        i += 1
    if context in (_Context.DOUBLE, _Context.SINGLE, _Context.RAW):
        raise TemplateError(f"unterminated {context.value} string in the template")
    return slots


def placeholders(template: str) -> list[str]:
    """The variable names a template uses, in order of first use (for validating templates early)."""
    seen: dict[str, None] = {}
    for slot in _slots(template):
        seen.setdefault(slot.name, None)
    return list(seen)


def _regex_escape(value: str) -> str:
    return "".join("\\" + c if c in _RE2_META else c for c in value)


def _string_escape(value: str, quote: str) -> str:
    out: list[str] = []
    for char in value:
        if char == "\\" or char == quote:
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def _bare_value_ok(value: str) -> bool:
    if _PROM_DURATION.match(value) or _NUMBER.match(value):
        return True
    return bool(_IDENTIFIER.match(value)) and value.lower() not in _KEYWORDS


def _place(slot: _Slot, value: str) -> str:
    if slot.context is _Context.BARE:
        if not _bare_value_ok(value):
            raise UnsafeValueError(
                f"variable {slot.name!r} is used outside quotes, so its value must be a duration, a number "
                f"or a metric/label name; {value!r} is none of these (put it inside a label matcher's "
                f"quotes instead)"
            )
        return value
    if slot.context is _Context.COMMENT:
        if "\n" in value or "\r" in value:
            raise UnsafeValueError(
                f"variable {slot.name!r} is used in a comment and its value has a line break"
            )
        return value
    text = _regex_escape(value) if slot.regex else value
    if slot.context is _Context.RAW:
        if "`" in text:
            raise UnsafeValueError(
                f"variable {slot.name!r} is used inside a `raw string` and its value contains a backtick"
            )
        return text
    return _string_escape(text, slot.context.value)


def render(template: str, variables: Mapping[str, Any]) -> str:
    """The template with every placeholder replaced by its escaped value.

    Raises MissingVariableError (naming the variable) or another TemplateError.
    """
    out: list[str] = []
    position = 0
    for slot in _slots(template):
        if slot.name not in variables or variables[slot.name] is None:
            raise MissingVariableError(slot.name)
        out.append(template[position:slot.start])
        out.append(_place(slot, str(variables[slot.name])))
        position = slot.end
    out.append(template[position:])
    return "".join(out)


def _check_name(kind: str, value: str, pattern: re.Pattern[str], max_length: int) -> str:
    if not value or len(value) > max_length or not pattern.match(value):
        raise UnsafeValueError(f"{kind} {value!r} is not a valid Kubernetes name")
    return value


def promql_duration(interval: timedelta | str) -> str:
    """An interval as a PromQL range duration; Go-style strings ("1m30s") are accepted too."""
    delta = interval if isinstance(interval, timedelta) else parse_duration(interval)
    if delta < _MIN_INTERVAL:
        raise UnsafeValueError(f"interval {format_duration(delta)!r} is shorter than 1s")
    return format_duration(delta)


def check_queries(
    query: str,
    *,
    namespace: str,
    target: str,
    service: str,
    routes: Sequence[str],
    interval: timedelta | str,
    template_defaults: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The PromQL one check asks, as (route name, query): one per route when ``query`` uses ``{{ route }}``.

    A template that does not use ``{{ route }}`` gives one query (paired with
    the first route's name). Route names repeated across kinds are asked once.
    Raises TemplateError for the first rendering that fails. A rendering
    depends on nothing but these arguments, and a run asks the same check at
    every step, so renderings are remembered (``RENDERED_CHECKS`` of them).
    """
    return list(
        _rendered_check(
            query,
            namespace,
            target,
            service,
            tuple(routes),
            interval,
            tuple(template_defaults.items()) if template_defaults else (),
            tuple(overrides.items()) if overrides else (),
        )
    )


#: How many check renderings are remembered: enough for every check of 10,000 Canaries with three each.
RENDERED_CHECKS = 32768


@functools.lru_cache(maxsize=RENDERED_CHECKS)
def _rendered_check(
    query: str,
    namespace: str,
    target: str,
    service: str,
    routes: tuple[str, ...],
    interval: timedelta | str,
    template_defaults: tuple[tuple[str, str], ...],
    overrides: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, str], ...]:
    names = list(dict.fromkeys(routes))
    if "route" not in placeholders(query):
        names = names[:1]
    rendered = []
    for route in names:
        variables = analysis_variables(
            namespace=namespace,
            target=target,
            service=service,
            route=route,
            interval=interval,
            template_defaults=dict(template_defaults),
            overrides=dict(overrides),
        )
        rendered.append((route, render(query, variables)))
    return tuple(rendered)


def analysis_variables(
    *,
    namespace: str,
    target: str,
    service: str,
    route: str,
    interval: timedelta | str,
    template_defaults: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    workload: str | None = None,
) -> dict[str, str]:
    """The variables for one check: validated built-ins, then template defaults under the Canary's values.

    ``workload`` (the Deployment serving the side measured) defaults to ``target``.
    """
    variables: dict[str, str] = {}
    for source in (template_defaults or {}, overrides or {}):
        for name, value in source.items():
            if not _NAME.match(name):
                raise TemplateError(f"variable name {name!r} must be letters, digits and underscores")
            if name in BUILTIN_VARIABLES:
                raise TemplateError(f"variable {name!r} is set by canaryd and cannot be overridden")
            variables[name] = str(value)
    variables.update(
        namespace=_check_name("namespace", namespace, _DNS_LABEL, 63),
        target=_check_name("Deployment name", target, _DNS_SUBDOMAIN, 253),
        service=_check_name("Service name", service, _DNS_LABEL, 63),
        workload=_check_name(
            "Deployment name", workload if workload is not None else target, _DNS_SUBDOMAIN, 253
        ),
        route=_check_name("route name", route, _DNS_SUBDOMAIN, 253),
        interval=promql_duration(interval),
    )
    return variables


# -- typed answers -------------------------------------------------------------------------------------------


class NoDataReason(StrEnum):
    EMPTY = "empty"
    NAN = "NaN"


class QueryErrorKind(StrEnum):
    UNREACHABLE = "unreachable"
    HTTP_STATUS = "http_status"
    BAD_QUERY = "bad_query"
    TIMEOUT = "timeout"
    UNEXPECTED_SHAPE = "unexpected_shape"


@dataclass(frozen=True)
class Value:
    """One number, +Inf and -Inf included.

    An infinity is a measurement, and usually the worst one: ``histogram_quantile``
    answers +Inf when the quantile lies beyond the highest bucket (a latency
    worse than the histogram can tell). So it is judged against the range like
    any number; only NaN (0/0, e.g. a ratio without traffic) and an empty
    answer are "no data".
    """

    value: float


@dataclass(frozen=True)
class NoData:
    """Prometheus answered, but with nothing to judge (no series, or NaN, e.g. 0/0 without traffic)."""

    reason: NoDataReason

    @property
    def message(self) -> str:
        if self.reason is NoDataReason.EMPTY:
            return "the query returned no series (no traffic or no matching labels)"
        return f"the query returned {self.reason.value} (e.g. a ratio with no traffic)"


@dataclass(frozen=True)
class QueryError:
    """The query could not be answered; ``kind`` says why."""

    kind: QueryErrorKind
    message: str
    status: int | None = None


QueryResult = Value | NoData | QueryError


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: ``(unix time, value)`` points in time order (NaN kept as NaN)."""

    points: tuple[tuple[float, float], ...]

    def by_time(self) -> dict[float, float]:
        return dict(self.points)


RangeResult = RangeSeries | NoData | QueryError


def classify_number(raw: str | float) -> Value | NoData | QueryError:
    """A sample value as Prometheus writes it ("1.5", "NaN", "+Inf") turned into a typed result."""
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return QueryError(QueryErrorKind.UNEXPECTED_SHAPE, f"the sample value {raw!r} is not a number")
    if math.isnan(number):
        return NoData(NoDataReason.NAN)
    return Value(number)


def _describe_series(series: list[Any]) -> str:
    shown = [str(item.get("metric", {})) if isinstance(item, dict) else repr(item) for item in series[:3]]
    more = f" and {len(series) - 3} more" if len(series) > 3 else ""
    return ", ".join(shown) + more


def interpret_result(result: Any, result_type: str | None = None) -> QueryResult:
    """The ``data.result`` of an instant query (with ``data.resultType`` when known) as one typed result.

    One series or a scalar gives a number; no series gives NoData; several
    series, a range vector or a string is an ``unexpected_shape`` error,
    because a check needs exactly one value.
    """
    if result_type is None:
        result_type = _infer_result_type(result)
    if result_type == "scalar":
        if isinstance(result, list) and len(result) == 2:
            return classify_number(result[1])
        return QueryError(QueryErrorKind.UNEXPECTED_SHAPE, f"malformed scalar result {result!r}")
    if result_type == "string":
        return QueryError(QueryErrorKind.UNEXPECTED_SHAPE, "the query returned a string, not a number")
    if result_type == "matrix":
        return QueryError(
            QueryErrorKind.UNEXPECTED_SHAPE,
            "the query returned a range vector; wrap it in a function such as rate() or avg_over_time()",
        )
    if result_type != "vector" or not isinstance(result, list):
        return QueryError(QueryErrorKind.UNEXPECTED_SHAPE, f"unexpected result type {result_type!r}")
    if not result:
        return NoData(NoDataReason.EMPTY)
    if len(result) > 1:
        return QueryError(
            QueryErrorKind.UNEXPECTED_SHAPE,
            f"the query returned {len(result)} series where one value was expected "
            f"({_describe_series(result)}); aggregate them, e.g. with sum()",
        )
    sample = result[0].get("value") if isinstance(result[0], dict) else None
    if not isinstance(sample, list) or len(sample) != 2:
        return QueryError(QueryErrorKind.UNEXPECTED_SHAPE, f"malformed sample {result[0]!r}")
    return classify_number(sample[1])


def interpret_range_result(result: Any) -> RangeResult:
    """The ``data.result`` of a range query as one series, NoData (no series) or an error (several)."""
    if not isinstance(result, list):
        return QueryError(QueryErrorKind.UNEXPECTED_SHAPE, f"unexpected range result {result!r:.200}")
    if not result:
        return NoData(NoDataReason.EMPTY)
    if len(result) > 1:
        return QueryError(
            QueryErrorKind.UNEXPECTED_SHAPE,
            f"the query returned {len(result)} series where one was expected "
            f"({_describe_series(result)}); aggregate them, e.g. with sum()",
        )
    values = result[0].get("values") if isinstance(result[0], dict) else None
    if not isinstance(values, list):
        return QueryError(QueryErrorKind.UNEXPECTED_SHAPE, f"malformed range series {result[0]!r:.200}")
    points: list[tuple[float, float]] = []
    for sample in values:
        if not isinstance(sample, list | tuple) or len(sample) != 2:
            return QueryError(QueryErrorKind.UNEXPECTED_SHAPE, f"malformed sample {sample!r:.100}")
        try:
            points.append((float(sample[0]), float(sample[1])))
        except (TypeError, ValueError):
            return QueryError(QueryErrorKind.UNEXPECTED_SHAPE, f"the sample {sample!r:.100} is not a number")
    return RangeSeries(tuple(sorted(points)))


def _infer_result_type(result: Any) -> str:
    if isinstance(result, list):
        if len(result) == 2 and isinstance(result[0], int | float) and isinstance(result[1], str):
            return "scalar"
        if any(isinstance(item, dict) and "values" in item for item in result):
            return "matrix"
        return "vector"
    return "unknown"


# -- verdicts ------------------------------------------------------------------------------------------------


def format_number(value: float) -> str:
    """A measured value as Prometheus writes the special ones: ``+Inf``, ``-Inf``, ``NaN``; else ``%g``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


def _bounds(threshold: ThresholdRange) -> str:
    low = "-inf" if threshold.min is None else f"{threshold.min:g}"
    high = "+inf" if threshold.max is None else f"{threshold.max:g}"
    return f"[{low}, {high}]"


def _within(value: float, bounds: ThresholdRange) -> bool:
    return (bounds.min is None or value >= bounds.min) and (bounds.max is None or value <= bounds.max)


def judge(
    name: str, result: QueryResult, threshold: ThresholdRange, inconclusive: ThresholdRange | None = None
) -> MetricResult:
    """The verdict of one check: Pass/Fail for a number against the (inclusive) range, NoData, or Error.

    +Inf fails a maximum and -Inf a minimum, as any number beyond them would. With ``inconclusive``, a
    number outside ``threshold`` but within it is Inconclusive instead of Fail.
    """
    if isinstance(result, Value):
        value = result.value
        shown = format_number(value)
        if threshold.min is not None and value < threshold.min:
            why = f"{shown} is below the minimum {threshold.min:g}"
        elif threshold.max is not None and value > threshold.max:
            why = f"{shown} is above the maximum {threshold.max:g}"
        else:
            return MetricResult(name, Verdict.PASS, value, f"{shown} is within {_bounds(threshold)}")
        if inconclusive is not None and _within(value, inconclusive):
            return MetricResult(
                name,
                Verdict.INCONCLUSIVE,
                value,
                f"{why}, within the inconclusive range {_bounds(inconclusive)}: a person decides",
            )
        return MetricResult(name, Verdict.FAIL, value, why)
    if isinstance(result, NoData):
        return MetricResult(name, Verdict.NO_DATA, None, result.message)
    return MetricResult(name, Verdict.ERROR, None, f"{result.kind.value}: {result.message}")


__all__ = [
    "BUILTIN_VARIABLES",
    "MissingVariableError",
    "NoData",
    "NoDataReason",
    "QueryError",
    "QueryErrorKind",
    "QueryResult",
    "RangeResult",
    "RangeSeries",
    "TemplateError",
    "UnsafeValueError",
    "Value",
    "analysis_variables",
    "check_queries",
    "classify_number",
    "format_number",
    "interpret_range_result",
    "interpret_result",
    "judge",
    "placeholders",
    "promql_duration",
    "render",
]
