"""``canaryd run``: the controller, configured by flags over ``CANARYD_*`` environment variables.

Every flag defaults to "not given", so that a setting comes from the flag
when one is passed, else from its environment variable, else from the
default in :mod:`canaryd.runtime.settings`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pydantic import ValidationError

from canaryd.runtime.controller import run_until_signalled
from canaryd.runtime.log_setup import configure_logging
from canaryd.runtime.settings import Settings

#: (flag, settings field, help, extra argparse options)
FLAGS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    (
        "--kubeconfig",
        "kubeconfig",
        "kubeconfig file (else $KUBECONFIG, else the in-cluster service account)",
        {},
    ),
    ("--context", "context", "kubeconfig context (its current context when absent)", {}),
    ("--prometheus-url", "prometheus_url", "Prometheus for templates that name none", {}),
    ("--namespaces", "namespaces", "comma-separated namespaces to watch (all when empty)", {}),
    ("--leader-election-id", "leader_election_id", "name of the leader election Lease", {}),
    ("--leader-election-namespace", "leader_election_namespace", "namespace of the Lease", {}),
    ("--leader-election-identity", "leader_election_identity", "this replica's identity on the Lease", {}),
    (
        "--lease-duration",
        "lease_duration_seconds",
        "seconds a Lease is valid without renewal",
        {"type": float},
    ),
    ("--renew-deadline", "renew_deadline_seconds", "seconds the leader may fail to renew", {"type": float}),
    ("--retry-period", "retry_period_seconds", "seconds between leader election attempts", {"type": float}),
    (
        "--shards",
        "shards",
        "split the Canaries over replicas into this many shards, one Lease each (0: one leader)",
        {"type": int},
    ),
    ("--health-address", "health_address", "host:port for /healthz and /readyz (0: off)", {}),
    ("--metrics-address", "metrics_address", "host:port for /metrics (0: off)", {}),
    ("--log-format", "log_format", "json or console", {"choices": ["json", "console"]}),
    ("--log-level", "log_level", "debug, info, warning or error", {}),
    ("--max-concurrent-runs", "max_concurrent_runs", "runs allowed at once (0: no limit)", {"type": int}),
    ("--qps", "qps", "Kubernetes API requests per second", {"type": float}),
    ("--burst", "burst", "Kubernetes API request burst", {"type": int}),
    (
        "--watch-stall-timeout",
        "watch_stall_timeout_seconds",
        "restart a watch silent for this many seconds",
        {"type": float},
    ),
    ("--prometheus-timeout", "prometheus_timeout_seconds", "seconds per Prometheus query", {"type": float}),
    (
        "--notification-secret",
        "notification_secret",
        "Secret with chat notification URLs: namespace/name, or name in the leader-election namespace",
        {},
    ),
    ("--cluster-name", "cluster_name", "this cluster's name in chat notifications", {}),
)
ALIASES = {"--health-address": ["--health-addr", "--health-probe-bind-address"],
           "--metrics-address": ["--metrics-addr", "--metrics-bind-address"]}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, field, help_text, extra in FLAGS:
        env = f"CANARYD_{field.upper()}"
        parser.add_argument(
            flag, *ALIASES.get(flag, []), dest=field, default=None, help=f"{help_text} [env {env}]", **extra
        )
    parser.add_argument(
        "--leader-elect",
        dest="leader_elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="take part in leader election so only one replica acts [env CANARYD_LEADER_ELECT]",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """Flags given on the command line over the environment over the defaults."""
    given = {field: getattr(args, field, None) for _, field, _, _ in FLAGS}
    given["leader_elect"] = getattr(args, "leader_elect", None)
    return Settings(**{k: v for k, v in given.items() if v is not None})


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"canaryd run: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        return asyncio.run(run_until_signalled(settings))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"canaryd run: {exc}", file=sys.stderr)
        return 1
