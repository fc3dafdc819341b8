"""A decision in the making: the status being built and the Events it will emit.

Transitions that several parts of the lifecycle share (start a run, restart
it, take a step, begin promotion, fail) live here, so each one sets the same
fields and emits exactly one Event however it was reached. Every change of
phase or of canary weight goes through :meth:`Draft.move`, which is what
guarantees an Event for each of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from canaryd.api.constants import ConditionType, HookType, Phase, Reason
from canaryd.api.models import ActionRequest, Canary, CanaryStatus
from canaryd.api.naming import workload_names
from canaryd.core import hooks, schedule
from canaryd.core.conditions import DesiredCondition
from canaryd.core.effects import RecordEvent
from canaryd.core.observations import HookResult, MetricResult, Observations, ShareReading
from canaryd.core.traffic import AB_TEST, MIRROR, stage_at

EventType = Literal["Normal", "Warning"]


@dataclass
class Draft:
    canary: Canary
    observations: Observations
    now: datetime
    status: CanaryStatus
    #: The analysis round handed to this decision, until a transition uses it.
    analysis: tuple[MetricResult, ...] | None = None
    #: The pending manual action, until it is handled.
    action: ActionRequest | None = None
    #: The webhook round handed to this decision (already recorded in status.webhooks).
    hooks: tuple[HookResult, ...] = ()
    #: The traffic-share measurement handed to this decision, until a transition uses it.
    share: tuple[ShareReading, ...] | None = None
    events: list[RecordEvent] = field(default_factory=list)
    #: The Progressing condition a transition of this decision chose (kept by terminal phases).
    progress_note: DesiredCondition | None = None

    # -- names ---------------------------------------------------------------

    @property
    def target_name(self) -> str:
        return self.canary.spec.target_ref.name

    @property
    def primary_name(self) -> str:
        return workload_names(self.target_name).primary

    @property
    def canary_service(self) -> str:
        return workload_names(self.target_name).canary_service

    @property
    def ready_percent(self) -> int:
        """The share of the primary's replicas that must be ready (spec.primaryReadyThreshold)."""
        return self.canary.spec.primary_ready_threshold

    # -- primitive changes -----------------------------------------------------

    def update(self, **changes: Any) -> None:
        gate = changes.get("gate")
        if gate is not None and gate != self.status.gate:
            # A gate reached afresh is answered afresh: earlier calls of its webhooks no longer count,
            # even one made at the very instant the gate was reached.
            changes.setdefault(
                "webhooks", [w for w in self.status.webhooks if w.type.value != gate.type]
            )
        self.status = self.status.model_copy(update=changes)

    def event(self, type_: EventType, reason: Reason, message: str) -> None:
        self.events.append(RecordEvent(type=type_, reason=reason.value, message=message))

    def move(
        self,
        reason: Reason,
        message: str,
        *,
        phase: Phase | None = None,
        weight: int | None = None,
        warning: bool = False,
        **changes: Any,
    ) -> None:
        """Change phase and/or weight (and other fields), with one Event saying what and why."""
        old_phase, old_weight = self.status.phase, self.status.canary_weight
        if phase is not None:
            changes["phase"] = phase
            if phase != old_phase:
                changes.setdefault("gate", None)  # a gate belongs to the phase that reached it
        if weight is not None:
            changes["canary_weight"] = weight
        self.update(**changes)
        new_phase, new_weight = self.status.phase, self.status.canary_weight
        details = []
        if new_phase != old_phase:
            details.append(f"phase {old_phase.value if old_phase else 'none'} -> {new_phase}")
        if new_weight != old_weight:
            details.append(f"canary weight {old_weight}% -> {new_weight}%")
        text = f"{message} ({', '.join(details)})" if details else message
        self.event("Warning" if warning else "Normal", reason, text)

    # -- shared transitions ------------------------------------------------------

    def _fresh_run(self, revision: str) -> dict[str, Any]:
        """The status of a run of ``revision`` that starts now, at step 0 with the primary at 100."""
        return {
            "phase": Phase.PROGRESSING,
            "weight": 0,
            "revision": revision,
            "step": 0,
            "failed_checks": 0,
            "analysis_errors": 0,
            "run_started_at": self.now,
            "last_progress_time": self.now,
            "last_step_time": None,
            "metrics": [],
            "gate": None,
            "traffic": None,
        }

    def start_run(self, revision: str, reason: Reason, message: str, *, confirmed: bool = False) -> None:
        """A fresh run of ``revision`` from step 0, or a wait for a run slot or for confirm-rollout.

        ``confirmed``: a person started the run, so the confirm-rollout webhooks are not asked.
        """
        status = self.status
        if not self.observations.run_slot_available:
            if status.phase is Phase.WAITING and status.revision == revision and status.gate is None:
                return
            self.move(
                Reason.WAITING_FOR_SLOT,
                f"revision {revision} waits for a free run slot (max concurrent runs reached)",
                phase=Phase.WAITING,
                weight=0,
                revision=revision,
                gate=None,
            )
            return
        gate = HookType.CONFIRM_ROLLOUT
        webhooks = self.canary.spec.analysis.webhooks_of(gate)
        if webhooks and not confirmed:
            at_gate = status.gate is not None and status.gate.type == gate.value
            if status.phase is Phase.WAITING and status.revision == revision and at_gate:
                if not hooks.confirmed(self.canary, status, gate):
                    return
                message = f"{message}; webhook(s) {hooks.names(webhooks)} confirmed the rollout"
            else:
                self.move(
                    Reason.WAITING_FOR_CONFIRMATION,
                    f"revision {revision} waits for confirm-rollout webhook(s) {hooks.names(webhooks)}",
                    phase=Phase.WAITING,
                    weight=0,
                    revision=revision,
                    gate=hooks.gate_at(gate, self.now),
                )
                return
        self.move(reason, message, **self._fresh_run(revision))

    def restart_run(self, revision: str) -> None:
        """The target changed during a run: traffic back to the primary, analysis from the start.

        With confirm-rollout webhooks the new revision is asked about first, like any other.
        """
        previous = self.status.revision
        if self.canary.spec.analysis.webhooks_of(HookType.CONFIRM_ROLLOUT):
            self.update(paused=False)
            self.start_run(
                revision,
                Reason.REVISION_CHANGED,
                f"revision changed from {previous} to {revision} during the run; the analysis restarts",
            )
            return
        self.move(
            Reason.REVISION_CHANGED,
            f"revision changed from {previous} to {revision} during the run; "
            "traffic goes back to the primary and the analysis restarts",
            **self._fresh_run(revision),
            paused=False,
        )

    def stop_run_reverted(self) -> None:
        """The target went back to the promoted revision during a run: nothing left to analyse."""
        promoted = self.status.last_promoted_revision
        self.move(
            Reason.NO_NEW_REVISION,
            f"{self.target_name} is back at the promoted revision {promoted}; the run stops and "
            f"traffic returns to {self.primary_name}",
            phase=Phase.INITIALIZED,
            weight=0,
            revision=promoted,
            step=0,
            paused=False,
        )

    def take_step(self, reason: Reason, message: str) -> None:
        step = self.status.step + 1
        weight = schedule.weight_of_step(self.canary, step)
        total = schedule.step_count(self.canary)
        stage = stage_at(self.canary, step)
        doing = ""
        if stage is not None and stage.mode == AB_TEST:
            doing = ": requests matching analysis.match go to the canary only"
        elif stage is not None and stage.mode == MIRROR:
            doing = ": requests are mirrored to the canary, users are served by the primary"
        self.move(
            reason,
            f"{message}; step {step} of {total}{doing}",
            weight=weight,
            step=step,
            last_step_time=self.now,
            last_progress_time=self.now,
            gate=None,
        )

    def begin_promotion(self, reason: Reason, message: str) -> None:
        self.move(
            reason,
            f"{message}; copying revision {self.status.revision} to {self.primary_name}",
            phase=Phase.PROMOTING,
            last_progress_time=self.now,
            paused=False,
            gate=None,
        )

    def step_or_gate(self, reason: Reason, message: str) -> None:
        """Take the next step, unless confirm-traffic-increase webhooks must allow it first."""
        step = self.status.step + 1
        what = f"step {step} ({schedule.weight_of_step(self.canary, step)}%)"
        self._through_gate(HookType.CONFIRM_TRAFFIC_INCREASE, reason, message, what, self.take_step)

    def promote_or_gate(self, reason: Reason, message: str) -> None:
        """Begin promotion, unless confirm-promotion webhooks must allow it first."""
        what = f"promotion of revision {self.status.revision}"
        self._through_gate(HookType.CONFIRM_PROMOTION, reason, message, what, self.begin_promotion)

    def _through_gate(self, kind: HookType, reason: Reason, message: str, what: str, go: Any) -> None:
        webhooks = self.canary.spec.analysis.webhooks_of(kind)
        if not webhooks:
            go(reason, message)
            return
        if hooks.confirmed(self.canary, self.status, kind):
            go(reason, f"{message}; webhook(s) {hooks.names(webhooks)} confirmed it")
            return
        if self.status.gate is not None and self.status.gate.type == kind.value:
            return  # already waiting at this gate
        self.update(gate=hooks.gate_at(kind, self.now))
        self.event(
            "Normal",
            Reason.WAITING_FOR_CONFIRMATION,
            f"{message}; {what} waits for {kind.value} webhook(s) {hooks.names(webhooks)}",
        )

    def fail(self, reason: Reason, message: str) -> None:
        """Roll back: traffic to the primary, canary scaled to 0 (the effects follow the status)."""
        self.move(
            reason,
            f"{message}; rolling back to {self.primary_name}",
            phase=Phase.FAILED,
            weight=0,
            warning=True,
            paused=False,
            rolled_back_at=self.now,
        )
        self.progress_note = DesiredCondition(
            type=ConditionType.PROGRESSING,
            status="False",
            reason=reason.value,
            message=f"revision {self.status.revision} rolled back: {message}",
        )
