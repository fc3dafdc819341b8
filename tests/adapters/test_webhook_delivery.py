"""Webhook calls against a real receiver on loopback: every way a receiver can answer gets its own verdict."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from canaryd.adapters.delivery_metrics import DeliveryMetrics
from canaryd.adapters.webhook_delivery import DeliveryPolicy, Outcome, WebhookSender
from canaryd.core.webhooks import HookType, build_payload
from tests.core.world import T0
from tests.fixtures.webhook_receiver import WebhookReceiver

FAST = DeliveryPolicy(timeout=2.0, retries=2, backoff=0.01, backoff_cap=0.05)


def _payload(hook: HookType = HookType.ROLLOUT) -> dict[str, object]:
    return build_payload(
        hook=hook,
        name="payments-api",
        namespace="payments",
        phase="Progressing",
        revision="abc",
        weight=10,
        step=1,
        failed_checks=0,
        metadata={"rps": "5"},
        now=T0,
    )


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    sender = WebhookSender(metrics=DeliveryMetrics(CollectorRegistry()))
    yield sender
    await sender.close()


async def test_a_2xx_answer_is_ok_and_carries_the_receivers_message(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    result = await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST)
    assert result.ok and result.status == 200 and result.attempts == 1
    assert result.message == "ok" and result.answer == {"message": "ok"}
    (call,) = webhook_receiver.requests
    assert call.problems == ()
    assert call.json["type"] == "rollout"
    assert call.headers["X-Canaryd-Webhook-Version"] == "webhooks.canaryd.io/v1"
    assert call.headers["Content-Type"] == "application/json"


async def test_a_signed_call_verifies_with_the_key_at_the_receiver(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST, signing_key=b"k3y")
    await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST)
    signed, unsigned = webhook_receiver.requests
    assert signed.signed_with(b"k3y") and not signed.signed_with(b"other")
    assert "X-Canaryd-Signature" not in unsigned.headers


async def test_a_refusal_is_final_at_once_with_its_status_and_message(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    webhook_receiver.fail_with(403, message="waiting for approval from #releases")
    result = await sender.call_webhook(
        webhook_receiver.url, _payload(HookType.CONFIRM_PROMOTION), policy=FAST
    )
    assert result.outcome is Outcome.HTTP_ERROR and result.status == 403 and result.attempts == 1
    assert result.describe() == "http-error 403 after 1 attempt: waiting for approval from #releases"


async def test_a_brief_outage_is_retried_and_then_succeeds(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    webhook_receiver.fail_with(503, times=2)
    result = await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST)
    assert result.ok and result.attempts == 3
    ids = {r.json["id"] for r in webhook_receiver.requests}
    assert len(ids) == 1, "retries repeat the same delivery id"


async def test_retries_stop_after_the_policy_and_say_how_many_were_made(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    webhook_receiver.fail_with(500)
    result = await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST)
    assert result.outcome is Outcome.HTTP_ERROR and result.status == 500 and result.attempts == 3
    assert len(webhook_receiver.requests) == 3


async def test_retry_after_is_honoured_up_to_the_cap(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    webhook_receiver.fail_with(429, times=1, headers={"Retry-After": "0.3"})
    policy = DeliveryPolicy(timeout=2, retries=1, backoff=0.01, backoff_cap=1.0)
    result = await sender.call_webhook(webhook_receiver.url, _payload(), policy=policy)
    first, second = webhook_receiver.requests
    assert result.ok and second.received_at - first.received_at >= 0.3


async def test_a_slow_receiver_times_out_per_attempt(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    webhook_receiver.be_slow(1.5)
    started = time.monotonic()
    result = await sender.call_webhook(
        webhook_receiver.url, _payload(), policy=DeliveryPolicy(timeout=0.3, retries=1, backoff=0.01)
    )
    assert result.outcome is Outcome.TIMEOUT and result.status is None and result.attempts == 2
    assert "0.3s" in result.message
    assert time.monotonic() - started < 1.4, "a timed-out attempt does not wait for the slow answer"


async def test_a_slow_receiver_within_the_timeout_is_ok(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    webhook_receiver.be_slow(0.2, times=1)
    result = await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST)
    assert result.ok and result.elapsed >= 0.2


@pytest.mark.parametrize("kind", ["not-json", "broken-status-line", "close"])
async def test_a_malformed_answer_is_classified_and_retried(
    webhook_receiver: WebhookReceiver, sender: WebhookSender, kind: str
) -> None:
    webhook_receiver.answer_malformed(kind)  # type: ignore[arg-type]
    result = await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST)
    assert result.outcome is Outcome.MALFORMED, result
    assert result.attempts == 3
    webhook_receiver.behave()
    assert (await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST)).ok


async def test_nobody_listening_is_unreachable(sender: WebhookSender) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await sender.call_webhook(f"http://127.0.0.1:{port}/", _payload(), policy=FAST)
    assert result.outcome is Outcome.UNREACHABLE and result.attempts == 3
    assert "cannot connect" in result.message


async def test_a_bad_url_is_unreachable_with_the_reason(sender: WebhookSender) -> None:
    result = await sender.call_webhook("not a url", _payload(), policy=FAST)
    assert result.outcome is Outcome.UNREACHABLE


async def test_the_deadline_bounds_all_attempts(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    webhook_receiver.fail_with(503)
    policy = DeliveryPolicy(timeout=0.5, retries=10, backoff=0.2, backoff_cap=0.2, deadline=1.0)
    result = await sender.call_webhook(webhook_receiver.url, _payload(), policy=policy)
    assert result.outcome is Outcome.HTTP_ERROR and 1 < result.attempts < 5 and result.elapsed < 1.0


async def test_redirects_are_not_followed(webhook_receiver: WebhookReceiver, sender: WebhookSender) -> None:
    from tests.fixtures.webhook_receiver import Answer

    webhook_receiver.answer_with(Answer(status=307, body=b"", headers={"Location": "http://127.0.0.1:9/"}))
    result = await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST)
    assert (
        result.outcome is Outcome.HTTP_ERROR and result.status == 307 and len(webhook_receiver.requests) == 1
    )


async def test_outcomes_are_counted_by_hook_type(webhook_receiver: WebhookReceiver) -> None:
    registry = CollectorRegistry()
    sender = WebhookSender(metrics=DeliveryMetrics(registry))
    try:
        await sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST)
        webhook_receiver.fail_with(500)
        await sender.call_webhook(webhook_receiver.url, _payload(HookType.CONFIRM_PROMOTION), policy=FAST)
    finally:
        await sender.close()
    text = generate_latest(registry).decode()
    assert 'canaryd_webhook_deliveries_total{outcome="ok",type="rollout"} 1.0' in text
    assert 'canaryd_webhook_deliveries_total{outcome="http-error",type="confirm-promotion"} 1.0' in text
    assert 'canaryd_webhook_attempts_total{type="confirm-promotion"} 3.0' in text


async def test_concurrent_calls_share_one_session(
    webhook_receiver: WebhookReceiver, sender: WebhookSender
) -> None:
    results = await asyncio.gather(
        *(sender.call_webhook(webhook_receiver.url, _payload(), policy=FAST) for _ in range(20))
    )
    assert all(r.ok for r in results) and len(webhook_receiver.requests) == 20


async def test_the_counters_register_beside_the_controllers_series(webhook_receiver: WebhookReceiver) -> None:
    from canaryd.runtime.metrics import ControllerMetrics

    controller = ControllerMetrics()
    sender = WebhookSender(metrics=DeliveryMetrics(controller.registry))
    try:
        webhook_receiver.answer_malformed("close")
        await sender.call_webhook(webhook_receiver.url, _payload(HookType.PRE_ROLLOUT), policy=FAST)
    finally:
        await sender.close()
    text = generate_latest(controller.registry).decode()
    assert "canaryd_reconciles_total" in text
    assert 'canaryd_webhook_deliveries_total{outcome="malformed",type="pre-rollout"} 1.0' in text
    assert "canaryd_notifications_dropped_total" in text
