"""Which Deployments, Services and route rules a Canary may act on, and when it must refuse.

A Canary acts on its target (it scales it) and on what canaryd keeps beside
it: the Deployment ``<target>-primary`` and the Services ``<target>-primary``
and ``<target>-canary``, plus the weights of the route rules that name those
Services. Two Canaries acting on the same objects fight, and one acting on
what canaryd created for another causes an outage: a Canary whose target is
another Canary's ``<target>-primary`` scales the live primary to 0 while the
route still sends it all traffic. So before anything else, a decision asks
:func:`refusal` whether this Canary may act at all; a refused Canary touches
nothing (no Deployment, Service, route or finalizer of its own making) and
says why in ``Ready=False``, with a Warning Event.

A Canary is refused when

- a name canaryd would derive from its target cannot exist (Services are
  RFC 1035 labels of at most 63 characters, the primary's selector value is
  a label value of at most 63, Deployments are DNS subdomains of at most 253):
  the API server would refuse the create, for ever;
- its target is a Deployment canaryd manages (it carries an ownerReference to
  a Canary, or canaryd's labels): that is some Canary's primary;
- another Canary of the namespace claims one of the same objects (the same
  target, or a target that is this one's ``<target>-primary``, or the other
  way round), or weights the same route rule (a rule that names both
  Canaries' Services), and comes first.

Who comes first is decided from what the watch caches hold, the same way by
every Canary and every replica: a Canary that has started working (its
status has a phase) before one that has not, so that a newcomer never takes
objects from a Canary in the middle of a run; then the older by
creationTimestamp; then by name, then uid.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC

from canaryd.api.constants import CANARY_SUFFIX, PRIMARY_SUFFIX, Reason
from canaryd.api.models import Canary
from canaryd.api.naming import workload_names
from canaryd.core.observations import CanaryClaim, Observations, RouteState, WorkloadState

#: RFC 1035 label (Service names) and a label value (the primary's selector), both at most 63.
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_LABEL = 63
MAX_SUBDOMAIN = 253
#: The condition reasons of a refused Canary.
REFUSAL_REASONS = frozenset(
    {Reason.INVALID_NAMES, Reason.TARGET_MANAGED_BY_CANARYD, Reason.TARGET_CLAIMED, Reason.ROUTE_RULE_CLAIMED}
)


@dataclass(frozen=True)
class Refusal:
    """Why a Canary may not act: the condition reason and a message that says what to change."""

    reason: Reason
    message: str


def derived_name_problems(target: str) -> list[str]:
    """What is wrong with the names canaryd would derive from ``target``; empty when they can exist."""
    names = workload_names(target)
    problems: list[str] = []
    for service in names:
        if len(service) > MAX_LABEL:
            longest = MAX_LABEL - max(len(service) - len(target) for service in names)
            problems.append(
                f"the Service name {service} is {len(service)} characters, over the {MAX_LABEL} a Service "
                f"name may have: use a target Deployment name of at most {longest} characters"
            )
            break
        if not _DNS_1035_LABEL.match(service):
            problems.append(
                f"the Service name {service} is not an RFC 1035 label (lower-case letters, digits and '-', "
                "starting with a letter, no dots): rename the target Deployment"
            )
            break
    if len(names.primary) > MAX_SUBDOMAIN or not _DNS_SUBDOMAIN.match(names.primary):
        problems.append(f"the Deployment name {names.primary} is not a valid Deployment name")
    elif not problems and not _LABEL_VALUE.match(names.primary):
        problems.append(f"{names.primary} is not a valid label value for the primary's pod selector")
    return problems


def claimed(target: str) -> tuple[frozenset[str], frozenset[str]]:
    """The Deployments and the Services a Canary of ``target`` acts on."""
    names = workload_names(target)
    return frozenset({target, names.primary}), frozenset({names.primary, names.canary_service})


def _targets_named_by(name: str) -> set[str]:
    """The targets whose derived Deployment or Service could be ``name``: itself, and its name unsuffixed."""
    found = {name}
    for suffix in (PRIMARY_SUFFIX, CANARY_SUFFIX):
        if name.endswith(suffix) and len(name) > len(suffix):
            found.add(name[: -len(suffix)])
    return found


def related_targets(target: str, routes: tuple[RouteState, ...]) -> frozenset[str]:
    """Every target another Canary may have for :func:`refusal` to find a conflict with one of ``target``.

    A Canary of another target is never contested: its Deployments and
    Services (``claimed``) share nothing with this one's, and its Services
    are not in a rule of this Canary's routes. So the controller hands the
    decision only the Canaries of these targets, looked up in an index, and
    a step costs the same with ten Canaries in the namespace or ten thousand.
    """
    found = _targets_named_by(target) | {workload_names(target).primary}
    for route in routes:
        for backend in route.shared_backends:
            found |= _targets_named_by(backend)
    return frozenset(found)


def precedence(claim: CanaryClaim) -> tuple[bool, float, str, str]:
    """Sort key: who keeps contested objects (the smallest key). See the module docstring."""
    created = math.inf
    if claim.created is not None:
        created = claim.created.replace(tzinfo=claim.created.tzinfo or UTC).timestamp()
    return (not claim.started, created, claim.name, claim.uid)


def claim_of(canary: Canary) -> CanaryClaim:
    """What a Canary claims, as the other Canaries see it from the cache."""
    meta = canary.metadata
    return CanaryClaim(
        name=meta.name,
        uid=meta.uid,
        created=meta.creation_timestamp,
        target=canary.spec.target_ref.name,
        started=canary.status.phase is not None,
    )


def _target_managed(target: WorkloadState | None, me: CanaryClaim) -> Refusal | None:
    if target is None or not target.managed_by:
        return None
    names = workload_names(me.target)
    return Refusal(
        Reason.TARGET_MANAGED_BY_CANARYD,
        f"Deployment {me.target} is managed by canaryd (it is the primary of Canary {target.managed_by}): "
        f"a Canary of it would scale a primary that serves live traffic to 0. canaryd leaves it alone; "
        f"target the Deployment the app team edits instead (a Canary of {me.target} would also create "
        f"{names.primary})",
    )


def _contested(me: CanaryClaim, other: CanaryClaim) -> str:
    """What ``other`` claims of what ``me`` claims, in words; "" when nothing."""
    my_deployments, my_services = claimed(me.target)
    deployments, services = claimed(other.target)
    if other.target == me.target:
        return f"Deployment {me.target}, its target too"
    shared = sorted(my_deployments & deployments)
    if shared:
        return f"Deployment {shared[0]} (Canary {other.name} targets {other.target})"
    shared = sorted(my_services & services)
    if shared:
        return f"Service {shared[0]}"
    return ""


def _shared_rule(routes: tuple[RouteState, ...], other: CanaryClaim) -> str:
    names = workload_names(other.target)
    for route in routes:
        shared = sorted({names.primary, names.canary_service} & set(route.shared_backends))
        if shared:
            return f"{route.kind} {route.name}: a rule names its Service {shared[0]} beside this Canary's"
    return ""


def refusal(me: CanaryClaim, observations: Observations) -> Refusal | None:
    """Why the Canary ``me`` must not act on anything, or None when it may."""
    problems = derived_name_problems(me.target)
    if problems:
        return Refusal(Reason.INVALID_NAMES, f"target Deployment {me.target}: " + "; ".join(problems))
    managed = _target_managed(observations.target, me)
    if managed is not None:
        return managed
    mine = precedence(me)
    for other in sorted(observations.others, key=precedence):
        if other.uid == me.uid and other.name == me.name:
            continue
        if precedence(other) >= mine:
            break
        first = _why_first(other, me)
        contested = _contested(me, other)
        if contested:
            return Refusal(
                Reason.TARGET_CLAIMED,
                f"Canary {other.name} already acts on {contested}, and it comes first ({first}): "
                f"this Canary touches nothing until {other.name} is deleted or targets another Deployment",
            )
        rule = _shared_rule(observations.routes, other)
        if rule:
            return Refusal(
                Reason.ROUTE_RULE_CLAIMED,
                f"{rule}, and Canary {other.name} weights that rule and comes first ({first}): "
                "give each Canary its own rule; this Canary touches nothing until then",
            )
    return None


def _why_first(first: CanaryClaim, second: CanaryClaim) -> str:
    if first.started and not second.started:
        return "it was already running"
    if first.created is not None and (second.created is None or first.created < second.created):
        return "it is older"
    return "it was created at the same time and its name sorts first"


__all__ = [
    "REFUSAL_REASONS",
    "Refusal",
    "claim_of",
    "claimed",
    "derived_name_problems",
    "precedence",
    "refusal",
    "related_targets",
]
