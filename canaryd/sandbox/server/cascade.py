"""What a deletion sets off: the garbage collector's and the namespace controller's work, done at once.

On a real cluster kube-controller-manager deletes the dependents of a deleted
owner (ownerReferences, with the Background, Foreground and Orphan policies)
and empties a terminating namespace before it goes. canaryd relies on both
(its primary Deployment and Services belong to the Canary; tests delete whole
namespaces), so the sandbox store does the same synchronously, through the
few operations of `Stored` it offers this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from canaryd.api.timestamps import format_rfc3339
from canaryd.sandbox.server.admission import shallow_copy_with_metadata
from canaryd.sandbox.server.errors import ApiError
from canaryd.sandbox.server.resources import ResourceType


class Stored(Protocol):
    """The store as the cascade sees it."""

    def now(self) -> datetime: ...

    def stored_objects(self) -> Iterable[tuple[ResourceType, dict[str, Any]]]:
        """Every stored object with its type, safe to iterate while deleting."""
        ...

    def has_uid(self, uid: str) -> bool: ...

    def dependents_of(self, owner_uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        """The stored objects whose ownerReferences name ``owner_uid`` (from an index: no scan)."""
        ...

    def stored_namespace(self, name: str) -> dict[str, Any] | None: ...

    def namespace_in_use(self, namespace: str) -> bool:
        """Whether any object other than the Namespace itself lives in ``namespace``."""
        ...

    def commit_modified(self, rtype: ResourceType, new: dict[str, Any], old: dict[str, Any]) -> None:
        """Store ``new`` in place of ``old`` with a new resourceVersion and a MODIFIED event."""
        ...

    def remove(self, rtype: ResourceType, current: dict[str, Any]) -> dict[str, Any]:
        """Drop an object (a DELETED event), then collect its dependents; returns it as deleted."""
        ...

    def delete_ref(
        self, resource: str | ResourceType, name: str, namespace: str | None = None, *,
        propagation_policy: str | None = None,
    ) -> dict[str, Any]: ...  # fmt: skip


class Cascade:
    """Dependents of deleted owners and contents of deleted namespaces, for one store."""

    def __init__(self, store: Stored, namespaces: ResourceType) -> None:
        self.store = store
        self.namespaces = namespaces

    def dependents(self, owner_uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        if not owner_uid:
            return []
        return self.store.dependents_of(owner_uid)

    def orphan_dependents(self, owner_uid: str) -> None:
        """propagationPolicy Orphan: the dependents lose their reference to the owner and stay."""
        for rtype, obj in self.dependents(owner_uid):
            new = shallow_copy_with_metadata(obj)
            refs = [r for r in obj["metadata"].get("ownerReferences") or () if r.get("uid") != owner_uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self.store.commit_modified(rtype, new, obj)

    def delete_dependents(self, owner_uid: str) -> None:
        """propagationPolicy Foreground: the dependents go first."""
        for rtype, obj in self.dependents(owner_uid):
            self._delete_if_exists(rtype, obj, "Foreground")

    def collect_garbage(self, owner_uid: str) -> None:
        """Delete dependents whose owners are all gone (the garbage collector's background cascade)."""
        for rtype, obj in self.dependents(owner_uid):
            refs = obj["metadata"].get("ownerReferences") or ()
            if all(not self.store.has_uid(ref.get("uid", "")) for ref in refs):
                self._delete_if_exists(rtype, obj, "Background")

    def delete_namespace(self, namespace_obj: dict[str, Any]) -> dict[str, Any]:
        """Mark a namespace Terminating and delete its contents; returns it (removed, or still there)."""
        name = namespace_obj["metadata"]["name"]
        terminating = namespace_obj
        if not namespace_obj["metadata"].get("deletionTimestamp"):
            terminating = shallow_copy_with_metadata(namespace_obj)
            terminating["metadata"]["deletionTimestamp"] = format_rfc3339(
                self.store.now().replace(microsecond=0)  # metav1.Time: whole seconds
            )
            terminating["status"] = {**(namespace_obj.get("status") or {}), "phase": "Terminating"}
            self.store.commit_modified(self.namespaces, terminating, namespace_obj)
        for other_type, obj in list(self.store.stored_objects()):
            if other_type.namespaced and obj["metadata"].get("namespace") == name:
                self._delete_if_exists(other_type, obj, "Background")
        # Removing the last object inside may have finished the namespace already.
        return self.finish_namespace(name) or self.store.stored_namespace(name) or terminating

    def finish_namespace(self, name: str) -> dict[str, Any] | None:
        """Remove a terminating namespace once nothing is left in it; returns the removed namespace."""
        namespace_obj = self.store.stored_namespace(name)
        if namespace_obj is None or not namespace_obj["metadata"].get("deletionTimestamp"):
            return None
        if self.store.namespace_in_use(name):
            return None
        return self.store.remove(self.namespaces, namespace_obj)

    def _delete_if_exists(self, rtype: ResourceType, obj: dict[str, Any], policy: str) -> None:
        meta = obj["metadata"]
        try:
            self.store.delete_ref(rtype, meta["name"], meta.get("namespace"), propagation_policy=policy)
        except ApiError as error:
            if error.code != 404:
                raise
