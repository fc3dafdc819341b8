"""``x-kubernetes-validations``: CEL rules evaluated as kube-apiserver evaluates them.

Rules see ``self`` typed by the schema (``number`` is always a double,
``format: date-time`` a timestamp, ``format: duration`` a duration, property
names escaped like Kubernetes does); rules using ``oldSelf`` (transition
rules) do not apply to a new object and are skipped. The Kubernetes CEL
functions that cel-python lacks and canaryd's rules use are registered with
the same semantics: ``duration()`` parses Go durations (cel-python truncates
fractions), lists get ``isSorted()``, ``sum()``, ``min()``, ``max()``,
``indexOf()``, ``lastIndexOf()``, strings get ``lowerAscii()``,
``upperAscii()``, ``trim()``. ``&&`` and ``||`` of two errors are an
error, as in CEL (cel-python reports "no matching overload" instead of the
error, e.g. for two ``duration()`` calls on an out-of-range value). Programs
are compiled once per rule text, and verdicts are remembered per schema node
and value.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import Any, Final

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from canaryd.api.durations import parse_duration_ns
from canaryd.sandbox.server.openapi.fields import (
    DUPLICATE,
    FORBIDDEN,
    INTERNAL,
    INVALID,
    NO_VALUE,
    REQUIRED,
    FieldError,
    RawValue,
    Schema,
    child,
    freeze,
    index,
    is_integer,
    parse_date_time,
)

#: The ``reason`` of an x-kubernetes-validations rule, mapped to the error type it produces.
_RULE_REASONS: Final = {
    "FieldValueInvalid": INVALID,
    "FieldValueForbidden": FORBIDDEN,
    "FieldValueRequired": REQUIRED,
    "FieldValueDuplicate": DUPLICATE,
}

_CEL_RESERVED: Final = frozenset(
    {
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    }
)


def escape_property_name(name: str) -> str:
    """The name under which CEL rules see a property, as Kubernetes escapes it.

    ``__`` becomes ``__underscores__``, ``.`` ``__dot__``, ``-`` ``__dash__``,
    ``/`` ``__slash__``, and a CEL reserved word ``w`` becomes ``__w__``.
    """
    if name in _CEL_RESERVED:
        return f"__{name}__"
    escaped = (
        name.replace("__", "__underscores__")
        .replace(".", "__dot__")
        .replace("-", "__dash__")
        .replace("/", "__slash__")
    )
    return escaped


def to_cel(schema: Schema, value: Any) -> Any:
    """``value`` as the CEL value a rule sees as ``self``, typed by ``schema``."""
    if value is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        return celtypes.StringType(value) if isinstance(value, str) else celtypes.IntType(int(value))
    kind = schema.get("type")
    if kind == "integer" and is_integer(value):
        return celtypes.IntType(int(value))
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    if kind == "boolean" and isinstance(value, bool):
        return celtypes.BoolType(value)
    if kind == "string" and isinstance(value, str):
        return _string_to_cel(schema.get("format"), value)
    if isinstance(value, list):
        items = schema.get("items")
        item_schema: Schema = items if isinstance(items, dict) else {}
        return celtypes.ListType([to_cel(item_schema, item) for item in value])
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        result: dict[Any, Any] = {}
        for key, item in value.items():
            if key in properties:
                result[celtypes.StringType(escape_property_name(key))] = to_cel(properties[key], item)
            elif isinstance(additional, dict):
                result[celtypes.StringType(key)] = to_cel(additional, item)
            else:
                result[celtypes.StringType(key)] = json_to_cel(item)
        return celtypes.MapType(result)
    return json_to_cel(value)


def _string_to_cel(fmt: str | None, value: str) -> Any:
    if fmt == "date-time":
        parsed = parse_date_time(value)
        if parsed is not None:
            return celtypes.TimestampType(parsed)
    elif fmt == "duration":
        try:
            return _go_duration(parse_duration_ns(value))
        except ValueError:
            pass
    elif fmt == "byte":
        try:
            return celtypes.BytesType(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            pass
    return celtypes.StringType(value)


def _go_duration(nanoseconds: int) -> celtypes.DurationType:
    """A CEL duration; sub-microsecond parts are truncated toward zero (Python's timedelta resolution)."""
    micro = abs(nanoseconds) // 1000
    return celtypes.DurationType(timedelta(microseconds=-micro if nanoseconds < 0 else micro))


def _cel_duration(value: Any) -> Any:
    if isinstance(value, celtypes.DurationType):
        return value
    if isinstance(value, str):
        try:
            return _go_duration(parse_duration_ns(str(value)))
        except ValueError:
            # What Kubernetes' CEL says for any string it cannot turn into a duration (overflow included).
            message = "type conversion error from 'string' to 'google.protobuf.Duration'"
            return CELEvalError(message, ValueError, (message,))
    return CELEvalError(f"no such overload: duration({type(value).__name__})", TypeError, ())


def _list_function(name: str, body: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        try:
            return body(*args)
        except (TypeError, ValueError) as error:
            return CELEvalError(f"{name}: {error}", type(error), ())

    return wrapper


def _is_sorted(items: Any) -> Any:
    return celtypes.BoolType(all(a <= b for a, b in zip(items, list(items)[1:], strict=False)))


def _sum(items: Any) -> Any:
    if not items:
        return celtypes.IntType(0)
    total = items[0]
    for item in list(items)[1:]:
        total = total + item
    return total


def _minimum(items: Any) -> Any:
    if not items:
        raise ValueError("min called on an empty list")
    return min(items)


def _maximum(items: Any) -> Any:
    if not items:
        raise ValueError("max called on an empty list")
    return max(items)


def _index_of(target: Any, item: Any) -> Any:
    if isinstance(target, str):
        return celtypes.IntType(str(target).find(str(item)))
    for i, candidate in enumerate(target):
        if candidate == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _last_index_of(target: Any, item: Any) -> Any:
    if isinstance(target, str):
        return celtypes.IntType(str(target).rfind(str(item)))
    for i in range(len(target) - 1, -1, -1):
        if target[i] == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _logical(operator: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """CEL's commutative ``&&`` / ``||``: where neither side decides, an error stays the error."""

    def combine(left: Any, right: Any) -> Any:
        if isinstance(left, CELEvalError) and isinstance(right, CELEvalError):
            return left
        return operator(left, right)

    return combine


#: Kubernetes CEL library functions cel-python lacks (or implements differently), same semantics.
KUBERNETES_CEL_FUNCTIONS: Final[dict[str, Callable[..., Any]]] = {
    "_&&_": _logical(celtypes.logical_and),
    "_||_": _logical(celtypes.logical_or),
    "duration": _cel_duration,
    "isSorted": _list_function("isSorted", _is_sorted),
    "sum": _list_function("sum", _sum),
    "min": _list_function("min", _minimum),
    "max": _list_function("max", _maximum),
    "indexOf": _list_function("indexOf", _index_of),
    "lastIndexOf": _list_function("lastIndexOf", _last_index_of),
    "lowerAscii": lambda s: celtypes.StringType("".join(c.lower() if c.isascii() else c for c in str(s))),
    "upperAscii": lambda s: celtypes.StringType("".join(c.upper() if c.isascii() else c for c in str(s))),
    "trim": lambda s: celtypes.StringType(str(s).strip()),
}

_ENVIRONMENT: Final = celpy.Environment()


class CelCompileError(ValueError):
    """A rule that does not parse as CEL; the API server refuses such a CRD."""


@lru_cache(maxsize=4096)
def compile_rule(rule: str) -> celpy.Runner:
    """The runnable program of one CEL expression, compiled once and cached by its text."""
    try:
        ast = _ENVIRONMENT.compile(rule)
    except CELParseError as error:
        raise CelCompileError(f"compilation failed: {rule!r}: {error}") from error
    return _ENVIRONMENT.program(ast, functions=KUBERNETES_CEL_FUNCTIONS)


#: What kube-apiserver says of a rule or messageExpression whose estimated cost it cannot bound.
COST_BUDGET_MESSAGE: Final = (
    "estimated {what} cost exceeds budget by factor of more than 100x (try simplifying the rule, "
    "or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
)


@lru_cache(maxsize=4096)
def has_unbounded_cost(expression: str) -> bool:
    """Whether kube-apiserver's cost estimator finds no bound for ``expression`` (it then refuses the CRD).

    Only the case cel-go cannot size at all is recognised: a string concatenation (``+``) with an
    operand that is a ``string(...)`` conversion, whose result has no size estimate (measured on a
    v1.35 kube-apiserver: ``'a' + string(self.x)`` is refused, ``string(self.x)`` alone is not). The
    estimator's other cases (costs multiplied by unbounded list and map sizes) are not modelled.
    """
    try:
        tree = _ENVIRONMENT.compile(expression)
    except CELParseError:
        return False
    return any(_is_string_conversion(operand) for operand in _plus_operands(tree))


def _plus_operands(tree: Any) -> list[Any]:
    """Both sides of every ``+``: addition(addition_add(left), right) in cel-python's parse tree."""
    operands = []
    for node in tree.iter_subtrees():
        children = node.children
        plus = len(children) == 2 and getattr(children[0], "data", "") == "addition_add"
        if node.data == "addition" and plus:
            operands += [children[0].children[0], children[1]]
    return operands


def _is_string_conversion(node: Any) -> bool:
    """Whether ``node`` evaluates to a ``string(...)`` call (through parentheses and ternary branches)."""
    while hasattr(node, "data"):
        if node.data == "ident_arg":
            return bool(node.children) and str(node.children[0]) == "string"
        if node.data == "expr" and len(node.children) == 3:  # cond ? a : b
            return _is_string_conversion(node.children[1]) or _is_string_conversion(node.children[2])
        subtrees = [child for child in node.children if hasattr(child, "data")]
        if node.data not in _WRAPPERS or len(subtrees) != 1:
            return False  # e.g. string(x).size(): a method of the conversion, not the conversion
        node = subtrees[0]
    return False


#: Parse-tree nodes that only wrap the value of their one child.
_WRAPPERS: Final = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary",
     "member", "primary", "paren_expr"}
)  # fmt: skip


_OLD_SELF: Final = re.compile(r"\boldSelf\b")


def _evaluate(rule: str, self_value: Any) -> Any:
    """Run a rule; return its result, or a CELEvalError (returned or raised by cel-python).

    Raises CelCompileError when the rule does not compile.
    """
    program = compile_rule(rule)
    try:
        return program.evaluate({"self": self_value})
    except CELEvalError as error:
        return error
    except (TypeError, ValueError, KeyError, ZeroDivisionError, AttributeError) as error:
        return CELEvalError(str(error), type(error), ())


def _eval_error_text(error: Any) -> str:
    args = getattr(error, "args", ())
    return str(args[0]) if args else str(error)


_FIELD_PATH_PART: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\['([^']*)'\]|\[(\d+)\]")


def _join_field_path(path: str, field_path: str) -> str:
    """Append a rule's ``fieldPath`` (``.a.b``, ``['a-b']``, ``[0]``) to ``path``."""
    result = path
    position = 0
    while position < len(field_path):
        match = _FIELD_PATH_PART.match(field_path, position)
        if match is None:
            return child(result, field_path.lstrip("."))
        name, quoted, position_in_list = match.groups()
        if name is not None:
            result = child(result, name)
        elif quoted is not None:
            result = child(result, quoted)
        else:
            result = index(result, position_in_list)
        position = match.end()
    return result


def check_rules(schema: Schema, value: Any, path: str, errors: list[FieldError], *, resource: bool) -> None:
    """Evaluate x-kubernetes-validations bottom-up: children first, then this node."""
    if value is None:
        return
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        keep_resource_fields = resource or bool(schema.get("x-kubernetes-embedded-resource"))
        for key, item in value.items():
            if keep_resource_fields and key == "metadata":
                continue
            if key in properties:
                check_rules(properties[key], item, child(path, key), errors, resource=False)
            elif isinstance(additional, dict):
                check_rules(additional, item, index(path, key), errors, resource=False)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            check_rules(schema["items"], item, index(path, i), errors, resource=False)

    rules = schema.get("x-kubernetes-validations") or []
    if not rules:
        return
    for field_path, error_type, message, shown in _node_rule_failures(schema, rules, value):
        target = _join_field_path(path, field_path) if field_path else path
        errors.append(FieldError(target, error_type, message, shown))


#: Rule verdicts by (schema node, value): CEL is pure, and cel-python interprets a
#: rule in about a millisecond, so re-checking an unchanged spec on every status
#: write would dominate a busy API server. Entries hold their schema node, so its
#: id cannot be reused while cached; schemas are treated as immutable. The memo
#: holds every rule-carrying node of tens of thousands of objects: with a few
#: thousand entries, 1,000 Canaries (about ten such nodes each) evicted each
#: other's verdicts and every status write re-ran every rule (60 % of the
#: sandbox's CPU, the per-request cost doubling from 100 to 1,000 Canaries).
_RULE_MEMO: Final[OrderedDict[tuple[int, Any], tuple[Schema, list[RuleFailure]]]] = OrderedDict()

_RULE_MEMO_SIZE: Final = 262_144


#: (fieldPath, error type, message, value shown in the message) of one broken rule.
RuleFailure = tuple[str, str, str, Any]


def _node_rule_failures(schema: Schema, rules: list[dict[str, Any]], value: Any) -> list[RuleFailure]:
    """The failure of each rule of one node that ``value`` breaks."""
    try:
        key: tuple[int, Any] | None = (id(schema), freeze(value))
    except TypeError:  # an unhashable leaf: evaluate without the memo
        key = None
    if key is not None:
        cached = _RULE_MEMO.get(key)
        if cached is not None and cached[0] is schema:
            _RULE_MEMO.move_to_end(key)
            return cached[1]
    failures = _evaluate_rules(schema, rules, value)
    if key is not None:
        _RULE_MEMO[key] = (schema, failures)
        if len(_RULE_MEMO) > _RULE_MEMO_SIZE:
            _RULE_MEMO.popitem(last=False)
    return failures


def _evaluate_rules(schema: Schema, rules: list[dict[str, Any]], value: Any) -> list[RuleFailure]:
    """As kube-apiserver words them: a rule that is false shows the value (scalars only) and its message;
    one that fails to evaluate shows the node's type, the error and the rule's message (or text)."""
    failures: list[RuleFailure] = []
    node_type = RawValue(f'"{_schema_type(schema)}"')
    self_value = to_cel(schema, value)
    for rule in rules:
        text = rule.get("rule", "")
        if _OLD_SELF.search(text):
            continue  # a transition rule: there is no old object on create
        field_path = str(rule.get("fieldPath") or "")
        try:
            outcome = _evaluate(text, self_value)
        except CelCompileError as error:
            failures.append(("", INTERNAL, str(error), NO_VALUE))
            continue
        described = str(rule.get("message") or "").strip() or text.strip()
        if isinstance(outcome, CELEvalError):
            message = f"{_eval_error_text(outcome)} evaluating rule: {described}"
            failures.append((field_path, INVALID, message, node_type))
            continue
        if outcome is True or (isinstance(outcome, celtypes.BoolType) and bool(outcome)):
            continue
        if not isinstance(outcome, bool | celtypes.BoolType):
            failures.append((field_path, INVALID, f"rule did not evaluate to a bool: {text}", node_type))
            continue
        error_type = _RULE_REASONS.get(rule.get("reason", "FieldValueInvalid"), INVALID)
        failures.append((field_path, error_type, _rule_message(rule, self_value), value))
    return failures


def _schema_type(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "integer,string" if "type" not in schema else str(schema["type"])
    return str(schema.get("type", "object"))


def _rule_message(rule: dict[str, Any], self_value: Any) -> str:
    expression = rule.get("messageExpression")
    if expression:
        try:
            produced = _evaluate(expression, self_value)
        except CelCompileError:
            produced = None
        if isinstance(produced, str) and produced.strip() and "\n" not in produced:
            return str(produced)
    if rule.get("message"):
        return str(rule["message"])
    return f"failed rule: {rule.get('rule', '')}"
