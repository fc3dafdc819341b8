"""The Kubernetes API access of ``kubectl canary`` / ``canaryctl``, and nothing else.

The command-line tool must find its cluster the way kubectl does (``--kubeconfig``,
``KUBECONFIG``, ``--context``, the context's default namespace) and must turn every
way a request can fail into one of a few errors a person can act on: the canary
is not there, you may not do this, the cluster cannot be reached, or the API
server said something else. kubernetes_asyncio is only imported in adapters, so
this module is the CLI's whole view of the cluster: it speaks in plain dicts (the
objects exactly as the API server returns them) and in the `CtlError` family.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

from canaryd.api.constants import CANARY_KIND, CANARY_PLURAL, GROUP, VERSION

MERGE_PATCH = "application/merge-patch+json"
CANARY_API = f"the Canary API ({CANARY_PLURAL}.{GROUP})"
NOT_SERVED = f"this cluster does not serve {CANARY_PLURAL}.{GROUP}: is canaryd installed?"
#: How long one request may take before the cluster counts as unreachable.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 15.0
#: Server-side timeout of one watch request; the watch is re-opened after it.
WATCH_WINDOW_SECONDS = 60


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


def kubeconfig_paths(explicit: str | None) -> str:
    """The kubeconfig search path kubectl would use: the flag, then $KUBECONFIG, then ~/.kube/config."""
    if explicit:
        return explicit
    from_env = os.environ.get("KUBECONFIG", "")
    if from_env:
        return from_env
    return str(Path.home() / ".kube" / "config")


def _status_body(exc: ApiException) -> dict[str, Any]:
    raw = exc.body
    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _status_message(exc: ApiException) -> str:
    """The API server's own message from a Status body, falling back to the HTTP reason."""
    message = _status_body(exc).get("message")
    return str(message) if message else str(exc.reason or f"HTTP {exc.status}")


def _translate(exc: BaseException, what: str) -> CtlError:
    """Map a client-library failure to the CLI's error kinds; ``what`` names the object for 404s."""
    if isinstance(exc, CtlError):
        return exc
    if isinstance(exc, ApiException):
        if exc.status == 404:
            details = _status_body(exc).get("details")
            if isinstance(details, dict) and details.get("name"):
                return NotFoundError(f"{what} not found")
            # No object named: the path itself is unknown, i.e. the resource type is not served.
            return NotFoundError(NOT_SERVED)
        if exc.status == 401:
            return ForbiddenError(f"the cluster refused the credentials (401): {_status_message(exc)}")
        if exc.status == 403:
            return ForbiddenError(_status_message(exc))
        if exc.status == 0 or exc.status is None:
            return UnreachableError(f"cannot reach the cluster: {exc.reason}")
        return ApiFailure(f"the API server answered {exc.status}: {_status_message(exc)}", exc.status)
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc)
        return UnreachableError(f"cannot reach the cluster at {exc.host}:{exc.port}: {reason}")
    if isinstance(exc, aiohttp.ClientError | ssl.SSLError | OSError):
        return UnreachableError(f"cannot reach the cluster: {exc}")
    if isinstance(exc, TimeoutError):
        return UnreachableError("cannot reach the cluster: the request timed out")
    return CtlError(f"{type(exc).__name__}: {exc}")


class CtlClient:
    """A connection to one cluster, as chosen by kubeconfig and context."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        default_namespace: str,
        context_name: str,
        user_name: str,
        server: str,
        request_timeout: float,
    ) -> None:
        self._api = api
        self.default_namespace = default_namespace
        self.context_name = context_name
        self.user_name = user_name
        self.server = server
        self.request_timeout = request_timeout

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    ) -> CtlClient:
        """Load the kubeconfig like kubectl does; raises UnreachableError when it is missing or unusable."""
        paths = kubeconfig_paths(kubeconfig)
        existing = [p for p in paths.split(os.pathsep) if p and Path(p).expanduser().exists()]
        if not existing:
            raise UnreachableError(
                f"no kubeconfig found at {paths} (pass --kubeconfig or set KUBECONFIG)"
            )
        try:
            merged = KubeConfigMerger(os.pathsep.join(existing))
            if merged.config is None:
                raise UnreachableError(f"kubeconfig {paths} is empty")
            contexts = merged.config.value.get("contexts") or []
            if not contexts:
                raise UnreachableError(f"kubeconfig {paths} has no contexts")
            wanted = context or merged.config.value.get("current-context")
            if not wanted:
                raise UnreachableError(f"kubeconfig {paths} has no current-context (pass --context)")
            names = [getattr(c, "value", c).get("name") for c in contexts]
            if wanted not in names:
                raise UnreachableError(f'context "{wanted}" does not exist in kubeconfig {paths}')
            loader = KubeConfigLoader(config_dict=merged.config, active_context=wanted, config_base_path=None)
            configuration = client.Configuration()
            await loader.load_and_set(configuration)
        except CtlError:
            raise
        except (ConfigException, KeyError, TypeError, ValueError, OSError, AssertionError) as exc:
            raise UnreachableError(f"cannot use kubeconfig {paths}: {exc}") from exc
        current = loader.current_context or {}
        context_body = current.get("context") or {}
        api = client.ApiClient(configuration=configuration)
        api.user_agent = "canaryctl"
        return cls(
            api,
            default_namespace=context_body.get("namespace") or "default",
            context_name=str(current.get("name", wanted)),
            user_name=str(context_body.get("user", "")),
            server=str(configuration.host),
            request_timeout=request_timeout,
        )

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> CtlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _canaries_path(self, namespace: str | None, name: str | None = None, *, status: bool = False) -> str:
        path = f"/apis/{GROUP}/{VERSION}"
        if namespace is not None:
            path += f"/namespaces/{namespace}"
        path += f"/{CANARY_PLURAL}"
        if name is not None:
            path += f"/{name}"
        if status:
            path += "/status"
        return path

    async def list_canaries(self, namespace: str | None) -> list[dict[str, Any]]:
        """Canaries in one namespace, or in all namespaces when ``namespace`` is None, sorted by both."""
        body = await self._json("GET", self._canaries_path(namespace), CANARY_API)
        items: list[dict[str, Any]] = list(body.get("items") or [])
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"].get("name", "")))
        return items

    async def get_canary(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._json(
            "GET", self._canaries_path(namespace, name), f'canary "{name}" in namespace "{namespace}"'
        )

    async def patch_canary_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch on the status subresource; returns the object as stored after it."""
        return await self._json(
            "PATCH", self._canaries_path(namespace, name, status=True),
            f'canary "{name}" in namespace "{namespace}"', body=patch, content_type=MERGE_PATCH,
        )

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._json(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            f'deployment "{name}" in namespace "{namespace}"',
        )

    async def follow_canary(self, namespace: str, name: str) -> AsyncGenerator[dict[str, Any], None]:
        """The canary now, then again after every change, until the caller stops iterating.

        A GET, then a watch on that one object resumed from the last resourceVersion
        seen; the watch is re-opened when the server closes it, and the object is
        read again on 410 Gone. Raises NotFoundError when the canary is deleted.
        """
        what = f'canary "{name}" in namespace "{namespace}"'
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{CANARY_PLURAL}"
        current = await self.get_canary(namespace, name)
        yield current
        resource_version = str(current["metadata"].get("resourceVersion", ""))
        while True:
            query = [
                ("watch", "true"),
                ("fieldSelector", f"metadata.name={name}"),
                ("resourceVersion", resource_version),
                ("timeoutSeconds", str(WATCH_WINDOW_SECONDS)),
                ("allowWatchBookmarks", "true"),
            ]
            try:
                response = await self._open("GET", path, query, what)
            except ApiFailure as exc:
                if exc.code != 410:
                    raise
                current = await self.get_canary(namespace, name)
                resource_version = str(current["metadata"].get("resourceVersion", ""))
                yield current
                continue
            gone = False
            try:
                async for raw_line in response.content:
                    line = raw_line.strip()
                    if not line:
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            gone = True
                            break
                        raise ApiFailure(f"watch failed: {obj.get('message', obj)}", int(obj.get("code", 0)))
                    meta = obj.get("metadata") or {}
                    resource_version = str(meta.get("resourceVersion", resource_version))
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        raise NotFoundError(f"{what} was deleted")
                    yield obj
            except CtlError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                raise _translate(exc, what) from exc
            finally:
                response.release()
            if gone:
                current = await self.get_canary(namespace, name)
                resource_version = str(current["metadata"].get("resourceVersion", ""))
                yield current

    async def _open(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        what: str,
        *,
        body: Any = None,
        content_type: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return the open response; failures become CtlErrors (server's message)."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response: aiohttp.ClientResponse = await asyncio.wait_for(
                self._api.call_api(
                    path, method, query_params=query, header_params=headers, body=body,
                    auth_settings=["BearerToken"], _preload_content=False,
                ),
                timeout=self.request_timeout,
            )
        except Exception as exc:
            raise _translate(exc, what) from exc
        if response.status >= 400:
            try:
                payload = await response.read()
            finally:
                response.release()
            raise _translate(_with_body(response.status, response.reason or "", payload), what)
        return response

    async def _json(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        response = await self._open(method, path, [], what, body=body, content_type=content_type)
        try:
            parsed = await asyncio.wait_for(response.json(content_type=None), timeout=self.request_timeout)
        except Exception as exc:
            raise _translate(exc, what) from exc
        finally:
            response.release()
        if not isinstance(parsed, dict):
            raise ApiFailure(f"the API server sent {type(parsed).__name__} where an object was expected", 0)
        return parsed

    # ---- Events ---------------------------------------------------------

    async def events_for(self, canary: dict[str, Any]) -> list[dict[str, Any]]:
        """Events about this canary from both Event APIs, oldest first, as uniform dicts.

        Each item has type, reason, message, time (ISO string or None), count,
        source and api ("events.k8s.io/v1" or "v1"). An Event API that is missing
        or forbidden contributes nothing: events are context, not the answer.
        """
        meta = canary["metadata"]
        namespace, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid")

        def about_canary(ref: dict[str, Any] | None) -> bool:
            if not ref or ref.get("kind") != CANARY_KIND or ref.get("name") != name:
                return False
            return not (uid and ref.get("uid") and ref.get("uid") != uid)

        events: list[dict[str, Any]] = []
        new_api, core_api = await asyncio.gather(
            self._list_raw(
                f"/apis/events.k8s.io/v1/namespaces/{namespace}/events",
                f"regarding.name={name},regarding.kind={CANARY_KIND}",
            ),
            self._list_raw(
                f"/api/v1/namespaces/{namespace}/events",
                f"involvedObject.name={name},involvedObject.kind={CANARY_KIND}",
            ),
        )
        for item in new_api:
            if not about_canary(item.get("regarding")):
                continue
            series = item.get("series") or {}
            events.append({
                "api": "events.k8s.io/v1",
                "type": item.get("type", ""),
                "reason": item.get("reason", ""),
                "message": item.get("note", ""),
                "time": series.get("lastObservedTime") or item.get("eventTime")
                or item.get("deprecatedLastTimestamp") or item["metadata"].get("creationTimestamp"),
                "count": int(series.get("count") or item.get("deprecatedCount") or 1),
                "source": item.get("reportingController", ""),
            })
        for item in core_api:
            if not about_canary(item.get("involvedObject")):
                continue
            events.append({
                "api": "v1",
                "type": item.get("type", ""),
                "reason": item.get("reason", ""),
                "message": item.get("message", ""),
                "time": item.get("lastTimestamp") or item.get("eventTime") or item.get("firstTimestamp")
                or item["metadata"].get("creationTimestamp"),
                "count": int(item.get("count") or 1),
                "source": (item.get("source") or {}).get("component", "")
                or item.get("reportingComponent", ""),
            })
        events.sort(key=lambda e: e["time"] or "")
        return events

    async def _list_raw(self, path: str, field_selector: str) -> list[dict[str, Any]]:
        """GET a list as plain JSON; a selector the server rejects is retried without it.

        A missing or forbidden Event API yields an empty list instead of an error.
        """
        for selector in (field_selector, None):
            query = [("fieldSelector", selector)] if selector else []
            try:
                response = await self._open("GET", path, query, path)
            except ApiFailure as exc:
                if exc.code == 400 and selector:
                    continue
                raise
            except (NotFoundError, ForbiddenError):
                return []
            try:
                body = await response.json(content_type=None)
            finally:
                response.release()
            return list((body or {}).get("items") or [])
        return []


def _with_body(status: int, reason: str, body: bytes) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = body
    return exc
