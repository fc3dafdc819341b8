"""The simulators' view of the cluster when they share a process with the sandbox's store.

The fast path: reads are the store's stored snapshots (no copy, no HTTP, no
JSON), changes arrive from the store's subscriber hook as they are committed,
status is written through the store's status subresource update and objects
through its create, update and delete. This is
what lets one process serve 1,000 Canaries' worth of simulated Deployments,
routes and traffic. It satisfies `canaryd.sandbox.sim.cluster_view.ClusterView`,
and is the only place that joins the server's store to the simulators.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from canaryd.sandbox.server.errors import ApiError
from canaryd.sandbox.server.store import ObjectStore
from canaryd.sandbox.server.watch import StoreEvent
from canaryd.sandbox.sim.cluster_view import Change, ChangeHandler, Obj, Resource


class StoreView:
    """`ClusterView` over an `ObjectStore` in the same process."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._names: dict[Resource, str] = {}

    def _name(self, resource: Resource) -> str:
        """How the store's registry names ``resource`` (its version included)."""
        name = self._names.get(resource)
        if name is None:
            name = resource.plural
            if resource.group:
                name = f"{resource.plural}.{resource.version}.{resource.group}"
            self._names[resource] = name
        return name

    def now(self) -> datetime:
        return self.store.now()

    def list(self, resource: Resource) -> Sequence[Obj]:
        try:
            return self.store.list_refs(self._name(resource))[0]
        except ApiError as error:
            if error.code == 404:  # the kind is not served (a CRD not installed): nothing to see
                return []
            raise

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        try:
            return self.store.get_ref(self._name(resource), name, namespace or None)
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    def watch(self, resources: Sequence[Resource], handler: ChangeHandler) -> Callable[[], None]:
        wanted = {(r.group, r.plural): r for r in resources}

        def on_event(event: StoreEvent) -> None:
            resource = wanted.get(event.storage_key)
            if resource is not None:
                handler(Change(event.type, resource, event.obj, event.old))

        return self.store.subscribe(on_event)

    def write_status(self, resource: Resource, obj: Obj, status: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") or None
        body: dict[str, Any] = {
            "metadata": {"name": metadata.get("name"), "resourceVersion": metadata.get("resourceVersion")},
            "status": status,
        }
        if namespace:
            body["metadata"]["namespace"] = namespace
        try:
            self.store.update_ref(self._name(resource), body, namespace, subresource="status")
        except ApiError as error:
            if error.code in (404, 409):
                return False
            raise
        return True

    def write(self, resource: Resource, obj: Obj) -> bool:
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") or None
        try:
            if metadata.get("resourceVersion"):
                self.store.update_ref(self._name(resource), dict(obj), namespace)
            else:
                self.store.create_ref(self._name(resource), dict(obj), namespace)
        except ApiError as error:
            if error.code in (404, 409):
                return False
            raise
        return True

    def delete(self, resource: Resource, obj: Obj) -> bool:
        metadata = obj.get("metadata") or {}
        uid = metadata.get("uid")
        try:
            self.store.delete_ref(
                self._name(resource),
                str(metadata.get("name")),
                metadata.get("namespace") or None,
                preconditions={"uid": uid} if uid else None,
            )
        except ApiError as error:
            if error.code in (404, 409):
                return False
            raise
        return True
