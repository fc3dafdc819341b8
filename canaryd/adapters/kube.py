"""The one way canaryd talks to a Kubernetes API server: the controller and ``kubectl canary`` alike.

Configuration (kubeconfig files found and merged as kubectl does, or the
in-cluster service account) comes from kubernetes_asyncio's loaders, so canaryd
finds and authenticates to a cluster like every other client: bearer tokens
(refreshed when the in-cluster token file rotates), client certificates, exec
plugins, CA data, ``insecure-skip-tls-verify`` and ``tls-server-name``. The
requests themselves are plain aiohttp with JSON bodies: the generated client's
model, serialisation and REST layers cost several times the work of the request
on a controller that makes thousands of them a minute, and canaryd only ever
sends and reads JSON. On top of that this module adds what the generated typed
clients lack: the resources canaryd uses (built-in, Gateway API and its own
CRDs) addressed uniformly, one error type for every way a request fails
(``ApiError``, status 0 when no answer came), a timeout and a client-side rate
limit on every call, watch streams as decoded events, and a count of requests
by verb and response code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

from canaryd.adapters.ratelimit import TokenBucket
from canaryd.api.constants import CANARY_PLURAL, GROUP, METRIC_TEMPLATE_PLURAL, VERSION

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    """A REST resource: where its objects live on the API server."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


CANARIES = Resource(GROUP, VERSION, CANARY_PLURAL, "Canary")
METRIC_TEMPLATES = Resource(GROUP, VERSION, METRIC_TEMPLATE_PLURAL, "MetricTemplate")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICES = Resource("", "v1", "services", "Service")
SECRETS = Resource("", "v1", "secrets", "Secret")
AUTOSCALERS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
GRPC_ROUTES = Resource("gateway.networking.k8s.io", "v1", "grpcroutes", "GRPCRoute")
GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways", "Gateway")
GATEWAY_CLASSES = Resource(
    "gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass", namespaced=False
)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
EVENTS = Resource("events.k8s.io", "v1", "events", "Event")
#: The older core/v1 Events, which ``kubectl canary status`` reads besides events.k8s.io/v1.
CORE_EVENTS = Resource("", "v1", "events", "Event")

ROUTE_RESOURCES = {"HTTPRoute": HTTP_ROUTES, "GRPCRoute": GRPC_ROUTES}


class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status body when there is one."""

    def __init__(self, status: int, reason: str = "", message: str = "", body: Any = None) -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def conflict(self) -> bool:
        """The write lost a race: a stale resourceVersion (409) or a failed ``test`` op (409/422)."""
        return self.status in (409, 422)

    @property
    def gone(self) -> bool:
        return self.status == 410


class WatchError(ApiError):
    """An ERROR event in a watch stream (410 Gone when the history the watch asked for is compacted)."""


RequestObserver = Callable[[str, str, int], None]
"""Called after every request with (verb, resource plural, HTTP code; 0 when no answer came)."""


class ConfigurationError(Exception):
    """No usable way to reach the API server; the message says what to set."""


@dataclass(frozen=True)
class KubeconfigContext:
    """The kubeconfig context a connection uses, as a person names it."""

    name: str
    #: The context's namespace; "default" when it sets none (as kubectl does).
    namespace: str
    user: str


def kubeconfig_search_path(explicit: str | None) -> str:
    """Where kubectl looks for kubeconfig files: the flag, then $KUBECONFIG, then ~/.kube/config."""
    if explicit:
        return explicit
    from_env = os.environ.get("KUBECONFIG", "")
    if from_env:
        return from_env
    return str(Path.home() / ".kube" / "config")


async def load_kubeconfig(paths: str, context: str | None = None) -> tuple[Configuration, KubeconfigContext]:
    """Client configuration from kubeconfig files as kubectl reads them.

    ``paths`` is a list separated like $KUBECONFIG; the files that exist are
    merged (the first file that names a cluster, user or context wins), and
    ``context`` (default: the current context) chooses the cluster and user.
    Raises ConfigurationError with a message that says what to fix.
    """
    existing = [p for p in paths.split(os.pathsep) if p and Path(p).expanduser().exists()]
    if not existing:
        raise ConfigurationError(f"no kubeconfig found at {paths} (pass --kubeconfig or set KUBECONFIG)")
    configuration = Configuration()
    try:
        merged = KubeConfigMerger(os.pathsep.join(existing))
        if merged.config is None:
            raise ConfigurationError(f"kubeconfig {paths} is empty")
        contexts = merged.config.value.get("contexts") or []
        if not contexts:
            raise ConfigurationError(f"kubeconfig {paths} has no contexts")
        wanted = context or merged.config.value.get("current-context")
        if not wanted:
            raise ConfigurationError(f"kubeconfig {paths} has no current-context (pass --context)")
        names = [getattr(c, "value", c).get("name") for c in contexts]
        if wanted not in names:
            raise ConfigurationError(f'context "{wanted}" does not exist in kubeconfig {paths}')
        loader = KubeConfigLoader(config_dict=merged.config, active_context=wanted, config_base_path=None)
        await loader.load_and_set(configuration)
    except ConfigurationError:
        raise
    except (kube_config.ConfigException, KeyError, TypeError, ValueError, OSError, AssertionError) as exc:
        raise ConfigurationError(f"cannot use kubeconfig {paths}: {exc}") from exc
    current = loader.current_context or {}
    body = current.get("context") or {}
    chosen = KubeconfigContext(
        name=str(current.get("name", wanted)),
        namespace=str(body.get("namespace") or "default"),
        user=str(body.get("user", "")),
    )
    return configuration, chosen


async def load_configuration(kubeconfig: str | None, context: str | None = None) -> Configuration:
    """The controller's configuration, from the first of these that is given.

    1. ``kubeconfig``: a file (``--kubeconfig`` or ``CANARYD_KUBECONFIG``);
    2. ``$KUBECONFIG``: kubectl's list of files, merged as kubectl merges them;
    3. the pod's service account (in-cluster).

    ``~/.kube/config`` is never read on its own: a controller in a pod that
    happens to have one must not leave the cluster it runs in.
    """
    configuration = Configuration()
    if kubeconfig:
        if not os.path.isfile(kubeconfig):
            raise ConfigurationError(f"kubeconfig {kubeconfig} does not exist")
        configuration, _ = await load_kubeconfig(kubeconfig, context)
    elif os.environ.get("KUBECONFIG"):
        configuration, _ = await load_kubeconfig(os.environ["KUBECONFIG"], context)
    else:
        try:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kube_config.ConfigException as exc:
            raise ConfigurationError(
                "no kubeconfig given and not running in a cluster: "
                "pass --kubeconfig, or set CANARYD_KUBECONFIG or KUBECONFIG"
            ) from exc
    return configuration


def _plural_of(path: str) -> str:
    parts = [p for p in path.split("?")[0].split("/") if p]
    # .../<plural>[/<name>[/<subresource>]] after optional namespaces/<ns>
    if "namespaces" in parts:
        i = parts.index("namespaces")
        rest = parts[i + 2 :]
        if rest:
            return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
        return "namespaces"
    rest = parts[2:] if parts and parts[0] == "api" else parts[3:]
    return (rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")) if rest else ""


def environment_proxy(url: str) -> str | None:
    """The proxy $HTTPS_PROXY / $HTTP_PROXY name for ``url``, unless $NO_PROXY exempts its host."""
    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass_environment(parts.hostname):  # type: ignore[attr-defined]
        return None
    return urllib.request.getproxies_environment().get(parts.scheme) or None


def ssl_context(configuration: Configuration) -> ssl.SSLContext:
    """TLS as the kubeconfig (or service account) asks for it: its CA, client certificate and verification."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if getattr(configuration, "disable_strict_ssl_verification", False):
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


class KubeClient:
    """JSON requests and watch streams against one API server, rate limited, timed out and counted."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        qps: float = 50.0,
        burst: int = 100,
        on_request: RequestObserver | None = None,
        user_agent: str = "canaryd",
        max_connections: int = 256,
        request_timeout: float = 30.0,
    ) -> None:
        self.configuration = configuration
        self._base = str(configuration.host).rstrip("/")
        self._ssl = ssl_context(configuration) if self._base.startswith("https") else None
        # The environment's proxy settings are read once: aiohttp's trust_env reads them, and ~/.netrc,
        # on every request, in a thread.
        self._proxy = configuration.proxy or environment_proxy(self._base)
        self._server_hostname = configuration.tls_server_name or None
        self._user_agent = user_agent
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._static_headers: dict[str, str] | None = None
        self.limiter = TokenBucket(qps, burst)
        #: Seconds a request may wait for its socket and for its answer, once it has a connection of the pool
        #: (for a watch: until the stream opens).
        self.request_timeout = request_timeout
        self._on_request = on_request
        #: Requests made so far, by (verb, code); handy for tests and benchmarks.
        self.counts: dict[tuple[str, int], int] = {}

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None,
        *,
        context: str | None = None,
        qps: float = 50.0,
        burst: int = 100,
        on_request: RequestObserver | None = None,
        user_agent: str = "canaryd",
    ) -> KubeClient:
        configuration = await load_configuration(kubeconfig, context)
        return cls(configuration, qps=qps, burst=burst, on_request=on_request, user_agent=user_agent)

    @property
    def host(self) -> str:
        return str(self.configuration.host)

    def _observe(self, verb: str, path: str, code: int) -> None:
        self.counts[(verb, code)] = self.counts.get((verb, code), 0) + 1
        if self._on_request is not None:
            self._on_request(verb, _plural_of(path), code)

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl or False)
            # Watch events that carry large objects can exceed aiohttp's default line buffer
            # (etcd's default limit on one object is 1.5 MiB).
            self._session = aiohttp.ClientSession(connector=connector, read_bufsize=2**21)
        return self._session

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        """Accept, Content-Type, User-Agent and the credentials, refreshed when they can expire."""
        configuration = self.configuration
        if self._static_headers is None or configuration.refresh_api_key_hook is not None:
            headers = {"Accept": "application/json", "User-Agent": self._user_agent}
            token = await configuration.get_api_key_with_prefix("BearerToken")
            if token:
                headers["Authorization"] = str(token)
            elif configuration.username is not None or configuration.password is not None:
                pair = f"{configuration.username or ''}:{configuration.password or ''}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            self._static_headers = headers
        return {**self._static_headers, "Content-Type": content_type or "application/json"}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None,
        body: Any,
        content_type: str | None,
        timeout: float | aiohttp.ClientTimeout | None,
    ) -> aiohttp.ClientResponse:
        params = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (query or {}).items()]
        if isinstance(timeout, int | float):
            # Timed from when the request has a connection: one waiting for a free connection of the
            # pool is queued, not failed (a burst of writes would otherwise time out in the client and
            # come back as retries, more load on a server that is already behind).
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        options: dict[str, Any] = {}
        if self._proxy:
            options["proxy"] = self._proxy
        if self._server_hostname:
            options["server_hostname"] = self._server_hostname
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self._client_session().request(
            method,
            self._base + path,
            params=params or None,
            data=data,
            headers=await self._headers(content_type),
            timeout=timeout or aiohttp.ClientTimeout(),
            **options,
        )

    async def request(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return its JSON body; raise ApiError on any non-2xx answer.

        ``verb`` is the Kubernetes verb (get, list, create, update, patch, delete)
        the request counts under. No answer within ``timeout`` seconds (default:
        the client's ``request_timeout``), a refused connection or a TLS failure
        is an ApiError with status 0, caused by what went wrong.
        """
        await self.limiter.acquire()
        try:
            response = await self._send(
                method,
                path,
                query=query,
                body=body,
                content_type=content_type,
                timeout=timeout if timeout is not None else self.request_timeout,
            )
            async with response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._observe(verb, path, 0)
            raise ApiError(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
        self._observe(verb, path, response.status)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        if not 200 <= response.status < 300:
            if isinstance(data, dict):
                raise ApiError(
                    response.status, str(data.get("reason", "")), str(data.get("message", "")), data
                )
            raise ApiError(response.status, response.reason or "", str(data)[:500], data)
        return data

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("get", "GET", resource.path(namespace, name))
        return result

    async def list(self, resource: Resource, namespace: str | None = None, **query: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("list", "GET", resource.path(namespace), query=query)
        return result

    async def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("create", "POST", resource.path(namespace), body=body)
        return result

    async def replace(
        self, resource: Resource, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "update", "PUT", resource.path(namespace, name), body=body
        )
        return result

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        body: Any,
        *,
        content_type: str = MERGE_PATCH,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "patch",
            "PATCH",
            resource.path(namespace, name, subresource),
            body=body,
            content_type=content_type,
        )
        return result

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        await self.request("delete", "DELETE", resource.path(namespace, name))

    @asynccontextmanager
    async def watch(
        self, resource: Resource, namespace: str | None, query: dict[str, Any]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a watch stream; the caller reads newline-delimited JSON events from ``content``.

        Raises ApiError when the server refuses the watch (410 Gone included),
        or sends no answer within ``request_timeout``.
        """
        await self.limiter.acquire()
        path = resource.path(namespace)
        try:
            async with asyncio.timeout(self.request_timeout):
                response = await self._send(
                    "GET",
                    path,
                    query={**query, "watch": "true"},
                    body=None,
                    content_type=None,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._observe("watch", path, 0)
            raise ApiError(0, "Unreachable", f"watch {path}: {exc!r}") from exc
        self._observe("watch", path, response.status)
        try:
            if not 200 <= response.status < 300:
                raw = await response.read()
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = {}
                raise ApiError(
                    response.status, str(data.get("reason", "")), str(data.get("message", "")), data
                )
            yield response
        finally:
            response.release()
            response.close()

    async def watch_events(
        self,
        resource: Resource,
        namespace: str | None,
        query: dict[str, Any],
        *,
        stall_timeout: float | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The decoded events of one watch stream (bookmarks included), until the server ends it.

        An ERROR event raises WatchError (``gone`` for 410); a stream that
        sends nothing for ``stall_timeout`` seconds raises WatchStalled; a
        stream that breaks raises ApiError with status 0. Iterate it under
        ``contextlib.aclosing`` so the stream is released when the caller stops.
        """
        async with self.watch(resource, namespace, query) as response:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that arrives with the line, and shutdown would hang here.
                    async with asyncio.timeout(stall_timeout):
                        line = await response.content.readline()
                except TimeoutError as exc:
                    if stall_timeout is not None:
                        raise WatchStalled(f"nothing arrived for {stall_timeout:g}s") from exc
                    raise ApiError(0, "Unreachable", f"watch {resource.plural}: {exc!r}") from exc
                except (aiohttp.ClientError, OSError) as exc:
                    raise ApiError(0, "Unreachable", f"watch {resource.plural}: {exc!r}") from exc
                if not line:
                    return  # the server closed the stream (timeoutSeconds)
                line = line.strip()
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    obj = event.get("object") or {}
                    code = int(obj.get("code") or 0)
                    raise WatchError(code, str(obj.get("reason", "")), str(obj.get("message", "")), obj)
                yield event

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class WatchStalled(Exception):
    """A watch stream on which nothing (no event, no bookmark) arrived for too long."""
