"""Defaults and validation the real API server applies to the kinds the sandbox serves.

A controller that works here must work on a cluster, so the writes it makes
are defaulted (a Service gets a clusterIP and targetPort, a Deployment its
rolling-update strategy and revision history limit, ...) and refused (422)
when a real server would refuse them: a Deployment whose selector does not
match its template, a Service without ports, a CRD whose name is not
`plural.group`, a custom resource that breaks its openAPIV3Schema.

Custom resources are checked by `canaryd.sandbox.server.openapi` (`apply_defaults`
and `validate`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from canaryd.sandbox.labels import matches_label_selector
from canaryd.sandbox.server import openapi
from canaryd.sandbox.server.resources import ResourceType, storage_version_of_crd

Cause = dict[str, str]


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "message": message, "field": field}


def apply_builtin_defaults(
    rtype: ResourceType,
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    allocate_cluster_ip: Callable[[], str],
) -> dict[str, Any]:
    key = (rtype.group, rtype.kind)
    if key == ("apps", "Deployment"):
        _default_deployment(obj)
    elif key == ("", "Service"):
        _default_service(obj, old, allocate_cluster_ip)
    elif key == ("", "Namespace"):
        _default_namespace(obj, old)
    elif key == ("", "Secret"):
        _default_secret(obj)
    elif key == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        _default_crd(obj, old)
    return obj


def _default_deployment(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return
    template.setdefault("metadata", {})
    pod = template.setdefault("spec", {})
    if not isinstance(pod, dict):
        return
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("terminationGracePeriodSeconds", 30)
    pod.setdefault("dnsPolicy", "ClusterFirst")
    pod.setdefault("securityContext", {})
    pod.setdefault("schedulerName", "default-scheduler")
    for field in ("containers", "initContainers"):
        for container in pod.get(field) or []:
            if not isinstance(container, dict):
                continue
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            image = str(container.get("image", ""))
            tag = image.rsplit("/", 1)[-1]
            latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def _default_service(
    obj: dict[str, Any], old: dict[str, Any] | None, allocate_cluster_ip: Callable[[], str]
) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    old_spec = (old or {}).get("spec") or {}
    if spec["type"] != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = old_spec.get("clusterIP") or allocate_cluster_ip()
        if not spec.get("clusterIPs"):
            spec["clusterIPs"] = old_spec.get("clusterIPs") or [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])
    if old is None:
        obj["status"] = {"loadBalancer": {}}


def _default_namespace(obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    name = (obj.get("metadata") or {}).get("name", "")
    labels = obj["metadata"].setdefault("labels", {})
    if isinstance(labels, dict):
        labels["kubernetes.io/metadata.name"] = name
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("finalizers", ["kubernetes"])
    if old is None:
        obj["status"] = {"phase": "Active"}


def _default_secret(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _default_crd(obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.get("spec") or {}
    names = dict(spec.get("names") or {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", f"{names['kind']}List")
    if isinstance(obj.get("spec"), dict):
        obj["spec"]["names"] = names
        obj["spec"].setdefault("scope", "Namespaced")
    stored = list(((old or {}).get("status") or {}).get("storedVersions") or [])
    storage = storage_version_of_crd(obj)
    if storage and storage not in stored:
        stored.append(storage)
    obj["status"] = {
        "acceptedNames": names,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": obj["metadata"]["creationTimestamp"],
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": obj["metadata"]["creationTimestamp"],
            },
        ],
        "storedVersions": stored,
    }


def validate_builtin(rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    key = (rtype.group, rtype.kind)
    if key == ("apps", "Deployment"):
        return _validate_deployment(obj, old)
    if key == ("", "Service"):
        return _validate_service(obj)
    if key == ("", "Secret"):
        return _validate_secret(obj)
    if key == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        return _validate_crd(obj, old)
    if key == ("", "Event"):
        return validate_event_namespace(obj, "involvedObject")
    return []


def validate_event_v1(obj: dict[str, Any]) -> list[Cause]:
    """The strict checks events.k8s.io/v1 applies to Events written through it (core/v1 is lenient)."""
    causes: list[Cause] = []
    for required in ("eventTime", "reportingController", "reportingInstance", "action", "reason"):
        if not obj.get(required):
            causes.append(_cause(required, "Required value", "FieldValueRequired"))
    if obj.get("type") not in ("Normal", "Warning"):
        causes.append(_cause("type", f'Invalid value: "": has invalid value: {obj.get("type", "")}'))
    for deprecated in (
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
        "deprecatedSource",
    ):
        if obj.get(deprecated):
            causes.append(_cause(deprecated, 'Invalid value: "": needs to be unset'))
    note = obj.get("note") or ""
    if len(str(note).encode()) > 1024:
        causes.append(_cause("note", "Too long: may not be more than 1024 bytes", "FieldValueTooLong"))
    return causes


def validate_event_namespace(obj: dict[str, Any], reference_field: str) -> list[Cause]:
    """An event lives in the namespace of the object it is about (when that object is namespaced)."""
    reference = obj.get(reference_field) or {}
    namespace = (obj.get("metadata") or {}).get("namespace")
    if reference.get("namespace") and namespace and reference["namespace"] != namespace:
        return [
            _cause(
                f"{reference_field}.namespace",
                f'Invalid value: "{reference["namespace"]}": does not match event.namespace',
            )
        ]
    return []


def _validate_deployment(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:

    causes: list[Cause] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [_cause("spec", "Required value", "FieldValueRequired")]
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        causes.append(_cause("spec.selector", "Required value", "FieldValueRequired"))
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if (
        isinstance(selector, dict)
        and (selector.get("matchLabels") or selector.get("matchExpressions"))
        and not matches_label_selector(selector, labels)
    ):
        causes.append(
            _cause(
                "spec.template.metadata.labels",
                f"Invalid value: {labels!r}: `selector` does not match template `labels`",
            )
        )
    containers = (template.get("spec") or {}).get("containers")
    if not containers:
        causes.append(_cause("spec.template.spec.containers", "Required value", "FieldValueRequired"))
    for index, container in enumerate(containers or []):
        if not isinstance(container, dict) or not container.get("name"):
            causes.append(
                _cause(f"spec.template.spec.containers[{index}].name", "Required value", "FieldValueRequired")
            )
        elif not container.get("image"):
            causes.append(
                _cause(
                    f"spec.template.spec.containers[{index}].image", "Required value", "FieldValueRequired"
                )
            )
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        causes.append(
            _cause("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")
        )
    if old is not None and (old.get("spec") or {}).get("selector") != selector:
        causes.append(_cause("spec.selector", f"Invalid value: {selector!r}: field is immutable"))
    return causes


def _validate_service(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    if spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None" and not spec.get("ports"):
        causes.append(_cause("spec.ports", "Required value", "FieldValueRequired"))
    for index, port in enumerate(spec.get("ports") or []):
        number = port.get("port") if isinstance(port, dict) else None
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append(
                _cause(
                    f"spec.ports[{index}].port",
                    f"Invalid value: {number!r}: must be between 1 and 65535, inclusive",
                )
            )
    return causes


def _validate_secret(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (obj.get("data") or {}).items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            causes.append(_cause(f"data[{key}]", "Invalid value: illegal base64 data"))
    return causes


def _validate_crd(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[Cause] = []
    group = spec.get("group")
    if not group:
        causes.append(_cause("spec.group", "Required value", "FieldValueRequired"))
    if not names.get("plural"):
        causes.append(_cause("spec.names.plural", "Required value", "FieldValueRequired"))
    if not names.get("kind"):
        causes.append(_cause("spec.names.kind", "Required value", "FieldValueRequired"))
    expected = f"{names.get('plural')}.{group}"
    name = (obj.get("metadata") or {}).get("name")
    if group and names.get("plural") and name != expected:
        causes.append(
            _cause("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            _cause(
                "spec.scope",
                f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"',
                "FieldValueNotSupported",
            )
        )
    versions = spec.get("versions") or []
    if not versions or sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            _cause("spec.versions", "Invalid value: must have exactly one version marked as storage version")
        )
    if old is not None:
        old_spec = old.get("spec") or {}
        if old_spec.get("group") != group:
            causes.append(_cause("spec.group", f'Invalid value: "{group}": field is immutable'))
    causes.extend(_schema_causes(versions))
    return causes


#: check_schema's verdict by schema object (held, so its id stays its own); schemas are immutable.
_CHECKED: dict[int, tuple[dict[str, Any], tuple[str, ...]]] = {}


def _checked_schema(schema: dict[str, Any]) -> tuple[str, ...]:
    """``openapi.check_schema``, once per schema object: every sandbox store starts with the same
    (shared) Gateway API CRDs, whose defaults take a second of CEL to check."""
    cached = _CHECKED.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    problems = tuple(openapi.check_schema(schema))
    if len(_CHECKED) > 256:
        _CHECKED.clear()
    _CHECKED[id(schema)] = (schema, problems)
    return problems


def _schema_causes(versions: list[dict[str, Any]]) -> list[Cause]:
    """What kube-apiserver finds wrong with the versions' schemas (structure, CEL rules, their cost).

    Fields are named as it names them: ``spec.validation.openAPIV3Schema...`` when every version has
    the same schema (it keeps one copy then), else ``spec.versions[i].schema.openAPIV3Schema...``.
    """
    schemas = [((v.get("schema") or {}).get("openAPIV3Schema")) for v in versions]
    if not any(schemas):
        return []
    shared = all(s == schemas[0] for s in schemas)
    causes: list[Cause] = []
    for position, schema in enumerate(schemas[:1] if shared else schemas):
        if not isinstance(schema, dict):
            continue
        prefix = "spec.validation." if shared else f"spec.versions[{position}].schema."
        for problem in _checked_schema(schema):
            location, _, message = problem.partition(": ")
            reason = "FieldValueForbidden" if message.startswith("Forbidden") else "FieldValueInvalid"
            causes.append(_cause(prefix + location, message, reason))
    return causes


def apply_schema(rtype: ResourceType, obj: dict[str, Any]) -> tuple[dict[str, Any], list[Cause]]:
    """Defaults then validation from a CRD version's openAPIV3Schema (via canaryd.sandbox.server.openapi)."""
    if rtype.schema is None:
        return obj, []
    defaulted = openapi.apply_defaults(rtype.schema, obj)  # a pruned, defaulted copy
    problems = openapi.validate(rtype.schema, defaulted, status_subresource=rtype.has_status)
    return defaulted, [problem.as_cause() for problem in problems]


def unknown_fields(rtype: ResourceType, obj: Any) -> list[str]:
    """Fields a CRD's schema would prune (what `fieldValidation=Strict` refuses)."""
    if rtype.schema is None:
        return []
    return openapi.unknown_fields(rtype.schema, obj)
