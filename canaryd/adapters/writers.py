"""Every write canaryd makes to the cluster, each in the safest form the API offers.

- Route weights: a JSON Patch whose ``test`` operations pin the route's
  resourceVersion and each backendRef name, so a concurrent edit makes the
  write fail (409/422) instead of being lost. The caller re-reads and decides
  again.
- Status: a merge patch on the ``/status`` subresource holding only what
  changed; ``requestedAction`` (the person's request) is never written.
- The primary Deployment and the two Services: created with ownerReferences to
  the Canary; an existing one is patched, never replaced.
- Releasing them when the Canary is deleted: a JSON Patch that removes the
  Canary's ownerReference, guarded by a ``test`` on that entry's uid.
- Scale: a merge patch of ``spec.replicas`` (and, scaling up from 0, the pods' role label).
- The primary's copy of the target's HPA: created owned by the Canary, its
  spec replaced with a JSON Patch when it drifts, deleted when its source goes.
- Finalizer: a JSON Patch with a ``test`` on resourceVersion.
- Events: created through core v1 with both generations of fields: eventTime,
  reportingComponent, reportingInstance and action (what events.k8s.io/v1
  readers use) and firstTimestamp, lastTimestamp, count and source (what
  ``kubectl get events --sort-by=.lastTimestamp`` and other core v1 readers
  sort and display by). events.k8s.io/v1 refuses the second set on create;
  a kube-apiserver shows them there as deprecatedFirstTimestamp, ... .

Each write's answer is put back into the caches, so the next decision sees it
without a read.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from canaryd.adapters.informer import MultiInformer
from canaryd.adapters.kube import (
    CANARIES,
    CORE_EVENTS,
    DEPLOYMENTS,
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    KubeClient,
    Resource,
)
from canaryd.api.constants import FINALIZER
from canaryd.api.timestamps import format_rfc3339

log = structlog.get_logger("canaryd.writers")

REPORTING_CONTROLLER = "canaryd.io/controller"
_event_counter = itertools.count()


def status_merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns status ``old`` into ``new``; keys gone from ``new`` become null.

    ``requestedAction`` belongs to whoever asked for an action, so it is never
    part of the patch, whatever ``new`` says.
    """
    patch: dict[str, Any] = {}
    for key in set(old) | set(new):
        if key == "requestedAction":
            continue
        if key not in new:
            patch[key] = None
        elif old.get(key) != new[key]:
            patch[key] = new[key]
    return patch


class Writer:
    """Writes to the cluster on behalf of one controller instance."""

    def __init__(self, client: KubeClient, caches: dict[str, MultiInformer], identity: str) -> None:
        self.client = client
        self.caches = caches
        self.identity = identity

    def _remember(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        cache = self.caches.get(resource.plural)
        if cache is not None and isinstance(obj, dict) and obj.get("metadata"):
            obj.setdefault("apiVersion", resource.api_version)
            obj.setdefault("kind", resource.kind)
            cache.store(obj)
        return obj

    async def patch_route(
        self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply a guarded weight patch; ApiError with ``conflict`` set means the route changed meanwhile."""
        result = await self.client.patch(resource, namespace, name, ops, content_type=JSON_PATCH)
        return self._remember(resource, result)

    async def refresh(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """Read one object from the server (after a conflict) and put it in the cache."""
        try:
            obj = await self.client.get(resource, namespace, name)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        return self._remember(resource, obj)

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        if not patch:
            return None
        result = await self.client.patch(CANARIES, namespace, name, {"status": patch}, subresource="status")
        return self._remember(CANARIES, result)

    async def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object; ApiError (409 when it exists) otherwise."""
        created = await self.client.create(resource, body["metadata"]["namespace"], body)
        return self._remember(resource, created)

    async def ensure(
        self, resource: Resource, body: dict[str, Any], repair: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create an object, or (when it exists) merge-patch it with ``repair`` if one is given."""
        meta = body["metadata"]
        try:
            return self._remember(resource, await self.client.create(resource, meta["namespace"], body))
        except ApiError as exc:
            if exc.status != 409:
                raise
        if repair is None:
            existing = await self.refresh(resource, meta["namespace"], meta["name"])
            return existing or body
        result = await self.client.patch(
            resource, meta["namespace"], meta["name"], repair, content_type=MERGE_PATCH
        )
        return self._remember(resource, result)

    async def patch_deployment(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        result = await self.client.patch(DEPLOYMENTS, namespace, name, ops, content_type=JSON_PATCH)
        return self._remember(DEPLOYMENTS, result)

    async def scale(
        self, namespace: str, name: str, replicas: int, patch: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Scale a Deployment with a merge patch (``patch``, or just ``spec.replicas``)."""
        body = patch if patch is not None else {"spec": {"replicas": replicas}}
        result = await self.client.patch(DEPLOYMENTS, namespace, name, body)
        return self._remember(DEPLOYMENTS, result)

    async def json_patch(
        self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        result = await self.client.patch(resource, namespace, name, ops, content_type=JSON_PATCH)
        return self._remember(resource, result)

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        """Delete an object; one that is gone already counts as deleted."""
        try:
            await self.client.delete(resource, namespace, name)
        except ApiError as exc:
            if not exc.not_found:
                raise

    async def remove_owner_reference(
        self, resource: Resource, obj: dict[str, Any], owner_uid: str
    ) -> dict[str, Any] | None:
        """Remove the ownerReference to ``owner_uid`` from ``obj``; other owners and fields are kept.

        The patch names the entry by index and pins it with a ``test`` on its
        uid, so an entry that moved meanwhile is never removed by mistake: the
        object is read again and the patch built once more. Returns the object
        as written, or None when it no longer exists.
        """
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            return await self._remove_owner_reference(resource, obj, owner_uid)
        except ApiError as exc:
            if exc.not_found:
                return None
            if not exc.conflict:
                raise
        fresh = await self.refresh(resource, namespace, name)
        if fresh is None:
            return None
        try:
            return await self._remove_owner_reference(resource, fresh, owner_uid)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def _remove_owner_reference(
        self, resource: Resource, obj: dict[str, Any], owner_uid: str
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        uids = [ref.get("uid") if isinstance(ref, dict) else None for ref in refs]
        if owner_uid not in uids:
            return obj
        index = uids.index(owner_uid)
        ops = [
            {"op": "test", "path": f"/metadata/ownerReferences/{index}/uid", "value": owner_uid},
            {"op": "remove", "path": f"/metadata/ownerReferences/{index}"},
        ]
        result = await self.client.patch(
            resource, meta["namespace"], meta["name"], ops, content_type=JSON_PATCH
        )
        return self._remember(resource, result)

    async def add_finalizer(self, canary: dict[str, Any]) -> dict[str, Any]:
        meta = canary["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return canary
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        ]
        if "finalizers" in meta:
            ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
        else:
            ops.append({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
        result = await self.client.patch(
            CANARIES, meta["namespace"], meta["name"], ops, content_type=JSON_PATCH
        )
        return self._remember(CANARIES, result)

    async def remove_finalizer(self, canary: dict[str, Any]) -> dict[str, Any] | None:
        meta = canary["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return canary
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {
                "op": "replace",
                "path": "/metadata/finalizers",
                "value": [f for f in finalizers if f != FINALIZER],
            },
        ]
        try:
            result = await self.client.patch(
                CANARIES, meta["namespace"], meta["name"], ops, content_type=JSON_PATCH
            )
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        return self._remember(CANARIES, result) if result and result.get("metadata") else None

    async def record_event(
        self, regarding: dict[str, Any], type_: str, reason: str, note: str, action: str = "Reconcile"
    ) -> None:
        """Create an Event about the Canary; a failure is logged, never raised."""
        meta = regarding.get("metadata") or {}
        namespace = str(meta.get("namespace"))
        try:
            await self.client.create(
                CORE_EVENTS,
                namespace,
                event_body(regarding, type_, reason, note, action, self.identity, datetime.now(UTC)),
            )
        except ApiError as exc:
            log.warning("recording an event failed", reason=reason, status=exc.status, error=exc.message)


def event_body(
    regarding: dict[str, Any], type_: str, reason: str, note: str, action: str, identity: str, now: datetime
) -> dict[str, Any]:
    """A core v1 Event that readers of either Event API sort, count and attribute correctly."""
    meta = regarding.get("metadata") or {}
    seconds = format_rfc3339(now, "seconds")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name')}.{time.time_ns():x}{next(_event_counter) % 1000:03d}",
            "namespace": meta.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": regarding.get("apiVersion"),
            "kind": regarding.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason[:128],
        "message": note[:1024],
        "eventTime": format_rfc3339(now, "microseconds"),
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": identity[:128],
        "action": (action or "Reconcile")[:128],
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "count": 1,
        "source": {"component": REPORTING_CONTROLLER},
    }
