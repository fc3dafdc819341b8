"""HMAC-SHA256 signatures over webhook bodies, so a receiver can tell canaryd's calls from anyone else's.

A webhook URL is usually reachable by every pod in the cluster; a gate that
opens a promotion, or a load tester that sends traffic, must not obey any
caller. When a Canary's webhook names a key (from a Secret), canaryd signs the
exact body bytes and sends ``X-Canaryd-Signature: sha256=<hex>``; the receiver
recomputes it with the same key. The body carries a timestamp, so a receiver
can also refuse old (replayed) calls; :func:`is_fresh` is that check.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Final

SIGNATURE_HEADER: Final = "X-Canaryd-Signature"
SIGNATURE_PREFIX: Final = "sha256="


def sign(body: bytes, key: bytes) -> str:
    """The header value for ``body`` signed with ``key``: ``sha256=`` and the lowercase hex digest."""
    if not key:
        raise ValueError("a signing key must not be empty")
    return SIGNATURE_PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(body: bytes, key: bytes, header_value: str | None) -> bool:
    """Whether ``header_value`` is the signature of ``body`` with ``key`` (compared in constant time)."""
    if not header_value or not key or not header_value.startswith(SIGNATURE_PREFIX):
        return False
    return hmac.compare_digest(sign(body, key), header_value.strip().lower())


def is_fresh(timestamp: datetime | None, now: datetime, tolerance_seconds: float = 300.0) -> bool:
    """Whether a payload stamped ``timestamp`` is within ``tolerance_seconds`` of ``now`` either way."""
    if timestamp is None:
        return False
    return abs((now - timestamp).total_seconds()) <= tolerance_seconds
