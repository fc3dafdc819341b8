"""Properties of the lifecycle over random histories of observations and manual actions.

A state machine drives one Canary through a modelled cluster: revisions
change, Deployments roll out or not, routes lose and regain acceptance, are
edited or recreated while the Gateway lags behind, weights are edited by
someone else, Prometheus answers pass, fail, no data or errors, the Canary's
webhooks (gates and checks) answer yes, no, late or not at all, people press
buttons (and the controller may see an answered request again), writes fail
half-way, and the Canary may be deleted. After every reconcile the rules a
user relies on are checked.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import datetime

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from canaryd.api.constants import Action, ConditionType, HookOutcome, HookType, Phase, Reason, Verdict
from canaryd.api.models import ActionRequest, Canary, CanaryStatus
from canaryd.core import hooks, schedule
from canaryd.core.effects import (
    AddFinalizer,
    RecordEvent,
    ReleaseOwned,
    RemoveFinalizer,
    ScaleTarget,
    SetRouteWeights,
)
from canaryd.core.lifecycle import Decision, analysis_due, decide
from canaryd.core.observations import HookResult, MetricResult, Observations
from canaryd.core.readiness import canary_ready, traffic_on_primary
from tests.core.world import World, make_canary, with_status

REVISIONS = ("rev1", "rev2", "rev3")
PROMOTED_PHASES = (Phase.PROMOTING, Phase.FINALIZING, Phase.SUCCEEDED)
#: Conditions whose new problems a person must hear about, and reasons that are part of a healthy life.
WATCHED_CONDITIONS = (ConditionType.READY, ConditionType.ROUTES_READY)
ROUTINE_REASONS = {Reason.INITIALIZING, Reason.PRIMARY_NOT_READY, Reason.DELETING, Reason.ROLLED_BACK}


@st.composite
def canaries(draw: st.DrawFn) -> Canary:
    threshold = draw(st.integers(1, 3))
    common = {
        "threshold": threshold,
        "error_threshold": draw(st.integers(1, 3)),
        "no_data_policy": draw(st.sampled_from(["Hold", "Fail", "Pass"])),
        "interval": f"{draw(st.sampled_from([10, 30, 60]))}s",
        "progress_deadline_seconds": draw(st.sampled_from([30, 120, 600])),
        "metrics": draw(st.sampled_from([(), ("success-rate",), ("success-rate", "latency-p99")])),
        "webhooks": tuple(
            (kind.replace("confirm-", "c-"), kind)
            for kind in draw(st.sets(st.sampled_from(WEBHOOK_TYPES), max_size=3))
        ),
    }
    if draw(st.booleans()):
        weights = sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=4)))
        return make_canary(step_weights=weights, **common)
    step = draw(st.integers(5, 50))
    top = draw(st.integers(step, 100))
    return make_canary(step_weight=step, max_weight=top, **common)


WEBHOOK_TYPES = [
    "confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion", "rollback"
]  # fmt: skip
answer_lists = st.lists(
    st.sampled_from(
        [HookOutcome.OK, HookOutcome.OK, HookOutcome.HTTP_ERROR, HookOutcome.TIMEOUT, HookOutcome.NOT_SENT]
    ),
    min_size=1,
    max_size=3,
)
verdict_lists = st.lists(
    st.sampled_from([Verdict.PASS, Verdict.PASS, Verdict.PASS, Verdict.FAIL, Verdict.NO_DATA, Verdict.ERROR]),
    min_size=1,
    max_size=2,
)


def _round(canary: Canary, verdicts: list[Verdict]) -> tuple[MetricResult, ...]:
    names = [m.name for m in canary.spec.analysis.metrics]
    return tuple(
        MetricResult(name=name, verdict=verdicts[i % len(verdicts)], value=1.0)
        for i, name in enumerate(names)
    )


def _events(decision: Decision) -> list[RecordEvent]:
    return [e for e in decision.effects if isinstance(e, RecordEvent)]


class LifecycleMachine(RuleBasedStateMachine):
    world: World

    @initialize(canary=canaries(), start_in=st.sampled_from(["nothing", "initialized", "a run", "a run"]))
    def start(self, canary: Canary, start_in: str) -> None:
        self.world = World(canary=canary)
        #: Runs (revision, start) whose failed checks reached the threshold.
        self.doomed_runs: set[tuple[str | None, datetime | None]] = set()
        self.gone = False
        if start_in != "nothing":
            self.world.reconcile()
            self.world.roll_out()
            self.world.reconcile()
        if start_in == "a run":
            self.world.new_revision("rev2")
            self.world.reconcile()
            self.world.roll_out()
            self.world.reconcile()

    # -- the world changes -------------------------------------------------------

    @rule(template_hash=st.sampled_from(REVISIONS))
    def team_changes_the_template(self, template_hash: str) -> None:
        self.world.new_revision(template_hash)

    @rule(
        change=st.sampled_from(
            [
                "pods crash",
                "primary scaled",
                "route",
                "weights",
                "route edited",
                "gateway",
                "slots",
                "template",
                "suspend",
                "revert",
            ]
        ),
        flag=st.booleans(),
        number=st.integers(0, 100),
    )
    def the_cluster_changes(self, change: str, flag: bool, number: int) -> None:
        world = self.world
        if change == "pods crash":
            world.target_ready = False
        elif change == "primary scaled":
            world.primary_replicas = number % 4
        elif change == "route":
            # A route that is not accepted, has lost its backends, or is gone altogether.
            existed, had_backends = world.route_exists, world.route_backends
            world.route_accepted = flag
            world.route_exists = flag or number % 2 == 0
            world.route_backends = flag or number % 3 != 0
            if world.route_exists and not existed:
                world.recreate_route()
            elif world.route_backends != had_backends:
                world.edit_route()
        elif change == "weights":
            if world.route_exists and world.route_backends:
                world.set_route_weights((100 - number, number))
        elif change == "route edited":
            world.edit_route()
        elif change == "gateway":
            world.gateway_catches_up()
        elif change == "slots":
            world.slot = flag
        elif change == "revert":
            spec = world.canary.spec.model_copy(update={"revert_on_deletion": flag})
            world.canary = world.canary.model_copy(update={"spec": spec})
        elif change == "suspend":
            spec = world.canary.spec.model_copy(update={"suspend": flag and number % 2 == 0})
            world.canary = world.canary.model_copy(update={"spec": spec})
        else:
            world.config_problems = ("MetricTemplate success-rate not found",) if flag else ()

    @rule(action=st.sampled_from(list(Action)))
    def person_asks(self, action: Action) -> None:
        self.world.request(action)

    @rule()
    def an_answered_request_is_seen_again(self) -> None:
        """A stale cache or a retried write hands the controller a request it has answered already."""
        answered = self.world.status.last_action
        if answered is not None:
            self.world.pending_action = ActionRequest(id=answered.id, action=answered.action)

    @rule(really=st.integers(0, 5))
    def canary_is_deleted(self, really: int) -> None:
        if really == 5:
            self.world.deleting = True

    # -- the controller reconciles -----------------------------------------------

    @precondition(lambda self: not self.gone)
    @rule(
        seconds=st.sampled_from([0, 1, 10, 61, 130, 700]),
        pods=st.sampled_from(["roll out", "as they were", "crash"]),
        drift=st.one_of(st.none(), st.integers(0, 100)),
        verdicts=verdict_lists,
        answers=answer_lists,
    )
    def time_passes_and_controller_reconciles(
        self, seconds: int, pods: str, drift: int | None, verdicts: list[Verdict], answers: list[HookOutcome]
    ) -> None:
        world = self.world
        world.tick(seconds)
        if pods == "roll out":
            world.roll_out()
        elif pods == "crash":
            world.target_ready = False
        if drift is not None and world.route_exists and world.route_backends:
            world.set_route_weights((100 - drift, drift))
        self.reconcile(verdicts, None, answers)

    @precondition(lambda self: not self.gone)
    @rule(verdicts=verdict_lists, failing_write=st.one_of(st.none(), st.integers(0, 3)), answers=answer_lists)
    def controller_reconciles(
        self, verdicts: list[Verdict], failing_write: int | None, answers: list[HookOutcome]
    ) -> None:
        self.reconcile(verdicts, failing_write, answers)

    @precondition(lambda self: not self.gone)
    @rule(verdicts=verdict_lists, heal=st.booleans(), answers=answer_lists)
    def next_round_is_due(self, verdicts: list[Verdict], heal: bool, answers: list[HookOutcome]) -> None:
        world = self.world
        due = schedule.next_analysis_at(world.canary, world.status)
        if due is not None and due > world.now:
            world.now = due
        if heal:  # whatever was broken has been fixed by now
            world.roll_out()
            if not world.route_exists:
                world.recreate_route()
            elif not world.route_backends:
                world.edit_route()
            world.route_exists = world.route_backends = world.route_accepted = True
            world.gateway_catches_up()
            world.config_problems = ()
        self.reconcile(verdicts, None, answers)

    def reconcile(
        self, verdicts: list[Verdict], failing_write: int | None, answers: list[HookOutcome] | None = None
    ) -> None:
        world = self.world
        canary = world.canary
        due = analysis_due(canary, world.observations(), world.now)
        called = hooks.due_webhooks(canary, world.observations(), world.now)
        answers = answers or [HookOutcome.OK]
        round_ = tuple(
            HookResult(w.name, w.type, answers[i % len(answers)], world.now, message="scripted")
            for i, w in enumerate(called)
        )
        observations = world.observations(_round(canary, verdicts) if due else None, round_ or None)
        decision = decide(canary, observations, world.now)

        assert decide(canary, observations, world.now) == decision, "decide is not deterministic"
        self._check_decision(canary, observations, decision)
        self._check_gates(canary, observations, decision)
        self._check_fixed_point(canary, observations, decision)

        effects = [e for e in decision.effects if not isinstance(e, RecordEvent)]
        if failing_write is not None and failing_write < len(effects):
            world.apply(effects[:failing_write])  # the write failed: status is not written either
            return
        world.apply(decision.effects)
        world.canary = _through_the_api_server(with_status(canary, decision.status))
        world.forget_answered_action(decision)
        if world.deleting and not world.finalizer and RemoveFinalizer() in decision.effects:
            self.gone = True

    def _check_decision(self, canary: Canary, observations: Observations, decision: Decision) -> None:
        before, after = canary.status, decision.status
        top = schedule.max_weight(canary)
        assert 0 <= after.canary_weight <= top

        if after.phase in (Phase.FAILED, Phase.TERMINATING):
            assert after.canary_weight == 0, "a rolled-back or aborted canary keeps weight"

        run = (after.revision, after.run_started_at)
        threshold = canary.spec.analysis.threshold
        if after.phase in (Phase.PROGRESSING, Phase.FAILED) and after.failed_checks >= threshold:
            self.doomed_runs.add(run)
        if after.phase in PROMOTED_PHASES:
            assert run not in self.doomed_runs, "a run that reached the failed-check threshold was promoted"
            assert after.failed_checks < threshold

        if canary.spec.suspend and not observations.deleting:
            assert (after.phase, after.canary_weight, after.step) == (
                before.phase,
                before.canary_weight,
                before.step,
            ), "a suspended canary changed"
            assert all(isinstance(e, RecordEvent | AddFinalizer | RemoveFinalizer) for e in decision.effects)

        if before.paused and after.paused:
            assert after.canary_weight == before.canary_weight, "a paused canary changed weight"

        if (after.phase, after.canary_weight) != (before.phase, before.canary_weight) and before.phase:
            assert _events(decision), "a phase or weight change without an Event"

        reasons = {e.reason for e in _events(decision)}
        for type_ in WATCHED_CONDITIONS:
            now = after.condition(type_)
            if now is None or now.status != "False" or now.reason in ROUTINE_REASONS:
                continue
            announced = [before.condition(other) for other in WATCHED_CONDITIONS]
            if not any(
                c is not None and (c.status, c.reason, c.message) == (now.status, now.reason, now.message)
                for c in announced
            ):  # new, not carried already by this condition or another (Ready repeats RoutesReady)
                assert now.reason in reasons, f"{type_} turned False ({now.reason}) without an Event"

        request = observations.action
        if request is not None and before.last_action is not None and before.last_action.id == request.id:
            assert after.last_action == before.last_action, "an answered request was handled again"
        elif request is not None:
            answered = after.last_action
            assert answered is not None and answered.id == request.id, "a pending request was not answered"
            if after.requested_action is not None and after.requested_action.id == request.id:
                assert after.pending_action is None, "the answered request still reads as pending"

        for effect in decision.effects:
            if isinstance(effect, ScaleTarget):
                primary = observations.primary.desired_replicas if observations.primary else 0
                if after.phase in (Phase.PROGRESSING, Phase.PROMOTING):
                    assert effect.replicas == max(primary, 1), "a run needs the primary's count, at least 1"
                elif after.phase is Phase.TERMINATING and canary.spec.revert_on_deletion:
                    assert observations.primary is not None, "scaled the target back with no primary to copy"
                    assert effect.replicas == max(primary, 1), "the target gets the primary's count back"
                    assert traffic_on_primary(observations), "scaled back before traffic left the canary"
                else:
                    assert effect.replicas == 0, "the canary scaled up outside a run"
            if isinstance(effect, SetRouteWeights):
                assert effect.primary + effect.canary == 100
                route = observations.routes[0]
                last = before.canary_weight
                foreign = route.exists and (route.primary_weight, route.canary_weight) not in (
                    (effect.primary, effect.canary),
                    (100 - last, last),
                )
                assert bool(effect.drifted) == foreign, "drift reported for weights canaryd wrote itself"
                assert all(d.event.type == "Warning" for d in effect.drifted)
                if effect.canary > 0:
                    assert canary_ready(observations.target), "traffic sent to a canary that is not ready"
                    assert observations.routes_usable, "traffic sent through a route that is not usable"
                    assert self.world.route_accepted and self.world.gateway_accepted_the_current_spec(), (
                        "traffic moved through a route whose latest change the Gateway has not accepted"
                    )
                    assert effect.canary == after.canary_weight
            if isinstance(effect, RemoveFinalizer):
                assert traffic_on_primary(observations), "finalizer removed before traffic was back"
                target, primary_state = observations.target, observations.primary
                if canary.spec.revert_on_deletion and target is not None and primary_state is not None:
                    wanted = max(primary_state.desired_replicas, 1)
                    assert target.desired_replicas >= wanted and target.ready_replicas >= wanted, (
                        "finalizer removed before the target was back at the primary's replicas and ready"
                    )
                released_first = ReleaseOwned() in decision.effects[: decision.effects.index(effect)]
                assert released_first or not observations.owns_workloads, (
                    "finalizer removed while the primary and Services would be garbage-collected with it"
                )

    def _check_gates(self, canary: Canary, observations: Observations, decision: Decision) -> None:
        """No gate or check webhook is skipped unless a person acted, and gates hold without a deadline."""
        before, after = canary.status, decision.status
        request = observations.action
        acted = request is not None and (before.last_action is None or before.last_action.id != request.id)
        if acted:
            return
        analysis = canary.spec.analysis
        same_run = after.run_started_at == before.run_started_at and after.revision == before.revision

        def confirmed_at(status: CanaryStatus, kind: HookType) -> bool:
            """Every webhook of the gate ``status`` waited at answered 2xx since it was reached."""
            webhooks = analysis.webhooks_of(kind)
            if not webhooks:
                return True
            gate = status.gate
            if gate is None or gate.type != kind.value:
                return False
            return all(hooks.answered_ok_since(after, w, gate.since) for w in webhooks)

        started = after.phase is Phase.PROGRESSING and (before.phase is not Phase.PROGRESSING or not same_run)
        if started and analysis.webhooks_of(HookType.CONFIRM_ROLLOUT):
            assert before.phase is Phase.WAITING and confirmed_at(before, HookType.CONFIRM_ROLLOUT), (
                "a run started without its confirm-rollout webhooks' yes"
            )
        if after.phase is Phase.PROGRESSING and same_run and after.canary_weight > before.canary_weight:
            assert confirmed_at(before, HookType.CONFIRM_TRAFFIC_INCREASE), (
                "traffic increased without the confirm-traffic-increase webhooks' yes"
            )
            if before.step == 0:
                assert hooks.pre_rollout_passed(canary, after), "traffic moved before pre-rollout passed"
        if before.phase is Phase.PROGRESSING and after.phase is Phase.PROMOTING:
            assert confirmed_at(before, HookType.CONFIRM_PROMOTION), (
                "promoted without the confirm-promotion webhooks' yes"
            )
        accepted = hooks.accepted_results(canary, observations, self.world.now)
        progressing_after = after.condition(ConditionType.PROGRESSING)
        failed_on_deadline = (
            after.phase is Phase.FAILED
            and progressing_after is not None
            and progressing_after.reason == Reason.DEADLINE_EXCEEDED
        )
        if any(r.type is HookType.PRE_ROLLOUT and not r.ok for r in accepted) and not failed_on_deadline:
            # (a run past its progress deadline fails on the deadline in that pass, not on the check)
            assert after.failed_checks == before.failed_checks + 1, (
                "a failed pre-rollout call is one failed check"
            )
        if before.gate is not None and after.phase is Phase.FAILED:
            progressing = after.condition(ConditionType.PROGRESSING)
            assert progressing is None or progressing.reason != Reason.DEADLINE_EXCEEDED, (
                "a run waiting at a gate failed on the progress deadline"
            )
        if after.gate is not None:
            assert after.phase is hooks.GATE_OF_PHASE[HookType(after.gate.type)], "a gate outlived its phase"

    def _check_fixed_point(self, canary: Canary, observations: Observations, decision: Decision) -> None:
        fed_back = _through_the_api_server(with_status(canary, decision.status))
        again = decide(fed_back, replace(observations, analysis=None, hooks=None), self.world.now)
        assert again.status == decision.status, "feeding decide its own result changed the status"
        assert not _events(again), "feeding decide its own result emitted events again"
        applied_once = copy.copy(self.world)
        applied_once.apply(decision.effects)
        applied_twice = copy.copy(applied_once)
        applied_twice.apply(again.effects)
        assert _cluster(applied_twice) == _cluster(applied_once), "repeated effects changed the cluster"

    @invariant()
    def routes_carry_whole_percentages(self) -> None:
        if hasattr(self, "world") and self.world.route_weights is not None:
            assert sum(self.world.route_weights) == 100


def _through_the_api_server(canary: Canary) -> Canary:
    """The Canary as the controller reads it back: JSON with camelCase keys, as stored."""
    stored = Canary.model_validate_json(json.dumps(canary.dump()))
    assert stored.status == canary.status, "the status does not survive a round trip through the API"
    return stored


def _cluster(world: World) -> tuple[object, ...]:
    return (
        world.finalizer,
        world.owned,
        world.services,
        world.primary_hash,
        world.primary_ready,
        world.target_replicas,
        world.target_ready,
        world.route_weights,
        world.route_specs,
    )


LifecycleMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycleProperties = LifecycleMachine.TestCase
