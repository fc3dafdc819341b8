"""Secrets the controller reads one by one by name: webhook signing keys and notification URLs.

canaryd never lists or watches Secrets (its RBAC grants ``get`` only), so a
Secret is read when something needs it and kept for a minute, which bounds
the reads to one per Secret per minute however often its webhooks are called.
A Secret that is missing, or lacks the key asked for, is an answer too
(:class:`SecretProblem`, with a message that says what to create), kept for a
shorter while so a fix is picked up quickly.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable

from canaryd.adapters.kube import SECRETS, ApiError, KubeClient

#: Seconds a Secret read is reused; a missing one is asked again sooner.
SECRET_TTL_SECONDS = 60.0
MISSING_TTL_SECONDS = 5.0


class SecretProblem(Exception):
    """A Secret (or a key in it) that cannot be used, in words a person can act on."""


class SecretReader:
    def __init__(self, client: KubeClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, dict[str, bytes] | SecretProblem]] = {}

    async def data(self, namespace: str, name: str) -> dict[str, bytes]:
        """The Secret's decoded data; raises SecretProblem when it cannot be read."""
        key = (namespace, name)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None:
            ttl = MISSING_TTL_SECONDS if isinstance(cached[1], SecretProblem) else SECRET_TTL_SECONDS
            if now - cached[0] < ttl:
                if isinstance(cached[1], SecretProblem):
                    raise cached[1]
                return cached[1]
        try:
            secret = await self.client.get(SECRETS, namespace, name)
            value: dict[str, bytes] | SecretProblem = _decoded(secret.get("data") or {}, namespace, name)
        except ApiError as exc:
            if exc.not_found:
                value = SecretProblem(f"Secret {namespace}/{name} not found")
            elif exc.status == 403:
                value = SecretProblem(f"Secret {namespace}/{name} cannot be read: {exc.message}")
            else:
                raise SecretProblem(f"Secret {namespace}/{name} could not be read: {exc}") from exc
        self._cache[key] = (now, value)
        if isinstance(value, SecretProblem):
            raise value
        return value

    async def value(self, namespace: str, name: str, key: str) -> bytes:
        """One key of a Secret; raises SecretProblem when the Secret or the key is missing or empty."""
        data = await self.data(namespace, name)
        if key not in data:
            raise SecretProblem(f"Secret {namespace}/{name} has no key {key!r}")
        if not data[key]:
            raise SecretProblem(f"Secret {namespace}/{name} key {key!r} is empty")
        return data[key]


def _decoded(data: dict[str, str], namespace: str, name: str) -> dict[str, bytes] | SecretProblem:
    decoded: dict[str, bytes] = {}
    for key, encoded in data.items():
        try:
            decoded[key] = base64.b64decode(encoded or "", validate=True)
        except (binascii.Error, ValueError):
            return SecretProblem(f"Secret {namespace}/{name} key {key!r} is not base64")
    return decoded
