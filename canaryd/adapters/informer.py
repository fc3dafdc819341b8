"""List+watch caches: the controller's memory of the cluster.

A step must never cost reads, so every object a decision needs (Canaries,
MetricTemplates, Deployments, Services, HTTPRoutes, GRPCRoutes) is kept in a
local cache that is filled by one LIST and then kept current by a WATCH. The
parts where controllers break in production are handled here:

- the watch resumes from the last resourceVersion it saw (bookmarks included),
  so a dropped connection loses no event;
- a 410 Gone (the server no longer has that history) leads to a fresh LIST,
  and objects that disappeared meanwhile are reported as deleted;
- a watchdog restarts a stream on which nothing (no event, no bookmark) has
  arrived for ``stall_timeout`` seconds, because a half-open connection never
  errors on its own;
- the controller's own writes are put into the cache as they are answered,
  but never an object the watch has reported deleted: an answer that arrives
  after the DELETED event (the write that removed the last finalizer) would
  bring a ghost back, which would be reconciled and reported forever;
- the LIST is read in pages (``page_size`` objects each, as client-go's
  reflector does), each page trimmed before the next is read, so the memory
  of what is dropped is reused by the next page instead of all of it being
  held at once (with 10,000 Canaries a single LIST of their 20,000
  Deployments parses to about 800 MB of Python objects before trimming, and
  the freed pieces stay scattered between the kept ones);
- what no reader of the cache needs is dropped before an object is kept
  (``trimmed``): a real API server sends ``metadata.managedFields`` with every
  object, and ``kubectl apply`` leaves a copy of the whole applied manifest in
  the ``kubectl.kubernetes.io/last-applied-configuration`` annotation; together
  they are often more than half of a small object, and with 10,000 Canaries
  the caches hold six objects each. The controller never writes a cached
  object back whole (only patches), so nothing it sends loses them.

Handlers are called with (event type, object) for every change, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from canaryd.adapters.kube import ApiError, KubeClient, Resource, WatchStalled

log = structlog.get_logger("canaryd.informer")

Handler = Callable[[str, dict[str, Any]], None]
"""Called with ("ADDED" | "MODIFIED" | "DELETED", object) after the cache changed."""

Key = tuple[str, str]

#: How many deleted objects an informer remembers, to refuse late answers about them.
TOMBSTONES = 4096

#: Objects per LIST page (client-go's reflector asks for 500 too).
PAGE_SIZE = 500

#: The annotation ``kubectl apply`` keeps the applied manifest in (read by kubectl, never by canaryd).
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without ``metadata.managedFields`` and kubectl's last-applied annotation; the rest untouched.

    Returns ``obj`` itself when it has neither; otherwise a new object that
    shares everything else with ``obj`` (which is left as it was). An
    annotation map that held only the last-applied copy goes too.
    """
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    annotations = meta.get("annotations")
    applied = isinstance(annotations, dict) and LAST_APPLIED in annotations
    if "managedFields" not in meta and not applied:
        return obj
    kept = {key: value for key, value in meta.items() if key != "managedFields"}
    if applied:
        assert isinstance(annotations, dict)
        rest = {key: value for key, value in annotations.items() if key != LAST_APPLIED}
        if rest:
            kept["annotations"] = rest
        else:
            del kept["annotations"]
    return {**obj, "metadata": kept}


def object_key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


class Informer:
    """A cache of one resource in one namespace (or all namespaces), kept current by list+watch."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        namespace: str | None = None,
        *,
        stall_timeout: float = 60.0,
        watch_timeout: int = 300,
        label_selector: str | None = None,
        trim: bool = True,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.client = client
        #: Whether objects are kept ``trimmed`` (off only to measure what trimming saves).
        self.trim = trim
        #: Objects per LIST page; 0 lists everything in one answer.
        self.page_size = page_size
        self.resource = resource
        self.namespace = namespace or None
        self.stall_timeout = stall_timeout
        self.watch_timeout = watch_timeout
        self.label_selector = label_selector
        self._objects: dict[Key, dict[str, Any]] = {}
        #: uids of objects the server reported deleted, by key (newest last).
        self._tombstones: OrderedDict[Key, str] = OrderedDict()
        self._handlers: list[Handler] = []
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        self.resource_version = ""
        #: How often each kind of recovery happened (tests and /metrics read these).
        self.relists = 0
        self.stalls = 0
        self.restarts = 0

    # -- reading -------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((namespace, name))

    def items(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._objects.values()))

    def __len__(self) -> int:
        return len(self._objects)

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def store(self, obj: dict[str, Any]) -> None:
        """Put an object the controller itself just read or wrote, if it is newer than the cached one.

        Called after a write so that the next decision sees its own write
        without a read, even before the watch event arrives.
        """
        if self.trim:
            obj = trimmed(obj)
        key = object_key(obj)
        current = self._objects.get(key)
        if current is None and _uid(obj) and self._tombstones.get(key) == _uid(obj):
            return  # the watch said this very object is gone; a late answer must not bring it back
        if current is not None and (_rv(current) == _rv(obj) or not _newer(obj, current)):
            return
        self._objects[key] = obj
        self._notify("MODIFIED" if current is not None else "ADDED", obj)

    def _bury(self, key: Key, obj: dict[str, Any]) -> None:
        uid = _uid(obj)
        if not uid:
            return
        self._tombstones.pop(key, None)
        self._tombstones[key] = uid
        while len(self._tombstones) > TOMBSTONES:
            self._tombstones.popitem(last=False)

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer:{self.resource.plural}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_synced(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _notify(self, event_type: str, obj: dict[str, Any]) -> None:
        for handler in self._handlers:
            try:
                handler(event_type, obj)
            except Exception:
                log.exception("informer handler failed", resource=self.resource.plural)

    async def _run(self) -> None:
        backoff = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.gone:
                    self.relists += 1
                    log.info("watch history expired, relisting", resource=self.resource.plural)
                    need_list = True
                    continue
                log.warning(
                    "watch failed", resource=self.resource.plural, status=exc.status, error=exc.message
                )
                if exc.status == 404 and not self.resource_version:
                    # The resource is not served (yet): an empty cache is the truth for now.
                    self.synced.set()
                need_list = need_list or not self.resource_version
            except Exception as exc:
                log.warning("watch stream broke", resource=self.resource.plural, error=repr(exc))
            self.restarts += 1
            await asyncio.sleep(backoff * (1 + random.random()))
            backoff = min(backoff * 2, 5.0)

    async def _list(self) -> None:
        query: dict[str, Any] = {}
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        if self.page_size > 0:
            query["limit"] = self.page_size
        fresh: dict[Key, dict[str, Any]] = {}
        list_version = ""
        while True:
            result = await self.client.list(self.resource, self.namespace, **query)
            for item in result.get("items") or []:
                if self.trim:
                    item = trimmed(item)
                item.setdefault("apiVersion", self.resource.api_version)
                item.setdefault("kind", self.resource.kind)
                fresh[object_key(item)] = item
            page_meta = result.get("metadata") or {}
            # Every page of one LIST is the same snapshot: the first page's version is the list's.
            list_version = list_version or str(page_meta.get("resourceVersion", ""))
            token = page_meta.get("continue")
            if not token:
                break
            query["continue"] = token  # an expired token is a 410, and _run lists again from the start
            del result  # the untrimmed page is freed before the next one is read
        old = self._objects
        # The controller may have stored its own write while the LIST was in flight; a snapshot
        # older than that write must not take it back (the watch from list_version brings it again).
        for key, obj in old.items():
            listed = fresh.get(key)
            after_list = _rv(obj).isdigit() and list_version.isdigit() and int(_rv(obj)) > int(list_version)
            if after_list and (listed is None or _newer(obj, listed)):
                fresh[key] = obj
        self._objects = fresh
        self.resource_version = list_version
        for key, obj in old.items():
            if key not in fresh:
                self._bury(key, obj)
                self._notify("DELETED", obj)
        for key, obj in fresh.items():
            previous = old.get(key)
            if previous is None:
                self._notify("ADDED", obj)
            elif _rv(previous) != _rv(obj):
                self._notify("MODIFIED", obj)
        self.synced.set()

    async def _watch(self) -> None:
        query: dict[str, Any] = {
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": self.watch_timeout,
        }
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        events = self.client.watch_events(
            self.resource, self.namespace, query, stall_timeout=self.stall_timeout
        )
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    self._apply(event)
        except WatchStalled:
            self.stalls += 1
            log.warning(
                "watch stalled, restarting", resource=self.resource.plural, seconds=self.stall_timeout
            )

    def _apply(self, event: dict[str, Any]) -> None:
        event_type = event.get("type")
        obj = event.get("object") or {}
        rv = _rv(obj)
        if rv:
            self.resource_version = rv
        if event_type == "BOOKMARK":
            return
        if self.trim:
            obj = trimmed(obj)
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        key = object_key(obj)
        if event_type == "DELETED":
            self._bury(key, self._objects.pop(key, obj))
            self._notify("DELETED", obj)
        elif event_type in ("ADDED", "MODIFIED"):
            current = self._objects.get(key)
            if current is not None and (_rv(current) == rv or not _newer(obj, current)):
                return  # our own write put this version (or a newer one) in the cache already
            self._objects[key] = obj
            self._notify(event_type, obj)


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _newer(candidate: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether ``candidate`` is at least as new as ``current`` (numeric resourceVersions as numbers)."""
    a, b = _rv(candidate), _rv(current)
    if a.isdigit() and b.isdigit():
        return int(a) >= int(b)
    return True


class MultiInformer:
    """One resource across several namespaces (one informer each), or across all namespaces."""

    def __init__(
        self, client: KubeClient, resource: Resource, namespaces: list[str] | None, **options: Any
    ) -> None:
        self.resource = resource
        targets: list[str | None] = list(namespaces) if namespaces else [None]
        self.informers = [Informer(client, resource, ns, **options) for ns in targets]
        self._by_namespace = {inf.namespace: inf for inf in self.informers}

    def _for(self, namespace: str) -> Informer | None:
        informer = self._by_namespace.get(namespace)
        return informer if informer is not None else self._by_namespace.get(None)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self._for(namespace)
        return informer.get(namespace, name) if informer else None

    def items(self) -> Iterator[dict[str, Any]]:
        for informer in self.informers:
            yield from informer.items()

    def store(self, obj: dict[str, Any]) -> None:
        informer = self._for(object_key(obj)[0])
        if informer is not None:
            informer.store(obj)

    def add_handler(self, handler: Handler) -> None:
        for informer in self.informers:
            informer.add_handler(handler)

    @property
    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers)

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    async def stop(self) -> None:
        await asyncio.gather(*(inf.stop() for inf in self.informers))
