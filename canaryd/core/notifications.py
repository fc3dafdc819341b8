"""Chat messages about a rollout, shaped as Slack, Microsoft Teams, Discord and a plain JSON webhook expect.

People watch rollouts in chat: a run started, a step, a promotion, a rollback
with the metric that failed and its value, a run waiting on a gate. One
:class:`Notification` says what happened; one pure function per service turns
it into the JSON body that service's incoming webhook accepts, within its
documented limits (a message that breaks them is refused, so long text is cut
here rather than lost there):

- Slack incoming webhook: ``text`` (the fallback shown in notifications) and
  Block Kit ``blocks``: a header (plain text, at most 150 characters), a
  section (mrkdwn, at most 3000) and a section of at most 10 fields (at most
  2000 each). Slack answers 200 ``ok``.
- Microsoft Teams (Workflows or the older connector webhook): a ``message``
  whose ``attachments`` hold one Adaptive Card
  (``application/vnd.microsoft.card.adaptive``): TextBlocks and a FactSet.
  The connector answers 200 and reports throttling in the body.
- Discord webhook: one embed (title at most 256, description 4096, at most 25
  fields of 256/1024, 6000 characters in all), mentions disabled so a
  message can never ping a channel. Discord answers 204.
- Generic: the ``notifications.canaryd.io/v1`` JSON below, for anything else.

Where they go is configured in Secrets (webhook URLs are credentials): one
for the cluster, named by the controller's ``--notification-secret``, and
optionally one per Canary (``spec.notifications.secretRef``, in its own
namespace) that replaces it; :func:`parse_destinations` reads either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from canaryd.api.constants import NotificationKind
from canaryd.api.timestamps import format_rfc3339

NOTIFICATION_API_VERSION: Final = "notifications.canaryd.io/v1"
NOTIFICATION_KIND: Final = "CanaryNotification"
ADAPTIVE_CARD_CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_CARD_SCHEMA: Final = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD_VERSION: Final = "1.2"

SLACK_HEADER_MAX: Final = 150
SLACK_SECTION_MAX: Final = 3000
SLACK_FIELDS_MAX: Final = 10
SLACK_FIELD_MAX: Final = 2000
DISCORD_TITLE_MAX: Final = 256
DISCORD_DESCRIPTION_MAX: Final = 4096
DISCORD_FIELDS_MAX: Final = 25
DISCORD_FIELD_NAME_MAX: Final = 256
DISCORD_FIELD_VALUE_MAX: Final = 1024
DISCORD_EMBED_TOTAL_MAX: Final = 6000
DISCORD_FOOTER: Final = "canaryd"


class Provider(StrEnum):
    SLACK = "slack"
    TEAMS = "msteams"
    DISCORD = "discord"
    GENERIC = "generic"


class Severity(StrEnum):
    INFO = "info"
    GOOD = "good"
    WARNING = "warning"
    BAD = "bad"


SEVERITY: Final = {
    NotificationKind.RUN_STARTED: Severity.INFO,
    NotificationKind.STEP: Severity.INFO,
    NotificationKind.PROMOTED: Severity.GOOD,
    NotificationKind.ROLLED_BACK: Severity.BAD,
    NotificationKind.WAITING_ON_GATE: Severity.WARNING,
}
#: Discord embed colours (RGB as an integer) and Adaptive Card TextBlock colours, by severity.
DISCORD_COLOUR: Final = {
    Severity.INFO: 0x3B82F6,
    Severity.GOOD: 0x22C55E,
    Severity.WARNING: 0xF59E0B,
    Severity.BAD: 0xEF4444,
}
CARD_COLOUR: Final = {
    Severity.INFO: "Accent",
    Severity.GOOD: "Good",
    Severity.WARNING: "Warning",
    Severity.BAD: "Attention",
}


@dataclass(frozen=True)
class Notification:
    """Something that happened to a Canary that people want to hear about."""

    kind: NotificationKind
    name: str
    namespace: str
    at: datetime
    revision: str | None = None
    weight: int = 0
    step: int = 0
    phase: str | None = None
    #: Free text from the controller (a condition message, a reason).
    message: str = ""
    #: For a rollback: the check that failed, its value and the range it had to be in.
    failed_metric: str | None = None
    failed_value: float | None = None
    threshold: str | None = None
    #: For a run waiting on a gate: the webhook's name and type, and what it answered.
    gate: str | None = None
    gate_type: str | None = None
    #: A name for the cluster, for teams that share one channel between clusters.
    cluster: str | None = None


def _number(value: float | None) -> str:
    if value is None:
        return "no value"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"


def title(n: Notification) -> str:
    """One line that says what happened, e.g. ``payments/payments-api: rolled back (success-rate 95.2)``."""
    who = f"{n.namespace}/{n.name}"
    revision = f" {n.revision}" if n.revision else ""
    if n.kind is NotificationKind.RUN_STARTED:
        return f"{who}: canary run started for revision{revision or ' (unknown)'}"
    if n.kind is NotificationKind.STEP:
        return f"{who}: canary at {n.weight}% (step {n.step})"
    if n.kind is NotificationKind.PROMOTED:
        return f"{who}: revision{revision} promoted"
    if n.kind is NotificationKind.ROLLED_BACK:
        if n.failed_metric:
            return f"{who}: rolled back ({n.failed_metric} {_number(n.failed_value)})"
        return f"{who}: rolled back"
    gate = n.gate or "a gate"
    return f"{who}: waiting on {gate}" + (f" ({n.gate_type})" if n.gate_type else "")


def facts(n: Notification) -> list[tuple[str, str]]:
    """Label and value pairs shown under the title, only those that have a value."""
    rows: list[tuple[str, str]] = [("Canary", f"{n.namespace}/{n.name}")]
    if n.revision:
        rows.append(("Revision", n.revision))
    if n.phase:
        rows.append(("Phase", n.phase))
    rows.append(("Weight", f"{n.weight}%"))
    rows.append(("Step", str(n.step)))
    if n.failed_metric:
        rows.append(("Failed metric", n.failed_metric))
        rows.append(("Value", _number(n.failed_value)))
        if n.threshold:
            rows.append(("Threshold", n.threshold))
    if n.gate:
        rows.append(("Gate", n.gate if not n.gate_type else f"{n.gate} ({n.gate_type})"))
    if n.cluster:
        rows.append(("Cluster", n.cluster))
    return rows


def cut(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters, ending with an ellipsis when it was longer."""
    if limit < 1:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _slack_escape(text: str) -> str:
    """Slack mrkdwn control characters, as Slack asks them to be escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_slack(n: Notification) -> dict[str, Any]:
    headline = title(n)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(headline, SLACK_HEADER_MAX)}}
    ]
    if n.message:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": cut(_slack_escape(n.message), SLACK_SECTION_MAX)},
            }
        )
    fields = [
        {"type": "mrkdwn", "text": cut(f"*{label}*\n{_slack_escape(value)}", SLACK_FIELD_MAX)}
        for label, value in facts(n)[:SLACK_FIELDS_MAX]
    ]
    blocks.append({"type": "section", "fields": fields})
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"canaryd, {format_rfc3339(n.at)}"}]}
    )
    return {"text": _slack_escape(headline), "blocks": blocks}


def format_teams(n: Notification) -> dict[str, Any]:
    severity = SEVERITY[n.kind]
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": title(n),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": CARD_COLOUR[severity],
        },
    ]
    if n.message:
        body.append({"type": "TextBlock", "text": n.message, "wrap": True})
    body.append({"type": "FactSet", "facts": [{"title": label, "value": value} for label, value in facts(n)]})
    body.append(
        {
            "type": "TextBlock",
            "text": f"canaryd, {format_rfc3339(n.at)}",
            "isSubtle": True,
            "size": "Small",
            "wrap": True,
        }
    )
    card = {
        "$schema": ADAPTIVE_CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "body": body,
    }
    return {
        "type": "message",
        "summary": title(n),
        "attachments": [{"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


def format_discord(n: Notification) -> dict[str, Any]:
    embed_title = cut(title(n), DISCORD_TITLE_MAX)
    budget = DISCORD_EMBED_TOTAL_MAX - len(embed_title) - len(DISCORD_FOOTER)
    fields: list[dict[str, Any]] = []
    for label, value in facts(n)[:DISCORD_FIELDS_MAX]:
        name, text = cut(label, DISCORD_FIELD_NAME_MAX), cut(value, DISCORD_FIELD_VALUE_MAX)
        budget -= len(name) + len(text)
        fields.append({"name": name, "value": text, "inline": True})
    embed: dict[str, Any] = {
        "title": embed_title,
        "color": DISCORD_COLOUR[SEVERITY[n.kind]],
        "fields": fields,
        "timestamp": format_rfc3339(n.at),
        "footer": {"text": DISCORD_FOOTER},
    }
    if n.message and budget > 0:
        embed["description"] = cut(n.message, min(DISCORD_DESCRIPTION_MAX, budget))
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


def format_generic(n: Notification) -> dict[str, Any]:
    failed: dict[str, Any] | None = None
    if n.failed_metric:
        value = n.failed_value
        finite = value is not None and math.isfinite(value)
        failed = {"name": n.failed_metric, "value": value if finite else None, "threshold": n.threshold}
    return {
        "apiVersion": NOTIFICATION_API_VERSION,
        "kind": NOTIFICATION_KIND,
        "type": n.kind.value,
        "severity": SEVERITY[n.kind].value,
        "title": title(n),
        "message": n.message,
        "name": n.name,
        "namespace": n.namespace,
        "revision": n.revision,
        "phase": n.phase,
        "weight": n.weight,
        "step": n.step,
        "failedMetric": failed,
        "gate": {"name": n.gate, "type": n.gate_type} if n.gate else None,
        "cluster": n.cluster,
        "timestamp": format_rfc3339(n.at),
    }


FORMATTERS: Final = {
    Provider.SLACK: format_slack,
    Provider.TEAMS: format_teams,
    Provider.DISCORD: format_discord,
    Provider.GENERIC: format_generic,
}


def format_message(provider: Provider | str, n: Notification) -> dict[str, Any]:
    """The JSON body for ``provider``'s incoming webhook."""
    return FORMATTERS[Provider(provider)](n)


#: The text Teams' connector webhooks answer with (HTTP 200) when they throttle a sender.
TEAMS_THROTTLED_MARKER: Final = "HTTP error 429"


def effective_status(provider: Provider | str, status: int, body: str) -> int:
    """The HTTP status an answer stands for: Teams' connector reports throttling as 200 with a text body."""
    if Provider(provider) is Provider.TEAMS and 200 <= status < 300 and TEAMS_THROTTLED_MARKER in body:
        return 429
    return status


def wanted(kind: NotificationKind, kinds: Sequence[NotificationKind] | None) -> bool:
    """Whether a provider subscribed to ``kinds`` (None: all but steps, which are chatty) gets ``kind``."""
    if kinds is None:
        return kind is not NotificationKind.STEP
    return kind in kinds


#: The Secret key that lists the kinds of notification to send (comma-separated).
KINDS_KEY: Final = "kinds"
#: The default kinds when neither the Canary nor its Secret says: everything but each step.
DEFAULT_KINDS: Final = tuple(k for k in NotificationKind if k is not NotificationKind.STEP)


@dataclass(frozen=True)
class Destination:
    """One provider URL from a notification Secret: its key (``slack``, ``slack.payments``), kind and URL."""

    key: str
    provider: Provider
    url: str


@dataclass(frozen=True)
class Destinations:
    """What a notification Secret holds: where to send, which kinds (None: not said), and what is wrong."""

    destinations: tuple[Destination, ...]
    kinds: tuple[NotificationKind, ...] | None
    problems: tuple[str, ...] = ()


def parse_destinations(data: Mapping[str, str]) -> Destinations:
    """Read a notification Secret's data (decoded): one key per destination, and ``kinds``.

    A destination's key is the provider (``slack``, ``msteams``, ``discord``,
    ``generic``), optionally followed by a dot and a label of your own
    (``slack.oncall``) to have several of one provider; its value is the
    incoming-webhook URL (http or https). Anything else is reported and ignored.
    """
    found: list[Destination] = []
    problems: list[str] = []
    kinds: tuple[NotificationKind, ...] | None = None
    for key in sorted(data):
        value = data[key].strip()
        if key == KINDS_KEY:
            parsed: list[NotificationKind] = []
            for part in (p.strip() for p in value.split(",")):
                if not part:
                    continue
                try:
                    parsed.append(NotificationKind(part))
                except ValueError:
                    known = ", ".join(NotificationKind)
                    problems.append(f"key kinds: unknown kind {part!r} (known: {known})")
            kinds = tuple(dict.fromkeys(parsed))
            continue
        provider_name = key.split(".", 1)[0]
        try:
            provider = Provider(provider_name)
        except ValueError:
            problems.append(f"key {key!r}: not a provider (slack, msteams, discord, generic) nor kinds")
            continue
        if not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
            problems.append(f"key {key!r}: the value must be an http:// or https:// URL")
            continue
        found.append(Destination(key, provider, value))
    return Destinations(tuple(found), kinds, tuple(problems))


def effective_kinds(
    canary_kinds: Sequence[NotificationKind] | None, secret_kinds: Sequence[NotificationKind] | None
) -> tuple[NotificationKind, ...]:
    """What a Canary's notifications include: its own list, else its Secret's, else all but each step."""
    if canary_kinds is not None:
        return tuple(canary_kinds)
    if secret_kinds is not None:
        return tuple(secret_kinds)
    return DEFAULT_KINDS
