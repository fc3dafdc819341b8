"""Instant and range queries to Prometheus for canary analysis, safe to call from the event loop.

prometheus-api-client is synchronous (requests) and waits forever by default,
so a slow or dead Prometheus would freeze every canary the controller runs.
This module wraps it so that:

- each call runs in a dedicated thread pool, never on the event loop;
- each attempt has a timeout (the HTTP call itself, plus a backstop on the
  asyncio side);
- at most ``max_in_flight`` queries run against one Prometheus server
  (scheme://host:port) at a time. A slot is held until the worker thread has
  really finished, so a timed-out call still counts until it returns;
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

import ast
import asyncio
import base64
import binascii
import contextlib
import json
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

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
_STATUS_MESSAGE = re.compile(r"HTTP Status Code (\d+) \((.*)\)\Z", re.DOTALL)
_ASYNC_GRACE_SECONDS = 1.0
_MAX_CLIENTS = 64


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
    """What the ``on_query`` hook receives after each query (all attempts included)."""

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
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    max_in_flight_seen: int = 0


class PrometheusQuerier:
    """Runs instant queries off the event loop with timeouts, retries and a per-server bound."""

    def __init__(
        self,
        *,
        max_in_flight: int = 8,
        retries: int = 2,
        backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 2.0,
        max_threads: int = 32,
        on_query: Callable[[QueryObservation], None] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if retries < 0:
            raise ValueError("retries cannot be negative")
        self.max_in_flight = max_in_flight
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._on_query = on_query
        self._executor = ThreadPoolExecutor(
            max_workers=max(max_threads, max_in_flight), thread_name_prefix="canaryd-prometheus"
        )
        self._servers: dict[str, _ServerState] = {}
        self._clients: dict[tuple[Any, ...], PrometheusConnect] = {}
        self._clients_lock = threading.Lock()
        self._temp_files: list[str] = []
        self._closed = False

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
        params: dict[str, str] = {}
        if at is not None:
            stamp = at.timestamp() if isinstance(at, datetime) else float(at)
            params["time"] = f"{stamp:.3f}"
        result = await self._run(endpoint, promql, params, timeout, ranged=False)
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
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{step.total_seconds():g}",
        }
        result = await self._run(endpoint, promql, params, timeout, ranged=True)
        assert not isinstance(result, Value)
        return result

    async def _run(
        self,
        endpoint: PrometheusEndpoint,
        promql: str,
        params: dict[str, str],
        timeout: float | None,
        *,
        ranged: bool,
    ) -> QueryResult | RangeResult:
        if self._closed:
            raise RuntimeError("PrometheusQuerier is closed")
        per_attempt = timeout if timeout is not None else endpoint.timeout
        started = time.perf_counter()
        attempts = 0
        result: QueryResult | RangeResult
        while True:
            attempts += 1
            result, transient = await self._attempt(endpoint, promql, params, per_attempt, ranged)
            if not transient or attempts > self.retries:
                break
            await asyncio.sleep(self._backoff(attempts))
        if isinstance(result, QueryError) and attempts > 1:
            result = QueryError(result.kind, f"{result.message} (after {attempts} attempts)", result.status)
        if self._on_query is not None:
            self._on_query(
                QueryObservation(endpoint.server, _outcome(result), time.perf_counter() - started, attempts)
            )
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
        """Stop the threads (without waiting for stuck calls) and close HTTP sessions."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        for path in self._temp_files:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def __aenter__(self) -> PrometheusQuerier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * (2 ** (attempt - 1)))
        return float(ceiling * (0.5 + random.random() / 2))

    def _server_state(self, server: str) -> _ServerState:
        state = self._servers.get(server)
        if state is None:
            state = self._servers[server] = _ServerState(asyncio.Semaphore(self.max_in_flight))
        return state

    async def _attempt(
        self, endpoint: PrometheusEndpoint, promql: str, params: dict[str, str], timeout: float,
        ranged: bool = False,
    ) -> tuple[QueryResult | RangeResult, bool]:
        state = self._server_state(endpoint.server)
        await state.semaphore.acquire()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(
                self._executor, self._call_in_thread, state, endpoint, promql, params, timeout, ranged
            )
        except BaseException:
            state.semaphore.release()
            raise

        def finished(done: asyncio.Future[tuple[QueryResult | RangeResult, bool]]) -> None:
            state.semaphore.release()
            if not done.cancelled():
                done.exception()  # mark as retrieved when nobody awaits it any more

        future.add_done_callback(finished)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout + _ASYNC_GRACE_SECONDS)
        except TimeoutError:
            return QueryError(QueryErrorKind.TIMEOUT, f"no answer within {timeout:g}s"), True

    def _call_in_thread(
        self,
        state: _ServerState,
        endpoint: PrometheusEndpoint,
        promql: str,
        params: dict[str, str],
        timeout: float,
        ranged: bool = False,
    ) -> tuple[QueryResult | RangeResult, bool]:
        with state.lock:
            state.in_flight += 1
            state.max_in_flight_seen = max(state.max_in_flight_seen, state.in_flight)
        try:
            return self._call(endpoint, promql, params, timeout, ranged)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _call(
        self, endpoint: PrometheusEndpoint, promql: str, params: dict[str, str], timeout: float,
        ranged: bool = False,
    ) -> tuple[QueryResult | RangeResult, bool]:
        try:
            client = self._client(endpoint)
            if ranged:
                # The library rounds start and end to whole seconds; the params given win over them.
                raw = client.custom_query_range(
                    promql, datetime.now(), datetime.now(), params["step"], params=params, timeout=timeout
                )
                return interpret_range_result(raw), False
            raw = client.custom_query(promql, params=params, timeout=timeout)
        except requests.exceptions.Timeout:
            return QueryError(QueryErrorKind.TIMEOUT, f"no answer within {timeout:g}s"), True
        except requests.exceptions.SSLError as error:
            return QueryError(QueryErrorKind.UNREACHABLE, f"TLS failure: {_short(error)}"), False
        except requests.exceptions.ConnectionError as error:
            return QueryError(QueryErrorKind.UNREACHABLE, f"cannot connect: {_short(error)}"), True
        except requests.exceptions.InvalidJSONError as error:
            return QueryError(
                QueryErrorKind.UNEXPECTED_SHAPE, f"answer is not Prometheus API JSON: {_short(error)}"
            ), False
        except requests.exceptions.RequestException as error:
            return QueryError(QueryErrorKind.UNREACHABLE, _short(error)), False
        except PrometheusApiClientException as error:
            return _status_error(str(error))
        except (ValueError, KeyError, TypeError) as error:
            return QueryError(
                QueryErrorKind.UNEXPECTED_SHAPE, f"answer is not a Prometheus API response: {_short(error)}"
            ), False
        return interpret_result(raw), False

    def _client(self, endpoint: PrometheusEndpoint) -> PrometheusConnect:
        key = endpoint._client_key()
        with self._clients_lock:
            client = self._clients.get(key)
            if client is not None:
                return client
            url = endpoint.address.rstrip("/")
            headers = dict(endpoint.headers)
            auth: tuple[str, str] | None = None
            credentials = endpoint.credentials
            if credentials is not None and credentials.bearer_token:
                headers["Authorization"] = f"Bearer {credentials.bearer_token}"
            elif credentials is not None and credentials.username is not None:
                auth = (credentials.username, credentials.password or "")
            session = requests.Session()
            session.verify = self._verify_setting(endpoint)
            client = PrometheusConnect(url=url, headers=headers or None, auth=auth, session=session)
            # Our retries (with the in-flight bound and typed errors) replace the library's own;
            # read=False lets a read timeout surface as such instead of as a connection error.
            no_retries = Retry(total=0, read=False)
            session.mount(url, HTTPAdapter(max_retries=no_retries, pool_connections=1,
                                           pool_maxsize=self.max_in_flight))
            self._clients[key] = client
            # Rotated credentials make new keys; forget the oldest clients (their sessions close when
            # collected, after any call still using them has finished).
            while len(self._clients) > _MAX_CLIENTS:
                del self._clients[next(iter(self._clients))]
            return client

    def _verify_setting(self, endpoint: PrometheusEndpoint) -> bool | str:
        if endpoint.insecure_skip_verify:
            return False
        if endpoint.ca_bundle:
            return endpoint.ca_bundle
        if endpoint.credentials is not None and endpoint.credentials.ca_pem:
            with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
                handle.write(endpoint.credentials.ca_pem)
            self._temp_files.append(handle.name)
            return handle.name
        return True


def _short(error: BaseException, limit: int = 300) -> str:
    """The error's text for a person: credentials removed (it may quote the URL or a header), then cut."""
    text = redact_text(str(error)) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _status_error(text: str) -> tuple[QueryResult | RangeResult, bool]:
    match = _STATUS_MESSAGE.match(text)
    if match is None:
        return QueryError(QueryErrorKind.HTTP_STATUS, _short(Exception(text))), False
    status = int(match.group(1))
    detail = match.group(2)
    with contextlib.suppress(ValueError, SyntaxError, TypeError, UnicodeDecodeError):
        body = ast.literal_eval(detail)
        if isinstance(body, bytes):
            detail = body.decode("utf-8", errors="replace")
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            parsed = json.loads(detail)
            detail = str(parsed.get("error") or detail)
    detail = _short(Exception(detail.strip() or "no body"))
    if status in BAD_QUERY_STATUSES:
        return QueryError(QueryErrorKind.BAD_QUERY, detail, status), False
    return QueryError(QueryErrorKind.HTTP_STATUS, f"HTTP {status}: {detail}", status), (
        status in TRANSIENT_STATUSES
    )


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
