"""The report a failed pass leaves in the Canary's status: once per problem, and cleared when it goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from canaryd.core import effects as fx
from canaryd.core.failures import (
    PERSISTENT_ATTEMPTS,
    PassFailure,
    describe_effect,
    failure_report,
    recovery_patch,
    worth_reporting,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Initialized",
    "message": "ok",
    "lastTransitionTime": "2026-03-01T11:00:00Z",
    "observedGeneration": 1,
}
REJECTED = PassFailure(
    "creating or updating Deployment shop/web-primary", 422, 'Deployment.apps "web-primary" is invalid'
)


def reconciled(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "Reconciled")


def test_a_rejected_write_is_reported_at_once_with_what_was_done_and_what_came_back() -> None:
    report = failure_report({"conditions": [READY]}, REJECTED, T0, 3)
    assert report is not None
    condition = reconciled(report.status_patch)
    assert (condition["status"], condition["reason"], condition["observedGeneration"]) == (
        "False",
        "ApiRejected",
        3,
    )
    assert condition["message"] == (
        "creating or updating Deployment shop/web-primary: the API server answered 422: "
        'Deployment.apps "web-primary" is invalid (retried with backoff)'
    )
    assert READY in report.status_patch["conditions"]  # the other conditions are kept
    assert (report.event.type, report.event.reason, report.event.message) == (
        "Warning",
        "ApiRejected",
        condition["message"],
    )


def test_the_same_problem_again_writes_nothing_and_announces_nothing() -> None:
    first = failure_report({"conditions": [READY]}, REJECTED, T0, 3)
    assert first is not None
    again = PassFailure(REJECTED.doing, REJECTED.status, REJECTED.detail, attempts=7)
    assert failure_report(first.status_patch, again, T0 + timedelta(minutes=5), 3) is None


def test_a_new_problem_keeps_the_transition_time_of_the_failure() -> None:
    first = failure_report({}, REJECTED, T0, 1)
    assert first is not None
    other = PassFailure("scaling Deployment shop/web to 0", None, "OverflowError: date value out of range")
    second = failure_report(first.status_patch, other, T0 + timedelta(minutes=1), 1)
    assert second is not None
    condition = reconciled(second.status_patch)
    assert condition["reason"] == "ReconcileError" and "canaryd failed: OverflowError" in condition["message"]
    assert condition["lastTransitionTime"] == "2026-03-01T12:00:00Z"


@pytest.mark.parametrize(
    ("status", "attempts", "reported"),
    [
        (422, 1, True),
        (403, 1, True),
        (None, 1, True),  # an exception inside canaryd
        (503, 1, False),
        (0, PERSISTENT_ATTEMPTS - 1, False),  # no answer: usually gone on the next try
        (0, PERSISTENT_ATTEMPTS, True),
        (409, PERSISTENT_ATTEMPTS, True),
    ],
)
def test_transient_failures_are_reported_only_once_they_last(
    status: int | None, attempts: int, reported: bool
) -> None:
    assert worth_reporting(PassFailure("writing", status, "x", attempts)) is reported


def test_a_pass_that_goes_through_sets_reconciled_true_once() -> None:
    assert recovery_patch({"conditions": [READY]}, T0, 1) is None  # never failed: nothing to say
    failed = failure_report({"conditions": [READY]}, REJECTED, T0, 1)
    assert failed is not None
    patch = recovery_patch(failed.status_patch, T0 + timedelta(seconds=30), 1)
    assert patch is not None
    condition = reconciled(patch)
    assert (condition["status"], condition["reason"]) == ("True", "Reconciled")
    assert condition["lastTransitionTime"] == "2026-03-01T12:00:30Z"
    assert recovery_patch(patch, T0 + timedelta(minutes=1), 1) is None


def test_long_api_messages_are_cut() -> None:
    report = failure_report({}, PassFailure("writing", 422, "x" * 10_000), T0, 1)
    assert report is not None
    assert len(reconciled(report.status_patch)["message"]) < 2100


def test_effects_are_described_for_people() -> None:
    assert describe_effect(fx.ScaleTarget(replicas=0), "shop", "web") == "scaling Deployment shop/web to 0"
    assert describe_effect(fx.EnsurePrimary(template_hash="abc"), "shop", "web") == (
        "creating or updating Deployment shop/web-primary"
    )
    weights = fx.SetRouteWeights(primary=90, canary=10)
    assert "primary 90, canary 10" in describe_effect(weights, "shop", "web")
