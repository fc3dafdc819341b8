"""The simulators' view of any Kubernetes API server, through the controller's own client.

With this, the Gateway implementation and the traffic data plane are
ordinary clients of a cluster: they list and watch what they need with
canaryd's informers (`canaryd.adapters.informer`, over `KubeClient`, so
resumption, relists after 410 Gone and stalled-watch restarts are the
controller's, tested once), and write status with a JSON Patch guarded by a
``test`` of the resourceVersion they computed from, on the status
subresource. Pointed at the sandbox's API server they behave as they do
in-process; pointed at a real kube-apiserver they play the Gateway
implementation of its `canaryd.io/sandbox-gateway` GatewayClass.

    client = await KubeClient.connect("kubeconfig", qps=500, burst=1000)
    view = ApiClusterView(client, GATEWAY_AND_TRAFFIC_RESOURCES)
    await view.start()                      # lists every resource, then watches
    gateway = SandboxGateway(view); gateway.start()
    ...
    gateway.stop(); await view.stop(); await client.close()

Status writes return at once and are sent in the background, the newest
status of an object replacing one not yet sent; a write that loses a race
(409, or 422 from the failed ``test``) is dropped, because the change that
beat it arrives through the watch and the simulator computes again. A
written object goes straight into the view, as the controller's own writes
go into its caches. Object writes (create, replace, delete) are sent the same
way, one at a time per object, the newest replacing one not yet sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from canaryd.adapters.informer import Informer
from canaryd.adapters.kube import JSON_PATCH, ApiError, KubeClient
from canaryd.sandbox.sim.cluster_view import Change, ChangeHandler, Obj, Resource, name_of

log = logging.getLogger(__name__)

#: Attempts at a status write that got no answer or a server error, before it is given up.
WRITE_ATTEMPTS = 5


class ApiClusterView:
    """`ClusterView` over an API server: one informer per resource, status written by JSON Patch."""

    def __init__(
        self,
        client: KubeClient,
        resources: Sequence[Resource],
        *,
        stall_timeout: float = 60.0,
        writes_in_flight: int = 8,
    ) -> None:
        self.client = client
        self._informers = {
            resource: Informer(client, resource, stall_timeout=stall_timeout) for resource in resources
        }
        self._objects: dict[Resource, dict[tuple[str, str], Obj]] = {resource: {} for resource in resources}
        self._handlers: dict[Resource, list[ChangeHandler]] = {resource: [] for resource in resources}
        for resource, informer in self._informers.items():
            informer.add_handler(self._follower(resource))
        self._pending: dict[tuple[Resource, str, str], tuple[Obj, Mapping[str, Any]]] = {}
        self._sending: set[tuple[Resource, str, str]] = set()
        self._object_ops: dict[tuple[Resource, str, str], tuple[str, Obj]] = {}
        self._object_sending: set[tuple[Resource, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_slots = asyncio.Semaphore(writes_in_flight)
        #: Status writes the server accepted, and those it refused as stale (tests and benchmarks read these).
        self.writes = 0
        self.stale_writes = 0

    async def start(self, timeout: float = 30.0) -> None:
        """List every resource and start watching; TimeoutError when a list does not arrive in time."""
        for informer in self._informers.values():
            informer.start()
        synced = await asyncio.gather(*(i.wait_synced(timeout) for i in self._informers.values()))
        missing = [r.plural for r, ok in zip(self._informers, synced, strict=True) if not ok]
        if missing:
            await self.stop()
            raise TimeoutError(f"{', '.join(missing)} not listed within {timeout:g}s from {self.client.host}")

    async def stop(self) -> None:
        """Stop watching and drop status writes not sent yet (the simulators stop first)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(informer.stop() for informer in self._informers.values()))

    # -- reading ---------------------------------------------------------------------------------------------

    def _follower(self, resource: Resource) -> Callable[[str, dict[str, Any]], None]:
        objects, handlers = self._objects[resource], self._handlers[resource]

        def follow(event_type: str, obj: dict[str, Any]) -> None:
            key = name_of(obj)
            old = objects.get(key)
            if event_type == "DELETED":
                objects.pop(key, None)
            else:
                objects[key] = obj
            if handlers:
                change = Change(event_type, resource, obj, old)
                for handler in list(handlers):
                    handler(change)

        return follow

    def _known(self, resource: Resource) -> dict[tuple[str, str], Obj]:
        objects = self._objects.get(resource)
        if objects is None:
            raise ValueError(f"this view does not follow {resource.plural}; give it to ApiClusterView(...)")
        return objects

    def now(self) -> datetime:
        return datetime.now(UTC)

    def list(self, resource: Resource) -> Sequence[Obj]:
        return list(self._known(resource).values())

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        return self._known(resource).get((namespace, name))

    def watch(self, resources: Sequence[Resource], handler: ChangeHandler) -> Callable[[], None]:
        for resource in resources:
            self._known(resource)
        for resource in resources:
            self._handlers[resource].append(handler)

        def stop() -> None:
            for resource in resources:
                if handler in self._handlers[resource]:
                    self._handlers[resource].remove(handler)

        return stop

    # -- writing ---------------------------------------------------------------------------------------------

    def write_status(self, resource: Resource, obj: Obj, status: Mapping[str, Any]) -> bool:
        self._known(resource)
        key = (resource, *name_of(obj))
        self._pending[key] = (obj, status)  # the newest status of an object replaces one not yet sent
        if key not in self._sending:
            self._sending.add(key)
            task = asyncio.get_running_loop().create_task(self._send(key), name=f"status:{resource.plural}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def _send(self, key: tuple[Resource, str, str]) -> None:
        try:
            while key in self._pending:
                obj, status = self._pending.pop(key)
                async with self._write_slots:
                    await self._write(key, obj, status)
        finally:
            self._sending.discard(key)

    async def _write(self, key: tuple[Resource, str, str], obj: Obj, status: Mapping[str, Any]) -> None:
        resource, namespace, name = key
        version = (obj.get("metadata") or {}).get("resourceVersion")
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "add", "path": "/status", "value": status},
        ]
        backoff = 0.2
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                written = await self.client.patch(
                    resource, namespace, name, patch, content_type=JSON_PATCH, subresource="status"
                )
            except ApiError as error:
                if error.conflict or error.not_found:
                    self.stale_writes += 1
                    log.debug("status of %s %s/%s is stale: %s", resource.plural, namespace, name, error)
                    return
                if attempt == WRITE_ATTEMPTS or key in self._pending:  # given up, or superseded
                    log.warning("status of %s %s/%s not written: %s", resource.plural, namespace, name, error)
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.writes += 1
            self._informers[resource].store(written)
            return

    def write(self, resource: Resource, obj: Obj) -> bool:
        return self._queue_object_op(resource, "write", obj)

    def delete(self, resource: Resource, obj: Obj) -> bool:
        return self._queue_object_op(resource, "delete", obj)

    def _queue_object_op(self, resource: Resource, op: str, obj: Obj) -> bool:
        self._known(resource)
        key = (resource, *name_of(obj))
        self._object_ops[key] = (op, obj)
        if key not in self._object_sending:
            self._object_sending.add(key)
            task = asyncio.get_running_loop().create_task(self._send_object_ops(key), name=f"{op}:{resource}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def _send_object_ops(self, key: tuple[Resource, str, str]) -> None:
        resource, namespace, name = key
        try:
            while key in self._object_ops:
                op, obj = self._object_ops.pop(key)
                async with self._write_slots:
                    try:
                        if op == "delete":
                            await self.client.delete(resource, namespace, name)
                        elif (obj.get("metadata") or {}).get("resourceVersion"):
                            self._informers[resource].store(
                                await self.client.replace(resource, namespace, name, dict(obj))
                            )
                        else:
                            self._informers[resource].store(
                                await self.client.create(resource, namespace, dict(obj))
                            )
                        self.writes += 1
                    except ApiError as error:
                        if error.conflict or error.not_found or error.already_exists:
                            self.stale_writes += 1
                        else:
                            log.warning(
                                "%s of %s %s/%s failed: %s", op, resource.plural, namespace, name, error
                            )
        finally:
            self._object_sending.discard(key)
