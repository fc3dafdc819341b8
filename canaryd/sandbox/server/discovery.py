"""API discovery documents: how kubectl and client libraries learn what the sandbox serves.

Served in both forms kubectl 1.32 understands: the aggregated form
(`apidiscovery.k8s.io/v2` APIGroupDiscoveryList, one request for /api and one
for /apis) when the Accept header asks for it, and the legacy per-group-version
documents otherwise. CRDs appear as soon as they are created.
"""

from __future__ import annotations

from typing import Any

from canaryd.sandbox.server.resources import ResourceRegistry, ResourceType

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "canaryd-sandbox",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_SUBRESOURCE_VERBS = ["get", "patch", "update"]


def wants_aggregated(accept: str) -> bool:
    """True when the Accept header lists apidiscovery.k8s.io v2 (which we then answer with)."""
    for part in accept.split(","):
        params = {
            p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip() for p in part.split(";")[1:] if "=" in p
        }
        if (
            params.get("g") == "apidiscovery.k8s.io"
            and params.get("v") == "v2"
            and params.get("as") == "APIGroupDiscoveryList"
        ):
            return True
    return False


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_entry(registry: ResourceRegistry, group: str, versions: list[str]) -> dict[str, Any]:
    preferred = versions[0]
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{preferred}", "version": preferred},
    }


def api_group_list(registry: ResourceRegistry) -> dict[str, Any]:
    groups = [
        _group_entry(registry, group, versions)
        for group, versions in sorted(registry.groups().items())
        if group
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: ResourceRegistry, group: str) -> dict[str, Any] | None:
    versions = registry.groups().get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(registry, group, versions)}


def _resource_entries(resource_type: ResourceType) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {
        "name": resource_type.plural,
        "singularName": resource_type.singular,
        "namespaced": resource_type.namespaced,
        "kind": resource_type.kind,
        "verbs": resource_type.verbs,
    }
    if resource_type.short_names:
        entry["shortNames"] = list(resource_type.short_names)
    if resource_type.categories:
        entry["categories"] = list(resource_type.categories)
    entries = [entry]
    if resource_type.has_status:
        entries.append(
            {
                "name": f"{resource_type.plural}/status",
                "singularName": "",
                "namespaced": resource_type.namespaced,
                "kind": resource_type.kind,
                "verbs": _SUBRESOURCE_VERBS,
            }
        )
    if resource_type.has_scale:
        entries.append(
            {
                "name": f"{resource_type.plural}/scale",
                "singularName": "",
                "namespaced": resource_type.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": _SUBRESOURCE_VERBS,
            }
        )
    return entries


def api_resource_list(registry: ResourceRegistry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for resource_type in sorted(types, key=lambda t: t.plural):
        resources.extend(_resource_entries(resource_type))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _aggregated_resource(resource_type: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource_type.plural,
        "responseKind": {
            "group": resource_type.group,
            "version": resource_type.version,
            "kind": resource_type.kind,
        },
        "scope": "Namespaced" if resource_type.namespaced else "Cluster",
        "singularResource": resource_type.singular,
        "verbs": resource_type.verbs,
    }
    if resource_type.short_names:
        entry["shortNames"] = list(resource_type.short_names)
    if resource_type.categories:
        entry["categories"] = list(resource_type.categories)
    subresources = []
    if resource_type.has_status:
        subresources.append(
            {
                "subresource": "status",
                "responseKind": dict(entry["responseKind"]),
                "verbs": _SUBRESOURCE_VERBS,
            }
        )
    if resource_type.has_scale:
        subresources.append(
            {
                "subresource": "scale",
                "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                "verbs": _SUBRESOURCE_VERBS,
            }
        )
    if subresources:
        entry["subresources"] = subresources
    return entry


def aggregated(registry: ResourceRegistry, *, core: bool) -> dict[str, Any]:
    """APIGroupDiscoveryList for /api (core=True) or /apis."""
    items = []
    for group, versions in sorted(registry.groups().items()):
        if (group == "") != core:
            continue
        items.append(
            {
                "metadata": {"name": group} if group else {},
                "versions": [
                    {
                        "version": version,
                        "resources": [
                            _aggregated_resource(t)
                            for t in sorted(registry.in_group_version(group, version), key=lambda t: t.plural)
                        ],
                        "freshness": "Current",
                    }
                    for version in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_v3_root(registry: ResourceRegistry) -> dict[str, Any]:
    """/openapi/v3: one entry per served group/version, as kube-apiserver lists them."""
    paths = {}
    for group, versions in registry.groups().items():
        for version in versions:
            gv_path = _gv_path(group, version)
            paths[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}"}
    return {"paths": paths}


_OPENAPI_QUERY_PARAMETERS = ("fieldValidation", "fieldManager", "dryRun")


def openapi_v3_group_version(registry: ResourceRegistry, group: str, version: str) -> dict[str, Any] | None:
    """A minimal OpenAPI v3 document for one group/version: its paths and write operations.

    It carries no schemas. kubectl reads it to learn that the server validates fields itself
    (the `fieldValidation` parameter on PATCH), so `kubectl create/apply` work without
    `--validate=false`; with no strategic-merge-patch content type listed, client-side apply
    computes its patches from kubectl's built-in types as it does for older servers.
    """
    types = registry.in_group_version(group, version)
    if not types:
        return None
    parameters = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in _OPENAPI_QUERY_PARAMETERS
    ]
    body_types = (
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    )
    paths: dict[str, Any] = {}
    for resource_type in types:
        gvk = {"group": group, "version": version, "kind": resource_type.kind}
        prefix = f"/{_gv_path(group, version)}"
        if resource_type.namespaced:
            prefix += "/namespaces/{namespace}"
        collection = f"{prefix}/{resource_type.plural}"

        def operation(action: str, gvk: dict[str, str] = gvk) -> dict[str, Any]:
            return {
                "operationId": action,
                "parameters": parameters,
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            }

        paths[collection] = {
            "get": operation("list"),
            "post": {
                **operation("post"),
                "requestBody": {"content": {"*/*": {"schema": {"type": "object"}}}},
            },
        }
        patch = operation("patch")
        patch["requestBody"] = {"content": {t: {"schema": {"type": "object"}} for t in body_types}}
        paths[f"{collection}/{{name}}"] = {
            "get": operation("get"),
            "put": operation("put"),
            "patch": patch,
            "delete": operation("delete"),
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }
