"""The controller's log of a rollout, derived from its decisions: what an operator reads in `canaryd run`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from canaryd.api.constants import Action, Phase, Reason
from canaryd.core.decision_log import LogLine, decision_log
from canaryd.core.lifecycle import Decision
from canaryd.core.observations import HookResult, MetricResult
from tests.core.world import World, failing, make_canary, passing


@dataclass
class LoggedWorld(World):
    """A World whose every decision also yields its log lines, as the runtime writes them."""

    lines: list[LogLine] = field(default_factory=list)

    def decide(
        self, analysis: tuple[MetricResult, ...] | None = None, hooks: tuple[HookResult, ...] | None = None
    ) -> Decision:
        canary = self.canary
        decision = super().decide(analysis, hooks)
        self.lines.extend(decision_log(canary, canary.status, decision.status, decision.effects))
        return decision

    def take_lines(self) -> list[LogLine]:
        taken, self.lines = self.lines, []
        return taken


REQUIRED = {"canary", "namespace", "revision", "phase", "weight", "step", "reason"}


def a_run(**kwargs: Any) -> LoggedWorld:
    world = LoggedWorld(**kwargs)
    world.reconcile()
    world.roll_out()
    world.reconcile()
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    return world


def test_a_promoted_run_logs_each_phase_step_and_verdict_once_with_the_same_fields() -> None:
    world = a_run(canary=make_canary(step_weights=[10, 50]))
    setup = world.take_lines()
    assert [(line.kind, line.fields["reason"]) for line in setup] == [
        ("phase changed", Reason.INITIALIZING),
        ("phase changed", Reason.INITIALIZED),
        ("phase changed", Reason.NEW_REVISION),
        ("step", Reason.STEP_ADVANCED),
    ]
    assert setup[2].fields["phase_before"] == "Initialized" and setup[2].fields["phase"] == "Progressing"
    assert (setup[3].fields["weight_before"], setup[3].fields["weight"]) == (0, 10)

    while world.status.phase is Phase.PROGRESSING:
        world.tick(60)
        world.decide(passing())
    world.roll_out()
    world.reconcile()
    rest = world.take_lines()
    assert [(line.kind, line.fields["reason"]) for line in rest] == [
        ("analysis", Reason.ANALYSIS_PASSED),
        ("step", Reason.ANALYSIS_PASSED),
        ("analysis", Reason.ANALYSIS_PASSED),
        ("phase changed", Reason.PROMOTING),
        ("phase changed", Reason.FINALIZING),
        ("phase changed", Reason.SUCCEEDED),
    ]
    verdict = rest[0].fields
    assert verdict["verdict"] == "Pass"
    assert verdict["metrics"] == {"success-rate": {"verdict": "Pass", "value": 99.9}}
    for line in setup + rest:
        assert set(line.fields) >= REQUIRED, line
        assert (line.fields["canary"], line.fields["namespace"]) == ("payments-api", "payments")
    assert rest[-1].fields["revision"] == "rev2" and rest[-1].fields["phase"] == "Succeeded"


def test_a_rolled_back_run_logs_the_failed_checks_with_their_values_and_one_rollback() -> None:
    world = a_run()
    world.take_lines()
    for _ in range(3):
        world.tick(60)
        world.decide(failing())
    lines = world.take_lines()
    assert [line.kind for line in lines] == ["analysis", "analysis", "analysis", "rolled back"]
    assert [line.fields["failed_checks"] for line in lines[:3]] == [1, 2, 3]
    assert all(line.fields["metrics"] == {"success-rate": {"verdict": "Fail", "value": 81.0}}
               for line in lines[:3])  # fmt: skip
    rollback = lines[-1].fields
    assert rollback["reason"] == Reason.THRESHOLD_REACHED and rollback["type"] == "Warning"
    assert (rollback["phase_before"], rollback["phase"], rollback["weight"]) == ("Progressing", "Failed", 0)


def test_manual_actions_name_the_action_and_who_asked_and_an_abort_is_also_the_rollback() -> None:
    world = a_run()
    world.take_lines()
    world.request(Action.PAUSE, by="alice@laptop")
    world.reconcile()
    (paused,) = world.take_lines()
    assert paused.kind == "manual action"
    assert (paused.fields["action"], paused.fields["requested_by"]) == ("pause", "alice@laptop")
    assert paused.fields["result"] == "paused at step 1 (10%)"
    world.request(Action.ABORT, by="bob@ci")
    world.reconcile()
    (aborted,) = [line for line in world.take_lines() if line.fields.get("action")]
    assert aborted.kind == "rolled back" and aborted.fields["reason"] == Reason.ABORTED
    assert (aborted.fields["action"], aborted.fields["requested_by"]) == ("abort", "bob@ci")


def test_reconciles_in_which_nothing_happens_log_nothing() -> None:
    world = a_run()
    world.take_lines()
    for _ in range(5):
        world.tick(10)  # not yet due: the controller looks, nothing changes
        world.decide()
    assert world.take_lines() == []
