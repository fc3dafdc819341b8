"""Adapter behaviour a real Prometheus cannot be made to show on demand.

A small aiohttp server on loopback plays a Prometheus that is slow, overloaded,
refuses credentials or sits behind TLS, and records what the adapter sends
(headers, how many requests it has open at once).
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from canaryd.adapters.prometheus import (
    Credentials,
    CredentialsError,
    PrometheusEndpoint,
    PrometheusQuerier,
    QueryObservation,
    credentials_from_secret,
    endpoint_for,
)
from canaryd.api.models import PrometheusProvider
from canaryd.core.promql import QueryError, QueryErrorKind, Value

VECTOR_42 = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1700003600, "42"]}]},
}


@dataclass
class FakePrometheus:
    """Records requests; ``respond`` decides each answer."""

    url: str = ""
    headers: list[dict[str, str]] = field(default_factory=list)
    params: list[dict[str, str]] = field(default_factory=list)
    open_now: int = 0
    max_open: int = 0
    requests: int = 0
    respond: Callable[[int], Awaitable[web.Response]] | None = None


async def _ok(_n: int) -> web.Response:
    return web.json_response(VECTOR_42)


@pytest.fixture
async def fake_prometheus() -> AsyncIterator[Callable[..., Awaitable[FakePrometheus]]]:
    runners: list[web.AppRunner] = []

    async def start(
        respond: Callable[[int], Awaitable[web.Response]] = _ok, ssl_context: ssl.SSLContext | None = None
    ) -> FakePrometheus:
        fake = FakePrometheus(respond=respond)

        async def handle(request: web.Request) -> web.Response:
            fake.headers.append(dict(request.headers))
            fake.params.append(dict(request.query))
            fake.requests += 1
            fake.open_now += 1
            fake.max_open = max(fake.max_open, fake.open_now)
            try:
                assert fake.respond is not None
                return await fake.respond(fake.requests)
            finally:
                fake.open_now -= 1

        app = web.Application()
        app.router.add_route("*", "/api/v1/query", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        runners.append(runner)
        scheme = "https" if ssl_context else "http"
        fake.url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
        return fake

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def observations() -> list[QueryObservation]:
    return []


@pytest.fixture
async def querier(observations: list[QueryObservation]) -> AsyncIterator[PrometheusQuerier]:
    querier = PrometheusQuerier(
        max_in_flight=3,
        retries=2,
        backoff_seconds=0.01,
        max_backoff_seconds=0.02,
        on_query=observations.append,
    )
    yield querier
    querier.close()


async def test_in_flight_queries_never_exceed_the_limit(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]], querier: PrometheusQuerier
) -> None:
    async def slow(_n: int) -> web.Response:
        await asyncio.sleep(0.05)
        return web.json_response(VECTOR_42)

    fake = await fake_prometheus(slow)
    endpoint = PrometheusEndpoint(fake.url)

    results = await asyncio.gather(*(querier.query(endpoint, "up") for _ in range(30)))

    assert results == [Value(42.0)] * 30
    # The server saw exactly the limit at once: bounded, and the bound is used.
    assert fake.max_open == 3
    assert querier.max_in_flight_seen(endpoint.server) == 3


async def test_the_limit_is_per_server(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]], querier: PrometheusQuerier
) -> None:
    async def slow(_n: int) -> web.Response:
        await asyncio.sleep(0.05)
        return web.json_response(VECTOR_42)

    first, second = await fake_prometheus(slow), await fake_prometheus(slow)
    endpoints = [PrometheusEndpoint(first.url), PrometheusEndpoint(second.url)]

    await asyncio.gather(*(querier.query(endpoints[i % 2], "up") for i in range(20)))

    assert first.max_open == 3 and second.max_open == 3


async def test_a_slow_prometheus_times_out_and_is_retried(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]],
    querier: PrometheusQuerier,
    observations: list[QueryObservation],
) -> None:
    async def hang(_n: int) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response(VECTOR_42)

    fake = await fake_prometheus(hang)
    started = time.perf_counter()

    result = await querier.query(PrometheusEndpoint(fake.url, timeout=0.2), "up")

    assert isinstance(result, QueryError) and result.kind is QueryErrorKind.TIMEOUT
    assert observations[-1].attempts == 3
    assert time.perf_counter() - started < 1.0


async def test_overload_statuses_are_retried_until_an_answer(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]],
    querier: PrometheusQuerier,
    observations: list[QueryObservation],
) -> None:
    async def overloaded_twice(n: int) -> web.Response:
        if n <= 2:
            return web.json_response({"status": "error", "errorType": "unavailable"}, status=503 - (n - 1))
        return web.json_response(VECTOR_42)

    fake = await fake_prometheus(overloaded_twice)

    assert await querier.query(PrometheusEndpoint(fake.url), "up") == Value(42.0)
    assert fake.requests == 3
    assert observations[-1].attempts == 3


async def test_an_overloaded_prometheus_gives_the_status_after_retries(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]], querier: PrometheusQuerier
) -> None:
    async def unavailable(_n: int) -> web.Response:
        return web.Response(status=504, text="gateway timeout")

    fake = await fake_prometheus(unavailable)

    result = await querier.query(PrometheusEndpoint(fake.url), "up")

    assert isinstance(result, QueryError)
    assert (result.kind, result.status) == (QueryErrorKind.HTTP_STATUS, 504)
    assert "gateway timeout" in result.message
    assert fake.requests == 3


@pytest.mark.parametrize("status", [401, 403, 404, 500])
async def test_other_statuses_are_not_retried(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]], querier: PrometheusQuerier, status: int
) -> None:
    async def refuse(_n: int) -> web.Response:
        return web.Response(status=status, text="no")

    fake = await fake_prometheus(refuse)

    result = await querier.query(PrometheusEndpoint(fake.url), "up")

    assert isinstance(result, QueryError)
    assert (result.kind, result.status) == (QueryErrorKind.HTTP_STATUS, status)
    assert fake.requests == 1


async def test_an_answer_that_is_not_prometheus_json_is_an_unexpected_shape(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]], querier: PrometheusQuerier
) -> None:
    async def html(_n: int) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    fake = await fake_prometheus(html)

    result = await querier.query(PrometheusEndpoint(fake.url), "up")

    assert isinstance(result, QueryError) and result.kind is QueryErrorKind.UNEXPECTED_SHAPE
    assert fake.requests == 1


async def test_bearer_token_and_custom_headers_are_sent(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]], querier: PrometheusQuerier
) -> None:
    fake = await fake_prometheus()
    secret = {"token": base64.b64encode(b"s3cr3t-token\n").decode()}
    endpoint = PrometheusEndpoint(
        fake.url, credentials=credentials_from_secret(secret), headers={"X-Scope-OrgID": "team-payments"}
    )

    assert await querier.query(endpoint, "up") == Value(42.0)

    assert fake.headers[-1]["Authorization"] == "Bearer s3cr3t-token"
    assert fake.headers[-1]["X-Scope-OrgID"] == "team-payments"


async def test_basic_auth_is_sent(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]], querier: PrometheusQuerier
) -> None:
    fake = await fake_prometheus()
    secret = {"username": base64.b64encode(b"reader").decode(), "password": base64.b64encode(b"p:w").decode()}
    endpoint = PrometheusEndpoint(fake.url, credentials=credentials_from_secret(secret, "Basic"))

    await querier.query(endpoint, "up")

    assert fake.headers[-1]["Authorization"] == "Basic " + base64.b64encode(b"reader:p:w").decode()


async def test_a_user_and_password_in_the_address_are_basic_auth_unless_the_secret_gives_credentials(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]], querier: PrometheusQuerier
) -> None:
    fake = await fake_prometheus()
    with_userinfo = fake.url.replace("http://", "http://alice:p%40ss@")

    assert await querier.query(PrometheusEndpoint(with_userinfo), "up") == Value(42.0)
    assert fake.headers[-1]["Authorization"] == "Basic " + base64.b64encode(b"alice:p@ss").decode()

    secret = {"token": base64.b64encode(b"s3cr3t-token").decode()}
    endpoint = PrometheusEndpoint(with_userinfo, credentials=credentials_from_secret(secret))
    assert await querier.query(endpoint, "up") == Value(42.0)
    assert fake.headers[-1]["Authorization"] == "Bearer s3cr3t-token"


def test_secrets_missing_keys_are_named() -> None:
    with pytest.raises(CredentialsError, match="'token'"):
        credentials_from_secret({"username": "eA=="}, "Bearer")
    with pytest.raises(CredentialsError, match="'password'"):
        credentials_from_secret({"username": "eA=="})
    with pytest.raises(CredentialsError, match="base64"):
        credentials_from_secret({"token": "not base64!"})
    assert "s3cr3t" not in repr(credentials_from_secret({"token": base64.b64encode(b"s3cr3t").decode()}))


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
async def test_tls_is_verified_unless_skipping_is_asked_for(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]],
    querier: PrometheusQuerier,
    tmp_path: Path,
) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fake = await fake_prometheus(ssl_context=context)

    untrusted = await querier.query(PrometheusEndpoint(fake.url), "up")
    skipping = await querier.query(PrometheusEndpoint(fake.url, insecure_skip_verify=True), "up")
    with_ca_file = await querier.query(PrometheusEndpoint(fake.url, ca_bundle=str(cert)), "up")
    with_ca_secret = await querier.query(
        PrometheusEndpoint(fake.url, credentials=Credentials(ca_pem=cert.read_text())), "up"
    )

    assert isinstance(untrusted, QueryError) and untrusted.kind is QueryErrorKind.UNREACHABLE
    assert "TLS" in untrusted.message and "attempts" not in untrusted.message
    assert skipping == with_ca_file == with_ca_secret == Value(42.0)


async def test_query_and_time_are_sent(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]], querier: PrometheusQuerier
) -> None:
    fake = await fake_prometheus()

    await querier.query(PrometheusEndpoint(fake.url), 'up{job="x"}', at=1700003600.5)

    assert fake.params[-1] == {"query": 'up{job="x"}', "time": "1700003600.500"}


def test_a_template_provider_becomes_an_endpoint() -> None:
    credentials = Credentials(bearer_token="t")
    from_template = endpoint_for(
        PrometheusProvider(
            address="https://thanos.monitoring:9090/", headers={"X-Scope-OrgID": "a"}, timeout="3s"
        ),
        default_address="http://prometheus:9090",
        credentials=credentials,
        default_timeout=7.0,
    )
    defaulted = endpoint_for(
        PrometheusProvider(), default_address="http://prometheus:9090", default_timeout=7.0
    )

    assert from_template.address == "https://thanos.monitoring:9090/"
    assert from_template.server == "https://thanos.monitoring:9090"
    assert (from_template.timeout, from_template.headers, from_template.credentials) == (
        3.0, {"X-Scope-OrgID": "a"}, credentials
    )
    assert (defaulted.address, defaulted.timeout, defaulted.insecure_skip_verify) == (
        "http://prometheus:9090", 7.0, False
    )
    with pytest.raises(ValueError, match="http"):
        PrometheusEndpoint("prometheus:9090")


async def test_identical_queries_for_the_same_time_are_sent_once(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]],
) -> None:
    async def slow(_n: int) -> web.Response:
        await asyncio.sleep(0.1)
        return web.json_response(VECTOR_42)

    fake = await fake_prometheus(slow)
    endpoint = PrometheusEndpoint(fake.url)
    async with PrometheusQuerier(max_in_flight=2, share_seconds=30) as querier:
        together = await asyncio.gather(*(querier.query(endpoint, "up", at=1700003600) for _ in range(50)))
        later = await querier.query(endpoint, "up", at=1700003600)
        other_time = await querier.query(endpoint, "up", at=1700003601)
        other_query = await querier.query(endpoint, "up == 1", at=1700003600)

    assert set(together) == {Value(42.0)} and later == other_time == other_query == Value(42.0)
    assert fake.requests == 3  # one for the 51 identical ones, one per other time or query
    assert (querier.sent, querier.shared) == (3, 50)


async def test_shared_answers_expire_and_errors_are_never_reused(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]],
) -> None:
    async def fail_first(n: int) -> web.Response:
        if n == 1:
            return web.Response(status=500, text="boom")
        return web.json_response(VECTOR_42)

    fake = await fake_prometheus(fail_first)
    endpoint = PrometheusEndpoint(fake.url)
    async with PrometheusQuerier(retries=0, share_seconds=0.2) as querier:
        first = await querier.query(endpoint, "up", at=1700003600)
        second = await querier.query(endpoint, "up", at=1700003600)
        third = await querier.query(endpoint, "up", at=1700003600)
        await asyncio.sleep(0.3)
        fourth = await querier.query(endpoint, "up", at=1700003600)

    assert isinstance(first, QueryError) and first.status == 500
    assert second == third == fourth == Value(42.0)
    assert fake.requests == 3  # the error, the answer reused once, and again once it expired


async def test_without_sharing_every_query_is_sent_and_a_cancelled_caller_leaves_the_others_theirs(
    fake_prometheus: Callable[..., Awaitable[FakePrometheus]],
) -> None:
    async def slow(_n: int) -> web.Response:
        await asyncio.sleep(0.2)
        return web.json_response(VECTOR_42)

    fake = await fake_prometheus(slow)
    endpoint = PrometheusEndpoint(fake.url)
    async with PrometheusQuerier(max_in_flight=8) as unshared:
        await asyncio.gather(*(unshared.query(endpoint, "up", at=1700003600) for _ in range(4)))
    assert fake.requests == 4

    async with PrometheusQuerier(share_seconds=0) as querier:
        impatient = asyncio.create_task(querier.query(endpoint, "up", at=1700003600))
        patient = asyncio.create_task(querier.query(endpoint, "up", at=1700003600))
        await asyncio.sleep(0.05)
        impatient.cancel()
        assert await patient == Value(42.0)
    assert impatient.cancelled() and fake.requests == 5
