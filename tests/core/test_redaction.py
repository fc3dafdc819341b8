"""Credentials are taken out of every text canaryd writes where more people read it than the Secret."""

from __future__ import annotations

import pytest

from canaryd.core.redaction import redact_destination, redact_text, redact_url

SLACK = "abcdEFGHijklMNOPqrst1234"


def test_a_url_keeps_its_user_and_host_but_not_its_password_or_token() -> None:
    assert redact_url("https://bob:hunter2@prom.example:9090/x?token=abc&step=5") == (
        "https://bob:REDACTED@prom.example:9090/x?token=REDACTED&step=5"
    )
    assert redact_url("http://prom:9090/api") == "http://prom:9090/api"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET http://u:hunter2@h:1/q failed", "hunter2"),
        ("Max retries exceeded with url: /prom?access_token=abc123/api/v1/query&query=up", "abc123"),
        ("upstream said: Authorization: Bearer eyJhbGciOi.x-y_z", "eyJhbGciOi"),
        ("Basic YWxpY2U6cGFzcw== was refused", "YWxpY2U6cGFzcw"),
        ("?API_KEY=k3y&x=1", "k3y"),
    ],
)
def test_error_texts_lose_their_credentials_and_keep_the_rest(text: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted and "REDACTED" in redacted
    assert redacted.split()[0] == text.split()[0] or text.startswith("?")


def test_words_that_only_contain_a_sensitive_name_are_left_alone() -> None:
    assert redact_text("monkey=3 tokens=4 query=up") == "monkey=3 tokens=4 query=up"


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        (
            "https://hooks.slack.com/services/T0A1B2C3/B4D5E6F7/abcdEFGHijklMNOPqrst1234",
            "abcdEFGHijklMNOPqrst1234",
        ),
        ("https://discord.com/api/webhooks/123456789/Zx9-tokenOfDiscord_77", "Zx9-tokenOfDiscord_77"),
        ("https://x.webhook.office.com/webhookb2/0f1e-2d3c@9a8b/IncomingWebhook/77aa66bb/55cc", "77aa66bb"),
        ("https://hooks.example.com/notify?token=opensesame", "opensesame"),
        ("https://hooks.example.com/notify?team=payments&code=s3cret", "s3cret"),
    ],
)
def test_an_answer_about_a_webhook_loses_the_url_parts_that_are_credentials(url: str, secret: str) -> None:
    path = url.split("/", 3)[3]
    for text in (f"no route for POST {url}", f"404 {path} not found", f"unknown token {secret}"):
        redacted = redact_destination(text, url)
        assert secret not in redacted, redacted
        assert "REDACTED" in redacted
    host = url.split("/")[2]
    assert host in redact_destination(f"cannot connect to {url}", url)  # which receiver stays visible


def test_an_answer_that_quotes_nothing_of_the_url_is_unchanged() -> None:
    url = f"https://hooks.slack.com/services/T0A1B2C3/B4D5E6F7/{SLACK}"
    assert redact_destination("http-error 503: maintenance until 10:00", url) == (
        "http-error 503: maintenance until 10:00"
    )
