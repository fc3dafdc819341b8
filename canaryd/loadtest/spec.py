"""What load a webhook asks for, read from its payload's metadata, within the load tester's limits.

The Canary's webhook says it in ``metadata`` (all values are strings, as in
the Canary):

- ``url``: the target, ``http://<service>.<namespace>:<port>/path`` (or
  ``https``, ``grpc``, ``grpcs``); see :mod:`canaryd.loadtest.targets`;
- ``rps`` (requests per second, all workers together), ``concurrency``
  (requests in flight at most), ``duration`` (a Go duration such as ``1m``
  or seconds; default: the payload's ``interval``, the step's length),
  ``timeout`` (per request);
- HTTP: ``method`` (default GET), ``headers`` (``Name: value`` lines),
  ``body``; gRPC: ``grpcMethod`` (``/package.Service/Method``, default the
  standard health check) and ``grpcRequest`` (the request message, base64
  protobuf; default the empty message);
- ``wait: "true"`` answers only when the load is done, with its figures.

Or ``cmd``, a ``hey`` or ``ghz`` command line as Flagger's load tester takes
it (``hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/``). It is read
for its options, never run; options that have no meaning here are refused
by name rather than ignored.

Anything above the configured maxima is refused with the maximum in the
message: a Canary never gets less load than it asked for without being told.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from canaryd.api.durations import parse_duration
from canaryd.loadtest.targets import Target, TargetRefused, parse_target

HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
GRPC_METHOD: Final = re.compile(r"^/[A-Za-z_][A-Za-z0-9_.]*/[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_GRPC_METHOD: Final = "/grpc.health.v1.Health/Check"
HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: Headers the load tester sets itself; a webhook may not override them.
RESERVED_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"}
)
MAX_BODY_BYTES: Final = 64 * 1024
TRUE_WORDS: Final = frozenset({"true", "yes", "1"})


class SpecRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_rps: float = 200.0
    max_concurrency: int = 32
    max_duration: float = 1800.0
    default_rps: float = 10.0
    default_concurrency: int = 4
    default_duration: float = 60.0
    request_timeout: float = 10.0
    cluster_domain: str = "cluster.local"


@dataclass(frozen=True)
class LoadSpec:
    target: Target
    rps: float
    concurrency: int
    #: Seconds to send for.
    duration: float
    #: HTTP verb, or the gRPC method path.
    method: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    timeout: float = 10.0
    wait: bool = False
    #: Where the settings came from: "metadata", "hey" or "ghz".
    source: str = "metadata"
    notes: tuple[str, ...] = field(default=())

    @property
    def protocol(self) -> str:
        return self.target.protocol

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two requests for load the same job (the same load on the same target)."""
        return (self.target.url, self.method, self.headers, self.body, self.rps, self.concurrency)

    def describe(self) -> str:
        what = self.method if self.protocol == "grpc" else f"{self.method} {self.target.path}"
        return (
            f"{self.rps:g} req/s, at most {self.concurrency} in flight, {what} on {self.target.label} "
            f"for {self.duration:g}s"
        )


def _seconds(value: str, what: str) -> float:
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text).total_seconds()
        except ValueError as exc:
            raise SpecRefused("InvalidValue", f"{what} {value!r}: {exc}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise SpecRefused("InvalidValue", f"{what} must be a positive duration, not {value!r}")
    return seconds


def _positive(value: str, what: str, kind: type = float) -> float:
    try:
        number = float(value) if kind is float else int(value)
    except ValueError:
        raise SpecRefused(
            "InvalidValue", f"{what} must be a {'number' if kind is float else 'whole number'}, not {value!r}"
        ) from None
    if not math.isfinite(number) or number <= 0:
        raise SpecRefused("InvalidValue", f"{what} must be positive, not {value!r}")
    return number


def _headers(lines: list[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not HEADER_NAME.match(name):
            raise SpecRefused("InvalidValue", f"header {line!r} is not 'Name: value'")
        if name.lower() in RESERVED_HEADERS:
            raise SpecRefused(
                "InvalidValue", f"header {name!r} is set by the load tester and cannot be given"
            )
        if "\r" in value or "\n" in value:
            raise SpecRefused("InvalidValue", f"header {name!r} has a line break in its value")
        out.append((name, value.strip()))
    return tuple(out)


@dataclass
class _Draft:
    """Settings as read from metadata or a command line, before defaults and limits."""

    url: str | None = None
    rps: float | None = None
    per_worker_rps: float | None = None
    concurrency: int | None = None
    duration: float | None = None
    timeout: float | None = None
    method: str | None = None
    grpc_method: str | None = None
    headers: list[str] = field(default_factory=list)
    body: bytes = b""
    grpc_request: bytes = b""
    grpc_tls: bool | None = None
    wait: bool = False
    notes: list[str] = field(default_factory=list)


def _flag_values(
    argv: list[str], with_value: set[str], without_value: set[str], tool: str
) -> list[tuple[str, str]]:
    """(flag, value) pairs and ("", positional) from a command line, refusing flags the tool does not get."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("-") and len(word) > 1:
            flag, eq, inline = word.partition("=")
            if flag in without_value:
                out.append((flag, "true"))
            elif flag in with_value:
                if eq:
                    out.append((flag, inline))
                else:
                    if i + 1 >= len(argv):
                        raise SpecRefused("InvalidCommand", f"{tool} {flag} needs a value")
                    i += 1
                    out.append((flag, argv[i]))
            else:
                known = ", ".join(sorted(with_value | without_value))
                raise SpecRefused(
                    "UnsupportedOption", f"{tool} option {flag} is not supported here (supported: {known})"
                )
        else:
            out.append(("", word))
        i += 1
    return out


def _from_hey(argv: list[str]) -> _Draft:
    draft = _Draft()
    values = _flag_values(
        argv,
        {"-z", "-q", "-c", "-m", "-H", "-d", "-t", "-T", "-A", "-n"},
        {"-h2", "-disable-compression", "-disable-keepalive", "-disable-redirects"},
        "hey",
    )
    positional = [v for f, v in values if not f]
    if len(positional) != 1:
        raise SpecRefused("InvalidCommand", "hey takes exactly one URL")
    draft.url = positional[0]
    for flag, value in values:
        if flag == "-z":
            draft.duration = _seconds(value, "hey -z")
        elif flag == "-q":
            draft.per_worker_rps = _positive(value, "hey -q")
        elif flag == "-c":
            draft.concurrency = int(_positive(value, "hey -c", int))
        elif flag == "-m":
            draft.method = value.upper()
        elif flag == "-H":
            draft.headers.append(value)
        elif flag == "-T":
            draft.headers.append(f"Content-Type: {value}")
        elif flag == "-A":
            draft.headers.append(f"Accept: {value}")
        elif flag == "-d":
            draft.body = value.encode()
        elif flag == "-t":
            seconds = _positive(value, "hey -t", int) if value != "0" else 0
            draft.timeout = float(seconds) or None
        elif flag == "-n":
            draft.notes.append("hey -n is ignored: load runs for the duration (-z or the step's interval)")
        elif flag.startswith("-"):
            draft.notes.append(f"hey {flag} is ignored")
    return draft


def _from_ghz(argv: list[str]) -> _Draft:
    draft = _Draft(grpc_tls=True)
    values = _flag_values(
        argv,
        {
            "-z",
            "--duration",
            "-c",
            "--concurrency",
            "-r",
            "--rps",
            "-q",
            "--qps",
            "--call",
            "-d",
            "--data",
            "-m",
            "--metadata",
            "-t",
            "--timeout",
            "--proto",
            "--protoset",
            "-i",
            "--import-paths",
            "-n",
            "--total",
            "--authority",
        },
        {"--insecure"},
        "ghz",
    )
    positional = [v for f, v in values if not f]
    if len(positional) != 1:
        raise SpecRefused("InvalidCommand", "ghz takes exactly one host:port")
    host = positional[0]
    for flag, value in values:
        if flag in ("-z", "--duration"):
            draft.duration = _seconds(value, f"ghz {flag}")
        elif flag in ("-c", "--concurrency"):
            draft.concurrency = int(_positive(value, f"ghz {flag}", int))
        elif flag in ("-r", "--rps", "-q", "--qps"):
            draft.rps = _positive(value, f"ghz {flag}")
        elif flag == "--call":
            service, slash, method = value.partition("/")
            if not slash:
                service, _, method = value.rpartition(".")
            draft.grpc_method = f"/{service}/{method}"
        elif flag in ("-d", "--data"):
            if value.strip() not in ("{}", ""):
                raise SpecRefused(
                    "UnsupportedOption",
                    "ghz -d: only the empty message {} can be sent without the "
                    "proto; give grpcRequest (base64 protobuf) instead",
                )
        elif flag in ("-m", "--metadata"):
            draft.headers.extend(_ghz_metadata(value))
        elif flag in ("-t", "--timeout"):
            draft.timeout = _seconds(value, f"ghz {flag}")
        elif flag == "--insecure":
            draft.grpc_tls = False
        elif flag in ("-n", "--total"):
            draft.notes.append(f"ghz {flag} is ignored: load runs for the duration")
        elif flag == "--authority":
            raise SpecRefused("UnsupportedOption", "ghz --authority: the authority is the Service name")
        elif flag.startswith("-"):
            draft.notes.append(f"ghz {flag} is ignored: messages are sent as bytes, no proto is needed")
    scheme = "grpcs" if draft.grpc_tls else "grpc"
    draft.url = f"{scheme}://{host}"
    return draft


def _ghz_metadata(value: str) -> list[str]:
    import json

    try:
        parsed = json.loads(value)
    except ValueError:
        raise SpecRefused("InvalidValue", f"ghz -m must be a JSON object, not {value!r}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise SpecRefused("InvalidValue", "ghz -m must be a JSON object of strings")
    return [f"{k}: {v}" for k, v in parsed.items()]


def _from_metadata(metadata: Mapping[str, str]) -> _Draft:
    draft = _Draft(url=metadata.get("url"))
    if "rps" in metadata:
        draft.rps = _positive(metadata["rps"], "rps")
    if "concurrency" in metadata:
        draft.concurrency = int(_positive(metadata["concurrency"], "concurrency", int))
    if "duration" in metadata:
        draft.duration = _seconds(metadata["duration"], "duration")
    if "timeout" in metadata:
        draft.timeout = _seconds(metadata["timeout"], "timeout")
    if "method" in metadata:
        draft.method = metadata["method"].strip().upper()
    if "grpcMethod" in metadata:
        draft.grpc_method = metadata["grpcMethod"].strip()
    if "headers" in metadata:
        draft.headers = metadata["headers"].splitlines()
    if "body" in metadata:
        draft.body = metadata["body"].encode()
    if "grpcRequest" in metadata:
        try:
            draft.grpc_request = base64.b64decode(metadata["grpcRequest"], validate=True)
        except (binascii.Error, ValueError):
            raise SpecRefused(
                "InvalidValue", "grpcRequest must be base64 (the protobuf-encoded message)"
            ) from None
    return draft


def load_spec(payload: Mapping[str, Any], limits: Limits) -> LoadSpec:
    """The load a webhook payload asks for, or SpecRefused / TargetRefused saying what is wrong."""
    metadata = payload.get("metadata") or {}
    if "cmd" in metadata:
        try:
            argv = shlex.split(metadata["cmd"])
        except ValueError as exc:
            raise SpecRefused("InvalidCommand", f"cmd cannot be read: {exc}") from None
        tool = argv[0].rsplit("/", 1)[-1] if argv else ""
        if tool == "hey":
            draft, source = _from_hey(argv[1:]), "hey"
        elif tool == "ghz":
            draft, source = _from_ghz(argv[1:]), "ghz"
        else:
            raise SpecRefused(
                "UnsupportedCommand",
                f"cmd is read, never run: only hey and ghz command lines are "
                f"understood, not {tool or 'an empty one'!r}",
            )
    else:
        draft, source = _from_metadata(metadata), "metadata"
    draft.wait = metadata.get("wait", "").strip().lower() in TRUE_WORDS
    if not draft.url:
        raise SpecRefused("NoTarget", "the webhook's metadata names no target: give url (or cmd)")
    target = parse_target(draft.url, cluster_domain=limits.cluster_domain)

    concurrency = draft.concurrency or limits.default_concurrency
    if draft.rps is not None:
        rps = draft.rps
    elif draft.per_worker_rps is not None:
        rps = draft.per_worker_rps * concurrency
    else:
        rps = limits.default_rps
    duration = draft.duration
    if duration is None and isinstance(payload.get("interval"), str):
        duration = _seconds(payload["interval"], "the payload's interval")
    duration = duration or limits.default_duration
    if rps > limits.max_rps:
        raise SpecRefused(
            "RateTooHigh", f"{rps:g} requests/s asked; this load tester sends at most {limits.max_rps:g}"
        )
    if concurrency > limits.max_concurrency:
        raise SpecRefused(
            "ConcurrencyTooHigh",
            f"{concurrency} in flight asked; this load tester allows at most {limits.max_concurrency}",
        )
    if duration > limits.max_duration:
        raise SpecRefused(
            "DurationTooLong",
            f"{duration:g}s of load asked; this load tester sends for at most {limits.max_duration:g}s",
        )

    if target.protocol == "grpc":
        method = draft.grpc_method or target.path or DEFAULT_GRPC_METHOD
        if not GRPC_METHOD.match(method):
            raise SpecRefused("InvalidValue", f"gRPC method {method!r} is not /package.Service/Method")
        body = draft.grpc_request
    else:
        method = draft.method or "GET"
        if method not in HTTP_METHODS:
            raise SpecRefused(
                "InvalidValue", f"HTTP method {method!r} is not one of {', '.join(sorted(HTTP_METHODS))}"
            )
        body = draft.body
    if len(body) > MAX_BODY_BYTES:
        raise SpecRefused("InvalidValue", f"the request body is {len(body)} bytes; at most {MAX_BODY_BYTES}")
    return LoadSpec(
        target=target,
        rps=rps,
        concurrency=concurrency,
        duration=duration,
        method=method,
        headers=_headers(draft.headers),
        body=body,
        timeout=min(draft.timeout or limits.request_timeout, duration),
        wait=draft.wait,
        source=source,
        notes=tuple(draft.notes),
    )


__all__ = ["Limits", "LoadSpec", "SpecRefused", "TargetRefused", "load_spec"]
