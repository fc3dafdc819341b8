"""What a write must pass before the sandbox store keeps it, as kube-apiserver checks it.

Each write's new object is checked against the request (kind and apiVersion,
the name's syntax, the namespace's existence), merged with the stored object
the way an update is (server-owned metadata and status kept, finalizers not
added during deletion), then defaulted and validated for its kind (built-in
rules in ``kinds``, CRD schemas and CEL rules through ``openapi``). These are
functions of the objects alone; the store decides when to call them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from canaryd.core.json_values import clone
from canaryd.sandbox.server import errors, kinds
from canaryd.sandbox.server.resources import ResourceType

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
#: Metadata the server owns: an update keeps the stored values whatever the body says.
_SERVER_OWNED_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
    "generation",
    "resourceVersion",
)


def check_kind(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """A 400 when the body names another kind or API group than the URL."""
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    if kind and kind != rtype.kind:
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected "
            f"API version ({rtype.api_version})"
            if api_version != rtype.api_version
            else f"Object kind {kind} does not match {rtype.kind}"
        )
    if (
        api_version
        and api_version.split("/")[0] != (rtype.group or api_version.split("/")[0])
        and "/" in api_version
    ):
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected "
            f"API version ({rtype.api_version})"
        )


def check_name(rtype: ResourceType, name: str) -> None:
    """A 422 for a name the kind does not allow (DNS label for Namespaces and Services, else subdomain)."""
    pattern = (
        _DNS_LABEL if rtype.kind in ("Namespace", "Service") and rtype.group == "" else _DNS_SUBDOMAIN
    )
    if rtype.kind == "Event":
        return
    if len(name) > 253 or not pattern.fullmatch(name):
        kind_of_name = "RFC 1123 label" if pattern is _DNS_LABEL else "RFC 1123 subdomain"
        raise errors.invalid(
            rtype.kind,
            rtype.group,
            name,
            [
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f'Invalid value: "{name}": a lowercase {kind_of_name} must consist of '
                    "lower case alphanumeric characters, '-' or '.', and must start and end with an "
                    "alphanumeric character",
                }
            ],
        )


def check_namespace_open(namespace: str, namespace_obj: dict[str, Any] | None) -> None:
    """A 404 when the namespace does not exist, a 403 while it is being deleted."""
    if namespace_obj is None:
        raise errors.not_found("namespaces", "", namespace)
    if (namespace_obj.get("metadata") or {}).get("deletionTimestamp"):
        raise errors.ApiError(
            403,
            "Forbidden",
            f"unable to create new content in namespace {namespace} because it is being terminated",
            name=namespace,
            kind="namespaces",
        )


def check_version_view(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """Checks that belong to the version written through (events.k8s.io/v1 is strict about Events)."""
    if rtype.group == "events.k8s.io" and rtype.kind == "Event":
        causes = kinds.validate_event_v1(obj)
        if causes:
            name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get(
                "generateName", ""
            )
            raise errors.invalid(rtype.kind, rtype.group, name, causes)


def merge_for_update(
    rtype: ResourceType, old: dict[str, Any], body: dict[str, Any], *, status_only: bool
) -> dict[str, Any]:
    """The object an update of ``old`` with ``body`` stores, before defaults and validation.

    Through ``/status`` only status changes; through the main resource status
    never does, and the server-owned metadata is kept.
    """
    old_meta = old["metadata"]
    if status_only:
        new = shallow_copy_with_metadata(old)
        if "status" in body:
            new["status"] = clone(body["status"])
        else:
            new.pop("status", None)
        return new
    new = clone(body)
    meta: dict[str, Any] = new["metadata"] if isinstance(new.get("metadata"), dict) else {}
    new["metadata"] = meta
    for kept in _SERVER_OWNED_METADATA:
        if kept in old_meta:
            meta[kept] = old_meta[kept]
        else:
            meta.pop(kept, None)
    meta.pop("managedFields", None)
    new["apiVersion"] = (
        old.get("apiVersion", rtype.api_version) if rtype.crd_name is None else rtype.api_version
    )
    new["kind"] = rtype.kind
    if rtype.has_status:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    if old_meta.get("deletionTimestamp"):
        added = set(meta.get("finalizers") or ()) - set(old_meta.get("finalizers") or ())
        if added:
            raise errors.invalid(
                rtype.kind,
                rtype.group,
                old_meta["name"],
                [
                    {
                        "reason": "FieldValueForbidden",
                        "field": "metadata.finalizers",
                        "message": "Forbidden: no new finalizers can be added if the object is being "
                        f"deleted, found new finalizers {sorted(added)!r}",
                    }
                ],
            )
    return new


def admit(
    rtype: ResourceType,
    new: dict[str, Any],
    old: dict[str, Any] | None,
    allocate_cluster_ip: Callable[[], str],
) -> dict[str, Any]:
    """Defaults and validation, as admission does before a write is stored; a 422 lists every cause."""
    new = kinds.apply_builtin_defaults(rtype, new, old, allocate_cluster_ip)
    causes = kinds.validate_builtin(rtype, new, old)
    if rtype.schema is not None:
        new, schema_causes = kinds.apply_schema(rtype, new)
        causes.extend(schema_causes)
    if causes:
        raise errors.invalid(rtype.kind, rtype.group, (new.get("metadata") or {}).get("name", ""), causes)
    return new


def spec_changed(rtype: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether anything outside metadata (and status, for kinds that have it) changed: a new generation."""
    ignored = {"metadata", "status"} if rtype.has_status else {"metadata"}
    ignored |= {"apiVersion", "kind"}
    old_rest = {k: v for k, v in old.items() if k not in ignored}
    new_rest = {k: v for k, v in new.items() if k not in ignored}
    return old_rest != new_rest


def shallow_copy_with_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` whose top level and metadata may be changed without touching ``obj``."""
    new = dict(obj)
    new["metadata"] = dict(obj.get("metadata") or {})
    return new
