"""A tiny model of the cluster for lifecycle tests: Canaries, observations, and effects applied.

It plays the runtime's part in the simplest honest way: observations come
from the model, effects change the model, Deployments finish rolling out when
a test says so. Tests can then follow a Canary through whole runs.

The route has generations like a real one: every change of its spec (a weight
or anything else) makes a new one, and the Gateway reports on the generation
it has processed, which may lag behind. Whether that report still holds is
decided by the same rule the controller uses on real routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from canaryd.api.constants import Action, HookOutcome, Verdict
from canaryd.api.models import ActionRequest, Canary, CanaryStatus
from canaryd.core.effects import (
    AddFinalizer,
    CallWebhooks,
    Effect,
    EnsurePrimary,
    EnsureServices,
    Notify,
    RecordEvent,
    ReleaseOwned,
    RemoveFinalizer,
    ScaleTarget,
    SetRouteWeights,
)
from canaryd.core.hooks import due_webhooks
from canaryd.core.lifecycle import Decision, analysis_due, decide
from canaryd.core.observations import (
    HookResult,
    MetricResult,
    Observations,
    ParentSupport,
    RouteState,
    WorkloadState,
)
from canaryd.core.routes import lag_is_weight_only

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPLICAS = 3


def make_canary(
    *,
    step_weights: list[int] | None = None,
    step_weight: int | None = None,
    max_weight: int | None = None,
    threshold: int = 3,
    error_threshold: int = 2,
    no_data_policy: str = "Hold",
    interval: str = "1m",
    progress_deadline_seconds: int = 600,
    metrics: tuple[str, ...] = ("success-rate",),
    generation: int = 1,
    webhooks: tuple[tuple[str, str], ...] = (),
    spec: dict[str, Any] | None = None,
) -> Canary:
    """A Canary; ``webhooks`` are (name, type) pairs, ``spec`` extra spec fields (camelCase)."""
    analysis: dict[str, Any] = {
        "interval": interval,
        "threshold": threshold,
        "errorThreshold": error_threshold,
        "noDataPolicy": no_data_policy,
        "metrics": [
            {"name": name, "query": f"{name}_query", "thresholdRange": {"min": 99}} for name in metrics
        ],
        "webhooks": [
            {"name": name, "type": kind, "url": f"http://{name}.hooks.test/"} for name, kind in webhooks
        ],
    }
    if step_weight is not None:
        analysis["stepWeight"] = step_weight
        if max_weight is not None:
            analysis["maxWeight"] = max_weight
    else:
        analysis["stepWeights"] = step_weights if step_weights is not None else [10, 20, 50]
    return Canary.model_validate(
        {
            "metadata": {"name": "payments-api", "namespace": "payments", "generation": generation},
            "spec": {
                "targetRef": {"name": "payments-api"},
                "service": {"port": 8080},
                "routeRefs": [{"kind": "HTTPRoute", "name": "payments-api"}],
                "analysis": analysis,
                "progressDeadlineSeconds": progress_deadline_seconds,
                **(spec or {}),
            },
        }
    )


def with_status(canary: Canary, status: CanaryStatus | None = None, **changes: Any) -> Canary:
    base = status if status is not None else canary.status
    return canary.model_copy(update={"status": base.model_copy(update=changes)})


def results(*verdicts: Verdict, value: float | None = 99.5) -> tuple[MetricResult, ...]:
    return tuple(
        MetricResult(name=f"m{i}", verdict=v, value=None if v is Verdict.NO_DATA else value)
        for i, v in enumerate(verdicts)
    )


def passing() -> tuple[MetricResult, ...]:
    return (MetricResult(name="success-rate", verdict=Verdict.PASS, value=99.9),)


def failing() -> tuple[MetricResult, ...]:
    return (
        MetricResult(name="success-rate", verdict=Verdict.FAIL, value=81.0, message="below min 99"),
    )


def no_data() -> tuple[MetricResult, ...]:
    return (MetricResult(name="success-rate", verdict=Verdict.NO_DATA),)


def erroring() -> tuple[MetricResult, ...]:
    return (
        MetricResult(name="success-rate", verdict=Verdict.ERROR, message="Prometheus unreachable"),
    )


def events(decision: Decision) -> list[RecordEvent]:
    return [e for e in decision.effects if isinstance(e, RecordEvent)]


def actions(decision: Decision) -> list[Effect]:
    """The effects that change the cluster (not Events, notifications or background webhook calls)."""
    return [e for e in decision.effects if not isinstance(e, RecordEvent | Notify | CallWebhooks)]


def notifications(decision: Decision) -> list[Notify]:
    return [e for e in decision.effects if isinstance(e, Notify)]


@dataclass
class World:
    """The cluster around one Canary, as the runtime would observe it."""

    canary: Canary = field(default_factory=make_canary)
    now: datetime = T0
    target_hash: str | None = "rev1"
    target_replicas: int = REPLICAS
    target_ready: bool = True
    primary_hash: str | None = None
    primary_ready: bool = False
    #: spec.replicas of the primary (a person or an autoscaler may change it, to 0 too).
    primary_replicas: int = REPLICAS
    services: bool = False
    route_exists: bool = True
    route_backends: bool = True
    #: The Gateway accepts the route (as of the generation it has processed).
    route_accepted: bool = True
    route_weights: tuple[int, int] | None = (100, 0)
    route_uid: str = "route-1"
    #: The route's parent Gateways and what their classes list as supported (empty: none known).
    route_parents: tuple[ParentSupport, ...] = ()
    #: The route's spec apart from canaryd's two weights, by generation (generation 1 first).
    route_specs: tuple[str, ...] = ("spec-1",)
    #: The newest generation the Gateway has processed and reported on.
    gateway_generation: int = 1
    finalizer: bool = False
    #: The primary or a Service carries an ownerReference to the Canary (set when canaryd creates them).
    owned: bool = False
    deleting: bool = False
    slot: bool = True
    config_problems: tuple[str, ...] = ()
    pending_action: ActionRequest | None = None
    action_counter: int = 0
    history: list[Decision] = field(default_factory=list)

    # -- observation -------------------------------------------------------

    def target_state(self) -> WorkloadState | None:
        if self.target_hash is None:
            return None
        ready = self.target_replicas if self.target_ready else 0
        return WorkloadState(
            name="payments-api",
            template_hash=self.target_hash,
            desired_replicas=self.target_replicas,
            ready_replicas=ready,
            updated_replicas=ready,
            available_replicas=ready,
            generation=2,
            observed_generation=2,
        )

    def primary_state(self) -> WorkloadState | None:
        if self.primary_hash is None:
            return None
        ready = self.primary_replicas if self.primary_ready else 0
        return WorkloadState(
            name="payments-api-primary",
            template_hash=self.primary_hash,
            desired_replicas=self.primary_replicas,
            ready_replicas=ready,
            updated_replicas=ready,
            available_replicas=ready,
            generation=1,
            observed_generation=1,
        )

    @property
    def route_generation(self) -> int:
        return len(self.route_specs)

    def route_up_to_date(self) -> bool:
        """The Gateway's report holds for the route as it is now (the controller's own rule)."""
        if self.gateway_generation == self.route_generation:
            return True
        record = self.canary.status.route_record("HTTPRoute", "payments-api")
        return lag_is_weight_only(
            record, self.route_uid, self.route_generation, self.route_specs[-1], self.gateway_generation
        )

    def route_state(self) -> RouteState:
        problem = ""
        accepted = self.route_accepted and self.route_up_to_date()
        if not self.route_exists:
            problem = "HTTPRoute payments-api not found"
        elif not self.route_backends:
            problem = "HTTPRoute payments-api: no rule lists both payments-api-primary and -canary"
        elif not self.route_accepted:
            problem = "HTTPRoute payments-api: Gateway public has not Accepted it (NotAllowedByListeners)"
        elif not accepted:
            problem = "HTTPRoute payments-api: Gateway public has not processed the latest change yet"
        weights = self.route_weights if self.route_exists and self.route_backends else None
        return RouteState(
            kind="HTTPRoute",
            name="payments-api",
            exists=self.route_exists,
            has_backends=self.route_backends,
            accepted=accepted,
            problem=problem,
            primary_weight=weights[0] if weights else None,
            canary_weight=weights[1] if weights else None,
            uid=self.route_uid if self.route_exists else "",
            generation=self.route_generation if self.route_exists else None,
            spec_hash=self.route_specs[-1] if self.route_exists else "",
            parents=self.route_parents,
        )

    # -- the route changes -------------------------------------------------

    def set_route_weights(self, weights: tuple[int, int]) -> None:
        """Someone (canaryd or not) writes the two weights: a new generation, the rest of the spec kept."""
        if weights != self.route_weights:
            self.route_weights = weights
            self.route_specs = (*self.route_specs, self.route_specs[-1])

    def edit_route(self) -> None:
        """The app team changes something else in the route (a filter, a match): a new generation."""
        self.route_specs = (*self.route_specs, f"spec-{self.route_generation + 1}")

    def recreate_route(self) -> None:
        """The route was deleted and created again: another object, at generation 1, reported on at once."""
        self.route_uid = f"route-{int(self.route_uid.rsplit('-', 1)[1]) + 1}"
        self.route_specs = ("spec-1",)
        self.gateway_generation = 1

    def gateway_catches_up(self) -> None:
        self.gateway_generation = self.route_generation

    def gateway_accepted_the_current_spec(self) -> bool:
        """Every generation since the one the Gateway processed has the spec the route has now."""
        current = self.route_specs[-1]
        return all(spec == current for spec in self.route_specs[self.gateway_generation - 1 :])

    def observations(
        self, analysis: tuple[MetricResult, ...] | None = None, hooks: tuple[HookResult, ...] | None = None
    ) -> Observations:
        return Observations(
            target=self.target_state(),
            primary=self.primary_state(),
            services_ready=self.services,
            routes=(self.route_state(),),
            analysis=analysis,
            config_problems=self.config_problems,
            action=self.pending_action,
            run_slot_available=self.slot,
            deleting=self.deleting,
            has_finalizer=self.finalizer,
            owns_workloads=self.owned,
            hooks=hooks,
        )

    # -- the runtime's part ----------------------------------------------------

    def apply(self, effects: tuple[Effect, ...] | list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, AddFinalizer):
                self.finalizer = True
            elif isinstance(effect, RemoveFinalizer):
                self.finalizer = False
            elif isinstance(effect, EnsureServices):
                self.services = True
                self.owned = True
            elif isinstance(effect, ReleaseOwned):
                self.owned = False
            elif isinstance(effect, EnsurePrimary):
                self.owned = True
                if self.target_hash == effect.template_hash and self.primary_hash != effect.template_hash:
                    self.primary_hash = effect.template_hash
                    self.primary_ready = False
            elif isinstance(effect, ScaleTarget):
                replicas = effect.replicas
                if replicas != self.target_replicas:
                    self.target_replicas = replicas
                    self.target_ready = replicas == 0
            elif isinstance(effect, SetRouteWeights) and self.route_exists and self.route_backends:
                self.set_route_weights((effect.primary, effect.canary))

    def decide(
        self, analysis: tuple[MetricResult, ...] | None = None, hooks: tuple[HookResult, ...] | None = None
    ) -> Decision:
        """One reconcile: decide, apply the effects, store the status."""
        decision = decide(self.canary, self.observations(analysis, hooks), self.now)
        self.apply(decision.effects)
        self.canary = with_status(self.canary, decision.status)
        self.forget_answered_action(decision)
        self.history.append(decision)
        return decision

    def forget_answered_action(self, decision: Decision) -> None:
        answered = decision.status.last_action
        if self.pending_action is not None and answered is not None and answered.id == self.pending_action.id:
            self.pending_action = None

    def due(self) -> bool:
        return analysis_due(self.canary, self.observations(), self.now)

    def due_hooks(self) -> list[str]:
        return [w.name for w in due_webhooks(self.canary, self.observations(), self.now)]

    def answer_hooks(
        self, answers: dict[str, HookOutcome] | None = None, default: HookOutcome = HookOutcome.OK
    ) -> tuple[HookResult, ...]:
        """What the runtime's webhook round would bring: an answer for every due webhook."""
        answers = answers or {}
        found = []
        for webhook in due_webhooks(self.canary, self.observations(), self.now):
            outcome = answers.get(webhook.name, default)
            code = 200 if outcome is HookOutcome.OK else 403 if outcome is HookOutcome.HTTP_ERROR else None
            found.append(
                HookResult(webhook.name, webhook.type, outcome, self.now, code=code, message=outcome.value)
            )
        return tuple(found)

    def hook_round(self, answers: dict[str, HookOutcome] | None = None, **options: Any) -> Decision:
        """Call the due webhooks (answering as told), then reconcile with their answers."""
        return self.reconcile(hooks=self.answer_hooks(answers, **options))

    def reconcile(
        self,
        analysis: tuple[MetricResult, ...] | None = None,
        rounds: int = 6,
        hooks: tuple[HookResult, ...] | None = None,
    ) -> Decision:
        """Decide repeatedly, as watch events after each write would make the runtime do."""
        decision = self.decide(analysis, hooks)
        for _ in range(rounds - 1):
            if not actions(decision) and not events(decision):
                break
            decision = self.decide()
        return decision

    def roll_out(self) -> None:
        """The Deployment controller catches up with both Deployments."""
        self.target_ready = True
        self.primary_ready = True

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def request(self, action: Action, by: str = "alice") -> ActionRequest:
        self.action_counter += 1
        self.pending_action = ActionRequest(
            id=f"req-{self.action_counter}", action=action, requested_at=self.now, requested_by=by
        )
        # As kubectl canary does: the request is written to status.requestedAction.
        self.canary = with_status(self.canary, requested_action=self.pending_action)
        return self.pending_action

    def new_revision(self, template_hash: str) -> None:
        """The app team changes the pod template: the target rolls out the new revision."""
        self.target_hash = template_hash
        self.target_ready = self.target_replicas == 0

    @property
    def status(self) -> CanaryStatus:
        return self.canary.status


def initialized_world(**kwargs: Any) -> World:
    """A Canary whose primary serves rev1 and whose target is scaled to 0."""
    world = World(**kwargs)
    world.reconcile()
    world.roll_out()
    world.reconcile()
    assert world.status.phase == "Initialized", world.status
    assert world.target_replicas == 0
    return world


def progressing_world(**kwargs: Any) -> World:
    """A run of rev2 that has taken its first step (weight 10 by default)."""
    world = initialized_world(**kwargs)
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    assert world.status.phase == "Progressing" and world.status.step == 1, world.status
    return world



