"""Keeping credentials out of everything canaryd writes where people and tools can read it.

A Prometheus address, a webhook or a notification URL may carry a password
(``https://user:secret@prometheus``) or a token in its query string
(``?access_token=...``), and an HTTP client's error message quotes the URL it
failed on. Logs, Events, status messages and /metrics labels are readable by
far more people than the Secret the credentials came from, so every URL and
every error text goes through these functions on its way there.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

#: What replaces a hidden credential.
HIDDEN = "REDACTED"
#: Query parameters that commonly carry credentials (compared in lower case).
SENSITIVE_PARAMETERS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "authorization",
        "code",
        "key",
        "password",
        "secret",
        "sig",
        "signature",
        "token",
    }
)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
#: ``Authorization: Bearer x`` / ``Basic x`` as an HTTP library may print it.
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def redact_url(url: str) -> str:
    """``url`` without the password of its userinfo and without credential-like query values.

    The user name is kept (it says which account was used, not how to use
    it); an unparseable URL is returned with anything before an ``@`` hidden.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{HIDDEN}@{host}" if ":" in userinfo else f"{HIDDEN}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(name.lower() in SENSITIVE_PARAMETERS for name, _ in pairs):
                query = urlencode(
                    [(n, HIDDEN if n.lower() in SENSITIVE_PARAMETERS else v) for n, v in pairs], safe=HIDDEN
                )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return re.sub(r"//[^/@\s]*@", f"//{HIDDEN}@", url)


#: ``token=...`` outside a full URL (an HTTP client may quote only the path and query it failed on).
_SENSITIVE_PAIR = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(" + "|".join(sorted(SENSITIVE_PARAMETERS)) + r")=([^&\s'\"<>/]+)"
)


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted, and any Bearer/Basic credential hidden."""
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    text = _SENSITIVE_PAIR.sub(lambda match: f"{match.group(1)}={HIDDEN}", text)
    return _AUTH_HEADER.sub(lambda match: f"{match.group(1)} {HIDDEN}", text)


#: A path segment that looks like a credential: letters and digits mixed, or long.
_TOKEN_LIKE = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z]).{6,}$|^.{20,}$")


def redact_destination(text: str, url: str) -> str:
    """``text`` (an answer or error about a call to ``url``) without the parts of ``url`` that are secret.

    Chat and webhook URLs carry their credential in the path (Slack's
    ``/services/T…/B…/<token>``, Teams' ``/webhookb2/…/IncomingWebhook/…``,
    Discord's ``/api/webhooks/<id>/<token>``) or in the query, and a receiver
    or a proxy before it may quote the URL in its answer. Everything after the
    host is hidden wherever it appears, and so is each token-like path segment
    and every query value; then :func:`redact_text` applies.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(text.replace(url, HIDDEN) if url else text)
    secrets = set()
    start = url.find(parts.netloc) + len(parts.netloc) if parts.netloc else 0
    tail = url[start:]
    if tail not in ("", "/"):
        secrets |= {tail, unquote(tail)}
    if parts.password:
        secrets.add(parts.password)
    for segment in parts.path.split("/"):
        if _TOKEN_LIKE.match(segment):
            secrets |= {segment, unquote(segment)}
    secrets |= {value for _, value in parse_qsl(parts.query, keep_blank_values=False) if len(value) >= 4}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return redact_text(text)


__all__ = ["HIDDEN", "redact_destination", "redact_text", "redact_url"]
