"""Watches on the sandbox store: what `?watch=1` streams and what simulators iterate.

A watch sees the events of one resource (optionally one namespace) through
its label and field selectors with the real server's semantics: an object
that starts matching arrives as ADDED, one that stops matching as DELETED.
Events are queued per watch so a slow reader never blocks a writer.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from canaryd.sandbox.labels import Requirement, labels_match
from canaryd.sandbox.server.selectors import FieldRequirement, fields_match

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"


@dataclass(frozen=True)
class StoreEvent:
    """One committed change. `obj` is the stored snapshot (never mutated); `old` the previous one."""

    type: str
    resource_version: int
    storage_key: tuple[str, str]
    namespace: str | None
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass(frozen=True)
class WatchEvent:
    """What a watch yields: `type` is ADDED, MODIFIED or DELETED and `object` the object."""

    type: str
    object: dict[str, Any]


_CLOSED = object()


class Watch:
    """An open watch: `async for event in watch` until `close()` (or the store closes it)."""

    def __init__(
        self,
        storage_key: tuple[str, str] | None,
        namespace: str | None,
        label_requirements: list[Requirement],
        field_requirements: list[FieldRequirement],
        *,
        copy_objects: bool,
        on_close: Any = None,
        view: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.storage_key = storage_key
        self.namespace = namespace
        self.label_requirements = label_requirements
        self.field_requirements = field_requirements
        self.copy_objects = copy_objects
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._on_close = on_close
        #: how stored objects look through this watch's API version (selectors apply to that view)
        self._view = view
        self.closed = False

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        metadata = obj.get("metadata") or {}
        if self.namespace is not None and metadata.get("namespace") != self.namespace:
            return False
        return labels_match(self.label_requirements, metadata.get("labels")) and fields_match(
            self.field_requirements, obj
        )

    def offer(self, event: StoreEvent) -> None:
        """Called by the store for each committed change of this watch's resource."""
        if self.closed:
            return
        obj, old = event.obj, event.old
        if self._view is not None:
            obj = self._view(obj)
            old = self._view(old) if old is not None else None
        now_matches = self.matches(obj)
        if event.type == ADDED:
            if now_matches:
                self._queue.put_nowait((ADDED, obj))
        elif event.type == DELETED:
            if now_matches:
                self._queue.put_nowait((DELETED, obj))
        else:
            before_matched = self.matches(old)
            if now_matches and before_matched:
                self._queue.put_nowait((MODIFIED, obj))
            elif now_matches:
                self._queue.put_nowait((ADDED, obj))
            elif before_matched:
                self._queue.put_nowait((DELETED, obj))

    def put_raw(self, event_type: str, obj: dict[str, Any]) -> None:
        self._queue.put_nowait((event_type, obj))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.put_nowait(_CLOSED)
        if self._on_close is not None:
            self._on_close(self)

    def pending(self) -> int:
        return self._queue.qsize()

    def next_nowait(self) -> tuple[str, dict[str, Any]] | None:
        """The next queued (type, stored object) if one is waiting, else None."""
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            return None
        return item  # type: ignore[no-any-return]

    async def next_raw(self, timeout: float | None = None) -> tuple[str, dict[str, Any]] | None:
        """The next (type, stored object), or None on timeout or close. Objects are not copied."""
        if self.closed and self._queue.empty():
            return None
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout is not None and timeout <= 0:
                return None
            try:
                # asyncio.timeout, not wait_for, which can swallow a cancellation on Python 3.11.
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                return None
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            return None
        return item  # type: ignore[no-any-return]

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        item = await self.next_raw()
        if item is None:
            raise StopAsyncIteration
        event_type, obj = item
        return WatchEvent(event_type, copy.deepcopy(obj) if self.copy_objects else obj)

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
