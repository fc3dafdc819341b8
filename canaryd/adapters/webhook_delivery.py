"""POSTing a JSON body to a webhook: one timeout per attempt, retries with backoff, and a plain verdict.

Whoever calls a webhook (a gate before promotion, a rollout hook at every
step, a chat notification) needs one answer it can act on and show to a
person, never an exception: the call was answered 2xx (``ok``), answered with
another status (``http-error``, with the status), took longer than its
timeout (``timeout``), could not be connected to (``unreachable``: refused,
DNS, TLS, a bad URL), or answered something that is not a usable HTTP answer
(``malformed``: the connection closed without a response, a broken status
line or body, or a body that says it is JSON and is not).

Transient failures (timeouts, connection errors, malformed answers, 408,
425, 429 and 5xx) are retried after exponential backoff, honouring
``Retry-After`` up to the backoff cap; any other answer is final at once (a
gate that answers 403 "not yet" is an answer, not an outage). Redirects are
never followed: a webhook is called at the address the Canary names.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp

from canaryd.adapters.delivery_metrics import DeliveryMetrics
from canaryd.core.redaction import redact_destination
from canaryd.core.signing import SIGNATURE_HEADER, sign
from canaryd.core.webhooks import encode_payload, headers_for, retry_delay

#: Statuses worth another attempt: the receiver is busy or briefly broken, not saying no.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: At most this much of an answer is read; a receiver's message is for people, not data.
MAX_ANSWER_BYTES = 64 * 1024
MAX_MESSAGE = 512
USER_AGENT = "canaryd-webhook/1"
#: A retry within a budget starts only when it would get at least this long.
MIN_ATTEMPT_SECONDS = 0.1


class Outcome(StrEnum):
    OK = "ok"
    HTTP_ERROR = "http-error"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class DeliveryPolicy:
    #: Seconds one attempt may take (connect, send, answer).
    timeout: float = 10.0
    #: Further attempts after the first for a transient failure.
    retries: int = 2
    #: First backoff (seconds); it doubles each retry up to ``backoff_cap``.
    backoff: float = 0.5
    backoff_cap: float = 10.0
    #: Total seconds for all attempts and waits; no retry starts that would end past it. None: no bound.
    deadline: float | None = None
    #: Total seconds for the whole call, shared by its attempts: each gets at most what is left of it,
    #: and a retry starts only while some is left. What a caller that must not wait longer uses
    #: (a gate or check webhook's ``timeout``). None: no bound.
    budget: float | None = None


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    #: The HTTP status of the last answer (None when there was none).
    status: int | None
    attempts: int
    #: Seconds from the first attempt to the verdict.
    elapsed: float
    #: One line for a person: what went wrong, or the receiver's own message.
    message: str
    #: The answer's JSON, when it sent some.
    answer: Any = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def describe(self) -> str:
        """E.g. ``http-error 503 after 3 attempts: maintenance``, for conditions and Events."""
        head = self.outcome.value if self.status is None else f"{self.outcome.value} {self.status}"
        tries = "1 attempt" if self.attempts == 1 else f"{self.attempts} attempts"
        return f"{head} after {tries}" + (f": {self.message}" if self.message else "")


@dataclass(frozen=True)
class _Attempt:
    outcome: Outcome
    status: int | None
    message: str
    answer: Any = None
    retry_after: float | None = None


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 1] + "\u2026"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _read_answer(status: int, content_type: str, raw: bytes) -> _Attempt:
    text = raw.decode("utf-8", errors="replace")
    answer: Any = None
    message = _one_line(text)
    if "json" in content_type.lower() and raw.strip():
        try:
            answer = json.loads(text)
        except ValueError:
            return _Attempt(Outcome.MALFORMED, status, f"answer says it is JSON but is not: {message[:80]}")
        if isinstance(answer, dict) and isinstance(answer.get("message"), str):
            message = _one_line(answer["message"])
    if 200 <= status < 300:
        return _Attempt(Outcome.OK, status, message, answer)
    return _Attempt(Outcome.HTTP_ERROR, status, message, answer)


class WebhookSender:
    """Sends webhook calls over one shared aiohttp session (made on first use unless one is given)."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        metrics: DeliveryMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._own_session = session is None
        self.metrics = metrics
        self._sleep = sleep
        self._clock = clock

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def _attempt(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,
        answer_status: Callable[[int, str], int] | None,
    ) -> _Attempt:
        try:
            async with asyncio.timeout(timeout):
                async with self._client().post(
                    url,
                    data=body,
                    headers=dict(headers),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as response:
                    raw = await response.content.read(MAX_ANSWER_BYTES)
                    status = response.status
                    if answer_status is not None:
                        status = answer_status(status, raw.decode("utf-8", errors="replace"))
                    attempt = _read_answer(status, response.headers.get("Content-Type", ""), raw)
                    if attempt.outcome is Outcome.HTTP_ERROR:
                        return _Attempt(
                            attempt.outcome,
                            attempt.status,
                            attempt.message,
                            attempt.answer,
                            _retry_after(response.headers),
                        )
                    return attempt
        except TimeoutError:
            return _Attempt(Outcome.TIMEOUT, None, f"no answer within {timeout:g}s")
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientResponseError,
        ) as exc:
            return _Attempt(Outcome.MALFORMED, None, _one_line(f"not a usable HTTP answer: {exc}"))
        except aiohttp.InvalidURL as exc:
            return _Attempt(Outcome.UNREACHABLE, None, f"invalid URL {exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return _Attempt(
                Outcome.UNREACHABLE,
                None,
                _one_line(f"cannot connect: {exc}" if str(exc) else f"cannot connect: {type(exc).__name__}"),
            )

    async def deliver(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        policy: DeliveryPolicy = DeliveryPolicy(),
        signing_key: bytes | None = None,
        answer_status: Callable[[int, str], int] | None = None,
    ) -> DeliveryResult:
        """POST ``body`` to ``url`` until it is answered for good or the retries are spent.

        ``signing_key`` adds ``X-Canaryd-Signature``; ``answer_status`` maps
        (status, body text) to the status the answer stands for (for services
        that report errors inside a 200).
        """
        sent_headers = {"Content-Type": "application/json", **(headers or {})}
        if signing_key:
            sent_headers[SIGNATURE_HEADER] = sign(body, signing_key)
        started = self._clock()
        attempts = 0
        while True:
            attempts += 1
            timeout = policy.timeout
            if policy.budget is not None:
                timeout = max(0.001, min(timeout, policy.budget - (self._clock() - started)))
            result = await self._attempt(url, body, sent_headers, timeout, answer_status)
            elapsed = self._clock() - started
            transient = result.outcome in (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.MALFORMED) or (
                result.outcome is Outcome.HTTP_ERROR and result.status in RETRYABLE_STATUSES
            )
            message = redact_destination(result.message, url)
            if not transient or attempts > policy.retries:
                return DeliveryResult(
                    result.outcome, result.status, attempts, elapsed, message, result.answer
                )
            delay = retry_delay(
                attempts, base=policy.backoff, cap=policy.backoff_cap, retry_after=result.retry_after
            )
            if (policy.deadline is not None and elapsed + delay + policy.timeout > policy.deadline) or (
                policy.budget is not None and elapsed + delay + MIN_ATTEMPT_SECONDS > policy.budget
            ):
                return DeliveryResult(
                    result.outcome, result.status, attempts, elapsed, message, result.answer
                )
            await self._sleep(delay)

    async def call_webhook(
        self,
        url: str,
        payload: Mapping[str, Any],
        *,
        policy: DeliveryPolicy = DeliveryPolicy(),
        signing_key: bytes | None = None,
    ) -> DeliveryResult:
        """Send a webhook payload (from :func:`canaryd.core.webhooks.build_payload`) and count the outcome."""
        result = await self.deliver(
            url, encode_payload(payload), headers=headers_for(payload), policy=policy, signing_key=signing_key
        )
        if self.metrics is not None:
            self.metrics.observe_webhook(
                str(payload.get("type", "")), result.outcome.value, result.attempts, result.elapsed
            )
        return result
