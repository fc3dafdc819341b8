"""The sandbox's CRD validator on its own, with schemas that are not canaryd's.

The sandbox API server serves every CRD a user creates through
``canaryd.sandbox.server.openapi``, so it must behave like kube-apiserver for any
structural schema: the same pruning and defaulting, errors at the same field
paths with the same types, and CEL rules with Kubernetes' semantics.
"""

from __future__ import annotations

from typing import Any

import pytest

from canaryd.sandbox.server import openapi
from canaryd.sandbox.server.openapi import FieldError, apply_defaults, unknown_fields, validate

WIDGET: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "label": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
                "ratio": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "since": {"type": "string", "format": "date-time"},
                "options": {
                    "type": "object",
                    "default": {},
                    "properties": {
                        "retries": {"type": "integer", "default": 3},
                        "backoff": {
                            "type": "object",
                            "properties": {"factor": {"type": "number", "default": 2}},
                        },
                    },
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "parts": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "count": {"type": "integer", "default": 1},
                        },
                        "x-kubernetes-validations": [
                            {"rule": "self.count <= 5", "message": "at most 5 of a part"},
                        ],
                    },
                },
                "flavours": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "window": {
                    "type": "object",
                    "properties": {
                        "start": {"type": "string", "format": "date-time"},
                        "end": {"type": "string", "format": "date-time"},
                        "max-wait": {"type": "string"},
                        "in": {"type": "integer"},
                    },
                    "x-kubernetes-validations": [
                        {"rule": "self.end > self.start", "message": "end must be after start"},
                        {
                            "rule": "!has(self.max__dash__wait)"
                            " || duration(self.max__dash__wait) > duration('1s')",
                            "message": "max-wait must exceed 1s",
                            "fieldPath": ".max-wait",
                        },
                        {
                            "rule": "!has(self.__in__) || self.__in__ > 0",
                            "reason": "FieldValueForbidden",
                            "message": "in must be positive",
                        },
                    ],
                },
                "limits": {
                    "type": "object",
                    "properties": {"low": {"type": "number"}, "high": {"type": "number"}},
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.low <= self.high",
                            # A conversion alone: concatenated, a real server refuses its cost.
                            "messageExpression": "string(self.low)",
                        },
                        {"rule": "self.high == oldSelf.high", "message": "high is immutable"},
                    ],
                },
            },
        },
    },
}


def widget(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 1, **spec},
    }


def errors_of(obj: dict[str, Any]) -> list[FieldError]:
    return validate(WIDGET, apply_defaults(WIDGET, obj))


def only(errors: list[FieldError]) -> FieldError:
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def test_a_valid_object_has_no_errors_and_gets_nested_defaults() -> None:
    stored = apply_defaults(WIDGET, widget(parts=[{"name": "a"}], options={"backoff": {}}))
    assert validate(WIDGET, stored) == []
    assert stored["spec"]["color"] == "red"
    assert stored["spec"]["options"] == {"retries": 3, "backoff": {"factor": 2}}
    assert stored["spec"]["parts"] == [{"name": "a", "count": 1}]


def test_a_defaulted_object_gets_its_own_fields_defaults_but_absent_parents_are_not_created() -> None:
    stored = apply_defaults(WIDGET, widget())
    assert stored["spec"]["options"] == {"retries": 3}  # `options` defaulted to {}, then retries filled in
    assert "backoff" not in stored["spec"]["options"]
    assert "window" not in stored["spec"]


def test_the_input_object_is_not_modified() -> None:
    obj = widget(bogus=1)
    apply_defaults(WIDGET, obj)
    assert obj["spec"] == {"size": 1, "bogus": 1}


def test_unknown_fields_are_pruned_and_reported_except_where_preserved() -> None:
    obj = widget(
        bogus=1, raw={"anything": {"goes": True}}, labels={"team": "a"}, options={"retries": 1, "x": 2}
    )
    obj["status"] = {"free": "form"}
    obj["metadata"]["labels"] = {"kept": "yes"}
    assert unknown_fields(WIDGET, obj) == ["spec.bogus", "spec.options.x", "status"]
    stored = apply_defaults(WIDGET, obj)
    assert "bogus" not in stored["spec"] and "status" not in stored
    assert stored["spec"]["raw"] == {"anything": {"goes": True}}
    assert stored["spec"]["labels"] == {"team": "a"}
    assert stored["metadata"] == {"name": "w", "labels": {"kept": "yes"}}
    assert (stored["apiVersion"], stored["kind"]) == ("example.com/v1", "Widget")


def test_null_in_a_non_nullable_field_is_dropped_or_defaulted_but_kept_where_nullable() -> None:
    stored = apply_defaults(WIDGET, widget(color=None, label=None, note=None))
    assert stored["spec"]["color"] == "red"
    assert "label" not in stored["spec"]
    assert stored["spec"]["note"] is None
    assert validate(WIDGET, stored) == []


def test_a_missing_required_field_is_a_required_value_at_its_path_and_blocks_the_cel_rules() -> None:
    obj = widget()
    del obj["spec"]["size"]
    error, unchecked = errors_of(obj)
    assert unchecked.message == openapi.UNCHECKED_RULES_MESSAGE  # as kube-apiserver v1.35 reports it
    assert (error.path, error.type) == ("spec.size", "Required value")
    assert str(error) == "spec.size: Required value"
    assert error.as_cause() == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.size",
    }


def test_a_type_error_names_the_field_and_blocks_the_cel_rules() -> None:
    errors = errors_of(widget(size="3", limits={"low": 5, "high": 1}))
    assert [(e.path, e.type) for e in errors] == [("spec.size", "Invalid value"), ("", "Invalid value")]
    assert "must be of type integer" in errors[0].message
    assert str(errors[0]).startswith('spec.size: Invalid value: "string": ')
    assert "some validation rules were not checked" in errors[1].message


def test_enum_violation_is_an_unsupported_value_listing_the_choices() -> None:
    error, unchecked = errors_of(widget(color="green"))
    assert unchecked.message == openapi.UNCHECKED_RULES_MESSAGE
    assert (error.path, error.type) == ("spec.color", "Unsupported value")
    assert str(error) == 'spec.color: Unsupported value: "green": supported values: "red", "blue"'
    assert error.cause_type == "FieldValueNotSupported"


@pytest.mark.parametrize(
    ("spec", "path", "error_type", "fragment"),
    [
        ({"size": 0}, "spec.size", "Invalid value", "greater than or equal to 1"),
        ({"size": 11}, "spec.size", "Invalid value", "less than or equal to 10"),
        ({"ratio": 0}, "spec.ratio", "Invalid value", "greater than 0"),
        ({"label": "a"}, "spec.label", "Invalid value", "at least 2 chars"),
        ({"label": "abcdef"}, "spec.label", "Too long", "may not be more than 5"),
        ({"label": "AB"}, "spec.label", "Invalid value", "should match '^[a-z]+$'"),
        ({"label": "ab\n"}, "spec.label", "Invalid value", "should match '^[a-z]+$'"),
        ({"tags": []}, "spec.tags", "Invalid value", "at least 1 items"),
        ({"tags": ["a", "b", "c"]}, "spec.tags", "Too many", "at most 2 items"),
        ({"tags": ["a", 2]}, "spec.tags[1]", "Invalid value", "must be of type string"),
        ({"port": 1.5}, "spec.port", "Invalid value", "integer,string"),
        ({"since": "yesterday"}, "spec.since", "Invalid value", "date-time"),
        ({"labels": {"team": 7}}, "spec.labels.team", "Invalid value", "must be of type string"),
        ({"parts": [{"name": "a"}, {"name": "a"}]}, "spec.parts[1]", "Duplicate value", ""),
        ({"flavours": ["x", "y", "x"]}, "spec.flavours[2]", "Duplicate value", '"x"'),
        ({"parts": [{"name": "a", "count": 9}]}, "spec.parts[0]", "Invalid value", "at most 5 of a part"),
    ],
)
def test_value_checks_report_the_kubernetes_error_type_at_the_field_path(
    spec: dict[str, Any], path: str, error_type: str, fragment: str
) -> None:
    errors = errors_of(widget(**spec))
    if any(
        e.message == openapi.UNCHECKED_RULES_MESSAGE for e in errors
    ):  # after a type error, as in Kubernetes
        assert errors[-1].path == ""
        errors = errors[:-1]
    error = only(errors)
    assert (error.path, error.type) == (path, error_type)
    assert fragment in str(error)


@pytest.mark.parametrize("value", [5, "http", 5.0])
def test_int_or_string_takes_integers_and_strings(value: Any) -> None:
    assert errors_of(widget(port=value)) == []


def test_cel_message_expression_surfaces_with_values_typed_by_the_schema() -> None:
    # low is an integer in the JSON but a double in CEL (type: number), as in Kubernetes.
    error = only(errors_of(widget(limits={"low": 5, "high": 1.5})))
    assert error.path == "spec.limits"
    assert error.message == "5.0"


def test_transition_rules_do_not_apply_to_a_new_object() -> None:
    assert errors_of(widget(limits={"low": 1, "high": 2})) == []


def test_cel_sees_date_times_as_timestamps() -> None:
    ok = widget(window={"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T12:00:00+01:00"})
    assert errors_of(ok) == []
    bad = widget(window={"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T10:30:00+01:00"})
    assert only(errors_of(bad)).message == "end must be after start"


def test_escaped_property_names_field_path_and_reason() -> None:
    obj = widget(
        window={"start": "2026-01-01T10:00:00Z", "end": "2026-01-02T10:00:00Z", "max-wait": "1s", "in": 0}
    )
    errors = errors_of(obj)
    assert [(e.path, e.type, e.message) for e in errors] == [
        ("spec.window.max-wait", "Invalid value", "max-wait must exceed 1s"),
        ("spec.window", "Forbidden", "in must be positive"),
    ]


def test_duration_follows_go_and_keeps_fractions() -> None:
    """cel-python's own duration() truncates 1.5s to 1s; Kubernetes (Go) does not."""
    obj = widget(window={"start": "2026-01-01T10:00:00Z", "end": "2026-01-02T10:00:00Z", "max-wait": "1.5s"})
    assert errors_of(obj) == []


def test_a_runtime_error_in_a_rule_is_an_invalid_value_naming_the_rule() -> None:
    error = only(errors_of(widget(window={"start": "2026-01-01T10:00:00Z"})))
    assert error.path == "spec.window"
    # kube-apiserver names the rule by its message when it has one (this one does), else by its text
    assert "evaluating rule: end must be after start" in error.message


def test_two_errors_joined_by_and_or_or_are_the_error_itself() -> None:
    """As in CEL: ``error && error`` is an error, whose message names what went wrong."""
    for joined in ("&&", "||"):
        schema = {
            "type": "string",
            "x-kubernetes-validations": [
                {"rule": f"duration(self) >= duration('1s') {joined} duration(self) <= duration('24h')"}
            ],
        }
        # 3000000h is beyond what a Go duration holds: cel-go's conversion fails, as kube-apiserver's does.
        error = only(validate(schema, "3000000h"))
        conversion = "type conversion error from 'string' to 'google.protobuf.Duration'"
        assert conversion in error.message, error.message
        assert "overload" not in error.message  # not cel-python's "no matching overload"


def test_rules_that_do_not_compile_are_reported_by_check_schema_and_at_validation() -> None:
    broken = {"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]}
    assert len(openapi.check_schema(broken)) == 1
    assert "x-kubernetes-validations[0].rule" in openapi.check_schema(broken)[0]
    error = only(validate(broken, {}))
    assert error.type == "Internal error"


def test_type_errors_add_the_unchecked_rules_note_only_when_the_schema_has_rules() -> None:
    plain = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert [e.path for e in validate(plain, {"n": "x"})] == ["n"]


def test_check_schema_refuses_what_the_api_server_refuses_in_a_crd() -> None:
    bad = {
        "type": "object",
        "properties": {
            "untyped": {"properties": {"x": {"type": "integer"}}},
            "wrong_default": {"type": "integer", "default": "three"},
            "pruned_default": {
                "type": "object",
                "default": {"zz": 1},
                "properties": {"y": {"type": "string"}},
            },
            "loose_key": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["k"],
                "items": {"type": "object", "properties": {"k": {"type": "string"}}},
            },
        },
    }
    problems = openapi.check_schema(bad)
    assert [p.split(":")[0] for p in problems] == [
        "openAPIV3Schema.properties[untyped].type",
        "openAPIV3Schema.properties[wrong_default].default",
        "openAPIV3Schema.properties[pruned_default].default",
        "openAPIV3Schema.properties[loose_key].items.properties[k]",
    ]
    assert openapi.check_schema(WIDGET) == []


def test_kubernetes_list_functions_are_available() -> None:
    schema = {
        "type": "array",
        "items": {"type": "integer"},
        "x-kubernetes-validations": [
            {"rule": "self.isSorted()", "message": "sorted"},
            {"rule": "self.sum() <= 10", "message": "sum"},
            {"rule": "self.max() - self.min() < 5", "message": "spread"},
            {"rule": "self.indexOf(3) == self.lastIndexOf(3)", "message": "one three"},
        ],
    }
    assert validate(schema, [1, 2, 3]) == []
    assert [e.message for e in validate(schema, [3, 1, 3, 9])] == ["sorted", "sum", "spread", "one three"]


def test_embedded_resources_keep_their_metadata() -> None:
    schema = {
        "type": "object",
        "properties": {
            "template": {
                "type": "object",
                "x-kubernetes-embedded-resource": True,
                "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}},
            }
        },
    }
    obj = {
        "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"a": "x", "b": 1}}
    }
    assert apply_defaults(schema, obj) == {
        "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"a": "x"}}
    }


def test_verdicts_are_remembered_per_schema_node_not_confused_across_schemas() -> None:
    def bounded(limit: int) -> dict[str, Any]:
        return {
            "type": "integer",
            "x-kubernetes-validations": [{"rule": f"self <= {limit}", "message": "big"}],
        }

    lenient, strict = bounded(10), bounded(1)
    assert validate(lenient, 5) == []
    assert [e.message for e in validate(strict, 5)] == ["big"]
    assert validate(lenient, 5) == []
    assert [e.message for e in validate(strict, 5)] == ["big"]


def test_crd_version_schema_picks_the_version() -> None:
    crd = {
        "metadata": {"name": "widgets.example.com"},
        "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": WIDGET}}]},
    }
    assert openapi.crd_version_schema(crd, "v1") == WIDGET
    with pytest.raises(KeyError):
        openapi.crd_version_schema(crd, "v2")
