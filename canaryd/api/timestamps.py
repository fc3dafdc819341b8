"""RFC 3339 timestamps, the only time format a CRD's ``format: date-time`` accepts.

The models read and write status times through these functions so that what
the controller writes always passes the CRD schema, and what the schema refuses
the models refuse too (no naive times, no Unix numbers, no date-only strings).
Every time canaryd writes (status, Events, Leases, a CLI request) is formatted
by :func:`format_rfc3339`, in one of the three precisions Kubernetes uses.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final, Literal

_RFC3339: Final = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII
)


def parse_rfc3339(text: str) -> datetime | None:
    """The aware datetime ``text`` denotes, or None when it is not an RFC 3339 date-time.

    Fractions beyond microseconds are truncated (Python's resolution).
    """
    match = _RFC3339.match(text)
    if match is None:
        return None
    date, clock, fraction, zone = match.groups()
    micro = f".{(fraction or '')[:6].ljust(6, '0')}"
    offset = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.fromisoformat(f"{date}T{clock}{micro}{offset}")
    except ValueError:
        return None


#: How many fractional digits a written time keeps:
#: ``"seconds"``: none (metav1.Time, e.g. ``2024-05-01T10:00:00Z``);
#: ``"microseconds"``: always six (metav1.MicroTime, e.g. ``2024-05-01T10:00:00.000000Z``);
#: ``"exact"``: six when the time has a fraction, none otherwise (what status times keep).
Precision = Literal["seconds", "microseconds", "exact"]


def format_rfc3339(value: datetime, precision: Precision = "exact") -> str:
    """``value`` as RFC 3339 in UTC with a ``Z`` suffix; a naive time is taken to be UTC."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    utc = aware.astimezone(UTC)
    if precision == "seconds":
        return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    if precision == "microseconds":
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.isoformat().replace("+00:00", "Z")
