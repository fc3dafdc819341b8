"""The time an analysis asks Prometheus about, aligned so that Canaries due together ask the same thing.

Canaries whose steps fall due within the same short span and whose metrics
render the same PromQL (a shared template over the same series) would each
send that query for a slightly different instant. Rounding the evaluation time
down to a multiple of ``align_seconds`` makes those queries identical, so the
Prometheus adapter answers them with one request. The price is that the data
judged may be up to ``align_seconds`` older, which is part of the bound on how
soon a bad canary is rolled back.
"""

from __future__ import annotations

from datetime import UTC, datetime


def evaluation_time(now: datetime, align_seconds: float) -> datetime:
    """``now`` rounded down to a multiple of ``align_seconds`` since the epoch (unchanged when 0)."""
    if align_seconds <= 0:
        return now
    stamp = now.timestamp()
    aligned = stamp - (stamp % align_seconds)
    return datetime.fromtimestamp(aligned, tz=now.tzinfo or UTC)
