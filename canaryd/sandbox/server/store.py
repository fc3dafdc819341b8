"""The sandbox cluster's object store: what etcd and kube-apiserver's storage layer keep.

Everything the HTTP server does goes through this store, and tests and the
in-process simulators (through `canaryd.sandbox.store_view`) use its Python
API, so all see one consistent cluster: one global resourceVersion counter,
uids, generation, finalizers, owner-reference garbage collection and a
bounded event history for watch resumption. The store keeps the objects and
orders the writes; what a write must pass is in ``admission``, what a deletion
sets off in ``cascade``, and the history, watches and subscribers in ``watch``.

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
the Gateway API CRDs of the standard channel are installed from the start
(`gateway_api=False`: none, as on a cluster without them; see gateway_api.py);
writes through `/status` (update_status, subresource="status") change only
status and writes to the main resource never change status; strategic merge
patch is refused (415) for custom resources; built-in kinds get the real
server's defaults and validation (kinds.py), CRD kinds their schema's
(openapi); events.k8s.io Events and core Events are one object in two
shapes (conversion.py); deleting an owner deletes dependents whose owners are
all gone, deleting a namespace deletes its contents, deleting a CRD its objects.
"""

from __future__ import annotations

import builtins
import functools
import random
import string
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, ParamSpec

from canaryd.api.timestamps import format_rfc3339
from canaryd.core.json_values import clone
from canaryd.sandbox.labels import labels_match
from canaryd.sandbox.server import admission, conversion, errors
from canaryd.sandbox.server import gateway_api as gateway_api_crds
from canaryd.sandbox.server.admission import shallow_copy_with_metadata
from canaryd.sandbox.server.cascade import Cascade
from canaryd.sandbox.server.errors import ApiError
from canaryd.sandbox.server.patching import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
)
from canaryd.sandbox.server.resources import ResourceRegistry, ResourceType, types_from_crd
from canaryd.sandbox.server.selectors import fields_match, parse_field_selector, parse_label_selector
from canaryd.sandbox.server.watch import ADDED, DELETED, MODIFIED, ChangeFeed, StoreEvent, Watch

_PATCH_TYPE_ALIASES = {
    "merge": MERGE_PATCH,
    "json": JSON_PATCH,
    "strategic": STRATEGIC_MERGE_PATCH,
    "apply": APPLY_PATCH,
}
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

Key = tuple[str, str]  # (namespace or "", name)


P = ParamSpec("P")


def _copied(method: Callable[P, dict[str, Any]]) -> Callable[P, dict[str, Any]]:
    """``method`` returning a deep copy of the stored object it returns."""

    @functools.wraps(method)
    def copying(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        return clone(method(*args, **kwargs))

    return copying


def _copied_items(
    method: Callable[P, tuple[builtins.list[dict[str, Any]], str]],
) -> Callable[P, tuple[builtins.list[dict[str, Any]], str]]:
    """``method`` returning deep copies of the stored objects it lists (and the same resourceVersion)."""

    @functools.wraps(method)
    def copying(*args: P.args, **kwargs: P.kwargs) -> tuple[builtins.list[dict[str, Any]], str]:
        items, resource_version = method(*args, **kwargs)
        return clone(items), resource_version

    return copying


class ObjectStore:
    """All objects of the sandbox cluster. See the module docstring for the API."""

    def __init__(
        self,
        *,
        history_limit: int = 10_000,
        require_namespaces: bool = True,
        clock: Callable[[], datetime] | None = None,
        registry: ResourceRegistry | None = None,
        gateway_api: bool = True,
    ) -> None:
        self.registry = registry or ResourceRegistry()
        self.require_namespaces = require_namespaces
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rv = 0
        self._objects: dict[tuple[str, str], dict[Key, dict[str, Any]]] = {}
        self._uids: dict[str, tuple[tuple[str, str], Key]] = {}
        #: Objects by the uids in their ownerReferences, and each object's owners: the garbage collector
        #: looks a deleted owner's dependents up instead of scanning every stored object.
        self._owned: dict[str, dict[tuple[tuple[str, str], Key], None]] = {}
        self._owners_of: dict[tuple[tuple[str, str], Key], tuple[str, ...]] = {}
        self._feed = ChangeFeed(history_limit)
        namespaces = self.registry.get("", "v1", "namespaces")
        assert namespaces is not None
        self._namespaces = namespaces
        self._cascade = Cascade(self, namespaces)
        self._random = random.Random()
        self._cluster_ip_counter = 10
        for name in DEFAULT_NAMESPACES:
            self.create("namespaces", {"metadata": {"name": name}})
        if gateway_api:
            for crd in gateway_api_crds.crds():
                # Shared with every store (read-only, as stored objects are): copy only what a create sets.
                handed_over = {**crd, "metadata": dict(crd["metadata"]), "spec": dict(crd["spec"])}
                self.create_ref("customresourcedefinitions", handed_over, handed_over=True)

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
        return self._feed.oldest_resource_version

    def now(self) -> datetime:
        return self._clock()

    def _timestamp(self) -> str:
        """Now, as metav1.Time is written: RFC 3339 in whole seconds."""
        return format_rfc3339(self.now().replace(microsecond=0))

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

    def create_ref(
        self,
        resource: str | ResourceType,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        handed_over: bool = False,
    ) -> dict[str, Any]:
        """Create ``obj`` (copied first, unless ``handed_over``: the store may then keep it as it is)."""
        rtype = self.resource_type(resource)
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        storage_type = self._storage_type(rtype)
        if storage_type is not rtype:
            admission.check_kind(rtype, obj)
            admission.check_version_view(rtype, obj)
            stored_shape = conversion.to_storage(rtype, obj, storage_type)
            created = self.create_ref(storage_type, stored_shape, namespace, dry_run=dry_run)
            return self._versioned(rtype, created)
        new = obj if handed_over else clone(obj)
        metadata = new.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        new["metadata"] = metadata
        ns = self._namespace_for(rtype, namespace, new)
        admission.check_kind(rtype, new)
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
        admission.check_name(rtype, name)
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
        metadata["creationTimestamp"] = self._timestamp()
        if rtype.tracks_generation:
            metadata["generation"] = 1
        else:
            metadata.pop("generation", None)
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        if rtype.has_status:
            new.pop("status", None)
        new = admission.admit(rtype, new, None, self.allocate_cluster_ip)
        if dry_run:
            return new
        self._commit(rtype, ADDED, new, None)
        if rtype.kind == "CustomResourceDefinition" and rtype.group == "apiextensions.k8s.io":
            self._register_crd(new)
        return self._versioned(rtype, self._stored(rtype, ns, name))

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
        admission.check_kind(rtype, obj)
        storage_type = self._storage_type(rtype)
        if storage_type is not rtype:
            if subresource is None:
                admission.check_version_view(rtype, obj)
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
        new = admission.merge_for_update(rtype, old, obj, status_only=subresource == "status")
        return self._write_update(rtype, old, new, dry_run=dry_run)

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
            admission.check_version_view(rtype, patched)
            patched = conversion.to_storage(rtype, patched, storage_type)
        new = admission.merge_for_update(storage_type, old, patched, status_only=subresource == "status")
        return self._versioned(rtype, self._write_update(storage_type, old, new, dry_run=dry_run))

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
            self._cascade.orphan_dependents(uid)
        elif policy == "Foreground":
            self._cascade.delete_dependents(uid)
        if rtype.kind == "Namespace" and rtype.group == "":
            return self._versioned(rtype, self._cascade.delete_namespace(old))
        if metadata.get("finalizers"):
            if metadata.get("deletionTimestamp"):
                return self._versioned(rtype, old)
            new = shallow_copy_with_metadata(old)
            new["metadata"]["deletionTimestamp"] = self._timestamp()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if rtype.tracks_generation:
                new["metadata"]["generation"] = int(metadata.get("generation", 1)) + 1
            self._commit(rtype, MODIFIED, new, old)
            return self._versioned(rtype, new)
        return self._remove(rtype, old)

    # The same reads and writes for callers that may change what they get back: deep copies.
    get = _copied(get_ref)
    list = _copied_items(list_refs)
    create = _copied(create_ref)
    update = _copied(update_ref)
    patch = _copied(patch_ref)
    delete = _copied(delete_ref)

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
            on_close=self._feed.forget_watch,
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
            for event in self._feed.since(rtype.storage_key, since):
                watch.offer(event)
        self._feed.add_watch(watch)
        return watch

    def open_watch_count(self) -> int:
        return self._feed.open_watch_count()

    def close_watches(self, resource: str | ResourceType | None = None) -> int:
        """Close open watches (of one resource, or all); returns how many were closed."""
        keys = None if resource is None else [self.resource_type(resource).storage_key]
        return self._feed.close_watches(keys)

    def subscribe(self, callback: Callable[[StoreEvent], None]) -> Callable[[], None]:
        """Call ``callback`` synchronously with every committed change; returns the unsubscriber."""
        return self._feed.subscribe(callback)

    # ------------------------------------------------------------------ internals

    def _check_namespace(self, namespace: str) -> None:
        if self.require_namespaces:
            admission.check_namespace_open(namespace, self.stored_namespace(namespace))

    def _write_update(
        self, rtype: ResourceType, old: dict[str, Any], new: dict[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        new = admission.admit(rtype, new, old, self.allocate_cluster_ip)
        meta = new["metadata"]
        if rtype.tracks_generation and admission.spec_changed(rtype, old, new):
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
        self._index_owners((rtype.storage_key, key), new)
        if notify:
            self._feed.publish(StoreEvent(event_type, self._rv, rtype.storage_key, ns or None, new, old))

    def _remove(self, rtype: ResourceType, current: dict[str, Any]) -> dict[str, Any]:
        meta = current["metadata"]
        ns = meta.get("namespace", "") if rtype.namespaced else ""
        key = (ns, meta["name"])
        self._bucket(rtype).pop(key, None)
        self._uids.pop(meta.get("uid", ""), None)
        self._index_owners((rtype.storage_key, key), None)
        self._rv += 1
        final = shallow_copy_with_metadata(current)
        final["metadata"]["resourceVersion"] = str(self._rv)
        self._feed.publish(StoreEvent(DELETED, self._rv, rtype.storage_key, ns or None, final, current))
        if rtype.kind == "CustomResourceDefinition" and rtype.group == "apiextensions.k8s.io":
            self._unregister_crd(final)
        self._cascade.collect_garbage(meta.get("uid", ""))
        if ns:
            self._cascade.finish_namespace(ns)
        return self._versioned(rtype, final)

    def _index_owners(self, ref: tuple[tuple[str, str], Key], obj: dict[str, Any] | None) -> None:
        """Keep the owner index for the object stored at ``ref`` (None: it is gone)."""
        for uid in self._owners_of.pop(ref, ()):
            owned = self._owned.get(uid)
            if owned is not None:
                owned.pop(ref, None)
                if not owned:
                    del self._owned[uid]
        refs = (obj or {}).get("metadata", {}).get("ownerReferences") or ()
        uids = tuple(dict.fromkeys(str(r.get("uid")) for r in refs if isinstance(r, dict) and r.get("uid")))
        if uids:
            self._owners_of[ref] = uids
            for uid in uids:
                self._owned.setdefault(uid, {})[ref] = None

    # ------------------------------------------------------------------ for the cascade (cascade.Stored)

    def dependents_of(self, owner_uid: str) -> builtins.list[tuple[ResourceType, dict[str, Any]]]:
        """The stored objects whose ownerReferences name ``owner_uid``, in the order they were stored."""
        found: builtins.list[tuple[ResourceType, dict[str, Any]]] = []
        by_key = {known.storage_key: known for known in reversed(list(self.registry.all()))}
        for storage_key, key in list(self._owned.get(owner_uid, {})):
            rtype = by_key.get(storage_key)
            obj = self._objects.get(storage_key, {}).get(key)
            if rtype is not None and obj is not None:
                found.append((rtype, obj))
        return found

    def stored_objects(self) -> Iterable[tuple[ResourceType, dict[str, Any]]]:
        by_key: dict[tuple[str, str], ResourceType] = {}
        for known in self.registry.all():
            by_key.setdefault(known.storage_key, known)
        for storage_key, bucket in builtins.list(self._objects.items()):
            rtype = by_key.get(storage_key)
            if rtype is None:
                continue
            for obj in builtins.list(bucket.values()):
                yield rtype, obj

    def has_uid(self, uid: str) -> bool:
        return uid in self._uids

    def stored_namespace(self, name: str) -> dict[str, Any] | None:
        return self._objects.get(self._namespaces.storage_key, {}).get(("", name))

    def namespace_in_use(self, namespace: str) -> bool:
        return any(
            key[0] == namespace
            for storage_key, bucket in self._objects.items()
            if storage_key != self._namespaces.storage_key
            for key in bucket
        )

    def commit_modified(self, rtype: ResourceType, new: dict[str, Any], old: dict[str, Any]) -> None:
        self._commit(rtype, MODIFIED, new, old)

    def remove(self, rtype: ResourceType, current: dict[str, Any]) -> dict[str, Any]:
        return self._remove(rtype, current)

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
            self._feed.drop(rtype.storage_key)

