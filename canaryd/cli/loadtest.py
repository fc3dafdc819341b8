"""``canaryd loadtest``: the load tester Canary ``rollout`` webhooks call, configured like ``canaryd run``.

Flags over ``CANARYD_LOADTEST_*`` environment variables over the defaults in
:mod:`canaryd.loadtest.settings`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pydantic import ValidationError

from canaryd.loadtest.server import serve_until_signalled
from canaryd.loadtest.settings import LoadTestSettings
from canaryd.runtime.log_setup import configure_logging

#: (flag, settings field, help, extra argparse options)
FLAGS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("--address", "address", "host:port for webhooks, /jobs, /healthz and /metrics", {}),
    ("--namespaces", "namespaces", "comma-separated namespaces whose Services may be loaded", {}),
    ("--cluster-domain", "cluster_domain", "the cluster's DNS domain", {}),
    ("--max-rps", "max_rps", "most requests per second one job may ask for", {"type": float}),
    ("--max-concurrency", "max_concurrency", "most requests in flight one job may ask for", {"type": int}),
    ("--max-duration", "max_duration_seconds", "most seconds one job may run", {"type": float}),
    ("--max-jobs", "max_jobs", "most jobs running at once", {"type": int}),
    ("--default-rps", "default_rps", "requests per second when a webhook names none", {"type": float}),
    (
        "--default-concurrency",
        "default_concurrency",
        "requests in flight when a webhook names none",
        {"type": int},
    ),
    (
        "--default-duration",
        "default_duration_seconds",
        "seconds of load when neither the webhook nor its payload's interval says",
        {"type": float},
    ),
    ("--request-timeout", "request_timeout_seconds", "seconds one request may take", {"type": float}),
    ("--webhook-secret-file", "webhook_secret_file", "file with the HMAC key calls must be signed with", {}),
    (
        "--signature-tolerance",
        "signature_tolerance_seconds",
        "seconds a signed call's timestamp may be off",
        {"type": float},
    ),
    ("--log-format", "log_format", "json or console", {"choices": ["json", "console"]}),
    ("--log-level", "log_level", "debug, info, warning or error", {}),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, field, help_text, extra in FLAGS:
        env = f"CANARYD_LOADTEST_{field.upper()}"
        parser.add_argument(flag, dest=field, default=None, help=f"{help_text} [env {env}]", **extra)
    parser.add_argument(
        "--allow-cross-namespace",
        dest="allow_cross_namespace",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let a Canary load allowed Services outside its own namespace "
        "[env CANARYD_LOADTEST_ALLOW_CROSS_NAMESPACE]",
    )
    parser.add_argument(
        "--test-host",
        dest="test_hosts",
        action="append",
        default=None,
        metavar="SERVICE.NAMESPACE=127.0.0.1",
        help="tests only: resolve this Service name to a loopback address instead of asking DNS (repeatable) "
        "[env CANARYD_LOADTEST_TEST_HOSTS]",
    )


def settings_from(args: argparse.Namespace) -> LoadTestSettings:
    given = {field: getattr(args, field, None) for _, field, _, _ in FLAGS}
    given["allow_cross_namespace"] = getattr(args, "allow_cross_namespace", None)
    given["test_hosts"] = getattr(args, "test_hosts", None)
    return LoadTestSettings(**{k: v for k, v in given.items() if v is not None})


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"canaryd loadtest: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        return asyncio.run(serve_until_signalled(settings))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"canaryd loadtest: {exc}", file=sys.stderr)
        return 1
