"""Go-style durations ("30s", "1m30s", "500ms"), as Kubernetes and Prometheus write them.

The CRD checks them with CEL's ``duration()``, which in Kubernetes is Go's
``time.ParseDuration``; the models parse them with this module, written to
follow the same grammar and limits, so that both reject the same strings.
"""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from fractions import Fraction
from typing import Final

_UNIT_NANOSECONDS: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, as Go accepts it
    "\u03bcs": 1_000,  # Greek small letter mu, as Go accepts it
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
#: One component: digits with an optional fraction (at least one digit overall) and a unit.
_COMPONENT: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([^0-9.]+)")
#: Go's time.Duration is an int64 of nanoseconds.
_MAX_NANOSECONDS: Final = 2**63 - 1

#: The grammar as a regular expression, for CEL rules that guard ``duration()`` with ``matches()``.
GO_DURATION_PATTERN: Final = r"^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$"

NANOSECONDS_PER_SECOND: Final = 1_000_000_000


def _invalid(text: object, why: str) -> ValueError:
    return ValueError(f"invalid duration {text!r}: {why}; use a number and a unit, e.g. 30s, 1m or 1m30s")


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string into whole nanoseconds, exactly as Go's time.ParseDuration does.

    Accepts an optional sign, the bare "0", and one or more components of a
    decimal number (fraction allowed) followed by ns, us, µs, μs, ms, s, m or h.
    Raises ValueError naming the bad input, including for values beyond Go's
    int64 nanosecond range (about 292 years). Answers are remembered: every
    decision reads the same few intervals again.
    """
    if not isinstance(text, str):
        raise _invalid(text, "not a string")
    return _parse_duration_ns(text)


@functools.lru_cache(maxsize=4096)
def _parse_duration_ns(text: str) -> int:
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise _invalid(text, "empty")
    total = Fraction(0)
    position = 0
    while position < len(rest):
        match = _COMPONENT.match(rest, position)
        if match is None:
            raise _invalid(text, "expected a number followed by a unit")
        number, unit = match.groups()
        if unit not in _UNIT_NANOSECONDS:
            raise _invalid(text, f"unknown unit {unit!r}")
        total += Fraction(number) * _UNIT_NANOSECONDS[unit]
        position = match.end()
    nanoseconds = int(total)  # Go truncates sub-nanosecond fractions
    limit = _MAX_NANOSECONDS + (1 if negative else 0)
    if nanoseconds > limit:
        raise _invalid(text, "out of range")
    return -nanoseconds if negative else nanoseconds


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string into a timedelta (microsecond resolution, truncated toward zero)."""
    nanoseconds = parse_duration_ns(text)
    micro = abs(nanoseconds) // 1000
    return timedelta(microseconds=-micro if nanoseconds < 0 else micro)


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


def human_duration(seconds: float) -> str:
    """kubectl's short age format: 45s, 3m12s, 25m, 5h3m, 20h, 3d4h, 12d, 2y."""
    amount, unit = max(0, int(seconds)), "s"
    if amount < 120:
        return f"{amount}s"
    # (size of the next unit in this one, its name, shown with the rest below, shown alone below)
    for size, name, with_rest_below, alone_below in ((60, "m", 10, 180), (60, "h", 8, 48), (24, "d", 8, 730)):
        whole, rest = divmod(amount, size)
        if whole < with_rest_below:
            return f"{whole}{name}{rest}{unit}" if rest else f"{whole}{name}"
        if whole < alone_below:
            return f"{whole}{name}"
        amount, unit = whole, name
    return f"{amount // 365}y"
