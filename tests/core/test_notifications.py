"""Chat messages that each service would accept, saying what a person needs to know, even from long input."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from canaryd.core.notifications import (
    Notification,
    NotificationKind,
    Provider,
    effective_status,
    format_message,
    title,
    wanted,
)
from tests.core.world import T0
from tests.fixtures.chat_receivers import discord_problems, generic_problems, slack_problems, teams_problems

CHECKS = {
    Provider.SLACK: slack_problems,
    Provider.TEAMS: teams_problems,
    Provider.DISCORD: discord_problems,
    Provider.GENERIC: generic_problems,
}

ROLLBACK = Notification(
    kind=NotificationKind.ROLLED_BACK,
    name="payments-api",
    namespace="payments",
    at=T0,
    revision="7d9f6c5b8",
    weight=25,
    step=2,
    phase="Failed",
    message="success-rate 95.2 is below 99 (3 failed checks)",
    failed_metric="success-rate",
    failed_value=95.2,
    threshold="min 99",
    cluster="prod-eu",
)


@pytest.mark.parametrize("provider", list(Provider))
@pytest.mark.parametrize("kind", list(NotificationKind))
def test_every_kind_is_a_message_the_service_accepts(provider: Provider, kind: NotificationKind) -> None:
    notification = Notification(
        kind=kind,
        name="payments-api",
        namespace="payments",
        at=T0,
        revision="abc",
        weight=10,
        step=1,
        gate="approve",
        gate_type="confirm-promotion",
    )
    assert CHECKS[provider](format_message(provider, notification)) == []


@pytest.mark.parametrize("provider", list(Provider))
def test_a_rollback_names_the_failing_metric_its_value_and_threshold(provider: Provider) -> None:
    text = repr(format_message(provider, ROLLBACK))
    for needed in ("payments/payments-api", "success-rate", "95.2", "min 99", "7d9f6c5b8", "prod-eu"):
        assert needed in text, (provider, needed)


def test_titles_say_what_happened() -> None:
    base = {"name": "api", "namespace": "shop", "at": T0, "revision": "r1", "weight": 30, "step": 3}
    assert (
        title(Notification(NotificationKind.RUN_STARTED, **base))
        == "shop/api: canary run started for revision r1"
    )
    assert title(Notification(NotificationKind.STEP, **base)) == "shop/api: canary at 30% (step 3)"
    assert title(Notification(NotificationKind.PROMOTED, **base)) == "shop/api: revision r1 promoted"
    assert title(ROLLBACK) == "payments/payments-api: rolled back (success-rate 95.2)"
    waiting = Notification(
        NotificationKind.WAITING_ON_GATE, gate="approve", gate_type="confirm-promotion", **base
    )
    assert title(waiting) == "shop/api: waiting on approve (confirm-promotion)"


def test_a_value_prometheus_could_not_give_is_said_so_and_never_sent_as_nan() -> None:
    no_value = Notification(
        NotificationKind.ROLLED_BACK, "a", "b", T0, failed_metric="latency", failed_value=math.nan
    )
    generic = format_message(Provider.GENERIC, no_value)
    assert generic["failedMetric"] == {"name": "latency", "value": None, "threshold": None}
    assert generic_problems(generic) == []
    assert "NaN" in repr(format_message(Provider.SLACK, no_value))


def test_slack_control_characters_are_escaped() -> None:
    sneaky = Notification(NotificationKind.PROMOTED, "a", "b", T0, message="<!channel> & <http://x|y>")
    text = repr(format_message(Provider.SLACK, sneaky))
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp;" in text


def test_discord_messages_never_mention_anyone() -> None:
    assert format_message(Provider.DISCORD, ROLLBACK)["allowed_mentions"] == {"parse": []}


@settings(max_examples=40, deadline=None)
@given(
    name=st.text(min_size=1, max_size=300),
    message=st.text(max_size=9000),
    metric=st.text(min_size=1, max_size=3000),
)
def test_long_input_is_cut_to_each_services_limits(name: str, message: str, metric: str) -> None:
    notification = Notification(
        NotificationKind.ROLLED_BACK,
        name,
        "ns",
        T0,
        message=message,
        failed_metric=metric,
        failed_value=1.0,
        threshold="min 99",
        gate=metric,
        revision=metric,
    )
    for provider in (Provider.SLACK, Provider.TEAMS, Provider.DISCORD):
        assert CHECKS[provider](format_message(provider, notification)) == [], provider


def test_teams_throttling_inside_a_200_counts_as_429() -> None:
    throttled = "Microsoft Teams endpoint returned HTTP error 429 with ContextId ..."
    assert effective_status("msteams", 200, throttled) == 429
    assert effective_status("msteams", 200, "1") == 200
    assert effective_status("slack", 200, throttled) == 200


def test_steps_are_sent_only_to_providers_that_ask_for_them() -> None:
    assert not wanted(NotificationKind.STEP, None)
    assert wanted(NotificationKind.ROLLED_BACK, None)
    assert wanted(NotificationKind.STEP, [NotificationKind.STEP])
    assert not wanted(NotificationKind.PROMOTED, [NotificationKind.ROLLED_BACK])
