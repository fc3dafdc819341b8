"""Credentials are taken out of every text canaryd writes where more people read it than the Secret."""

from __future__ import annotations

import pytest

from canaryd.core.redaction import redact_text, redact_url


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
