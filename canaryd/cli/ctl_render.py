"""What ``kubectl canary`` prints: tables, the status page, the watch line and the progress bar.

Kept apart from the commands and free of I/O so that every line a person reads
can be checked with a plain function call. It works on the objects exactly as
the API server returns them (dicts), and reads them leniently: a Canary written
by an older or newer controller, or a status the controller has not filled yet,
still prints, with "-" where a value is unknown, instead of failing.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from canaryd.api.constants import Phase, Verdict, parse_phase
from canaryd.api.durations import human_duration
from canaryd.api.models import Analysis, action_pending
from canaryd.core.judges.judgement import percent

UNKNOWN = "-"
PROGRESS_BAR_WIDTH = 30
#: Phases after which a run is over: ``status --until-done`` returns when it sees one.
FINISHED_PHASES = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value})


# ---- reading a Canary leniently ------------------------------------------


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def meta(canary: dict[str, Any]) -> dict[str, Any]:
    return as_dict(canary.get("metadata"))


def spec(canary: dict[str, Any]) -> dict[str, Any]:
    return as_dict(canary.get("spec"))


def status(canary: dict[str, Any]) -> dict[str, Any]:
    return as_dict(canary.get("status"))


def analysis(canary: dict[str, Any]) -> dict[str, Any]:
    return as_dict(spec(canary).get("analysis"))


def step_weights(canary: dict[str, Any]) -> tuple[int, ...] | None:
    """The weight of every step, as the controller computes it; None when the spec does not parse."""
    try:
        return Analysis.model_validate(analysis(canary)).weights()
    except ValueError:
        return None


def schedule(canary: dict[str, Any]) -> tuple[int, str] | None:
    """(how many steps a run has, what they are), as the controller runs them; None when it does not parse."""
    try:
        parsed = Analysis.model_validate(analysis(canary))
    except ValueError:
        return None
    weights = parsed.weights()
    iterations = parsed.iterations or 0
    weight_text = f"weights {', '.join(str(w) for w in weights)}"
    if parsed.ab_testing:
        return iterations, f"A/B testing: {iterations} checks at weight 0"
    if parsed.mirror is not None:
        then = f", then {weight_text}" if weights else ", then promotion"
        return iterations + len(weights), f"{iterations} checks on mirrored requests{then}"
    return len(weights), weight_text


def _condition_text(items: Any, joiner: str) -> list[str]:
    found = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            kind = item.get("type", "Exact")
            op = "=" if kind == "Exact" else "~"
            found.append(f"{item.get('name')}{joiner}{op}{item.get('value')}")
    return found


def match_text(match: Any) -> str:
    """One A/B match as a person reads it: ``header x-canary=insider``, ``path /api``, ``method POST``."""
    match = as_dict(match)
    parts = []
    path = as_dict(match.get("path"))
    if path:
        parts.append(f"path {path.get('value', '/')}" + (" (exact)" if path.get("type") == "Exact" else ""))
    method = match.get("method")
    if isinstance(method, str):
        parts.append(f"method {method}")
    elif isinstance(method, dict):
        parts.append("method " + "/".join(str(method[k]) for k in ("service", "method") if k in method))
    parts += [f"header {c}" for c in _condition_text(match.get("headers"), "")]
    parts += [f"query {c}" for c in _condition_text(match.get("queryParams"), "")]
    return " and ".join(parts) or "every request"


def traffic_lines(canary: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines about how the run sends traffic: mode, canaryd's route parts, cookie, share."""
    traffic = as_dict(status(canary).get("traffic"))
    spec_analysis = analysis(canary)
    if not traffic:
        return []
    lines: list[tuple[str, str]] = []
    mode = traffic.get("mode", "Canary")
    if mode == "ABTest":
        matches = spec_analysis.get("match") or spec_analysis.get("grpcMatch") or []
        shown = "; or ".join(match_text(m) for m in matches) if isinstance(matches, list) else ""
        lines.append(("Mode", f"A/B testing (to the canary: {shown})" if shown else "A/B testing"))
    elif mode == "Mirror":
        lines.append(("Mode", f"mirroring {traffic.get('mirrorPercent') or 100}% of requests to the canary"))
    else:
        lines.append(("Mode", "canary (weights)"))
    for route in traffic.get("routes") or []:
        route = as_dict(route)
        parts = [f"rule {name}" for name in route.get("addedRules") or []]
        if route.get("mirror"):
            parts.append("a RequestMirror filter to the canary")
        if route.get("setsCookie"):
            parts.append("a Set-Cookie filter on the canary backendRef")
        if parts:
            lines.append(("canaryd added", f"{route.get('kind')}/{route.get('name')}: {', '.join(parts)}"))
    if traffic.get("sessionCookie"):
        lines.append(("Session cookie", str(traffic["sessionCookie"])))
    share = as_dict(traffic.get("share"))
    if share:
        measured = share.get("measured")
        value = f"{format_number(measured)}%" if isinstance(measured, (int, float)) else "not measured"
        state = "verified" if share.get("verified") else "not carried yet"
        lines.append((
            "Traffic share",
            f"{value} measured at step {share.get('step')}, expected {format_number(share.get('expected'))}% "
            f"± {format_number(share.get('tolerance'))} ({state})",
        ))  # fmt: skip
    return lines


def max_weight(canary: dict[str, Any]) -> int | None:
    weights = step_weights(canary)
    return weights[-1] if weights else None


def threshold(canary: dict[str, Any]) -> int:
    value = analysis(canary).get("threshold", 5)
    return value if isinstance(value, int) else 5


def error_threshold(canary: dict[str, Any]) -> int:
    value = analysis(canary).get("errorThreshold", 5)
    return value if isinstance(value, int) else 5


def phase(canary: dict[str, Any]) -> str:
    """The phase in today's spelling (a status written as ``Finalising`` reads ``Finalizing``)."""
    raw = status(canary).get("phase")
    known = parse_phase(raw)
    return known.value if known is not None else str(raw or "")


def weight(canary: dict[str, Any]) -> int:
    value = status(canary).get("canaryWeight", 0)
    return value if isinstance(value, int) else 0


def target_name(canary: dict[str, Any]) -> str:
    return str(as_dict(spec(canary).get("targetRef")).get("name") or UNKNOWN)


def routes(canary: dict[str, Any]) -> list[str]:
    refs = spec(canary).get("routeRefs")
    if not isinstance(refs, list):
        return []
    return [f"{as_dict(r).get('kind', 'HTTPRoute')}/{as_dict(r).get('name', '?')}" for r in refs]


def pending_request(canary: dict[str, Any]) -> dict[str, Any] | None:
    """The manual action a person asked for that the controller has not acknowledged yet."""
    requested = as_dict(status(canary).get("requestedAction"))
    last = as_dict(status(canary).get("lastAction"))
    return requested if action_pending(requested.get("id"), last.get("id")) else None


def run_outcome(canary: dict[str, Any], target_revision: str | None) -> str | None:
    """Succeeded or Failed once the run of the target's current revision is over, else None.

    ``target_revision`` is the pod-template hash of the target Deployment as it
    is now (None when it cannot be read: then the phase alone decides). Right
    after someone changes the Deployment, the Canary still shows the previous
    run's Succeeded until the controller notices; that is not the end of the
    run the person is waiting for, so it does not count.
    """
    current = phase(canary)
    if target_revision is None:
        return current if current in FINISHED_PHASES else None
    st = status(canary)
    if current in FINISHED_PHASES and st.get("revision") == target_revision:
        return current
    idle = (Phase.INITIALIZED.value, Phase.SUCCEEDED.value)
    if current in idle and st.get("lastPromotedRevision") == target_revision:
        return Phase.SUCCEEDED.value  # the primary already runs it: nothing to roll out
    return None


# ---- small formats --------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)




_TIMESTAMP = re.compile(r"(?:\bat )?\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")


def humanize(text: str, now: datetime) -> str:
    """A message for a person: each RFC 3339 time in it (and an ``at`` before it) as ``in 12s`` or
    ``12s ago``."""

    def relative(match: re.Match[str]) -> str:
        when = parse_time(match.group(0).removeprefix("at "))
        if when is None:
            return match.group(0)
        seconds = (when - now).total_seconds()
        if abs(seconds) < 1:
            return "now"
        return f"in {human_duration(seconds)}" if seconds > 0 else f"{human_duration(-seconds)} ago"

    return _TIMESTAMP.sub(relative, text)


def age(value: Any, now: datetime) -> str:
    when = parse_time(value)
    return UNKNOWN if when is None else human_duration((now - when).total_seconds())


def format_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return UNKNOWN
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_range(threshold_range: dict[str, Any]) -> str:
    low, high = threshold_range.get("min"), threshold_range.get("max")
    if low is not None and high is not None:
        return f"{format_number(low)}..{format_number(high)}"
    if low is not None:
        return f">= {format_number(low)}"
    if high is not None:
        return f"<= {format_number(high)}"
    return UNKNOWN


def format_compare(compare: dict[str, Any]) -> str:
    """A comparison metric's rule, e.g. ``vs primary: increase <= +25% (Sequential)``."""
    tolerance = compare.get("tolerance", 0.25)
    amount = f"{tolerance * 100:.3g}%" if isinstance(tolerance, int | float) else UNKNOWN
    direction = str(compare.get("direction") or "increase")
    sign = {"increase": "+", "decrease": "-"}.get(direction, "±")
    return f"vs primary: {direction} <= {sign}{amount} ({compare.get('judge') or 'MannWhitney'})"


def format_share(value: Any) -> str:
    """A relative shift (0.42) as ``+42%``; unknown or unbounded as ``-``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return UNKNOWN
    return percent(float(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded like kubectl's: three spaces between, no trailing blanks."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def progress_bar(current: int, top: int | None, width: int = PROGRESS_BAR_WIDTH) -> str:
    """``[#########---------------------] 15/50%``: the canary weight toward maxWeight."""
    if not top or top <= 0:
        return f"[{'?' * width}] {current}%"
    filled = max(0, min(width, round(width * current / top)))
    return f"[{'#' * filled}{'-' * (width - filled)}] {current}/{top}%"


@dataclass(frozen=True)
class Marks:
    """Pass/fail marks; plain ASCII where the terminal cannot print the check marks."""

    passed: str
    failed: str
    no_data: str
    error: str
    inconclusive: str = "~ inconclusive"
    #: What ends a line cut to the terminal's width.
    ellipsis: str = "..."

    @classmethod
    def for_encoding(cls, encoding: str | None) -> Marks:
        try:
            "\u2713\u2717\u2026".encode(encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            return cls(passed="+ pass", failed="x FAIL", no_data="? no data", error="! error")
        return cls(passed="\u2713 pass", failed="\u2717 FAIL", no_data="? no data", error="! error",
                   ellipsis="\u2026")  # fmt: skip

    def verdict(self, value: Any) -> str:
        return {
            Verdict.PASS.value: self.passed,
            Verdict.FAIL.value: self.failed,
            Verdict.NO_DATA.value: self.no_data,
            Verdict.ERROR.value: self.error,
            Verdict.INCONCLUSIVE.value: self.inconclusive,
        }.get(str(value), UNKNOWN if not value else str(value))


# ---- list -------------------------------------------------------------------


def step_of(canary: dict[str, Any]) -> str:
    """``n/m``: steps taken out of the steps of the schedule."""
    planned = schedule(canary)
    total = planned[0] if planned else None
    step = status(canary).get("step", 0)
    step = step if isinstance(step, int) else 0
    return f"{step}/{total if total is not None else '?'}"


def condition(canary: dict[str, Any], kind: str) -> dict[str, Any]:
    """The status condition of that type, or an empty dict."""
    conditions = status(canary).get("conditions")
    if not isinstance(conditions, list):
        return {}
    found = [c for c in conditions if isinstance(c, dict) and c.get("type") == kind]
    return found[0] if found else {}


def list_table(canaries: Sequence[dict[str, Any]], *, all_namespaces: bool, wide: bool, now: datetime) -> str:
    """READY and REASON are the Ready condition's (a stuck Canary shows False and what is wrong), SINCE
    its last transition; -o wide adds the revision, step, target and routes."""
    headers = ["NAME", "PHASE", "WEIGHT", "FAILED", "READY", "REASON", "SINCE", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers += ["REVISION", "STEP", "TARGET", "ROUTES"]
    rows = []
    for canary in canaries:
        shown_phase = phase(canary) or UNKNOWN
        ready = condition(canary, "Ready")
        if status(canary).get("paused"):
            shown_phase += ",Paused"  # like kubectl's Ready,SchedulingDisabled
        row = [
            str(meta(canary).get("name", "")),
            shown_phase,
            f"{weight(canary)}%",
            f"{status(canary).get('failedChecks', 0)}/{threshold(canary)}",
            str(ready.get("status") or UNKNOWN),
            str(ready.get("reason") or UNKNOWN),
            age(ready.get("lastTransitionTime"), now),
            age(meta(canary).get("creationTimestamp"), now),
        ]
        if all_namespaces:
            row.insert(0, str(meta(canary).get("namespace", "")))
        if wide:
            row += [
                str(status(canary).get("revision") or UNKNOWN),
                step_of(canary),
                target_name(canary),
                ",".join(routes(canary)) or UNKNOWN,
            ]
        rows.append(row)
    return table(headers, rows)


def resource_name(canary: dict[str, Any]) -> str:
    """What ``-o name`` prints, as kubectl does: ``canary.canaryd.io/NAME``."""
    return f"canary.canaryd.io/{meta(canary).get('name', '')}"


def list_document(canaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What ``-o json|yaml`` prints for a list, in kubectl's List shape."""
    return {"apiVersion": "v1", "kind": "List", "items": list(canaries), "metadata": {"resourceVersion": ""}}


def dump(document: Any, output: str) -> str:
    if output == "yaml":
        return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).rstrip("\n")
    return json.dumps(document, indent=4, default=str)


# ---- status ---------------------------------------------------------------


def describe_action(record: dict[str, Any], now: datetime) -> str:
    action = record.get("action", "?")
    when = record.get("at") or record.get("requestedAt")
    parts = [str(action)]
    if record.get("result"):
        parts.append(f"-> {humanize(str(record['result']), now)}")
    if record.get("requestedBy"):
        parts.append(f"by {record['requestedBy']}")
    if when:
        parts.append(f"{age(when, now)} ago")
    parts.append(f"(id {record.get('id', '?')})")
    return " ".join(parts)


@dataclass(frozen=True)
class Workloads:
    """The two Deployments of a canary as the API server returned them (None: missing or not readable)."""

    primary: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None


def images(deployment: dict[str, Any]) -> str:
    """The images of a Deployment's pod template, e.g. ``app:2.0`` (several joined with commas)."""
    template = as_dict(as_dict(as_dict(deployment.get("spec")).get("template")).get("spec"))
    containers = template.get("containers")
    found = [str(as_dict(c).get("image") or "?") for c in containers] if isinstance(containers, list) else []
    return ",".join(found) or UNKNOWN


def readiness(deployment: dict[str, Any]) -> str:
    """``2/3 ready`` (ready replicas out of those the Deployment asks for)."""
    wanted = as_dict(deployment.get("spec")).get("replicas", 1)
    ready = as_dict(deployment.get("status")).get("readyReplicas") or 0
    return f"{ready}/{wanted if isinstance(wanted, int) else '?'} ready"


def workload_text(deployment: dict[str, Any] | None, name: str, revision: str | None = None) -> str:
    """One line about a Deployment: readiness, images and the revision it runs (by name when missing)."""
    if deployment is None:
        return f"Deployment {name} not found"
    return f"{readiness(deployment)}  {images(deployment)}" + (f"  (rev {revision})" if revision else "")


def primary_name(canary: dict[str, Any]) -> str:
    return f"{target_name(canary)}-primary"


def fit(line: str, width: int, marks: Marks) -> str:
    """The line cut to ``width`` columns, its end marked."""
    if len(line) <= width:
        return line
    return line[: max(width - len(marks.ellipsis), 0)] + marks.ellipsis


def event_message(event: dict[str, Any], now: datetime) -> str:
    """An Event's message with its repeat count and human times."""
    count = int(event.get("count") or 1)
    return (f"(x{count}) " if count > 1 else "") + humanize(str(event.get("message", "")), now)


def status_summary(
    canary: dict[str, Any],
    events: Sequence[dict[str, Any]],
    *,
    now: datetime,
    marks: Marks,
    workloads: Workloads | None = None,
    target_revision: str | None = None,
    width: int = 80,
    height: int = 24,
) -> str:
    """The essentials of one canary in ``width`` x ``height``: the run, both Deployments, each metric's
    last value against its range, the Ready condition and as many recent Events as fit. ``-o wide``
    (``status_page``) has the rest: every condition, metric messages, comparisons, more Events."""
    st = status(canary)
    weights = step_weights(canary)
    top = weights[-1] if weights else None
    workloads = workloads or Workloads()
    lines: list[str] = []

    def field(label: str, value: str) -> None:
        lines.append(f"{label + ':':<17}{value}")

    field("Name", f"{meta(canary).get('name', '')} (namespace {meta(canary).get('namespace', '')})")
    field("Phase", phase(canary) or "(not yet reconciled)")
    if st.get("paused"):
        field("Paused", "yes")
    step = st.get("step", 0)
    if weights:
        field("Step", f"{step} of {len(weights)} (weights {', '.join(str(w) for w in weights)})")
    else:
        field("Step", f"{step} (the analysis schedule in spec does not parse)")
    field("Weight", f"{weight(canary)}% {progress_bar(weight(canary), top)}")
    for label, value in traffic_lines(canary):  # the traffic mode, canaryd's route parts, the share
        field(label, value)
    promoted = st.get("lastPromotedRevision")
    field("Primary", workload_text(workloads.primary, primary_name(canary), promoted))
    revision = st.get("revision")
    field("Canary", workload_text(workloads.canary, target_name(canary),
                                  revision if revision != promoted else None))  # fmt: skip
    if target_revision and target_revision not in (revision, promoted):
        field("New revision", f"{target_revision} (in the Deployment; its run has not started yet)")
    last_step = st.get("lastStepTime")
    interval = analysis(canary).get("interval", "1m")
    field(
        "Failed checks",
        f"{st.get('failedChecks', 0)}/{threshold(canary)}, errors "
        f"{st.get('analysisErrors', 0)}/{error_threshold(canary)}; last step "
        f"{age(last_step, now) + ' ago' if last_step else UNKNOWN} (interval {interval})",
    )
    ready = condition(canary, "Ready")
    if ready:
        text = f"{ready.get('status', '?')} ({ready.get('reason', '?')})"
        if ready.get("status") != "True" and ready.get("message"):
            # What to fix matters most on a stuck canary: up to three lines of it.
            wrapped = textwrap.wrap(f"{text}: {humanize(str(ready['message']), now)}", max(width - 17, 20))
            field("Ready", wrapped[0])
            lines.extend(" " * 17 + more for more in wrapped[1:3])
        else:
            field("Ready", text)
    pending = pending_request(canary)
    if pending:
        field("Pending action", describe_action(pending, now) + ", not yet acknowledged by the controller")
    else:
        last_action = as_dict(st.get("lastAction"))
        if last_action.get("id"):
            field("Last action", describe_action(last_action, now))

    checks = analysis(canary).get("metrics")
    checks = checks if isinstance(checks, list) else []
    results = {str(m.get("name")): m for m in (st.get("metrics") or []) if isinstance(m, dict)}
    lines.append("")
    if not checks:
        lines.append("Metrics: none (every step passes)")
    else:
        rows = []
        for check in checks:
            check = as_dict(check)
            name = str(check.get("name", "?"))
            if "compare" in check:
                range_text = "vs primary"
            else:
                range_text = format_range(as_dict(check.get("thresholdRange")))
            rows.append(_metric_row(name, range_text, results.get(name, {}), now, marks)[:5])
        room = max(height - len(lines) - 4, 1)  # the Metrics header, a table header, a blank, Events
        shown = rows if len(rows) <= room else rows[: room - 1]
        body = table(["METRIC", "RANGE", "LAST VALUE", "RESULT", "CHECKED"], shown)
        lines.extend("  " + line for line in body.splitlines())
        if len(shown) < len(rows):
            lines.append(f"  (and {len(rows) - len(shown)} more: -o wide)")

    room = height - len(lines) - 3  # a blank line, "Events:" and the table header
    recent = list(events)[-room:] if room > 0 else []
    if recent:
        lines.append("")
        lines.append(f"Events (last {len(recent)} of {len(events)}; all with -o wide):"
                     if len(recent) < len(events) else "Events:")  # fmt: skip
        rows = [
            [
                age(e.get("time"), now), str(e.get("type", "")), str(e.get("reason", "")),
                event_message(e, now),
            ]
            for e in recent
        ]  # fmt: skip
        lines.extend("  " + line for line in table(["AGE", "TYPE", "REASON", "MESSAGE"], rows).splitlines())
    elif not events and room > 0:
        lines.append("")
        lines.append("Events: none")
    return "\n".join(fit(line, width, marks) for line in lines[:height])


def status_page(
    canary: dict[str, Any],
    events: Sequence[dict[str, Any]],
    *,
    now: datetime,
    marks: Marks,
    max_events: int = 10,
    target_revision: str | None = None,
    workloads: Workloads | None = None,
) -> str:
    """Everything about one canary, for a person: the run, the checks, conditions and events
    (``status -o wide``; the default view is ``status_summary``)."""
    st = status(canary)
    weights = step_weights(canary)
    top = weights[-1] if weights else None
    lines: list[str] = []

    def field(label: str, value: str) -> None:
        lines.append(f"{label + ':':<17}{value}")

    field("Name", str(meta(canary).get("name", "")))
    field("Namespace", str(meta(canary).get("namespace", "")))
    field("Target", f"Deployment/{target_name(canary)}")
    field("Routes", ", ".join(routes(canary)) or UNKNOWN)
    if workloads is not None:
        field("Primary", f"Deployment/{primary_name(canary)}: " + workload_text(workloads.primary,
                                                                               primary_name(canary)))
        field("Canary", f"Deployment/{target_name(canary)}: " + workload_text(workloads.canary,
                                                                             target_name(canary)))
    field("Phase", phase(canary) or "(not yet reconciled)")
    revision = str(st.get("revision") or UNKNOWN)
    promoted = st.get("lastPromotedRevision")
    field("Revision", f"{revision} (last promoted: {promoted})" if promoted else revision)
    if target_revision and target_revision not in (st.get("revision"), promoted):
        field("New revision", f"{target_revision} (in the Deployment; its run has not started yet)")
    step = st.get("step", 0)
    planned = schedule(canary)
    if planned:
        field("Step", f"{step} of {planned[0]} ({planned[1]})")
    else:
        field("Step", f"{step} (the analysis schedule in spec does not parse)")
    field("Weight", f"{weight(canary)}% {progress_bar(weight(canary), top)}")
    for label, value in traffic_lines(canary):
        field(label, value)
    field("Failed checks", f"{st.get('failedChecks', 0)}/{threshold(canary)}")
    field("Analysis errors", f"{st.get('analysisErrors', 0)}/{error_threshold(canary)}")
    field("Paused", "yes" if st.get("paused") else "no")
    interval = analysis(canary).get("interval", "1m")
    last_step = st.get("lastStepTime")
    field("Last step", f"{age(last_step, now) + ' ago' if last_step else UNKNOWN} (interval {interval})")
    last_action = as_dict(st.get("lastAction"))
    if last_action.get("id"):
        field("Last action", describe_action(last_action, now))
    pending = pending_request(canary)
    if pending:
        field("Pending action", describe_action(pending, now) + ", not yet acknowledged by the controller")

    lines.append("")
    lines.append("Metrics:")
    checks = analysis(canary).get("metrics")
    checks = checks if isinstance(checks, list) else []
    reported = [m for m in (st.get("metrics") or []) if isinstance(m, dict)]
    results = {str(m.get("name")): m for m in reported}
    if not checks and not results:
        lines.append("  (no metrics: every step passes)")
    else:
        rows = []
        seen: set[str] = set()
        for check in checks:
            check = as_dict(check)
            name = str(check.get("name", "?"))
            seen.add(name)
            result = results.get(name, {})
            if "compare" in check:
                range_text = format_compare(as_dict(check.get("compare")))
            else:
                range_text = format_range(as_dict(check.get("thresholdRange")))
            rows.append(_metric_row(name, range_text, result, now, marks))
        for name, result in results.items():
            if name not in seen:
                rows.append(_metric_row(name, UNKNOWN, result, now, marks))
        body = table(["NAME", "RANGE", "LAST VALUE", "RESULT", "CHECKED", "MESSAGE"], rows)
        lines.extend("  " + line for line in body.splitlines())
    lines.extend(_comparison_lines(reported, analysis(canary)))

    lines.append("")
    lines.append("Conditions:")
    conditions = [c for c in (st.get("conditions") or []) if isinstance(c, dict)]
    if not conditions:
        lines.append("  (none yet)")
    else:
        rows = [
            [
                str(c.get("type", "")), str(c.get("status", "")), str(c.get("reason", "")),
                age(c.get("lastTransitionTime"), now), humanize(str(c.get("message", "")), now),
            ]
            for c in conditions
        ]
        body = table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows)
        lines.extend("  " + line for line in body.splitlines())

    lines.append("")
    lines.append("Events:")
    recent = list(events)[-max_events:]
    if not recent:
        lines.append("  (none)")
    else:
        rows = [
            [
                age(e.get("time"), now), str(e.get("type", "")), str(e.get("reason", "")),
                event_message(e, now),
            ]
            for e in recent
        ]
        lines.extend("  " + line for line in table(["AGE", "TYPE", "REASON", "MESSAGE"], rows).splitlines())
    return "\n".join(lines)


def _comparison_lines(reported: list[dict[str, Any]], spec_analysis: dict[str, Any]) -> list[str]:
    """The last round's comparisons with the primary: both values, the shift and its interval, the score."""
    compared = [(m, as_dict(m.get("comparison"))) for m in reported if m.get("comparison")]
    if not compared:
        return []
    thresholds = as_dict(spec_analysis.get("scoreThresholds"))
    score = next((c.get("score") for _, c in compared if c.get("score") is not None), None)
    passing = format_number(thresholds.get("pass", 95))
    marginal = format_number(thresholds.get("marginal", 75))
    lines = ["", f"Comparison with the primary: score {format_number(score)} (pass {passing}, "
             f"marginal {marginal})"]  # fmt: skip
    rows = []
    for metric, comparison in compared:
        level = comparison.get("confidence")
        level_text = f" at {level:.0%}" if isinstance(level, float) else ""
        lower, upper = format_share(comparison.get("shiftLower")), format_share(comparison.get("shiftUpper"))
        found = str(comparison.get("classification", UNKNOWN))
        rows.append([
            str(metric.get("name", "?")), str(comparison.get("judge", UNKNOWN)),
            format_number(comparison.get("canary")), format_number(comparison.get("primary")),
            format_share(comparison.get("shift")), f"{lower} .. {upper}{level_text}",
            found + (" (critical)" if comparison.get("critical") else ""),
        ])  # fmt: skip
    body = table(["NAME", "JUDGE", "CANARY", "PRIMARY", "SHIFT", "INTERVAL", "FOUND"], rows)
    lines.extend("  " + line for line in body.splitlines())
    return lines


def _metric_row(name: str, range_text: str, result: dict[str, Any], now: datetime, marks: Marks) -> list[str]:
    if not result:
        return [name, range_text, UNKNOWN, "not checked yet", UNKNOWN, ""]
    checked = result.get("checkedAt")
    return [
        name,
        range_text,
        format_number(result.get("value")),
        marks.verdict(result.get("verdict")),
        f"{age(checked, now)} ago" if checked else UNKNOWN,
        humanize(str(result.get("message", "")), now),
    ]


def watch_line(canary: dict[str, Any], now: datetime, target_revision: str | None = None) -> str:
    """One line per change, for ``status --watch`` when the output is not a terminal (CI logs)."""
    st = status(canary)
    weights = step_weights(canary)
    top = weights[-1] if weights else None
    parts = [
        now.strftime("%H:%M:%S"),
        phase(canary) or UNKNOWN,
        f"step {step_of(canary)}",
        progress_bar(weight(canary), top),
        f"failed {st.get('failedChecks', 0)}/{threshold(canary)}",
    ]
    if st.get("paused"):
        parts.append("paused")
    pending = pending_request(canary)
    if pending:
        parts.append(f"pending {pending.get('action')}")
    if target_revision and target_revision != st.get("revision"):
        parts.append(f"waiting for the controller to start revision {target_revision}")
    return "  ".join(parts)


def watch_signature(canary: dict[str, Any], target_revision: str | None = None) -> tuple[Any, ...]:
    """The parts of a canary whose change is worth a new line in a log."""
    st = status(canary)
    pending = pending_request(canary)
    return (
        st.get("phase"),
        st.get("canaryWeight"),
        st.get("step"),
        st.get("failedChecks"),
        st.get("paused"),
        st.get("revision"),
        pending.get("id") if pending else None,
        target_revision,
    )
