"""The webhook payload as receivers see it: valid for every hook, stable bytes, signatures, retry timing."""

from __future__ import annotations

import json
from datetime import timedelta

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from canaryd.api.constants import Phase, Verdict
from canaryd.api.models import CanaryStatus, MetricStatus
from canaryd.core import signing
from canaryd.core.webhooks import (
    EventInfo,
    HookType,
    build_payload,
    encode_payload,
    headers_for,
    payload_for_canary,
    retry_delay,
)
from tests.core.world import T0, make_canary
from tests.fixtures.webhook_receiver import schema_problems


def _payload(hook: HookType = HookType.ROLLOUT, **overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "hook": hook,
        "name": "payments-api",
        "namespace": "payments",
        "phase": "Progressing",
        "revision": "7d9f6c5b8",
        "weight": 25,
        "step": 2,
        "failed_checks": 1,
        "metadata": {"cmd": "hey -z 1m -q 10 -c 2 http://payments-api-canary.payments:8080/"},
        "now": T0,
    }
    if hook is HookType.EVENT:
        fields["event"] = EventInfo(reason="Promoted", message="revision promoted")
    fields.update(overrides)
    return build_payload(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("hook", list(HookType))
def test_every_hook_builds_a_payload_the_documented_schema_accepts(hook: HookType) -> None:
    payload = _payload(hook, webhook="smoke", interval="1m")
    assert schema_problems(payload) == []
    assert payload["type"] == hook.value
    assert payload["apiVersion"] == "webhooks.canaryd.io/v1"
    assert payload["timestamp"] == "2026-03-01T12:00:00Z"
    assert schema_problems(json.loads(encode_payload(payload))) == []


def test_the_schema_refuses_what_receivers_must_never_see() -> None:
    good = _payload()
    assert schema_problems({**good, "weight": 101})
    assert schema_problems({**good, "type": "pre-promotion"})
    assert schema_problems({**good, "metadata": {"rps": 10}})
    assert schema_problems({**good, "event": {"type": "Normal", "reason": "X", "message": ""}})
    without_event = _payload(HookType.EVENT)
    del without_event["event"]
    assert schema_problems(without_event)


def test_a_payload_is_built_from_a_canary_and_its_status() -> None:
    canary = make_canary(interval="30s")
    canary = canary.model_copy(
        update={
            "status": CanaryStatus(
                phase=Phase.PROGRESSING, canary_weight=20, step=2, failed_checks=1, revision="abc123"
            )
        }
    )
    payload = payload_for_canary(canary, HookType.ROLLOUT, metadata={"rps": "5"}, now=T0, webhook="load")
    assert {
        k: payload[k] for k in ("name", "namespace", "phase", "revision", "weight", "step", "failedChecks")
    } == {
        "name": "payments-api",
        "namespace": "payments",
        "phase": "Progressing",
        "revision": "abc123",
        "weight": 20,
        "step": 2,
        "failedChecks": 1,
    }
    assert (
        payload["interval"] == "30s" and payload["metadata"] == {"rps": "5"} and payload["webhook"] == "load"
    )
    fresh = payload_for_canary(make_canary(), "confirm-rollout", metadata={}, now=T0)
    assert fresh["phase"] is None and fresh["revision"] is None and schema_problems(fresh) == []


def test_a_rollback_payload_names_the_failing_metrics_and_their_values() -> None:
    metrics = [
        MetricStatus(name="success-rate", verdict=Verdict.FAIL, value=40.2, message="40.2 is below 95"),
        MetricStatus(name="latency-p99", verdict=Verdict.PASS, value=71.0),
        MetricStatus(name="cpu", verdict=Verdict.FAIL, value=9.0, dry_run=True),
        MetricStatus(name="saturation", verdict=Verdict.FAIL, value=None, message="+Inf is above 1"),
    ]
    canary = make_canary().model_copy(
        update={"status": CanaryStatus(phase=Phase.FAILED, failed_checks=2, revision="abc", metrics=metrics)}
    )
    payload = payload_for_canary(canary, HookType.ROLLBACK, metadata={}, now=T0)
    assert payload["failedMetrics"] == [
        {"name": "success-rate", "value": 40.2, "message": "40.2 is below 95"},
        {"name": "saturation", "value": None, "message": "+Inf is above 1"},
    ], "dry-run metrics are never named"
    assert schema_problems(payload) == []
    running = CanaryStatus(phase=Phase.PROGRESSING, metrics=metrics[1:2])
    passing = canary.model_copy(update={"status": running})
    assert "failedMetrics" not in payload_for_canary(passing, HookType.ROLLOUT, metadata={}, now=T0)
    assert schema_problems({**payload, "failedMetrics": [{"value": 1.0}]}), "a failed metric has a name"


def test_the_id_is_the_same_for_the_same_call_and_differs_between_calls() -> None:
    assert _payload()["id"] == _payload()["id"]
    assert _payload()["id"] != _payload(now=T0 + timedelta(seconds=1))["id"]
    assert _payload()["id"] != _payload(step=3)["id"]
    payload = _payload()
    assert headers_for(payload)["X-Canaryd-Delivery"] == payload["id"]
    assert headers_for(payload)["X-Canaryd-Webhook-Type"] == "rollout"


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="Event"):
        _payload(HookType.ROLLOUT, event=EventInfo("X", "y"))
    with pytest.raises(ValueError, match="Event"):
        build_payload(
            hook="event",
            name="a",
            namespace="b",
            phase=None,
            revision=None,
            weight=0,
            step=0,
            failed_checks=0,
            metadata={},
            now=T0,
        )
    with pytest.raises(ValueError, match="weight"):
        _payload(weight=120)
    with pytest.raises(ValueError, match="strings"):
        _payload(metadata={"rps": 10})
    with pytest.raises(ValueError, match="at most"):
        _payload(metadata={"cmd": "x" * 5000})
    with pytest.raises(ValueError):
        _payload(hook="pre-promotion")


@settings(deadline=None)
@given(st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=8))
def test_the_sent_bytes_parse_back_to_the_payload(metadata: dict[str, str]) -> None:
    payload = _payload(metadata=metadata)
    body = encode_payload(payload)
    assert json.loads(body) == payload
    assert encode_payload(json.loads(body)) == body


def test_a_signature_verifies_only_with_the_key_and_the_exact_body() -> None:
    body = encode_payload(_payload())
    header = signing.sign(body, b"s3cret")
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert signing.verify(body, b"s3cret", header)
    assert signing.verify(body, b"s3cret", header.upper().replace("SHA256=", "sha256="))
    assert not signing.verify(body, b"other", header)
    assert not signing.verify(body + b" ", b"s3cret", header)
    assert not signing.verify(body, b"s3cret", None)
    assert not signing.verify(body, b"s3cret", header[7:])
    with pytest.raises(ValueError):
        signing.sign(body, b"")


def test_a_signature_matches_an_independent_hmac() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    assert signing.sign(body, b"k") == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_freshness_allows_clock_skew_both_ways_and_no_more() -> None:
    assert signing.is_fresh(T0, T0 + timedelta(seconds=299))
    assert signing.is_fresh(T0 + timedelta(seconds=120), T0)
    assert not signing.is_fresh(T0, T0 + timedelta(seconds=301))
    assert not signing.is_fresh(None, T0)


def test_retry_delays_double_up_to_the_cap_and_honour_retry_after_within_it() -> None:
    assert [retry_delay(n, base=0.5, cap=5) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert retry_delay(1, base=0.5, cap=5, retry_after=3) == 3
    assert retry_delay(1, base=0.5, cap=5, retry_after=60) == 5
    assert retry_delay(3, base=0.5, cap=5, retry_after=0.1) == 2.0
    assert retry_delay(200, base=1, cap=30) == 30
    with pytest.raises(ValueError):
        retry_delay(0, base=1, cap=1)
