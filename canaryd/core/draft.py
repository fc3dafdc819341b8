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

from canaryd.api.constants import ConditionType, Phase, Reason
from canaryd.api.models import ActionRequest, Canary, CanaryStatus
from canaryd.api.naming import workload_names
from canaryd.core import schedule
from canaryd.core.conditions import DesiredCondition
from canaryd.core.effects import RecordEvent
from canaryd.core.observations import MetricResult, Observations, ShareReading
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

    # -- primitive changes -----------------------------------------------------

    def update(self, **changes: Any) -> None:
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
            "traffic": None,
        }

    def start_run(self, revision: str, reason: Reason, message: str) -> None:
        """A fresh run of ``revision`` from step 0, or a wait for a run slot."""
        if not self.observations.run_slot_available:
            self.move(
                Reason.WAITING_FOR_SLOT,
                f"revision {revision} waits for a free run slot (max concurrent runs reached)",
                phase=Phase.WAITING,
                weight=0,
                revision=revision,
            )
            return
        self.move(reason, message, **self._fresh_run(revision))

    def restart_run(self, revision: str) -> None:
        """The target changed during a run: traffic back to the primary, analysis from the start."""
        previous = self.status.revision
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
        )

    def begin_promotion(self, reason: Reason, message: str) -> None:
        self.move(
            reason,
            f"{message}; copying revision {self.status.revision} to {self.primary_name}",
            phase=Phase.PROMOTING,
            last_progress_time=self.now,
            paused=False,
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
        )
        self.progress_note = DesiredCondition(
            type=ConditionType.PROGRESSING,
            status="False",
            reason=reason.value,
            message=f"revision {self.status.revision} rolled back: {message}",
        )
