"""Creating manifests on an API server the way ``kubectl create -f`` does, through the controller's client.

The demo and the benchmarks set up a cluster as a person would: CRDs, then
MetricTemplates, a Gateway, Deployments, routes and Canaries, each sent to
the API server over HTTP. This maps each document's apiVersion and kind to
the REST resource that serves it, creates the namespaces the documents need,
and waits a moment for a kind a just-created CRD is about to serve (a real
API server takes a little while to establish one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

from canaryd.adapters.kube import (
    CANARIES,
    DEPLOYMENTS,
    EVENTS,
    GRPC_ROUTES,
    HTTP_ROUTES,
    LEASES,
    METRIC_TEMPLATES,
    SECRETS,
    SERVICES,
    ApiError,
    KubeClient,
    Resource,
)
from canaryd.sandbox.sim.cluster_view import GATEWAY_CLASSES, GATEWAYS, NAMESPACES, REFERENCE_GRANTS

CUSTOM_RESOURCE_DEFINITIONS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False
)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
KNOWN_RESOURCES: tuple[Resource, ...] = (
    CUSTOM_RESOURCE_DEFINITIONS,
    NAMESPACES,
    CONFIG_MAPS,
    SECRETS,
    SERVICES,
    EVENTS,
    LEASES,
    DEPLOYMENTS,
    GATEWAY_CLASSES,
    GATEWAYS,
    HTTP_ROUTES,
    GRPC_ROUTES,
    REFERENCE_GRANTS,
    CANARIES,
    METRIC_TEMPLATES,
)
_BY_KIND = {(r.group, r.kind): r for r in KNOWN_RESOURCES}
#: How long a create waits for the kind of a just-created CRD to be served.
ESTABLISH_SECONDS = 10.0


def resource_for(document: Mapping[str, Any]) -> Resource:
    """The REST resource of a manifest (ValueError for a kind this module does not know)."""
    api_version = str(document.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    known = _BY_KIND.get((group, str(document.get("kind") or "")))
    if known is None:
        raise ValueError(f"no REST resource known for {api_version} {document.get('kind')}")
    return (
        known
        if known.version == version
        else Resource(group, version, known.plural, known.kind, known.namespaced)
    )


async def ensure_namespace(client: KubeClient, name: str) -> None:
    """Create a namespace unless it exists."""
    try:
        await client.create(
            NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
    except ApiError as error:
        if not error.already_exists:
            raise


async def create_all(
    client: KubeClient, documents: Iterable[Mapping[str, Any]], *, namespace: str | None = None
) -> list[dict[str, Any]]:
    """Create every document in order (``namespace`` for those that name none); returns what was created.

    The namespaces they live in are created first when missing.
    """
    created: list[dict[str, Any]] = []
    namespaces: set[str] = set()
    for document in documents:
        resource = resource_for(document)
        target = ""
        if resource.namespaced:
            target = str((document.get("metadata") or {}).get("namespace") or namespace or "default")
            if target not in namespaces:
                await ensure_namespace(client, target)
                namespaces.add(target)
        elif resource == NAMESPACES:
            namespaces.add(str((document.get("metadata") or {}).get("name") or ""))
        metadata = dict(document.get("metadata") or {})
        if target:
            metadata["namespace"] = target
        body = {**document, "metadata": metadata}
        created.append(await _create(client, resource, target, body))
    return created


async def _create(
    client: KubeClient, resource: Resource, namespace: str, body: dict[str, Any]
) -> dict[str, Any]:
    deadline = time.monotonic() + ESTABLISH_SECONDS
    while True:
        try:
            return await client.create(resource, namespace, body)
        except ApiError as error:
            # 404 without a name: the kind is not served yet (its CRD is being established).
            not_served = error.not_found and not (isinstance(error.body, dict) and error.body.get("details"))
            if not not_served or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
