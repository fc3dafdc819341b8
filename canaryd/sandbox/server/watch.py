"""The sandbox store's change feed: the event history, open watches and subscribers.

Every committed change becomes a `StoreEvent` in a bounded history (so a
watch can resume from a resourceVersion, and one older than the history gets
410 Gone), is offered to the open watches of its resource and is handed to
the store's subscribers. A watch sees the events of one resource (optionally
one namespace) through its label and field selectors with the real server's
semantics: an object that starts matching arrives as ADDED, one that stops
matching as DELETED. Events are queued per watch so a slow reader never
blocks a writer.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import deque
from collections.abc import Callable, Iterable
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

log = logging.getLogger(__name__)


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


StorageKey = tuple[str, str]


class ChangeFeed:
    """Where committed changes go: the bounded history, the open watches and the subscribers."""

    def __init__(self, history_limit: int) -> None:
        self._history: deque[StoreEvent] = deque(maxlen=max(1, history_limit))
        self._compacted_rv = 0
        self._watches: dict[StorageKey, set[Watch]] = {}
        self._subscribers: list[Callable[[StoreEvent], None]] = []

    @property
    def oldest_resource_version(self) -> int:
        """Watches may resume from this resourceVersion or any later one (older ones get 410 Gone)."""
        return self._compacted_rv

    def publish(self, event: StoreEvent) -> None:
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

    def since(self, storage_key: StorageKey, resource_version: int) -> Iterable[StoreEvent]:
        """The kept events of one resource after ``resource_version`` (see `oldest_resource_version`)."""
        return [
            e for e in self._history if e.resource_version > resource_version and e.storage_key == storage_key
        ]

    def add_watch(self, watch: Watch) -> None:
        if watch.storage_key is not None:
            self._watches.setdefault(watch.storage_key, set()).add(watch)

    def forget_watch(self, watch: Watch) -> None:
        if watch.storage_key is not None:
            self._watches.get(watch.storage_key, set()).discard(watch)

    def open_watch_count(self) -> int:
        return sum(len(w) for w in self._watches.values())

    def close_watches(self, storage_keys: Iterable[StorageKey] | None = None) -> int:
        """Close the open watches of these resources (all when None); returns how many were closed."""
        closed = 0
        for key in list(self._watches) if storage_keys is None else storage_keys:
            for watch in list(self._watches.get(key, ())):
                watch.close()
                closed += 1
        return closed

    def drop(self, storage_key: StorageKey) -> None:
        """Close and forget every watch of a resource that is no longer served."""
        for watch in list(self._watches.pop(storage_key, ())):
            watch.close()

    def subscribe(self, callback: Callable[[StoreEvent], None]) -> Callable[[], None]:
        """Call ``callback`` synchronously with every change; returns the function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe
