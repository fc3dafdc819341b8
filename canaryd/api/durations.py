"""Go-style durations ("30s", "1m30s", "500ms"), as Kubernetes and Prometheus write them.

The CRD checks them with CEL's ``duration()``; the models parse them with the
same grammar so that both reject the same strings.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"^[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$")


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string; raise ValueError naming the bad input."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, e.g. 30s, 1m or 1m30s")
    sign = -1.0 if text.startswith("-") else 1.0
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    return timedelta(seconds=sign * seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way Prometheus range selectors accept ("90s", "5m", "1h")."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms % 1000:
        return f"{total_ms}ms"
    seconds = total_ms // 1000
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"
