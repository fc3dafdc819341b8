"""The sandbox's Deployment controller: moves Deployment status the way kube-controller-manager does.

canaryd waits for Deployments to roll out (primary after a promotion, the
canary after a scale-up) and gives up when they never become ready. With no
kubelet and no pods here, this simulator stands in: after a configurable delay
the pods of the current template count as ready, and status reports
observedGeneration, replicas, updatedReplicas, readyReplicas,
availableReplicas, unavailableReplicas and the Available/Progressing
conditions with the real controller's reasons and messages.

Model (kept simple on purpose):

- A change of pod template starts a rollout: updatedReplicas = spec.replicas
  at once; the previous template's ready pods keep serving (and count as
  ready) until the new pods are ready, after `ready_delay` seconds; then only
  new pods remain.
- Scaling up the same template makes the extra pods ready after `ready_delay`;
  scaling down takes effect at once; scaling to 0 leaves no counts at all
  (zero counts are omitted, as the real API server omits them).
- A pod template annotated `sandbox.canaryd.io/ready-interval-seconds: "2"`
  makes its pods ready one by one: the first after `ready_delay`, each next
  one 2 s later. During a template change the previous template's pods are
  scaled down as the new ones become ready, as far as maxUnavailable allows
  (available pods never fewer than replicas - maxUnavailable), so the old
  pods are gone before the last new one is ready when maxUnavailable > 0.
- A pod template annotated `sandbox.canaryd.io/never-ready: "true"` never
  becomes ready: its pods are updated but never ready or available, and once
  `progressDeadlineSeconds` (default 600) times `time_scale` has passed,
  Progressing turns False with reason ProgressDeadlineExceeded.
- Available is True when availableReplicas >= replicas - maxUnavailable
  (RollingUpdate's maxUnavailable, default 25% rounded down; 0 for Recreate).

The status computation is pure (`next_rollout`, `deployment_status`,
`next_change_at`, and `replica_set_plans`: how many pods of which template
exist and are ready behind those counts); `DeploymentSimulator` runs it
against a `ClusterView` (the sandbox's store in-process, or any API server)
and writes through the status subresource, so resourceVersion and generation
behave as on a real cluster. It also keeps the ReplicaSets and Pods those
plans describe (``canaryd.sandbox.sim.pods``), from which the EndpointSlice
controller (``canaryd.sandbox.sim.endpoints``) derives Service addresses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from canaryd.api.timestamps import format_rfc3339
from canaryd.sandbox.sim import pods
from canaryd.sandbox.sim.cluster_view import (
    DEPLOYMENTS,
    PODS,
    REPLICA_SETS,
    Change,
    ClusterView,
    Resource,
    name_of,
)
from canaryd.sandbox.sim.knobs import ANNOTATION_NEVER_READY, ANNOTATION_READY_INTERVAL
from canaryd.sandbox.sim.pods import ReplicaSetPlan

log = logging.getLogger(__name__)

DEFAULT_READY_DELAY = 1.0
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600

AVAILABLE = "Available"
PROGRESSING = "Progressing"
REASON_MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
REASON_MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
REASON_NEW_REPLICA_SET_CREATED = "NewReplicaSetCreated"
REASON_REPLICA_SET_UPDATED = "ReplicaSetUpdated"
REASON_NEW_REPLICA_SET_AVAILABLE = "NewReplicaSetAvailable"
REASON_PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"

Obj = Mapping[str, Any]

# kube's "safe" alphabet for generated names: no vowels, no look-alike characters.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def pod_template_hash(template: Obj | None) -> str:
    """A 10-character name-safe hash of a pod template (the ReplicaSet name suffix)."""
    digest = hashlib.sha256(
        json.dumps(template or {}, sort_keys=True, separators=(",", ":")).encode()
    ).digest()
    number = int.from_bytes(digest[:12], "big")
    chars = []
    for _ in range(10):
        number, index = divmod(number, len(_SAFE_ALPHABET))
        chars.append(_SAFE_ALPHABET[index])
    return "".join(chars)


def never_ready(template: Obj | None) -> bool:
    annotations = ((template or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_NEVER_READY, "")).strip().lower() == "true"


def ready_interval(template: Obj | None) -> float:
    """Seconds between one pod of this template becoming ready and the next (0: all at once)."""
    annotations = ((template or {}).get("metadata") or {}).get("annotations") or {}
    try:
        seconds = float(str(annotations.get(ANNOTATION_READY_INTERVAL, "0")).strip() or 0)
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def desired_replicas(deployment: Obj) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else max(int(replicas), 0)


def max_unavailable(deployment: Obj) -> int:
    """How many pods may be unavailable while the Deployment still counts as Available."""
    replicas = desired_replicas(deployment)
    strategy = (deployment.get("spec") or {}).get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or replicas == 0:
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return min(math.floor(replicas * float(value[:-1]) / 100), replicas)
    return min(int(value), replicas)


@dataclass(frozen=True)
class Rollout:
    """What the simulator remembers about a Deployment between evaluations."""

    template_hash: str
    replicas: int
    #: when the pods of the current template were last asked for (scale-up or new template)
    started_at: datetime
    #: pods (of the previous template, or of this one before a scale-up) ready when it started
    carried_ready: int
    #: whether the previous template's pods are still around (a template change in flight)
    template_changed: bool
    first_rollout: bool
    #: the template whose ready pods are carried while a template change is in flight
    previous_template_hash: str | None = None


def next_rollout(previous: Rollout | None, deployment: Obj, now: datetime, *, ready_delay: float) -> Rollout:
    """Fold a (possibly changed) Deployment into what the simulator remembers."""
    template_hash = pod_template_hash((deployment.get("spec") or {}).get("template"))
    replicas = desired_replicas(deployment)
    if previous is None:
        return Rollout(template_hash, replicas, now, 0, False, True)
    previous_done = rollout_complete(previous, deployment, now, ready_delay=ready_delay)
    if previous_done:
        ready_before = previous.replicas
    elif previous.template_changed:
        ready_before = previous.carried_ready
    else:  # pods of a first rollout or a scale-up that became ready one by one so far
        ready_before = min(
            previous.carried_ready + newly_ready(previous, deployment, now, ready_delay=ready_delay),
            previous.replicas,
        )
    if template_hash != previous.template_hash:
        carried_from = (
            previous.previous_template_hash
            if previous.template_changed and not previous_done
            else previous.template_hash
        )
        return Rollout(template_hash, replicas, now, ready_before, True, False, carried_from)
    if replicas > previous.replicas:
        if not previous_done:  # a scale-up during a rollout: the new pods keep the rollout's clock
            return replace(previous, replicas=replicas)
        return Rollout(template_hash, replicas, now, ready_before, False, False)
    if replicas < previous.replicas:
        return replace(previous, replicas=replicas, carried_ready=min(previous.carried_ready, replicas))
    return previous


def pods_asked_for(rollout: Rollout) -> int:
    """How many pods this rollout waits for: all of a new template's, or the extra ones of a scale-up."""
    if rollout.template_changed or rollout.first_rollout:
        return rollout.replicas
    return max(rollout.replicas - rollout.carried_ready, 0)


def newly_ready(rollout: Rollout, deployment: Obj, now: datetime, *, ready_delay: float) -> int:
    """How many of the pods asked for are ready now (one by one at the template's ready interval)."""
    template = (deployment.get("spec") or {}).get("template")
    if never_ready(template):
        return 0
    asked = pods_asked_for(rollout)
    elapsed = (now - rollout.started_at).total_seconds()
    if elapsed < ready_delay:
        return 0
    interval = ready_interval(template)
    if interval == 0:
        return asked
    return min(asked, math.floor((elapsed - ready_delay) / interval) + 1)


def rollout_complete(rollout: Rollout, deployment: Obj, now: datetime, *, ready_delay: float) -> bool:
    if rollout.replicas == 0:
        return True
    if never_ready((deployment.get("spec") or {}).get("template")):
        return False
    return newly_ready(rollout, deployment, now, ready_delay=ready_delay) >= pods_asked_for(rollout)


def old_pods_left(rollout: Rollout, deployment: Obj, new_ready: int) -> int:
    """Pods of the previous template still running while a template change is in flight.

    The Deployment controller scales them down as new pods become ready, keeping at least
    replicas - maxUnavailable available; before any new pod is ready they all keep serving.
    """
    if new_ready == 0:
        return rollout.carried_ready
    floor = rollout.replicas - max_unavailable(deployment) - new_ready
    return min(rollout.carried_ready, max(floor, 0))


def progress_deadline(deployment: Obj, *, time_scale: float) -> timedelta:
    seconds = (deployment.get("spec") or {}).get("progressDeadlineSeconds")
    seconds = DEFAULT_PROGRESS_DEADLINE_SECONDS if seconds is None else int(seconds)
    return timedelta(seconds=seconds * time_scale)


def _condition(
    type_: str, status: bool, reason: str, message: str, now: datetime, previous: Sequence[Obj]
) -> dict[str, Any]:
    status_text = "True" if status else "False"
    transition = update = format_rfc3339(now.replace(microsecond=0))  # metav1.Time: whole seconds
    for old in previous:
        if old.get("type") != type_:
            continue
        if old.get("status") == status_text:
            transition = str(old.get("lastTransitionTime") or transition)
            if old.get("reason") == reason and old.get("message") == message:
                update = str(old.get("lastUpdateTime") or update)
    return {
        "type": type_,
        "status": status_text,
        "lastUpdateTime": update,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }


def deployment_status(
    deployment: Obj, rollout: Rollout, now: datetime, *, ready_delay: float, time_scale: float
) -> dict[str, Any]:
    """The status a real Deployment controller would report now (zero counts omitted)."""
    metadata = deployment.get("metadata") or {}
    previous_conditions = (deployment.get("status") or {}).get("conditions") or []
    replica_set = f"{metadata.get('name', '')}-{rollout.template_hash}"
    target = rollout.replicas
    complete = rollout_complete(rollout, deployment, now, ready_delay=ready_delay)
    new_ready = newly_ready(rollout, deployment, now, ready_delay=ready_delay)
    if complete:
        total = updated = ready = target
    elif rollout.template_changed:
        updated = target
        old = old_pods_left(rollout, deployment, new_ready)
        ready = new_ready + old
        total = updated + old
    else:
        total = updated = target
        ready = min(rollout.carried_ready + new_ready, target)
    available = ready
    unavailable = max(total - available, 0) if not complete else 0
    counts = {
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": unavailable,
    }
    status: dict[str, Any] = {"observedGeneration": metadata.get("generation", 1)}
    status.update({key: value for key, value in counts.items() if value})

    if available >= target - max_unavailable(deployment):
        available_condition = _condition(
            AVAILABLE,
            True,
            REASON_MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.",
            now,
            previous_conditions,
        )
    else:
        available_condition = _condition(
            AVAILABLE,
            False,
            REASON_MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
            previous_conditions,
        )
    if complete:
        progressing_condition = _condition(
            PROGRESSING,
            True,
            REASON_NEW_REPLICA_SET_AVAILABLE,
            f'ReplicaSet "{replica_set}" has successfully progressed.',
            now,
            previous_conditions,
        )
    elif now - rollout.started_at > progress_deadline(deployment, time_scale=time_scale):
        progressing_condition = _condition(
            PROGRESSING,
            False,
            REASON_PROGRESS_DEADLINE_EXCEEDED,
            f'ReplicaSet "{replica_set}" has timed out progressing.',
            now,
            previous_conditions,
        )
    elif rollout.first_rollout:
        progressing_condition = _condition(
            PROGRESSING,
            True,
            REASON_NEW_REPLICA_SET_CREATED,
            f'Created new replica set "{replica_set}"',
            now,
            previous_conditions,
        )
    else:
        progressing_condition = _condition(
            PROGRESSING,
            True,
            REASON_REPLICA_SET_UPDATED,
            f'ReplicaSet "{replica_set}" is progressing.',
            now,
            previous_conditions,
        )
    status["conditions"] = [available_condition, progressing_condition]
    return status


def replica_set_plans(
    deployment: Obj, rollout: Rollout, now: datetime, *, ready_delay: float
) -> dict[str, ReplicaSetPlan]:
    """Pods per template (and how many are ready) behind `deployment_status`'s counts, current first."""
    target = rollout.replicas
    if rollout_complete(rollout, deployment, now, ready_delay=ready_delay):
        return {rollout.template_hash: ReplicaSetPlan(rollout.template_hash, target, target)}
    new_ready = newly_ready(rollout, deployment, now, ready_delay=ready_delay)
    if rollout.template_changed:
        plans = {rollout.template_hash: ReplicaSetPlan(rollout.template_hash, target, new_ready)}
        previous = rollout.previous_template_hash
        if previous is not None and previous != rollout.template_hash:
            old = old_pods_left(rollout, deployment, new_ready)
            plans[previous] = ReplicaSetPlan(previous, old, old)
        return plans
    ready = min(rollout.carried_ready + new_ready, target)
    return {rollout.template_hash: ReplicaSetPlan(rollout.template_hash, target, ready)}


def next_change_at(
    deployment: Obj, rollout: Rollout, now: datetime, *, ready_delay: float, time_scale: float
) -> datetime | None:
    """When the status will change next without any edit (pods ready, or the deadline passing)."""
    if rollout_complete(rollout, deployment, now, ready_delay=ready_delay):
        return None
    candidates = []
    template = (deployment.get("spec") or {}).get("template")
    if not never_ready(template):
        ready = newly_ready(rollout, deployment, now, ready_delay=ready_delay)
        after = ready_delay + ready * ready_interval(template)  # the next pod's turn
        margin = timedelta(milliseconds=1 if ready else 0)  # past the float rounding of a pod's turn
        candidates.append(rollout.started_at + timedelta(seconds=after) + margin)
    deadline = rollout.started_at + progress_deadline(deployment, time_scale=time_scale)
    if deadline >= now:
        candidates.append(deadline + timedelta(milliseconds=1))
    future = [c for c in candidates if c >= now]
    return min(future) if future else None


class DeploymentSimulator:
    """Runs the status computation for every Deployment a `ClusterView` shows, and its ReplicaSets and Pods.

    Reacts to Deployment changes and wakes itself up when a status is due to
    change (pods becoming ready, a deadline passing). With a `pod_cidr` (the
    default) it also keeps each Deployment's ReplicaSets and Pods as the
    counts say (``canaryd.sandbox.sim.pods``), pods getting IPs from that
    CIDR; `pod_cidr=None` writes Deployment status only. Start and stop it
    inside a running event loop::

        simulator = DeploymentSimulator(StoreView(store), ready_delay=0.2)
        simulator.start()
        ...
        simulator.stop()
    """

    def __init__(
        self,
        view: ClusterView,
        *,
        ready_delay: float = DEFAULT_READY_DELAY,
        time_scale: float = 1.0,
        pod_cidr: str | None = pods.DEFAULT_POD_CIDR,
    ) -> None:
        if ready_delay < 0 or time_scale <= 0:
            raise ValueError("ready_delay must be >= 0 and time_scale > 0")
        self.view = view
        self.ready_delay = ready_delay
        self.time_scale = time_scale
        self.status_writes = 0
        #: pod IPs (None: no ReplicaSets or Pods are simulated)
        self.addresses = pods.PodAddresses(pod_cidr) if pod_cidr is not None else None
        self._rollouts: dict[tuple[str, str], tuple[str, Rollout]] = {}  # key -> (uid, rollout)
        self._dirty: set[tuple[str, str]] = set()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._flush_scheduled = False
        self._stop_watching: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: (resource, owner uid) -> the objects it owns, by (namespace, name)
        self._owned: dict[tuple[Resource, str], dict[tuple[str, str], Obj]] = {}
        #: ReplicaSet uid -> (namespace, name) of its Deployment
        self._replica_set_owner: dict[str, tuple[str, str]] = {}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        resources = [DEPLOYMENTS] if self.addresses is None else [DEPLOYMENTS, REPLICA_SETS, PODS]
        self._stop_watching = self.view.watch(resources, self._on_change)
        if self.addresses is not None:
            for replica_set in self.view.list(REPLICA_SETS):
                self._index(REPLICA_SETS, replica_set, deleted=False)
            for pod in self.view.list(PODS):
                self._index(PODS, pod, deleted=False)
        for item in self.view.list(DEPLOYMENTS):
            self._mark(name_of(item))

    def stop(self) -> None:
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._loop = None

    def _on_change(self, change: Change) -> None:
        if change.resource == DEPLOYMENTS:
            self._mark(name_of(change.obj))
            return
        deployment = self._index(change.resource, change.obj, deleted=change.type == "DELETED")
        if deployment is not None:
            self._mark(deployment)

    def _index(self, resource: Resource, obj: Obj, *, deleted: bool) -> tuple[str, str] | None:
        """Keep the ownership index current; returns the Deployment the object belongs to, if any."""
        metadata = obj.get("metadata") or {}
        key = name_of(obj)
        owner = next((o for o in metadata.get("ownerReferences") or [] if o.get("controller")), None)
        if owner is None:
            return None
        owned = self._owned.setdefault((resource, str(owner.get("uid"))), {})
        if deleted:
            owned.pop(key, None)
            if not owned:
                self._owned.pop((resource, str(owner.get("uid"))), None)
        else:
            owned[key] = obj
        if resource == REPLICA_SETS:
            if owner.get("kind") != "Deployment":
                return None
            deployment = (key[0], str(owner.get("name")))
            if deleted:
                self._replica_set_owner.pop(str(metadata.get("uid")), None)
            else:
                self._replica_set_owner[str(metadata.get("uid"))] = deployment
            return deployment
        if self.addresses is not None:
            ip = pods.pod_ip(obj)
            if deleted:
                self.addresses.release(key)
            elif ip and self.addresses.of(key) is None:
                self.addresses.claim(key, ip)
        return self._replica_set_owner.get(str(owner.get("uid")))

    def _mark(self, key: tuple[str, str]) -> None:
        self._dirty.add(key)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for key in sorted(dirty):
            try:
                self.reconcile(key)
            except Exception:  # one bad object must not stop the simulator
                log.exception("deployment simulator failed on %s/%s", *key)

    def reconcile(self, key: tuple[str, str]) -> None:
        """Bring one Deployment's status (and pods) up to date and schedule its next change."""
        namespace, name = key
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        deployment = self.view.get(DEPLOYMENTS, namespace, name)
        if deployment is None:  # gone
            self._rollouts.pop(key, None)
            return
        metadata = deployment.get("metadata") or {}
        if (deployment.get("spec") or {}).get("paused"):
            return
        now = self.view.now()
        uid = metadata.get("uid", "")
        remembered = self._rollouts.get(key)
        previous = remembered[1] if remembered is not None and remembered[0] == uid else None
        rollout = next_rollout(previous, deployment, now, ready_delay=self.ready_delay)
        self._rollouts[key] = (uid, rollout)
        if self.addresses is not None and not metadata.get("deletionTimestamp"):
            self._reconcile_replica_sets(deployment, rollout, now)
        status = deployment_status(
            deployment, rollout, now, ready_delay=self.ready_delay, time_scale=self.time_scale
        )
        if status != deployment.get("status") and self.view.write_status(DEPLOYMENTS, deployment, status):
            self.status_writes += 1
        due = next_change_at(
            deployment, rollout, now, ready_delay=self.ready_delay, time_scale=self.time_scale
        )
        if due is not None and self._loop is not None:
            delay = max((due - now).total_seconds(), 0.0)
            self._timers[key] = self._loop.call_later(delay, self._mark, key)

    # -- ReplicaSets and Pods --------------------------------------------------------------------------------

    def _reconcile_replica_sets(self, deployment: Obj, rollout: Rollout, now: datetime) -> None:
        uid = str((deployment.get("metadata") or {}).get("uid", ""))
        owned = {name: rs for (_, name), rs in self._owned.get((REPLICA_SETS, uid), {}).items()}
        plans = replica_set_plans(deployment, rollout, now, ready_delay=self.ready_delay)
        for replica_set in owned.values():
            template_hash = ((replica_set.get("metadata") or {}).get("labels") or {}).get(
                pods.TEMPLATE_HASH_LABEL, ""
            )
            plans.setdefault(template_hash, ReplicaSetPlan(template_hash, 0, 0))
        for template_hash, plan in plans.items():
            name = pods.replica_set_name(deployment, template_hash)
            existing = owned.get(name)
            if existing is None:
                if template_hash == rollout.template_hash:  # only the current template is known
                    revisions = [
                        int(
                            ((rs.get("metadata") or {}).get("annotations") or {}).get(
                                pods.REVISION_ANNOTATION, 0
                            )
                        )
                        for rs in owned.values()
                    ]
                    template = (deployment.get("spec") or {}).get("template") or {}
                    created = pods.replica_set(
                        deployment, template, template_hash, plan.replicas, max(revisions, default=0) + 1
                    )
                    self.view.write(REPLICA_SETS, created)
                continue
            if (existing.get("spec") or {}).get("replicas") != plan.replicas:
                self.view.write(
                    REPLICA_SETS, {**existing, "spec": {**existing["spec"], "replicas": plan.replicas}}
                )
                continue
            status = pods.replica_set_status(existing, plan)
            if status != existing.get("status"):
                self.view.write_status(REPLICA_SETS, existing, status)
            self._reconcile_pods(existing, plan, now)

    def _reconcile_pods(self, replica_set: Obj, plan: ReplicaSetPlan, now: datetime) -> None:
        assert self.addresses is not None
        metadata = replica_set.get("metadata") or {}
        wanted = pods.pod_names(str(metadata.get("name")), plan.replicas)
        ready = set(wanted[: plan.ready])
        existing = {
            name: pod for (_, name), pod in self._owned.get((PODS, str(metadata.get("uid"))), {}).items()
        }
        for name, extra in existing.items():
            if name not in wanted:
                self.view.delete(PODS, extra)
        for name in wanted:
            current = existing.get(name)
            if current is None:
                self.view.write(PODS, pods.pod(replica_set, name))
                continue
            ip = self.addresses.assign(name_of(current))
            status = pods.pod_status(current, ip, name in ready, now)
            if status != current.get("status"):
                self.view.write_status(PODS, current, status)
