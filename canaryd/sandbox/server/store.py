"""The sandbox cluster's object store, and the Python API the simulators use.

Everything the HTTP server does goes through this store, and the simulators
(Deployment status, Gateway implementation, traffic) running in the same
process call it directly, so both see one consistent cluster: one global
resourceVersion counter, uids, generation, finalizers, owner-reference
garbage collection and a bounded event history for watch resumption.

Python API (all methods are synchronous except iterating a watch; call them
from the event loop's thread). `resource` is any name kubectl accepts:
"deployments", "deploy", "Deployment", "httproutes.gateway.networking.k8s.io",
"events.events.k8s.io" (plain "events" is core/v1), or a `ResourceType`.
Objects passed in are never kept; objects returned are deep copies you may
mutate. Failures raise `canaryd.sandbox.server.errors.ApiError` with `.code`
(404, 409, 422, ...), `.reason` and `.status()` (the Status body).

    store = ObjectStore()                      # or SandboxApiServer().store
    store.create("namespaces", {"metadata": {"name": "payments"}})
    dep = store.create("deployments", {...}, namespace="payments")
    dep = store.get("deployments", "payments-api", namespace="payments")
    items, rv = store.list("deployments", namespace=None, label_selector="app=x",
                           field_selector="metadata.name=y")           # rv: list resourceVersion
    store.update("deployments", obj, namespace=None)                   # PUT; 409 if obj's
        # metadata.resourceVersion is stale; absent = unconditional for built-in kinds, but 422 for
        # custom resources (CRD kinds and the Gateway API kinds), as on a real cluster; status not written
    store.update_status("deployments", obj)                            # PUT /status: only status
    store.patch("deployments", name, patch, namespace="payments",
                patch_type="merge" | "json" | "strategic" | "apply", subresource=None | "status")
    store.delete("deployments", name, namespace="payments",
                 propagation_policy="Background" | "Foreground" | "Orphan")
        # returns the object; with finalizers it only gets deletionTimestamp
    store.ensure_namespace("payments")                                 # create if missing
    store.resource_version                                            # current global rv (str)
    store.count("deployments"); store.open_watch_count(); store.close_watches("deployments")
    store.get_ref(...), store.list_refs(...), store.create_ref(...), store.patch_ref(...)
        # the same without copying: stored snapshots, read-only (for hot paths)

    async with store.watch("httproutes", namespace=None, resource_version=None,
                           label_selector=None, field_selector=None) as watch:
        async for event in watch:           # WatchEvent(type="ADDED"|"MODIFIED"|"DELETED", object=dict)
            ...
        # resource_version None or "0": first an ADDED per existing object, then live changes;
        # "N": every change after N (ApiError 410 if N is older than the kept history).

    unsubscribe = store.subscribe(callback)   # callback(StoreEvent) synchronously on every change
        # of any resource: StoreEvent(type, resource_version:int, storage_key=(group, plural),
        # namespace, obj, old) -- obj/old are the stored snapshots: read, never mutate.

Behaviour worth knowing: a write that changes nothing returns the stored
object without a new resourceVersion or event (like the real server);
generation is bumped when anything outside metadata and status changes;
objects must be created in an existing namespace ("default", "kube-system",
"kube-public" and "kube-node-lease" exist) unless `require_namespaces=False`;
writes through `/status` (update_status, subresource="status") change only
status and writes to the main resource never change status; strategic merge
patch is refused (415) for custom resources; built-in kinds get the real
server's defaults and validation (kinds.py), CRD kinds their schema's
(openapi.py); events.k8s.io Events and core Events are one object in two
shapes (conversion.py); deleting an owner deletes dependents whose owners are
all gone, deleting a namespace deletes its contents, deleting a CRD its objects.
"""

from __future__ import annotations

import builtins
import logging
import random
import re
import string
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from canaryd.sandbox.labels import labels_match
from canaryd.sandbox.server import conversion, errors, kinds
from canaryd.sandbox.server.errors import ApiError
from canaryd.sandbox.server.patching import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
    clone,
)
from canaryd.sandbox.server.resources import ResourceRegistry, ResourceType, types_from_crd
from canaryd.sandbox.server.selectors import fields_match, parse_field_selector, parse_label_selector
from canaryd.sandbox.server.watch import ADDED, DELETED, MODIFIED, StoreEvent, Watch

log = logging.getLogger(__name__)

_PATCH_TYPE_ALIASES = {
    "merge": MERGE_PATCH,
    "json": JSON_PATCH,
    "strategic": STRATEGIC_MERGE_PATCH,
    "apply": APPLY_PATCH,
}
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

Key = tuple[str, str]  # (namespace or "", name)


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectStore:
    """All objects of the sandbox cluster. See the module docstring for the API."""

    def __init__(
        self,
        *,
        history_limit: int = 10_000,
        require_namespaces: bool = True,
        clock: Callable[[], datetime] | None = None,
        registry: ResourceRegistry | None = None,
    ) -> None:
        self.registry = registry or ResourceRegistry()
        self.require_namespaces = require_namespaces
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rv = 0
        self._objects: dict[tuple[str, str], dict[Key, dict[str, Any]]] = {}
        self._uids: dict[str, tuple[tuple[str, str], Key]] = {}
        self._history: deque[StoreEvent] = deque(maxlen=max(1, history_limit))
        self._compacted_rv = 0
        self._watches: dict[tuple[str, str], set[Watch]] = {}
        self._subscribers: list[Callable[[StoreEvent], None]] = []
        self._random = random.Random()
        self._cluster_ip_counter = 10
        for name in DEFAULT_NAMESPACES:
            self.create("namespaces", {"metadata": {"name": name}})

    # ------------------------------------------------------------------ lookup helpers

    def resource_type(self, resource: str | ResourceType) -> ResourceType:
        if isinstance(resource, ResourceType):
            return resource
        try:
            return self.registry.resolve(resource)
        except KeyError:
            raise errors.ApiError(
                404, "NotFound", f'the server doesn\'t have a resource type "{resource}"'
            ) from None

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    @property
    def oldest_resource_version(self) -> int:
        """Watches may resume from this resourceVersion or any later one (older ones get 410 Gone)."""
        return self._compacted_rv

    def now(self) -> datetime:
        return self._clock()

    def reseed(self, seed: int) -> None:
        """Make generated names repeatable."""
        self._random.seed(seed)

    def _bucket(self, rtype: ResourceType) -> dict[Key, dict[str, Any]]:
        return self._objects.setdefault(rtype.storage_key, {})

    def _namespace_for(self, rtype: ResourceType, namespace: str | None, obj: dict[str, Any] | None) -> str:
        if not rtype.namespaced:
            return ""
        from_object = ((obj or {}).get("metadata") or {}).get("namespace")
        if namespace and from_object and namespace != from_object:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        return namespace or from_object or "default"

    def _stored(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        key = (namespace or "" if rtype.namespaced else "", name)
        obj = self._bucket(rtype).get(key)
        if obj is None:
            raise errors.not_found(rtype.plural, rtype.group, name)
        return obj

    def _versioned(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The stored object as seen through `rtype` (its apiVersion, and converted fields for events)."""
        return conversion.to_view(rtype, obj)

    def _validate_view(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """Checks that belong to the version written through (events.k8s.io/v1 is strict about Events)."""
        if rtype.group == "events.k8s.io" and rtype.kind == "Event":
            causes = kinds.validate_event_v1(obj)
            if causes:
                name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get(
                    "generateName", ""
                )
                raise errors.invalid(rtype.kind, rtype.group, name, causes)

    def _storage_type(self, rtype: ResourceType) -> ResourceType:
        """The type whose shape objects of `rtype` are stored in (itself, except events.k8s.io Events)."""
        if not conversion.needs_conversion(rtype):
            return rtype
        group = rtype.storage_key[0]
        stored = self.registry.get(group, self.registry.preferred_version(group), rtype.plural)
        assert stored is not None
        return stored

    # ------------------------------------------------------------------ reads

    def get_ref(
        self, resource: str | ResourceType, name: str, namespace: str | None = None
    ) -> dict[str, Any]:
        """The stored object itself (do not mutate): for the HTTP layer."""
        rtype = self.resource_type(resource)
        return self._versioned(rtype, self._stored(rtype, namespace, name))

    def get(self, resource: str | ResourceType, name: str, namespace: str | None = None) -> dict[str, Any]:
        return clone(self.get_ref(resource, name, namespace))

    def list_refs(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Stored objects (do not mutate), sorted by namespace and name, and the list resourceVersion."""
        rtype = self.resource_type(resource)
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, self.field_allowed(rtype))
        items = []
        for (ns, _name), stored in sorted(self._bucket(rtype).items()):
            if namespace and rtype.namespaced and ns != namespace:
                continue
            if labels and not labels_match(labels, (stored.get("metadata") or {}).get("labels")):
                continue
            obj = self._versioned(rtype, stored)
            if fields and not fields_match(fields, obj):
                continue
            items.append(obj)
        return items, self.resource_version

    def list(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        items, rv = self.list_refs(
            resource, namespace, label_selector=label_selector, field_selector=field_selector
        )
        return clone(items), rv

    def count(self, resource: str | ResourceType) -> int:
        return len(self._bucket(self.resource_type(resource)))

    def field_allowed(self, rtype: ResourceType) -> Callable[[str], bool]:
        allowed = {"metadata.name", "metadata.namespace", *rtype.selectable_fields}
        if rtype.kind == "Namespace":
            allowed.add("status.phase")
        if rtype.kind == "Secret":
            allowed.add("type")
        return allowed.__contains__

    # ------------------------------------------------------------------ writes

    def create(
        self,
        resource: str | ResourceType,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        return clone(self.create_ref(resource, obj, namespace, dry_run=dry_run))

    def create_ref(
        self,
        resource: str | ResourceType,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        rtype = self.resource_type(resource)
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        storage_type = self._storage_type(rtype)
        if storage_type is not rtype:
            self._check_kind(rtype, obj)
            self._validate_view(rtype, obj)
            stored_shape = conversion.to_storage(rtype, obj, storage_type)
            created = self.create_ref(storage_type, stored_shape, namespace, dry_run=dry_run)
            return self._versioned(rtype, created)
        new = clone(obj)
        metadata = new.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        new["metadata"] = metadata
        ns = self._namespace_for(rtype, namespace, new)
        self._check_kind(rtype, new)
        name = metadata.get("name")
        if not name:
            prefix = metadata.get("generateName")
            if not prefix:
                raise errors.invalid(
                    rtype.kind,
                    rtype.group,
                    "",
                    [
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value: name or generateName is required",
                            "field": "metadata.name",
                        }
                    ],
                )
            name = prefix + "".join(self._random.choices(string.ascii_lowercase + string.digits, k=5))
        self._validate_name(rtype, name)
        if rtype.namespaced:
            self._check_namespace(ns)
        if (ns, name) in self._bucket(rtype):
            raise errors.already_exists(rtype.plural, rtype.group, name)
        metadata["name"] = name
        if rtype.namespaced:
            metadata["namespace"] = ns
        else:
            metadata.pop("namespace", None)
        for transient in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            metadata.pop(transient, None)
        metadata["uid"] = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
        metadata["creationTimestamp"] = format_timestamp(self.now())
        if rtype.tracks_generation:
            metadata["generation"] = 1
        else:
            metadata.pop("generation", None)
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        if rtype.has_status:
            new.pop("status", None)
        new = self._admit(rtype, new, None)
        if dry_run:
            return new
        self._commit(rtype, ADDED, new, None)
        if rtype.kind == "CustomResourceDefinition" and rtype.group == "apiextensions.k8s.io":
            self._register_crd(new)
        return self._versioned(rtype, self._stored(rtype, ns, name))

    def update(
        self,
        resource: str | ResourceType,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        require_resource_version: bool = False,
    ) -> dict[str, Any]:
        return clone(
            self.update_ref(
                resource, obj, namespace, dry_run=dry_run, require_resource_version=require_resource_version
            )
        )

    def update_status(
        self,
        resource: str | ResourceType,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        return clone(self.update_ref(resource, obj, namespace, subresource="status", dry_run=dry_run))

    def update_ref(
        self,
        resource: str | ResourceType,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        name: str | None = None,
        subresource: str | None = None,
        dry_run: bool = False,
        require_resource_version: bool = False,
    ) -> dict[str, Any]:
        """PUT (main resource or `status`). `name` is the URL's name, checked against the body's."""
        rtype = self.resource_type(resource)
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        metadata: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
        body_name = metadata.get("name")
        if name is not None and body_name and body_name != name:
            raise errors.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        name = name or body_name
        if not name:
            raise errors.bad_request("name is required for an update")
        ns = self._namespace_for(rtype, namespace, obj)
        self._check_kind(rtype, obj)
        storage_type = self._storage_type(rtype)
        if storage_type is not rtype:
            if subresource is None:
                self._validate_view(rtype, obj)
            updated = self.update_ref(
                storage_type,
                conversion.to_storage(rtype, obj, storage_type),
                ns or None,
                name=name,
                subresource=subresource,
                dry_run=dry_run,
                require_resource_version=require_resource_version,
            )
            return self._versioned(rtype, updated)
        old = self._stored(rtype, ns, name)
        rv = metadata.get("resourceVersion")
        if rv in (None, ""):
            # Custom resources refuse unconditional updates; built-in kinds accept them.
            if require_resource_version or (rtype.is_custom and subresource is None):
                raise errors.invalid(
                    rtype.kind,
                    rtype.group,
                    name,
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "message": "Invalid value: 0x0: must be specified for an update",
                            "field": "metadata.resourceVersion",
                        }
                    ],
                )
        elif str(rv) != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype.plural, rtype.group, name)
        if subresource is not None and subresource != "status":
            raise errors.path_not_found()
        if subresource == "status" and not rtype.has_status:
            raise errors.path_not_found()
        new = self._merge_for_update(rtype, old, obj, status_only=subresource == "status")
        return self._write_update(rtype, old, new, dry_run=dry_run)

    def patch(
        self,
        resource: str | ResourceType,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: str = "merge",
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        return clone(
            self.patch_ref(
                resource,
                name,
                patch,
                namespace,
                patch_type=patch_type,
                subresource=subresource,
                dry_run=dry_run,
            )
        )

    def patch_ref(
        self,
        resource: str | ResourceType,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: str = "merge",
        subresource: str | None = None,
        dry_run: bool = False,
        force_conflict_check: bool = True,
    ) -> dict[str, Any]:
        rtype = self.resource_type(resource)
        content_type = _PATCH_TYPE_ALIASES.get(patch_type, patch_type)
        if content_type == STRATEGIC_MERGE_PATCH and not rtype.strategic_merge:
            raise errors.ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}",
            )
        if subresource is not None and (subresource != "status" or not rtype.has_status):
            raise errors.path_not_found()
        ns = self._namespace_for(rtype, namespace, None) if rtype.namespaced else ""
        try:
            old = self._stored(rtype, ns, name)
        except ApiError:
            if content_type == APPLY_PATCH and subresource is None and isinstance(patch, dict):
                body = clone(patch)
                body.setdefault("metadata", {})["name"] = name
                return self.create_ref(rtype, body, ns or None, dry_run=dry_run)
            raise
        current = self._versioned(rtype, old)
        patched = apply_patch(current, patch, content_type)
        patched_meta: dict[str, Any] = patched.get("metadata") or {}
        if not isinstance(patched_meta, dict):
            patched_meta = {}
        patched_rv = patched_meta.get("resourceVersion")
        if patched_rv not in (None, "") and str(patched_rv) != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype.plural, rtype.group, name)
        if patched_meta.get("name") not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({patched_meta.get('name')}) does not match "
                f"the name on the URL ({name})"
            )
        storage_type = self._storage_type(rtype)
        if storage_type is not rtype:
            self._validate_view(rtype, patched)
            patched = conversion.to_storage(rtype, patched, storage_type)
        new = self._merge_for_update(storage_type, old, patched, status_only=subresource == "status")
        return self._versioned(rtype, self._write_update(storage_type, old, new, dry_run=dry_run))

    def delete(
        self,
        resource: str | ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        return clone(
            self.delete_ref(
                resource,
                name,
                namespace,
                propagation_policy=propagation_policy,
                preconditions=preconditions,
                dry_run=dry_run,
            )
        )

    def delete_ref(
        self,
        resource: str | ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        rtype = self.resource_type(resource)
        storage_type = self._storage_type(rtype)
        if storage_type is not rtype:
            deleted = self.delete_ref(
                storage_type,
                name,
                namespace,
                propagation_policy=propagation_policy,
                preconditions=preconditions,
                dry_run=dry_run,
            )
            return self._versioned(rtype, deleted)
        ns = self._namespace_for(rtype, namespace, None) if rtype.namespaced else ""
        old = self._stored(rtype, ns, name)
        metadata = old["metadata"]
        if preconditions:
            if preconditions.get("uid") and preconditions["uid"] != metadata.get("uid"):
                raise errors.conflict(
                    rtype.plural,
                    rtype.group,
                    name,
                    f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                    f"UID in object meta: {metadata.get('uid')}",
                )
            if preconditions.get("resourceVersion") and str(preconditions["resourceVersion"]) != metadata.get(
                "resourceVersion"
            ):
                raise errors.conflict(
                    rtype.plural,
                    rtype.group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{preconditions['resourceVersion']}, ResourceVersion in object meta: "
                    f"{metadata.get('resourceVersion')}",
                )
        if dry_run:
            return self._versioned(rtype, old)
        policy = propagation_policy or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise errors.invalid(
                "DeleteOptions",
                "",
                "",
                [
                    {
                        "reason": "FieldValueNotSupported",
                        "field": "propagationPolicy",
                        "message": f'Unsupported value: "{policy}": supported values: '
                        '"Foreground", "Background", "Orphan"',
                    }
                ],
            )
        uid = metadata.get("uid", "")
        if policy == "Orphan":
            self._orphan_dependents(uid)
        elif policy == "Foreground":
            for dep_type, dep in self._dependents(uid):
                self._delete_if_exists(dep_type, dep, "Foreground")
        if rtype.kind == "Namespace" and rtype.group == "":
            return self._delete_namespace(rtype, old)
        if metadata.get("finalizers"):
            if metadata.get("deletionTimestamp"):
                return self._versioned(rtype, old)
            new = _shallow_copy_with_metadata(old)
            new["metadata"]["deletionTimestamp"] = format_timestamp(self.now())
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if rtype.tracks_generation:
                new["metadata"]["generation"] = int(metadata.get("generation", 1)) + 1
            self._commit(rtype, MODIFIED, new, old)
            return self._versioned(rtype, new)
        return self._remove(rtype, old)

    def ensure_namespace(self, name: str) -> dict[str, Any]:
        try:
            return self.get("namespaces", name)
        except ApiError:
            return self.create("namespaces", {"metadata": {"name": name}})

    # ------------------------------------------------------------------ watches and subscribers

    def watch(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        copy_objects: bool = True,
        send_initial_events: bool | None = None,
    ) -> Watch:
        """Open a watch (see the module docstring). Raises ApiError 410 for a too old resourceVersion."""
        rtype = self.resource_type(resource)
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, self.field_allowed(rtype))
        watch = Watch(
            rtype.storage_key,
            namespace if rtype.namespaced else None,
            labels,
            fields,
            copy_objects=copy_objects,
            on_close=self._forget_watch,
            view=lambda stored: self._versioned(rtype, stored),
        )
        initial = (
            send_initial_events if send_initial_events is not None else resource_version in (None, "", "0")
        )
        if resource_version in (None, "", "0"):
            if initial:
                items, _ = self.list_refs(
                    rtype,
                    namespace if rtype.namespaced else None,
                    label_selector=label_selector,
                    field_selector=field_selector,
                )
                for item in items:
                    watch.put_raw(ADDED, item)
        else:
            try:
                since = int(str(resource_version))
            except ValueError:
                raise errors.bad_request(f"invalid resource version: {resource_version!r}") from None
            if since < self.oldest_resource_version:
                raise errors.gone(f"too old resource version: {since} ({self.oldest_resource_version + 1})")
            for event in self._history:
                if event.resource_version > since and event.storage_key == rtype.storage_key:
                    watch.offer(event)
        self._watches.setdefault(rtype.storage_key, set()).add(watch)
        return watch

    def _forget_watch(self, watch: Watch) -> None:
        if watch.storage_key is not None:
            self._watches.get(watch.storage_key, set()).discard(watch)

    def open_watch_count(self) -> int:
        return sum(len(w) for w in self._watches.values())

    def close_watches(self, resource: str | ResourceType | None = None) -> int:
        """Close open watches (of one resource, or all); returns how many were closed."""
        keys = [self.resource_type(resource).storage_key] if resource is not None else list(self._watches)
        closed = 0
        for key in keys:
            for watch in list(self._watches.get(key, ())):
                watch.close()
                closed += 1
        return closed

    def subscribe(self, callback: Callable[[StoreEvent], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ internals

    def _check_kind(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
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

    def _validate_name(self, rtype: ResourceType, name: str) -> None:
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

    def _check_namespace(self, namespace: str) -> None:
        if not self.require_namespaces:
            return
        ns = self._objects.get(("", "namespaces"), {}).get(("", namespace))
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise errors.ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
                name=namespace,
                kind="namespaces",
            )

    def _merge_for_update(
        self, rtype: ResourceType, old: dict[str, Any], body: dict[str, Any], *, status_only: bool
    ) -> dict[str, Any]:
        old_meta = old["metadata"]
        if status_only:
            new = _shallow_copy_with_metadata(old)
            if "status" in body:
                new["status"] = clone(body["status"])
            else:
                new.pop("status", None)
            return new
        new = clone(body)
        meta: dict[str, Any] = new["metadata"] if isinstance(new.get("metadata"), dict) else {}
        new["metadata"] = meta
        for kept in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "name",
            "namespace",
            "generation",
            "resourceVersion",
        ):
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

    def _write_update(
        self, rtype: ResourceType, old: dict[str, Any], new: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        new = self._admit(rtype, new, old)
        meta = new["metadata"]
        if rtype.tracks_generation and _spec_changed(rtype, old, new):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        comparable_old = {**old, "apiVersion": new.get("apiVersion")}
        if new == comparable_old:
            return self._versioned(rtype, old)
        if dry_run:
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._commit(rtype, MODIFIED, new, old, notify=False)
            return self._remove(rtype, new)
        self._commit(rtype, MODIFIED, new, old)
        if rtype.kind == "CustomResourceDefinition" and rtype.group == "apiextensions.k8s.io":
            self._register_crd(new)
        return self._versioned(rtype, new)

    def _admit(self, rtype: ResourceType, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults and validation, as admission would do before the write is stored."""
        new = kinds.apply_builtin_defaults(rtype, new, old, self)
        causes = kinds.validate_builtin(rtype, new, old)
        if rtype.schema is not None:
            new, schema_causes = kinds.apply_schema(rtype, new)
            causes.extend(schema_causes)
        if causes:
            raise errors.invalid(rtype.kind, rtype.group, (new.get("metadata") or {}).get("name", ""), causes)
        return new

    def allocate_cluster_ip(self) -> str:
        self._cluster_ip_counter += 1
        n = self._cluster_ip_counter
        return f"10.96.{(n // 250) % 250}.{n % 250 + 1}"

    def _commit(
        self,
        rtype: ResourceType,
        event_type: str,
        new: dict[str, Any],
        old: dict[str, Any] | None,
        *,
        notify: bool = True,
    ) -> None:
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        ns = new["metadata"].get("namespace", "") if rtype.namespaced else ""
        key = (ns, new["metadata"]["name"])
        self._bucket(rtype)[key] = new
        self._uids[new["metadata"]["uid"]] = (rtype.storage_key, key)
        if notify:
            self._publish(StoreEvent(event_type, self._rv, rtype.storage_key, ns or None, new, old))

    def _publish(self, event: StoreEvent) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].resource_version
        self._history.append(event)
        for watch in list(self._watches.get(event.storage_key, ())):
            watch.offer(event)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a faulty subscriber must not break writes
                log.exception("store subscriber failed")

    def _remove(self, rtype: ResourceType, current: dict[str, Any]) -> dict[str, Any]:
        meta = current["metadata"]
        ns = meta.get("namespace", "") if rtype.namespaced else ""
        key = (ns, meta["name"])
        self._bucket(rtype).pop(key, None)
        self._uids.pop(meta.get("uid", ""), None)
        self._rv += 1
        final = _shallow_copy_with_metadata(current)
        final["metadata"]["resourceVersion"] = str(self._rv)
        self._publish(StoreEvent(DELETED, self._rv, rtype.storage_key, ns or None, final, current))
        if rtype.kind == "CustomResourceDefinition" and rtype.group == "apiextensions.k8s.io":
            self._unregister_crd(final)
        self._collect_garbage(meta.get("uid", ""))
        if ns:
            self._maybe_finish_namespace(ns)
        return self._versioned(rtype, final)

    def _all_objects(self) -> Iterable[tuple[ResourceType, dict[str, Any]]]:
        by_key: dict[tuple[str, str], ResourceType] = {}
        for known in self.registry.all():
            by_key.setdefault(known.storage_key, known)
        for storage_key, bucket in builtins.list(self._objects.items()):
            rtype = by_key.get(storage_key)
            if rtype is None:
                continue
            for obj in builtins.list(bucket.values()):
                yield rtype, obj

    def _dependents(self, owner_uid: str) -> builtins.list[tuple[ResourceType, dict[str, Any]]]:
        if not owner_uid:
            return []
        return [
            (rtype, obj)
            for rtype, obj in self._all_objects()
            if any(ref.get("uid") == owner_uid for ref in (obj["metadata"].get("ownerReferences") or ()))
        ]

    def _orphan_dependents(self, owner_uid: str) -> None:
        for rtype, obj in self._dependents(owner_uid):
            new = _shallow_copy_with_metadata(obj)
            refs = [r for r in obj["metadata"].get("ownerReferences") or () if r.get("uid") != owner_uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self._commit(rtype, MODIFIED, new, obj)

    def _collect_garbage(self, owner_uid: str) -> None:
        """Delete dependents whose owners are all gone (the garbage collector's background cascade)."""
        for rtype, obj in self._dependents(owner_uid):
            refs = obj["metadata"].get("ownerReferences") or ()
            if all(ref.get("uid") not in self._uids for ref in refs):
                self._delete_if_exists(rtype, obj, "Background")

    def _delete_if_exists(self, rtype: ResourceType, obj: dict[str, Any], policy: str) -> None:
        meta = obj["metadata"]
        try:
            self.delete_ref(rtype, meta["name"], meta.get("namespace"), propagation_policy=policy)
        except ApiError as error:
            if error.code != 404:
                raise

    def _delete_namespace(self, rtype: ResourceType, namespace_obj: dict[str, Any]) -> dict[str, Any]:
        name = namespace_obj["metadata"]["name"]
        if not namespace_obj["metadata"].get("deletionTimestamp"):
            new = _shallow_copy_with_metadata(namespace_obj)
            new["metadata"]["deletionTimestamp"] = format_timestamp(self.now())
            new["status"] = {**(namespace_obj.get("status") or {}), "phase": "Terminating"}
            self._commit(rtype, MODIFIED, new, namespace_obj)
        for other_type, obj in list(self._all_objects()):
            if other_type.namespaced and obj["metadata"].get("namespace") == name:
                self._delete_if_exists(other_type, obj, "Background")
        removed = self._maybe_finish_namespace(name)
        if removed is not None:
            return removed
        return self._versioned(rtype, self._stored(rtype, None, name))

    def _maybe_finish_namespace(self, namespace: str) -> dict[str, Any] | None:
        """Remove a terminating namespace once nothing is left in it; returns the removed namespace."""
        namespaces = self._objects.get(("", "namespaces"), {})
        ns_obj = namespaces.get(("", namespace))
        if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
            return None
        for storage_key, bucket in self._objects.items():
            if storage_key == ("", "namespaces"):
                continue
            if any(key[0] == namespace for key in bucket):
                return None
        rtype = self.registry.get("", "v1", "namespaces")
        assert rtype is not None
        return self._remove(rtype, ns_obj)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        name = crd["metadata"]["name"]
        self.registry.remove_crd(name)
        for rtype in types_from_crd(crd):
            self.registry.add(rtype)

    def _unregister_crd(self, crd: dict[str, Any]) -> None:
        removed = self.registry.remove_crd(crd["metadata"]["name"])
        for rtype in removed:
            bucket = self._objects.get(rtype.storage_key)
            if bucket is None:
                continue
            for obj in list(bucket.values()):
                self._remove(rtype, obj)
            self._objects.pop(rtype.storage_key, None)
            for watch in list(self._watches.pop(rtype.storage_key, ())):
                watch.close()


def _shallow_copy_with_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    new = dict(obj)
    new["metadata"] = dict(obj.get("metadata") or {})
    return new


def _spec_changed(rtype: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> bool:
    ignored = {"metadata", "status"} if rtype.has_status else {"metadata"}
    ignored |= {"apiVersion", "kind"}
    old_rest = {k: v for k, v in old.items() if k not in ignored}
    new_rest = {k: v for k, v in new.items() if k not in ignored}
    return old_rest != new_rest
