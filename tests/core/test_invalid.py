"""What a Canary that does not parse gets: Ready=False InvalidSpec and one Warning Event, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from canaryd.core.invalid import invalid_canary_report

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _raw(status: Any = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"metadata": {"name": "odd", "namespace": "shop", "generation": 3}, "spec": {}}
    if status is not None:
        raw["status"] = status
    return raw


def test_the_problem_becomes_ready_false_and_a_warning() -> None:
    report = invalid_canary_report(_raw(), "spec.analysis.stepWeights: must be ascending", NOW)
    assert report is not None
    (ready,) = report.status_patch["conditions"]
    assert ready == {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": "the Canary cannot be processed: spec.analysis.stepWeights: must be ascending",
        "lastTransitionTime": "2026-03-01T12:00:00Z",
        "observedGeneration": 3,
    }
    assert report.status_patch["observedGeneration"] == 3
    assert (report.event.type, report.event.reason, report.event.message) == (
        "Warning",
        "InvalidSpec",
        ready["message"],
    )


def test_the_same_problem_is_reported_once_and_a_new_one_keeps_the_transition_time() -> None:
    first = invalid_canary_report(_raw(), "a", NOW)
    assert first is not None
    stored = _raw({"conditions": first.status_patch["conditions"]})
    assert invalid_canary_report(stored, "a", NOW + timedelta(minutes=1)) is None
    other = invalid_canary_report(stored, "b", NOW + timedelta(minutes=1))
    assert other is not None
    assert other.status_patch["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:00:00Z"


def test_other_conditions_are_kept_and_ready_true_turns_false_now() -> None:
    kept = {"type": "RoutesReady", "status": "True", "reason": "RoutesAccepted", "message": ""}
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Initialized",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    report = invalid_canary_report(_raw({"conditions": [kept, ready, "junk"]}), "a", NOW)
    assert report is not None
    conditions = report.status_patch["conditions"]
    assert [c["type"] for c in conditions] == ["Ready", "RoutesReady"]
    assert conditions[0]["lastTransitionTime"] == "2026-03-01T12:00:00Z"


def test_a_status_of_any_shape_is_read_without_failing() -> None:
    for status in ("text", ["a"], {"conditions": "none"}, {"conditions": {"type": "Ready"}}):
        report = invalid_canary_report(_raw(status), "a", NOW)
        assert report is not None and len(report.status_patch["conditions"]) == 1
