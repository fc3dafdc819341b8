"""The largest durations and counts a Canary or a MetricTemplate may ask for.

Every number a user writes ends up in arithmetic: a due time is a timestamp
plus an interval, a deadline a timestamp plus ``progressDeadlineSeconds``, a
Prometheus range a duration. Without an upper bound a value such as 2^62
seconds overflows that arithmetic, and every reconcile of the Canary fails
the same way for ever. So the CRD and the models refuse anything beyond
these limits up front, with a message that names the limit; each is far
above any real use (a step a day, a month without progress).

Status counters are bounded by their storage type (int32, int64) so that a
status written by hand cannot make the controller's own write fail.
"""

from __future__ import annotations

from typing import Final

#: ``spec.analysis.interval`` and a comparison's ``resolution``: at most one step (or sample) a day.
MAX_INTERVAL: Final = "24h"
#: A metric's own ``interval``, the range its query looks back over: a week.
MAX_LOOKBACK: Final = "168h"
#: A MetricTemplate's ``provider.timeout`` for one query.
MAX_QUERY_TIMEOUT: Final = "10m"
#: ``spec.progressDeadlineSeconds``: 30 days without progress.
MAX_PROGRESS_DEADLINE_SECONDS: Final = 30 * 24 * 3600
#: ``threshold`` and ``errorThreshold``: failed (or unanswered) checks before a run fails.
MAX_CHECK_THRESHOLD: Final = 1000
#: User variables of a template or a check, and their values.
MAX_VARIABLES: Final = 32
MAX_VARIABLE_LENGTH: Final = 1024
#: Extra HTTP headers of a template's provider, and their values.
MAX_HEADERS: Final = 32
MAX_HEADER_LENGTH: Final = 4096
#: Status counters, as the CRD stores them.
MAX_INT32: Final = 2**31 - 1
MAX_INT64: Final = 2**63 - 1
