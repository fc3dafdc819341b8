"""Instant and range queries to Prometheus for canary analysis, on the event loop, cheap and bounded.

A small aiohttp client of canaryd's own (the Prometheus HTTP API is two GET
endpoints answering JSON), so a query costs one request on the controller's
event loop: no thread hand-offs, no dataframe libraries. It guarantees that:

- each attempt has a timeout, so a slow or dead Prometheus never freezes the
  canaries the controller runs;
- at most ``max_in_flight`` queries run against one Prometheus server
  (scheme://host:port) at a time;
- with ``share_seconds`` set, identical queries are asked once: a query for
  the same endpoint, PromQL and evaluation time as one already in flight
  waits for that one's answer, and a value or NoData answer is reused for
  ``share_seconds`` after it came (so Canaries that render the same query for
  the same time, e.g. a shared template over the same series, cost one query
  between them; errors are never reused, and a query "now" is never shared);
- transient failures (connection errors, timeouts, HTTP 502/503/504) are
  retried with exponential backoff and jitter; a bad query (400/422), an
  auth failure or a malformed answer is not;
- the answer is typed (``canaryd.core.promql``): ``Value``, ``NoData``
  (empty, NaN, ±Inf) or ``QueryError`` with a kind (unreachable, http_status,
  bad_query, timeout, unexpected_shape); a range query (for comparison
  metrics) gives a ``RangeSeries``, ``NoData`` (no series) or ``QueryError``.

Credentials come already resolved: ``credentials_from_secret`` maps a
Secret's ``data`` (base64) to a bearer token (key ``token``) or basic auth
(keys ``username`` and ``password``), plus an optional CA bundle (``ca.crt``).
TLS verification is on unless an endpoint opts out with
``insecure_skip_verify``.

Query latency is reported through the ``on_query`` hook, so the runtime
exports it without this module depending on prometheus_client.

One ``PrometheusQuerier`` belongs to one event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiohttp

from canaryd.api.durations import parse_duration
from canaryd.api.models import PrometheusProvider
from canaryd.core.promql import (
    NoData,
    QueryError,
    QueryErrorKind,
    QueryResult,
    RangeResult,
    RangeSeries,
    Value,
    interpret_range_result,
    interpret_result,
)
from canaryd.core.redaction import redact_text

TRANSIENT_STATUSES = frozenset({502, 503, 504})
BAD_QUERY_STATUSES = frozenset({400, 422})
_MAX_CLIENTS = 64
#: Answers kept for reuse at most (the oldest are dropped first).
_MAX_SHARED = 100_000


class CredentialsError(ValueError):
    """A Secret does not hold usable Prometheus credentials; the message names the missing key."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """Resolved credentials for one Prometheus; never printed in full."""

    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None
    #: PEM text of a CA bundle to verify the server with (from the Secret's ``ca.crt``).
    ca_pem: str | None = None

    def __repr__(self) -> str:
        kind = "bearer" if self.bearer_token else "basic" if self.username is not None else "none"
        return f"Credentials(kind={kind}, ca={'yes' if self.ca_pem else 'no'})"


def _decode(data: Mapping[str, str], key: str) -> str:
    try:
        return base64.b64decode(data[key], validate=True).decode("utf-8").strip("\n")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise CredentialsError(f"Secret key {key!r} is not valid base64-encoded UTF-8") from error


def credentials_from_secret(
    data: Mapping[str, str], kind: Literal["Bearer", "Basic"] | None = None
) -> Credentials:
    """Credentials from a Secret's ``data`` (base64 values, as the API returns them).

    ``token`` gives Bearer auth; ``username`` and ``password`` give Basic auth;
    ``ca.crt`` (optional) is used to verify the server's certificate. With
    ``kind`` set, the keys that kind needs must be present.
    """
    ca_pem = _decode(data, "ca.crt") if "ca.crt" in data else None
    if kind == "Bearer" or (kind is None and "token" in data):
        if "token" not in data:
            raise CredentialsError("Secret has no 'token' key for Bearer auth")
        token = _decode(data, "token").strip()
        if not token:
            raise CredentialsError("Secret key 'token' is empty")
        return Credentials(bearer_token=token, ca_pem=ca_pem)
    if kind == "Basic" or (kind is None and ("username" in data or "password" in data)):
        missing = [key for key in ("username", "password") if key not in data]
        if missing:
            names = " or ".join(repr(key) for key in missing)
            raise CredentialsError(f"Secret has no {names} key for Basic auth")
        return Credentials(
            username=_decode(data, "username"), password=_decode(data, "password"), ca_pem=ca_pem
        )
    if ca_pem is not None:
        return Credentials(ca_pem=ca_pem)
    raise CredentialsError("Secret has neither 'token' (Bearer) nor 'username'/'password' (Basic) keys")


@dataclass(frozen=True)
class PrometheusEndpoint:
    """Where and how to query one Prometheus (or a compatible API: Thanos, Mimir, VictoriaMetrics)."""

    address: str
    credentials: Credentials | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    insecure_skip_verify: bool = False
    #: Path of a CA bundle file; ``credentials.ca_pem`` is used when this is not set.
    ca_bundle: str | None = None
    #: Seconds one attempt may take.
    timeout: float = 10.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.address)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Prometheus address {self.address!r} must look like http(s)://host:port")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")

    @property
    def server(self) -> str:
        """scheme://host:port: the unit the in-flight limit applies to."""
        parts = urlsplit(self.address)
        return f"{parts.scheme}://{parts.netloc}"

    def _client_key(self) -> tuple[Any, ...]:
        return (
            self.address.rstrip("/"),
            self.credentials,
            tuple(sorted(self.headers.items())),
            self.insecure_skip_verify,
            self.ca_bundle,
        )


def endpoint_for(
    provider: PrometheusProvider,
    *,
    default_address: str,
    credentials: Credentials | None = None,
    default_timeout: float | None = None,
) -> PrometheusEndpoint:
    """The endpoint a MetricTemplate's provider describes (its address, else the controller's default)."""
    timeout = parse_duration(provider.timeout).total_seconds()
    if default_timeout is not None and "timeout" not in provider.model_fields_set:
        timeout = default_timeout
    return PrometheusEndpoint(
        address=provider.address or default_address,
        credentials=credentials,
        headers=dict(provider.headers),
        insecure_skip_verify=provider.insecure_skip_verify,
        timeout=timeout,
    )


@dataclass(frozen=True)
class QueryObservation:
    """What the ``on_query`` hook receives after each query sent (all attempts included)."""

    server: str
    #: "value", "no_data" or the QueryErrorKind value.
    outcome: str
    seconds: float
    attempts: int


def _outcome(result: QueryResult | RangeResult) -> str:
    if isinstance(result, Value | RangeSeries):
        return "value"
    if isinstance(result, NoData):
        return "no_data"
    return result.kind.value


@dataclass
class _ServerState:
    semaphore: asyncio.Semaphore
    in_flight: int = 0
    max_in_flight_seen: int = 0


Answer = QueryResult | RangeResult
_ShareKey = tuple[Any, ...]


@dataclass
class _Shared:
    task: asyncio.Task[Answer]
    #: When a finished answer stops being reused (monotonic seconds); 0 while in flight.
    expires: float = 0.0


class PrometheusQuerier:
    """Runs queries with timeouts, retries, a per-server bound and sharing of identical queries."""

    def __init__(
        self,
        *,
        max_in_flight: int = 8,
        retries: int = 2,
        backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 2.0,
        share_seconds: float | None = None,
        on_query: Callable[[QueryObservation], None] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if retries < 0:
            raise ValueError("retries cannot be negative")
        if share_seconds is not None and share_seconds < 0:
            raise ValueError("share_seconds cannot be negative")
        self.max_in_flight = max_in_flight
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.share_seconds = share_seconds
        self._on_query = on_query
        self._servers: dict[str, _ServerState] = {}
        self._sessions: OrderedDict[tuple[Any, ...], aiohttp.ClientSession] = OrderedDict()
        self._shared: OrderedDict[_ShareKey, _Shared] = OrderedDict()
        self._closing: list[asyncio.Task[None]] = []
        self._closed = False
        #: Queries sent to a Prometheus, and queries answered by sharing one (tests and benchmarks).
        self.sent = 0
        self.shared = 0

    # -- public API --------------------------------------------------------------------------------------

    async def query(
        self,
        endpoint: PrometheusEndpoint,
        promql: str,
        *,
        at: datetime | float | None = None,
        timeout: float | None = None,
    ) -> QueryResult:
        """Run one instant query (at ``at``, else now) and return its typed result. Never raises for
        Prometheus-side problems: they come back as ``QueryError``."""
        params: dict[str, str] = {"query": promql}
        if at is not None:
            stamp = at.timestamp() if isinstance(at, datetime) else float(at)
            params["time"] = f"{stamp:.3f}"
        result = await self._shared_run(endpoint, "query", params, timeout, shareable=at is not None)
        assert not isinstance(result, RangeSeries)
        return result

    async def query_range(
        self,
        endpoint: PrometheusEndpoint,
        promql: str,
        *,
        start: datetime,
        end: datetime,
        step: timedelta,
        timeout: float | None = None,
    ) -> RangeResult:
        """Run one range query (a point every ``step`` from ``start`` to ``end``) and return its one
        series, NoData or a ``QueryError``; never raises for Prometheus-side problems."""
        params = {
            "query": promql,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{step.total_seconds():g}",
        }
        result = await self._shared_run(endpoint, "query_range", params, timeout, shareable=True)
        assert not isinstance(result, Value)
        return result

    def in_flight(self, server: str) -> int:
        """Queries running right now against ``server`` (scheme://host:port)."""
        state = self._servers.get(server)
        return state.in_flight if state else 0

    def max_in_flight_seen(self, server: str) -> int:
        """The most queries ever seen running at once against ``server``."""
        state = self._servers.get(server)
        return state.max_in_flight_seen if state else 0

    def close(self) -> None:
        """Refuse further queries and close the HTTP sessions (in the background when a loop runs)."""
        if self._closed:
            return
        self._closed = True
        sessions, self._sessions = list(self._sessions.values()), OrderedDict()
        for entry in self._shared.values():
            entry.task.cancel()
        self._shared.clear()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._closing = [loop.create_task(session.close()) for session in sessions]

    async def aclose(self) -> None:
        """Close and wait until the HTTP sessions are closed."""
        self.close()
        closing, self._closing = self._closing, []
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)

    async def __aenter__(self) -> PrometheusQuerier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- sharing -----------------------------------------------------------------------------------------

    async def _shared_run(
        self,
        endpoint: PrometheusEndpoint,
        api: str,
        params: dict[str, str],
        timeout: float | None,
        *,
        shareable: bool,
    ) -> Answer:
        if self._closed:
            raise RuntimeError("PrometheusQuerier is closed")
        if not shareable or self.share_seconds is None:  # "now" differs for every caller
            return await self._run(endpoint, api, params, timeout)
        key = (endpoint._client_key(), endpoint.timeout, timeout, api, tuple(sorted(params.items())))
        now = time.monotonic()
        entry = self._shared.get(key)
        if entry is not None and (not entry.task.done() or entry.expires > now):
            self.shared += 1
            return await asyncio.shield(entry.task)
        # The query runs in a task of its own, so a caller that is cancelled does not cancel it for
        # the others waiting on it.
        task = asyncio.get_running_loop().create_task(self._run(endpoint, api, params, timeout))
        entry = _Shared(task)
        self._shared[key] = entry
        self._shared.move_to_end(key)
        task.add_done_callback(lambda done: self._finished(key, entry))
        self._forget_expired(now)
        return await asyncio.shield(task)

    def _finished(self, key: _ShareKey, entry: _Shared) -> None:
        task = entry.task
        keep = (
            self.share_seconds is not None
            and self.share_seconds > 0
            and not task.cancelled()
            and task.exception() is None
            and not isinstance(task.result(), QueryError)
        )
        if keep:
            entry.expires = time.monotonic() + (self.share_seconds or 0.0)
        elif self._shared.get(key) is entry:
            del self._shared[key]

    def _forget_expired(self, now: float) -> None:
        while self._shared:
            key, oldest = next(iter(self._shared.items()))
            if not oldest.task.done():
                return
            if oldest.expires > now and len(self._shared) <= _MAX_SHARED:
                return
            del self._shared[key]

    # -- one query, with retries -------------------------------------------------------------------------

    async def _run(
        self, endpoint: PrometheusEndpoint, api: str, params: dict[str, str], timeout: float | None
    ) -> Answer:
        per_attempt = timeout if timeout is not None else endpoint.timeout
        started = time.perf_counter()
        attempts = 0
        result: Answer
        while True:
            attempts += 1
            result, transient = await self._attempt(endpoint, api, params, per_attempt)
            if not transient or attempts > self.retries:
                break
            await asyncio.sleep(self._backoff(attempts))
        if isinstance(result, QueryError) and attempts > 1:
            result = QueryError(result.kind, f"{result.message} (after {attempts} attempts)", result.status)
        self.sent += 1
        if self._on_query is not None:
            self._on_query(
                QueryObservation(endpoint.server, _outcome(result), time.perf_counter() - started, attempts)
            )
        return result

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * (2 ** (attempt - 1)))
        return float(ceiling * (0.5 + random.random() / 2))

    def _server_state(self, server: str) -> _ServerState:
        state = self._servers.get(server)
        if state is None:
            state = self._servers[server] = _ServerState(asyncio.Semaphore(self.max_in_flight))
        return state

    async def _attempt(
        self, endpoint: PrometheusEndpoint, api: str, params: dict[str, str], timeout: float
    ) -> tuple[Answer, bool]:
        state = self._server_state(endpoint.server)
        async with state.semaphore:
            state.in_flight += 1
            state.max_in_flight_seen = max(state.max_in_flight_seen, state.in_flight)
            try:
                return await self._call(endpoint, api, params, timeout)
            finally:
                state.in_flight -= 1

    async def _call(
        self, endpoint: PrometheusEndpoint, api: str, params: dict[str, str], timeout: float
    ) -> tuple[Answer, bool]:
        session, headers = self._session(endpoint)
        address, userinfo = split_userinfo(endpoint.address)
        if userinfo is not None and "Authorization" not in headers:
            # A user and password in the address are Basic auth, unless the Secret's credentials say
            # otherwise (those win).
            headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        url = f"{address.rstrip('/')}/api/v1/{api}"
        try:
            async with asyncio.timeout(timeout):
                async with session.get(url, params=params, headers=headers) as response:
                    status = response.status
                    body = await response.read()
        except TimeoutError:
            return QueryError(QueryErrorKind.TIMEOUT, f"no answer within {timeout:g}s"), True
        except (aiohttp.ClientSSLError, ssl.SSLError) as error:
            return QueryError(QueryErrorKind.UNREACHABLE, f"TLS failure: {_short(error)}"), False
        except (aiohttp.ClientConnectionError, OSError) as error:
            return QueryError(QueryErrorKind.UNREACHABLE, f"cannot connect: {_short(error)}"), True
        except aiohttp.ClientError as error:
            return QueryError(QueryErrorKind.UNREACHABLE, _short(error)), False
        except ValueError as error:  # a request aiohttp refuses to build (an address it cannot use)
            return QueryError(QueryErrorKind.UNREACHABLE, f"cannot send the query: {_short(error)}"), False
        if status != 200:
            return _status_error(status, body)
        try:
            payload = json.loads(body)
        except ValueError as error:
            return QueryError(
                QueryErrorKind.UNEXPECTED_SHAPE, f"answer is not Prometheus API JSON: {_short(error)}"
            ), False
        try:
            data = payload["data"]
            result = data["result"]
        except (KeyError, TypeError) as error:
            return QueryError(
                QueryErrorKind.UNEXPECTED_SHAPE, f"answer is not a Prometheus API response: {_short(error)}"
            ), False
        if api == "query_range":
            return interpret_range_result(result), False
        return interpret_result(result, data.get("resultType") if isinstance(data, dict) else None), False

    def _session(self, endpoint: PrometheusEndpoint) -> tuple[aiohttp.ClientSession, dict[str, str]]:
        key = endpoint._client_key()
        headers = dict(endpoint.headers)
        credentials = endpoint.credentials
        if credentials is not None and credentials.bearer_token:
            headers["Authorization"] = f"Bearer {credentials.bearer_token}"
        elif credentials is not None and credentials.username is not None:
            pair = f"{credentials.username}:{credentials.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        session = self._sessions.get(key)
        if session is None:
            connector = aiohttp.TCPConnector(limit=self.max_in_flight, ssl=self._ssl(endpoint))
            session = self._sessions[key] = aiohttp.ClientSession(connector=connector)
            # Rotated credentials make new keys; close the oldest sessions.
            while len(self._sessions) > _MAX_CLIENTS:
                _, old = self._sessions.popitem(last=False)
                self._closing.append(asyncio.get_running_loop().create_task(old.close()))
        return session, headers

    @staticmethod
    def _ssl(endpoint: PrometheusEndpoint) -> ssl.SSLContext | bool:
        if not endpoint.address.startswith("https"):
            return False
        if endpoint.insecure_skip_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if endpoint.ca_bundle:
            return ssl.create_default_context(cafile=endpoint.ca_bundle)
        if endpoint.credentials is not None and endpoint.credentials.ca_pem:
            return ssl.create_default_context(cadata=endpoint.credentials.ca_pem)
        return ssl.create_default_context()


def _short(error: BaseException, limit: int = 300) -> str:
    """The error's text for a person: credentials removed (it may quote the URL or a header), then cut."""
    text = redact_text(str(error)) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _status_error(status: int, body: bytes) -> tuple[Answer, bool]:
    detail = body.decode("utf-8", errors="replace")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        detail = str(json.loads(detail).get("error") or detail)
    detail = _short(Exception(detail.strip() or "no body"))
    if status in BAD_QUERY_STATUSES:
        return QueryError(QueryErrorKind.BAD_QUERY, detail, status), False
    return QueryError(QueryErrorKind.HTTP_STATUS, f"HTTP {status}: {detail}", status), (
        status in TRANSIENT_STATUSES
    )


def split_userinfo(address: str) -> tuple[str, str | None]:
    """The address without a ``user:password@`` part, and that part (percent-decoded) if there was one."""
    parts = urlsplit(address)
    if parts.username is None and parts.password is None:
        return address, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    stripped = parts._replace(netloc=netloc).geturl()
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    return stripped, f"{user}:{password}"


__all__ = [
    "BAD_QUERY_STATUSES",
    "TRANSIENT_STATUSES",
    "Credentials",
    "CredentialsError",
    "PrometheusEndpoint",
    "PrometheusQuerier",
    "QueryObservation",
    "credentials_from_secret",
    "endpoint_for",
]
