"""The cluster as ``kubectl canary`` / ``canaryctl`` sees it, built on the controller's own client.

The command-line tool finds its cluster the way kubectl does (``--kubeconfig``,
``KUBECONFIG``, ``--context``, the context's default namespace) and talks to it
through the same ``KubeClient`` as the controller (URLs, timeouts, rate limit,
watch streams and error type live there). What this module adds is the CLI's
vocabulary: the few calls it makes, in plain dicts (the objects exactly as the
API server returns them), and every way a call can fail turned into one of a
few errors a person can act on: the canary is not there, you may not do this,
the cluster cannot be reached, or the API server said something else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import aiohttp

from canaryd.adapters.kube import (
    CANARIES,
    CORE_EVENTS,
    DEPLOYMENTS,
    EVENTS,
    MERGE_PATCH,
    ApiError,
    ConfigurationError,
    KubeClient,
    Resource,
    WatchError,
    kubeconfig_search_path,
    load_kubeconfig,
)
from canaryd.api.constants import CANARY_KIND, CANARY_PLURAL, GROUP
from canaryd.api.timestamps import parse_rfc3339

NOT_SERVED = f"this cluster does not serve {CANARY_PLURAL}.{GROUP}: is canaryd installed?"
CANARY_API = f"the Canary API ({CANARY_PLURAL}.{GROUP})"
#: How long one request may take before the cluster counts as unreachable.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 15.0
#: Server-side timeout of one watch request; the watch is re-opened after it.
WATCH_WINDOW_SECONDS = 60
USER_AGENT = "canaryctl"


class CtlError(Exception):
    """A failure the CLI reports as one line; ``message`` is that line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(CtlError):
    """The object (or its namespace, or the Canary API itself) does not exist."""


class ForbiddenError(CtlError):
    """The API server refused the request: 401 Unauthorized or 403 Forbidden."""


class UnreachableError(CtlError):
    """No usable kubeconfig, or the API server cannot be reached (refused, TLS, timeout)."""


class ApiFailure(CtlError):
    """Any other answer from the API server that is not a success."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _unreachable(cause: BaseException | None) -> UnreachableError:
    """Why no answer came, from what the connection raised."""
    if isinstance(cause, aiohttp.ClientConnectorError):
        reason = cause.os_error.strerror or str(cause)
        return UnreachableError(f"cannot reach the cluster at {cause.host}:{cause.port}: {reason}")
    if isinstance(cause, TimeoutError):
        return UnreachableError("cannot reach the cluster: the request timed out")
    if isinstance(cause, aiohttp.ClientError | ssl.SSLError | OSError):
        return UnreachableError(f"cannot reach the cluster: {cause}")
    return UnreachableError(f"cannot reach the cluster: {cause}")


def translate(exc: ApiError, what: str) -> CtlError:
    """The CLI's error for a failed request; ``what`` names the object for a 404."""
    message = exc.message or exc.reason or f"HTTP {exc.status}"
    if exc.status == 0:
        return _unreachable(exc.__cause__)
    if exc.status == 404:
        details = exc.body.get("details") if isinstance(exc.body, dict) else None
        if isinstance(details, dict) and details.get("name"):
            return NotFoundError(f"{what} not found")
        # No object named: the path itself is unknown, i.e. the resource type is not served.
        return NotFoundError(NOT_SERVED)
    if exc.status == 401:
        return ForbiddenError(f"the cluster refused the credentials (401): {message}")
    if exc.status == 403:
        return ForbiddenError(message)
    return ApiFailure(f"the API server answered {exc.status}: {message}", exc.status)


def _uniform_event(
    api: str, item: dict[str, Any], *, message: Any, times: tuple[Any, ...], count: Any, source: Any
) -> dict[str, Any]:
    """One Event of either API in the shape ``events_for`` returns; the first time given counts."""
    meta = item.get("metadata") or {}
    return {
        "api": api,
        "uid": meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}",
        "type": item.get("type", ""),
        "reason": item.get("reason", ""),
        "message": message,
        "time": next((t for t in times if t), None) or meta.get("creationTimestamp"),
        "count": int(count or 1),
        "source": source,
    }


def _sort_time(value: Any) -> datetime:
    """An Event's time for ordering; whole seconds and microseconds compare as times, not text."""
    parsed = parse_rfc3339(value) if isinstance(value, str) else None
    return parsed or datetime.min.replace(tzinfo=UTC)


def _canary(namespace: str, name: str) -> str:
    return f'canary "{name}" in namespace "{namespace}"'


class CtlClient:
    """A connection to one cluster, as chosen by kubeconfig and context."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        default_namespace: str,
        context_name: str,
        user_name: str,
    ) -> None:
        self.kube = kube
        self.default_namespace = default_namespace
        self.context_name = context_name
        self.user_name = user_name
        self.server = kube.host
        self.request_timeout = kube.request_timeout

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    ) -> CtlClient:
        """Load the kubeconfig like kubectl does; raises UnreachableError when it is missing or unusable."""
        try:
            configuration, chosen = await load_kubeconfig(kubeconfig_search_path(kubeconfig), context)
        except ConfigurationError as exc:
            raise UnreachableError(str(exc)) from exc
        kube = KubeClient(configuration, user_agent=USER_AGENT, request_timeout=request_timeout)
        return cls(kube, default_namespace=chosen.namespace, context_name=chosen.name, user_name=chosen.user)

    async def close(self) -> None:
        await self.kube.close()

    async def __aenter__(self) -> CtlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(self, what: str, request: Any) -> dict[str, Any]:
        try:
            body = await request
        except ApiError as exc:
            raise translate(exc, what) from exc
        if not isinstance(body, dict):
            raise ApiFailure(f"the API server sent {type(body).__name__} where an object was expected", 0)
        return body

    async def list_canaries(self, namespace: str | None) -> list[dict[str, Any]]:
        """Canaries in one namespace, or in all namespaces when ``namespace`` is None, sorted by both."""
        body = await self._call(CANARY_API, self.kube.list(CANARIES, namespace))
        items: list[dict[str, Any]] = list(body.get("items") or [])
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"].get("name", "")))
        return items

    async def get_canary(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._call(_canary(namespace, name), self.kube.get(CANARIES, namespace, name))

    async def patch_canary_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch on the status subresource; returns the object as stored after it."""
        request = self.kube.patch(
            CANARIES, namespace, name, patch, content_type=MERGE_PATCH, subresource="status"
        )
        return await self._call(_canary(namespace, name), request)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        what = f'deployment "{name}" in namespace "{namespace}"'
        return await self._call(what, self.kube.get(DEPLOYMENTS, namespace, name))

    async def follow_canary(self, namespace: str, name: str) -> AsyncGenerator[dict[str, Any], None]:
        """The canary now, then again after every change, until the caller stops iterating.

        A GET, then a watch on that one object resumed from the last resourceVersion
        seen; the watch is re-opened when the server closes it, and the object is
        read again on 410 Gone. Raises NotFoundError when the canary is deleted.
        """
        what = _canary(namespace, name)
        current = await self.get_canary(namespace, name)
        yield current
        resource_version = str(current["metadata"].get("resourceVersion", ""))
        while True:
            query = {
                "fieldSelector": f"metadata.name={name}",
                "resourceVersion": resource_version,
                "timeoutSeconds": WATCH_WINDOW_SECONDS,
                "allowWatchBookmarks": True,
            }
            events = self.kube.watch_events(CANARIES, namespace, query)
            try:
                async with contextlib.aclosing(events):
                    async for event in events:
                        kind, obj = event.get("type"), event.get("object") or {}
                        meta = obj.get("metadata") or {}
                        resource_version = str(meta.get("resourceVersion", resource_version))
                        if kind == "BOOKMARK":
                            continue
                        if kind == "DELETED":
                            raise NotFoundError(f"{what} was deleted")
                        yield obj
            except ValueError as exc:  # a line that is not JSON
                raise CtlError(f"{type(exc).__name__}: {exc}") from exc
            except ApiError as exc:
                if not exc.gone:
                    if isinstance(exc, WatchError):
                        raise ApiFailure(f"watch failed: {exc.message or exc.body}", exc.status) from exc
                    raise translate(exc, what) from exc
                current = await self.get_canary(namespace, name)
                resource_version = str(current["metadata"].get("resourceVersion", ""))
                yield current

    # ---- Events ---------------------------------------------------------

    async def events_for(self, canary: dict[str, Any]) -> list[dict[str, Any]]:
        """Events about this canary from both Event APIs, oldest first, as uniform dicts, each once.

        Each item has uid, type, reason, message, time (ISO string or None),
        count, source and api ("events.k8s.io/v1" or "v1"). A kube-apiserver
        serves every Event through both APIs (one object, two views), so an
        Event read from both is kept once, as events.k8s.io/v1 shows it (its
        eventTime keeps microseconds; core v1's lastTimestamp has whole
        seconds). An Event API that is missing or forbidden contributes
        nothing: events are context, not the answer.
        """
        meta = canary["metadata"]
        namespace, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid")

        def about_canary(ref: dict[str, Any] | None) -> bool:
            if not ref or ref.get("kind") != CANARY_KIND or ref.get("name") != name:
                return False
            return not (uid and ref.get("uid") and ref.get("uid") != uid)

        new_api, core_api = await asyncio.gather(
            self._events(EVENTS, namespace, f"regarding.name={name},regarding.kind={CANARY_KIND}"),
            self._events(
                CORE_EVENTS, namespace, f"involvedObject.name={name},involvedObject.kind={CANARY_KIND}"
            ),
        )
        events = [
            _uniform_event(
                "events.k8s.io/v1",
                item,
                message=item.get("note", ""),
                times=(
                    (item.get("series") or {}).get("lastObservedTime"),
                    item.get("eventTime"),
                    item.get("deprecatedLastTimestamp"),
                ),
                count=(item.get("series") or {}).get("count") or item.get("deprecatedCount"),
                source=item.get("reportingController", ""),
            )
            for item in new_api
            if about_canary(item.get("regarding"))
        ]
        seen = {e["uid"] for e in events}
        events += [
            event
            for event in (
                _uniform_event(
                    "v1",
                    item,
                    message=item.get("message", ""),
                    times=(item.get("lastTimestamp"), item.get("eventTime"), item.get("firstTimestamp")),
                    count=item.get("count"),
                    source=(item.get("source") or {}).get("component", "")
                    or item.get("reportingComponent", ""),
                )
                for item in core_api
                if about_canary(item.get("involvedObject"))
            )
            if event["uid"] not in seen
        ]
        events.sort(key=lambda e: _sort_time(e["time"]))
        return events

    async def _events(self, resource: Resource, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        """The Events of one API; a selector the server rejects is retried without it.

        A missing or forbidden Event API yields an empty list instead of an error.
        """
        for selector in (field_selector, None):
            query = {"fieldSelector": selector} if selector else {}
            try:
                body = await self.kube.list(resource, namespace, **query)
            except ApiError as exc:
                if exc.status == 400 and selector:
                    continue
                if exc.status in (401, 403, 404):
                    return []
                raise translate(exc, resource.path(namespace)) from exc
            return list((body or {}).get("items") or [])
        return []
