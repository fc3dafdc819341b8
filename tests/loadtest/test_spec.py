"""The load a webhook asks for: from metadata or a hey/ghz command line, within the limits or refused."""

from __future__ import annotations

import base64

import pytest

from canaryd.core.webhooks import HookType, build_payload
from canaryd.loadtest.spec import DEFAULT_GRPC_METHOD, Limits, SpecRefused, load_spec
from canaryd.loadtest.targets import TargetRefused
from tests.core.world import T0

LIMITS = Limits(
    max_rps=100,
    max_concurrency=16,
    max_duration=600,
    default_rps=10,
    default_concurrency=4,
    default_duration=60,
    request_timeout=5,
)


def _payload(metadata: dict[str, str], interval: str | None = None) -> dict[str, object]:
    return build_payload(
        hook=HookType.ROLLOUT,
        name="api",
        namespace="shop",
        phase="Progressing",
        revision="r",
        weight=10,
        step=1,
        failed_checks=0,
        metadata=metadata,
        now=T0,
        interval=interval,
    )


def test_metadata_gives_target_rate_concurrency_and_duration() -> None:
    spec = load_spec(
        _payload(
            {
                "url": "http://api-canary.shop:8080/checkout",
                "rps": "25",
                "concurrency": "5",
                "duration": "2m",
                "method": "post",
                "headers": "X-Canary: 1\nAccept: */*",
                "body": '{"sku": 1}',
                "timeout": "2s",
            }
        ),
        LIMITS,
    )
    assert (spec.rps, spec.concurrency, spec.duration, spec.method, spec.timeout) == (25, 5, 120, "POST", 2)
    assert spec.headers == (("X-Canary", "1"), ("Accept", "*/*")) and spec.body == b'{"sku": 1}'
    assert spec.target.label == "api-canary.shop:8080" and spec.protocol == "http" and not spec.wait


def test_defaults_fill_in_and_the_steps_interval_is_the_duration() -> None:
    spec = load_spec(_payload({"url": "http://api-canary.shop/"}, interval="30s"), LIMITS)
    assert (spec.rps, spec.concurrency, spec.duration, spec.method, spec.timeout) == (10, 4, 30, "GET", 5)
    assert load_spec(_payload({"url": "http://api-canary.shop/"}), LIMITS).duration == 60
    assert load_spec(_payload({"url": "http://api-canary.shop/", "duration": "45"}), LIMITS).duration == 45


def test_a_request_never_outlasts_the_load() -> None:
    assert (
        load_spec(_payload({"url": "http://a.shop/", "duration": "1s", "timeout": "30s"}), LIMITS).timeout
        == 1
    )


def test_flaggers_hey_command_is_read_never_run() -> None:
    spec = load_spec(
        _payload(
            {
                "cmd": "hey -z 1m -q 10 -c 2 -m POST -H 'X-A: b' -T application/json -d '{}' "
                "http://podinfo-canary.shop:9898/"
            }
        ),
        LIMITS,
    )
    assert (spec.rps, spec.concurrency, spec.duration, spec.method, spec.source) == (20, 2, 60, "POST", "hey")
    assert spec.headers == (("X-A", "b"), ("Content-Type", "application/json")) and spec.body == b"{}"
    noted = load_spec(_payload({"cmd": "hey -n 100 -c 2 http://a.shop/"}), LIMITS)
    assert any("-n" in note for note in noted.notes)


def test_flaggers_ghz_command_gives_grpc_load() -> None:
    spec = load_spec(
        _payload(
            {
                "cmd": "ghz -z 30s --insecure --call grpc.health.v1.Health/Check -c 3 --rps 12 "
                '-m \'{"x-canary": "1"}\' grpc-canary.shop:9000'
            }
        ),
        LIMITS,
    )
    assert spec.protocol == "grpc" and spec.target.scheme == "grpc" and spec.target.port == 9000
    assert (spec.rps, spec.concurrency, spec.duration, spec.method) == (
        12,
        3,
        30,
        "/grpc.health.v1.Health/Check",
    )
    assert spec.headers == (("x-canary", "1"),)
    dotted = load_spec(
        _payload({"cmd": "ghz --insecure --call helloworld.Greeter.SayHello g.shop:50051"}), LIMITS
    )
    assert dotted.method == "/helloworld.Greeter/SayHello"
    assert load_spec(_payload({"cmd": "ghz --call a.B/C g.shop:443"}), LIMITS).target.scheme == "grpcs"


def test_grpc_from_metadata_with_a_raw_request_message() -> None:
    message = base64.b64encode(b"\x0a\x05world").decode()
    spec = load_spec(
        _payload(
            {
                "url": "grpc://g.shop:50051",
                "grpcMethod": "/helloworld.Greeter/SayHello",
                "grpcRequest": message,
            }
        ),
        LIMITS,
    )
    assert spec.method == "/helloworld.Greeter/SayHello" and spec.body == b"\x0a\x05world"
    assert load_spec(_payload({"url": "grpc://g.shop:50051"}), LIMITS).method == DEFAULT_GRPC_METHOD
    assert load_spec(_payload({"url": "grpc://g.shop:50051/a.B/C"}), LIMITS).method == "/a.B/C"


@pytest.mark.parametrize(
    ("metadata", "reason", "words"),
    [
        ({"url": "http://a.shop/", "rps": "500"}, "RateTooHigh", "at most 100"),
        ({"cmd": "hey -q 50 -c 4 http://a.shop/"}, "RateTooHigh", "200 requests/s"),
        ({"url": "http://a.shop/", "concurrency": "64"}, "ConcurrencyTooHigh", "at most 16"),
        ({"url": "http://a.shop/", "duration": "1h"}, "DurationTooLong", "at most 600s"),
        ({"url": "http://a.shop/", "rps": "fast"}, "InvalidValue", "number"),
        ({"url": "http://a.shop/", "rps": "0"}, "InvalidValue", "positive"),
        ({"url": "http://a.shop/", "rps": "nan"}, "InvalidValue", "positive"),
        ({"url": "http://a.shop/", "duration": "soon"}, "InvalidValue", "duration"),
        ({"url": "http://a.shop/", "method": "TRACE"}, "InvalidValue", "TRACE"),
        ({"url": "http://a.shop/", "headers": "Host: evil"}, "InvalidValue", "Host"),
        ({"url": "http://a.shop/", "headers": "no colon"}, "InvalidValue", "Name: value"),
        ({"url": "grpc://g.shop:1", "grpcMethod": "Check"}, "InvalidValue", "/package.Service/Method"),
        ({"url": "grpc://g.shop:1", "grpcRequest": "%%%"}, "InvalidValue", "base64"),
        ({"rps": "5"}, "NoTarget", "url"),
        ({"cmd": "curl http://a.shop/"}, "UnsupportedCommand", "never run"),
        ({"cmd": "hey -x http://proxy:1 http://a.shop/"}, "UnsupportedOption", "-x"),
        ({"cmd": "hey http://a.shop/ http://b.shop/"}, "InvalidCommand", "one URL"),
        ({"cmd": 'ghz -d \'{"name": "x"}\' --insecure g.shop:1'}, "UnsupportedOption", "grpcRequest"),
        ({"cmd": "hey 'unclosed"}, "InvalidCommand", "cannot be read"),
    ],
)
def test_what_cannot_be_honoured_is_refused_and_says_why(
    metadata: dict[str, str], reason: str, words: str
) -> None:
    with pytest.raises(SpecRefused) as refused:
        load_spec(_payload(metadata), LIMITS)
    assert refused.value.reason == reason and words in refused.value.message


def test_a_target_that_is_not_a_service_is_refused_before_anything_else() -> None:
    with pytest.raises(TargetRefused) as refused:
        load_spec(_payload({"cmd": "hey -z 10s http://93.184.216.34/"}), LIMITS)
    assert refused.value.reason == "IPLiteral"


def test_the_same_load_has_the_same_key_and_other_load_another() -> None:
    a = load_spec(_payload({"url": "http://a.shop/", "rps": "5"}), LIMITS)
    b = load_spec(_payload({"url": "http://a.shop/", "rps": "5", "duration": "2m"}), LIMITS)
    c = load_spec(_payload({"url": "http://a.shop/", "rps": "6"}), LIMITS)
    assert a.key == b.key != c.key
