"""Leaving safely: what canaryd does when its Canary is deleted, so that no service goes down with it.

While a Canary exists, the app team's Deployment (the target) runs only
during a run and sits at 0 replicas otherwise: ``<target>-primary`` serves.
Deleting the Canary must leave the team with a Deployment of their own that
serves, not one at 0 that their next step (pointing the route back at their
own Service, deleting the primary) would send all traffic to. So, in order,
before the finalizer goes:

1. all traffic returns to ``<target>-primary`` (weights 100/0), observed on
   every route canaryd can write;
2. with ``spec.revertOnDeletion`` (the default), the target is scaled back up
   to the primary's replicas (at least 1) and canaryd waits until it has
   rolled out and every replica is ready. Traffic stays on the primary
   throughout: canaryd never touches the route rules, only its two weights;
3. ``<target>-primary`` and both Services are released (canaryd's
   ownerReference removed), so the garbage collector leaves them serving;
4. the finalizer is removed.

The app team then points its route at its own Service (which selects the
target's pods), and deletes the primary and the two Services once the route
no longer names them (README, "Deleting a Canary").

Without ``revertOnDeletion`` the target stays at 0 (it is scaled down, once a
ready primary has taken its place, if a run had it up) and only steps 1, 3
and 4 happen. A target that is gone (or being deleted with its namespace) is
not waited for. A target that cannot become ready holds the deletion; the
Progressing condition says so, and setting ``revertOnDeletion: false`` lets it
through.
"""

from __future__ import annotations

from canaryd.api.models import Canary
from canaryd.api.naming import workload_names
from canaryd.core.effects import Effect, ReleaseOwned, RemoveFinalizer, ScaleTarget, SetRouteWeights
from canaryd.core.observations import Observations, WorkloadState
from canaryd.core.readiness import replicas_text, traffic_on_primary


def revert_replicas(primary: WorkloadState) -> int:
    """How many replicas the target gets back: as many as the primary serves with, and at least 1."""
    return max(primary.desired_replicas, 1)


def target_back(target: WorkloadState, primary: WorkloadState) -> bool:
    """The target runs at least the primary's replicas, rolled out and all ready."""
    wanted = revert_replicas(primary)
    return target.desired_replicas >= wanted and target.rolled_out and target.ready_replicas >= wanted


def _reverting(observations: Observations, revert: bool) -> bool:
    return revert and observations.target is not None and observations.primary is not None


def termination_effects(observations: Observations, revert: bool) -> list[Effect]:
    """The effects of a deletion, in order; empty while it waits for the target to be ready."""
    if not observations.has_finalizer:
        return []
    if not traffic_on_primary(observations):
        return [SetRouteWeights(primary=100, canary=0)]
    target, primary = observations.target, observations.primary
    effects: list[Effect] = []
    if _reverting(observations, revert):
        assert target is not None and primary is not None
        if target.desired_replicas < revert_replicas(primary):
            return [ScaleTarget(replicas=revert_replicas(primary))]
        if not target_back(target, primary):
            return []
    elif (
        target is not None and target.desired_replicas != 0 and primary is not None and primary.ready_replicas
    ):
        # The target goes to 0 only when a primary with ready pods takes its place: a Canary deleted
        # before canaryd created one leaves the app team's Deployment running as it was.
        effects.append(ScaleTarget(replicas=0))
    if observations.owns_workloads:
        effects.append(ReleaseOwned())
    effects.append(RemoveFinalizer())
    return effects


def deletion_plan(canary: Canary, observations: Observations) -> str:
    """What will happen now that the Canary is being deleted (the Deleting Event's message)."""
    names = workload_names(canary.spec.target_ref.name)
    target_name = canary.spec.target_ref.name
    target, primary = observations.target, observations.primary
    text = f"the Canary is being deleted: all traffic returns to {names.primary}"
    if _reverting(observations, canary.spec.revert_on_deletion):
        assert target is not None and primary is not None
        text += (
            f", then Deployment {target_name} is scaled back to {revert_replicas(primary)} replicas, "
            "and once they are ready"
        )
        if target.template_hash != primary.template_hash:
            text += (
                f" (it runs revision {target.template_hash}, not {primary.template_hash} which "
                f"{names.primary} serves)"
            )
    else:
        text += ", then"
    if observations.owns_workloads:
        text += (
            f" Deployment {names.primary} and Services {names.primary}, {names.canary_service} are "
            f"released and left in place: traffic stays on {names.primary} until you point your routes "
            f"at your own Service; delete them after that"
        )
    else:
        text += " the finalizer is removed"
    return text


def termination_note(canary: Canary, observations: Observations) -> str:
    """Where a deletion stands, for the Progressing condition."""
    names = workload_names(canary.spec.target_ref.name)
    if not observations.has_finalizer:
        return "the Canary is being deleted"
    if not traffic_on_primary(observations):
        return f"the Canary is being deleted: returning all traffic to {names.primary}"
    target, primary = observations.target, observations.primary
    if _reverting(observations, canary.spec.revert_on_deletion):
        assert target is not None and primary is not None
        if not target_back(target, primary):
            meta = canary.metadata
            return (
                f"the Canary is being deleted: waiting for Deployment {canary.spec.target_ref.name} to be "
                f"ready at "
                f"{revert_replicas(primary)} replicas ({replicas_text(target)}) before releasing "
                f"{names.primary}; traffic stays on {names.primary}. To release without waiting: "
                f"kubectl patch canary {meta.name} -n {meta.namespace} --type merge "
                """-p '{"spec":{"revertOnDeletion":false}}'"""
            )
    return f"the Canary is being deleted: releasing {names.primary} and the Services"
