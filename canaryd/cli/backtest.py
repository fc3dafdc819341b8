"""``canaryd backtest``: what a Canary's analysis would have decided over a past window.

    canaryd backtest -f canary.yaml -f analysis/app-metrics.yaml \\
        --prometheus-url http://prometheus:9090 --start 2024-05-01T10:00:00Z --end 2024-05-01T11:00:00Z

reads the Canary and its MetricTemplates from files (no cluster is needed),
replays the analysis (``canaryd.runtime.backtest``) querying Prometheus at
each check's time, and prints each check's verdict per metric, then the
decision (``Succeeded``, ``Failed`` or ``Undecided``) and when it would have
been reached. ``-o json`` prints the same as one JSON document. Bad input (a
file that does not parse, no Canary, a template missing) is one line on
stderr and exit code 2; a replay that ran exits 0 whatever it decided.

Times are RFC 3339 (``2024-05-01T10:00:00Z``), Unix seconds, ``now``, or
``now-`` followed by a duration (``now-2h``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from canaryd.adapters.prometheus import PrometheusQuerier
from canaryd.api.constants import CANARY_KIND, METRIC_TEMPLATE_KIND
from canaryd.api.durations import format_duration, parse_duration
from canaryd.api.models import Canary, MetricTemplate, validation_text
from canaryd.api.timestamps import format_rfc3339, parse_rfc3339
from canaryd.runtime.backtest import (
    VERDICT_NAMES,
    BacktestInputError,
    BacktestResult,
    endpoint_factory,
    replay,
)

DEFAULT_NAMESPACE = "default"


class InputError(ValueError):
    """Something on the command line or in the files that the user must fix; the message says what."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--filename", action="append", required=True, metavar="FILE",
        help="YAML file(s) holding the Canary and the MetricTemplates it names (repeat -f)",
    )  # fmt: skip
    parser.add_argument(
        "--prometheus-url", required=True, help="the Prometheus (or compatible API) holding the past data"
    )
    parser.add_argument(
        "--start", required=True, help="when the replayed run starts (RFC 3339, Unix seconds, now-1h)"
    )
    parser.add_argument("--end", required=True, help="the end of the window (RFC 3339, Unix, now)")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text", help="output format")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one Prometheus query may take")


def parse_time(text: str, now: datetime) -> datetime:
    """RFC 3339, Unix seconds, ``now`` or ``now-DURATION``."""
    value = text.strip()
    if value == "now":
        return now
    if value.startswith("now-"):
        try:
            return now - parse_duration(value[4:])
        except ValueError as error:
            raise InputError(f"{text!r}: {error}") from None
    parsed = parse_rfc3339(value)
    if parsed is not None:
        return parsed
    try:
        seconds = float(value)
    except ValueError:
        raise InputError(
            f"{text!r} is not a time: use RFC 3339 (2024-05-01T10:00:00Z), Unix seconds, now or now-1h"
        ) from None
    if not math.isfinite(seconds):
        raise InputError(f"{text!r} is not a time")
    return datetime.fromtimestamp(seconds, UTC)


def load(paths: list[str]) -> tuple[Canary, dict[tuple[str, str], MetricTemplate]]:
    """The one Canary and every MetricTemplate in the files."""
    canaries: list[Canary] = []
    templates: dict[tuple[str, str], MetricTemplate] = {}
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(Path(path).read_text(encoding="utf-8")))
        except OSError as error:
            raise InputError(f"{path}: {error.strerror or error}") from None
        except yaml.YAMLError as error:
            raise InputError(f"{path}: not YAML: {error}".replace("\n", " ")) from None
        for document in documents:
            if not isinstance(document, dict):
                continue
            kind = document.get("kind")
            raw_meta = document.get("metadata")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            name = f"{kind}/{meta.get('name', '?')}"
            if kind not in (CANARY_KIND, METRIC_TEMPLATE_KIND):
                continue
            namespace = meta.get("namespace") or DEFAULT_NAMESPACE
            document = {**document, "metadata": {**meta, "namespace": namespace}}
            try:
                if kind == CANARY_KIND:
                    canaries.append(Canary.model_validate(document))
                else:
                    template = MetricTemplate.model_validate(document)
                    templates[(template.metadata.namespace, template.metadata.name)] = template
            except ValidationError as error:
                raise InputError(f"{path}: {name} is invalid: {validation_text(error)}") from None
    if len(canaries) != 1:
        found = ", ".join(c.metadata.name for c in canaries) or "none"
        raise InputError(f"the files must hold exactly one Canary (found {found})")
    return canaries[0], templates


def _number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def render_text(result: BacktestResult) -> str:
    """The checks as a table, then the decision."""
    rows = [["TIME", "METRIC", "VERDICT", "CANARY", "PRIMARY", "MESSAGE"]]
    for check in result.checks:
        rows.append([
            format_rfc3339(check.time), check.metric, VERDICT_NAMES[check.verdict],
            _number(check.canary), _number(check.primary), check.message,
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
             for row in rows] if result.checks else ["(no check ran in the window)"]  # fmt: skip
    lines.append("")
    if result.decided_at is not None:
        after = format_duration(result.decided_at - result.start)
        lines.append(
            f"Decision: {result.decision} at {format_rfc3339(result.decided_at)} ({after} after the start): "
            f"{result.reason}: {result.message}"
        )
    else:
        lines.append(f"Decision: {result.decision}: {result.message}")
    return "\n".join(line.rstrip() for line in lines)


async def _run(args: argparse.Namespace, canary: Canary, templates: Any, start: datetime,
               end: datetime) -> BacktestResult:  # fmt: skip
    async with PrometheusQuerier() as querier:
        return await replay(
            canary,
            templates,
            querier=querier,
            endpoint_for=endpoint_factory(args.prometheus_url, args.timeout),
            start=start,
            end=end,
        )


def main(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    try:
        start, end = parse_time(args.start, now), parse_time(args.end, now)
        if end <= start:
            raise InputError("--end must be after --start")
        canary, templates = load(args.filename)
        result = asyncio.run(_run(args, canary, templates, start, end))
    except (InputError, BacktestInputError) as error:
        print(f"canaryd backtest: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # e.g. a Prometheus URL that is not http(s)://host:port
        print(f"canaryd backtest: {error}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render_text(result))
    return 0
