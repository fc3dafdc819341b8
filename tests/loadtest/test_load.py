"""The load tester end to end: webhook calls from canaryd's own sender, real requests to loopback servers.

What a user relies on: the rate and concurrency a Canary asks for are upper
bounds that hold, the load reaches the canary's Service and nothing else,
each step extends the load instead of stacking it, a rollback stops it, and
a refused target is refused with an answer that says why (and no request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from canaryd.adapters.webhook_delivery import DeliveryPolicy, DeliveryResult, Outcome, WebhookSender
from canaryd.core.webhooks import EventInfo, HookType, build_payload, encode_payload
from canaryd.loadtest.server import LoadTester
from canaryd.loadtest.settings import LoadTestSettings
from tests.loadtest.backends import GrpcBackend, HttpBackend

CANARY_HOST = "payments-api-canary.payments"
GRPC_HOST = "payments-grpc-canary.payments"
ONE_TRY = DeliveryPolicy(timeout=30, retries=0)


def _payload(
    metadata: dict[str, str],
    hook: HookType = HookType.ROLLOUT,
    namespace: str = "payments",
    now: datetime | None = None,
) -> dict[str, Any]:
    return build_payload(
        hook=hook,
        name="payments-api",
        namespace=namespace,
        phase="Progressing",
        revision="r2",
        weight=10,
        step=1,
        failed_checks=0,
        metadata=metadata,
        now=now or datetime.now(UTC),
        interval="1m",
    )


@pytest.fixture
async def backend() -> AsyncIterator[HttpBackend]:
    server = HttpBackend(delay=0.005)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def grpc_backend() -> AsyncIterator[GrpcBackend]:
    server = GrpcBackend(delay=0.005)
    await server.start()
    yield server
    await server.stop()


TesterFactory = Callable[..., Any]


@pytest.fixture
async def make_tester() -> AsyncIterator[TesterFactory]:
    started: list[LoadTester] = []

    async def make(**overrides: Any) -> LoadTester:
        fields: dict[str, Any] = {
            "address": "127.0.0.1:0",
            "namespaces": ["payments", "shop"],
            "test_hosts": [f"{CANARY_HOST}=127.0.0.1", f"{GRPC_HOST}=127.0.0.1", "api-canary.shop=127.0.0.1"],
            "max_rps": 200,
            "max_concurrency": 16,
        }
        fields.update(overrides)
        tester = LoadTester(LoadTestSettings(**fields))
        await tester.start()
        started.append(tester)
        return tester

    yield make
    for tester in started:
        await tester.stop()


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    sender = WebhookSender()
    yield sender
    await sender.close()


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def _url(tester: LoadTester, path: str = "/") -> str:
    assert tester.bound is not None
    return f"http://127.0.0.1:{tester.bound[1]}{path}"


async def _call(
    sender: WebhookSender, tester: LoadTester, payload: dict[str, Any], **kw: Any
) -> DeliveryResult:
    return await sender.call_webhook(_url(tester), payload, policy=ONE_TRY, **kw)


async def test_a_rollout_hook_sends_load_at_the_asked_rate_and_no_faster(
    make_tester: TesterFactory, backend: HttpBackend, sender: WebhookSender
) -> None:
    tester = await make_tester()
    metadata = {
        "url": f"http://{CANARY_HOST}:{backend.port}/checkout",
        "rps": "40",
        "concurrency": "4",
        "duration": "2s",
        "wait": "true",
    }
    posted = time.monotonic()
    result = await _call(sender, tester, _payload(metadata))
    assert result.ok, result.describe()
    sent = len(backend.counts.arrivals)
    assert sent == result.answer["job"]["stats"]["sent"]
    assert 0.7 * 80 <= sent <= 80 + 1, "2 s at 40 req/s"
    assert backend.counts.ahead_of_rate(40, since=posted) == []
    assert backend.counts.hosts == {f"{CANARY_HOST}:{backend.port}"}, "the Service name is the Host"
    assert result.answer["job"]["stats"]["codes"] == {"200": sent}


async def test_concurrency_bounds_the_requests_in_flight(
    make_tester: TesterFactory, sender: WebhookSender
) -> None:
    slow = HttpBackend(delay=0.1)
    await slow.start()
    try:
        tester = await make_tester()
        metadata = {
            "url": f"http://{CANARY_HOST}:{slow.port}/",
            "rps": "200",
            "concurrency": "3",
            "duration": "1.5s",
            "wait": "true",
        }
        result = await _call(sender, tester, _payload(metadata))
    finally:
        await slow.stop()
    assert result.ok
    assert slow.counts.max_in_flight == 3
    assert result.answer["job"]["stats"]["maxInFlight"] == 3
    # 3 in flight, 0.1 s each: about 30 req/s however high the rate allowed.
    assert len(slow.counts.arrivals) <= 3 * 1.5 / 0.1 + 3


@pytest.mark.parametrize(
    ("url", "namespace", "reason"),
    [
        ("http://api-canary.other:{port}/", "other", "NamespaceNotAllowed"),
        ("http://127.0.0.1:{port}/", "payments", "IPLiteral"),
        ("http://[::1]:{port}/", "payments", "IPLiteral"),
        ("http://api.example.com:{port}/", "payments", "NotAServiceName"),
        ("http://localhost:{port}/", "payments", "NotAServiceName"),
        ("http://api-canary.shop:{port}/", "payments", "CrossNamespace"),
        ("http://payments-api-primary.payments:{port}/", "payments", "DoesNotResolve"),
        ("file:///etc/passwd", "payments", "UnsupportedScheme"),
    ],
)
async def test_a_target_outside_the_policy_is_refused_with_a_clear_answer_and_gets_nothing(
    make_tester: TesterFactory,
    backend: HttpBackend,
    sender: WebhookSender,
    url: str,
    namespace: str,
    reason: str,
) -> None:
    tester = await make_tester()
    result = await _call(
        sender, tester, _payload({"url": url.format(port=backend.port)}, namespace=namespace)
    )
    assert result.outcome is Outcome.HTTP_ERROR and result.status == 403
    assert result.answer["reason"] == reason and result.answer["accepted"] is False
    assert len(result.message) > 20, "the refusal says why"
    await asyncio.sleep(0.2)
    assert backend.counts.arrivals == []


async def test_load_beyond_the_limits_is_refused_with_the_limit(
    make_tester: TesterFactory, backend: HttpBackend, sender: WebhookSender
) -> None:
    tester = await make_tester(max_rps=50)
    result = await _call(
        sender, tester, _payload({"url": f"http://{CANARY_HOST}:{backend.port}/", "rps": "80"})
    )
    assert (
        result.status == 422 and result.answer["reason"] == "RateTooHigh" and "at most 50" in result.message
    )


async def test_each_step_extends_the_load_and_a_rollback_stops_it(
    make_tester: TesterFactory, backend: HttpBackend, sender: WebhookSender
) -> None:
    tester = await make_tester()
    metadata = {
        "url": f"http://{CANARY_HOST}:{backend.port}/",
        "rps": "20",
        "concurrency": "2",
        "duration": "30s",
    }
    posted = time.monotonic()
    first = await _call(sender, tester, _payload(metadata))
    second = await _call(sender, tester, _payload(metadata))
    assert first.ok and second.ok and first.answer["created"] and not second.answer["created"]
    assert first.answer["job"]["id"] == second.answer["job"]["id"]
    await asyncio.sleep(1.0)
    async with aiohttp.ClientSession() as http, http.get(_url(tester, "/jobs")) as answer:
        jobs = (await answer.json())["jobs"]
    assert len(jobs) == 1 and jobs[0]["running"] and jobs[0]["rps"] == 20
    assert backend.counts.ahead_of_rate(20, since=posted) == [], "the second call did not double the load"

    stopped = await _call(sender, tester, _payload({}, hook=HookType.ROLLBACK))
    assert stopped.ok and stopped.answer["stopped"] == [first.answer["job"]["id"]]
    await asyncio.sleep(0.3)
    count = len(backend.counts.arrivals)
    await asyncio.sleep(0.5)
    assert len(backend.counts.arrivals) == count, "no request after the rollback"
    assert tester.jobs.running() == []


async def test_gates_are_refused_and_events_ignored(
    make_tester: TesterFactory, sender: WebhookSender
) -> None:
    tester = await make_tester()
    gate = await _call(sender, tester, _payload({}, hook=HookType.CONFIRM_PROMOTION))
    assert gate.status == 400 and gate.answer["reason"] == "NotAGate"
    event = build_payload(
        hook=HookType.EVENT,
        name="a",
        namespace="payments",
        phase=None,
        revision=None,
        weight=0,
        step=0,
        failed_checks=0,
        metadata={},
        now=datetime.now(UTC),
        event=EventInfo("Promoted", "ok"),
    )
    assert (await _call(sender, tester, event)).ok


async def test_a_body_that_is_no_payload_is_refused(make_tester: TesterFactory) -> None:
    tester = await make_tester()
    async with aiohttp.ClientSession() as http:
        for body, reason in (
            (b"{not json", "NotJSON"),
            (b'{"apiVersion": "v0"}', "InvalidPayload"),
            (b"[]", "InvalidPayload"),
        ):
            async with http.post(_url(tester), data=body) as answer:
                assert answer.status == 400 and (await answer.json())["reason"] == reason


async def test_with_a_key_only_fresh_signed_calls_are_obeyed(
    make_tester: TesterFactory, backend: HttpBackend, sender: WebhookSender, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("t0p-secret\n")
    tester = await make_tester(webhook_secret_file=str(key_file))
    metadata = {"url": f"http://{CANARY_HOST}:{backend.port}/", "duration": "1s"}
    unsigned = await _call(sender, tester, _payload(metadata))
    assert unsigned.status == 401 and unsigned.answer["reason"] == "BadSignature"
    wrong = await _call(sender, tester, _payload(metadata), signing_key=b"guess")
    assert wrong.status == 401
    stale = await _call(
        sender,
        tester,
        _payload(metadata, now=datetime.now(UTC) - timedelta(hours=1)),
        signing_key=b"t0p-secret",
    )
    assert stale.status == 401 and stale.answer["reason"] == "Stale"
    signed = await _call(sender, tester, _payload(metadata), signing_key=b"t0p-secret")
    assert signed.ok, signed.describe()


async def test_too_many_jobs_are_refused(
    make_tester: TesterFactory, backend: HttpBackend, sender: WebhookSender
) -> None:
    tester = await make_tester(max_jobs=1)
    url = f"http://{CANARY_HOST}:{backend.port}/"
    assert (await _call(sender, tester, _payload({"url": url, "rps": "5"}))).ok
    second = await _call(sender, tester, _payload({"url": url, "rps": "6"}))
    assert second.status == 429 and second.answer["reason"] == "TooManyJobs"


async def test_metrics_count_requests_and_errors_by_target(
    make_tester: TesterFactory, sender: WebhookSender
) -> None:
    failing = HttpBackend(status=503)
    await failing.start()
    try:
        tester = await make_tester()
        metadata = {
            "url": f"http://{CANARY_HOST}:{failing.port}/",
            "rps": "30",
            "duration": "1s",
            "wait": "true",
        }
        assert (await _call(sender, tester, _payload(metadata))).ok
        async with aiohttp.ClientSession() as http:
            async with http.get(_url(tester, "/metrics")) as answer:
                text = await answer.text()
            async with http.get(_url(tester, "/healthz")) as health:
                assert health.status == 200
    finally:
        await failing.stop()
    sent = len(failing.counts.arrivals)
    target = {"namespace": "payments", "target": f"{CANARY_HOST}:{failing.port}"}
    assert _sample(text, "canaryd_loadtest_requests_total", code="503", **target) == sent > 0
    assert _sample(text, "canaryd_loadtest_errors_total", reason="http-5xx", **target) == sent
    assert _sample(text, "canaryd_loadtest_request_duration_seconds_count", **target) == sent
    assert _sample(text, "canaryd_loadtest_webhooks_total", result="started", type="rollout") == 1
    assert _sample(text, "canaryd_loadtest_jobs") == 0


async def test_an_unreachable_service_counts_connection_errors(
    make_tester: TesterFactory, sender: WebhookSender
) -> None:
    gone = HttpBackend()
    port = await gone.start()
    await gone.stop()
    tester = await make_tester()
    metadata = {"url": f"http://{CANARY_HOST}:{port}/", "rps": "10", "duration": "0.5s", "wait": "true"}
    result = await _call(sender, tester, _payload(metadata))
    stats = result.answer["job"]["stats"]
    assert result.ok and stats["sent"] > 0 and stats["errors"] == stats["sent"]
    assert stats["errorReasons"] == {"connect": stats["sent"]}


async def test_grpc_load_reaches_a_grpc_service_at_the_asked_rate_with_its_metadata(
    make_tester: TesterFactory, grpc_backend: GrpcBackend, sender: WebhookSender
) -> None:
    tester = await make_tester()
    metadata = {
        "url": f"grpc://{GRPC_HOST}:{grpc_backend.port}",
        "rps": "40",
        "concurrency": "4",
        "duration": "1.5s",
        "wait": "true",
        "headers": "X-Canary: load",
    }
    posted = time.monotonic()
    result = await _call(sender, tester, _payload(metadata))
    assert result.ok, result.describe()
    sent = len(grpc_backend.counts.arrivals)
    assert 0.7 * 60 <= sent <= 60 + 1
    assert grpc_backend.counts.ahead_of_rate(40, since=posted) == []
    assert result.answer["job"]["stats"]["codes"] == {"OK": sent}
    assert grpc_backend.tags == {"load"}


async def test_a_grpc_method_the_service_lacks_is_counted_as_an_error(
    make_tester: TesterFactory, grpc_backend: GrpcBackend, sender: WebhookSender
) -> None:
    tester = await make_tester()
    metadata = {
        "cmd": f"ghz --insecure --call pkg.Missing/Call -z 0.5s -c 1 -r 10 {GRPC_HOST}:{grpc_backend.port}",
        "wait": "true",
    }
    result = await _call(sender, tester, _payload(metadata))
    stats = result.answer["job"]["stats"]
    assert stats["sent"] > 0 and stats["codes"] == {"UNIMPLEMENTED": stats["sent"]}
    assert stats["errorReasons"] == {"unimplemented": stats["sent"]}


async def test_the_exact_bytes_are_what_was_signed(make_tester: TesterFactory, tmp_path: Path) -> None:
    from canaryd.core.signing import sign

    key_file = tmp_path / "key"
    key_file.write_bytes(b"k")
    tester = await make_tester(webhook_secret_file=str(key_file))
    body = encode_payload(_payload({}, hook=HookType.POST_ROLLOUT))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            _url(tester), data=body, headers={"X-Canaryd-Signature": sign(body, b"k")}
        ) as ok:
            assert ok.status == 200
        async with http.post(
            _url(tester), data=body + b"\n", headers={"X-Canaryd-Signature": sign(body, b"k")}
        ) as tampered:
            assert tampered.status == 401
