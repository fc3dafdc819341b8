"""Structural OpenAPI v3 schemas as kube-apiserver applies them to custom resources.

A CustomResourceDefinition's ``openAPIV3Schema`` is enforced by the API server
in three passes: unknown fields are pruned, defaults are filled in, and the
result is validated (OpenAPI value checks, list-type invariants, then the
``x-kubernetes-validations`` CEL rules). The sandbox API server serves any CRD
through this package, and the tests use it to prove that canaryd's own CRDs and
its pydantic models accept and reject the same objects, so it follows the API
server's behaviour rather than a generic JSON-schema library's:

- the root object (and any ``x-kubernetes-embedded-resource``) keeps
  ``apiVersion``, ``kind`` and ``metadata`` untouched;
- a null in a non-nullable field is dropped, then defaulted if it has a default;
- defaults apply inside objects that exist, recursively, also inside defaults;
- CEL rules are skipped, with one explanatory error, when the object already
  has type errors.

The parts: ``fields`` (field paths and errors), ``structural`` (pruning,
defaulting, checking a CRD's schema), ``validation`` (value checks) and
``cel`` (the rules, and the Kubernetes CEL functions cel-python lacks).
"""

from canaryd.sandbox.server.openapi.cel import (
    KUBERNETES_CEL_FUNCTIONS,
    CelCompileError,
    compile_rule,
    escape_property_name,
    to_cel,
)
from canaryd.sandbox.server.openapi.fields import (
    DUPLICATE,
    FORBIDDEN,
    INTERNAL,
    INVALID,
    REQUIRED,
    TOO_LONG,
    TOO_MANY,
    UNSUPPORTED,
    FieldError,
    Schema,
    parse_date_time,
)
from canaryd.sandbox.server.openapi.structural import (
    apply_defaults,
    check_schema,
    crd_version_schema,
    prune,
    unknown_fields,
)
from canaryd.sandbox.server.openapi.validation import UNCHECKED_RULES_MESSAGE, validate

__all__ = [
    "DUPLICATE",
    "FORBIDDEN",
    "INTERNAL",
    "INVALID",
    "KUBERNETES_CEL_FUNCTIONS",
    "REQUIRED",
    "TOO_LONG",
    "TOO_MANY",
    "UNCHECKED_RULES_MESSAGE",
    "UNSUPPORTED",
    "CelCompileError",
    "FieldError",
    "Schema",
    "apply_defaults",
    "check_schema",
    "compile_rule",
    "crd_version_schema",
    "escape_property_name",
    "parse_date_time",
    "prune",
    "to_cel",
    "unknown_fields",
    "validate",
]
