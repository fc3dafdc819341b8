"""The names of the objects canaryd keeps beside a target Deployment, derived in one place.

The app team's routes name these Services in their backendRefs, so the rule
is part of the public contract: for a target ``payments-api`` canaryd keeps the
Deployment and Service ``payments-api-primary`` (the stable revision) and the
Service ``payments-api-canary`` (the target's own pods, the revision under
analysis). Everything that needs one of these names asks this function.
"""

from __future__ import annotations

from typing import NamedTuple

from canaryd.api.constants import CANARY_SUFFIX, PRIMARY_SUFFIX


class WorkloadNames(NamedTuple):
    """What canaryd names after one target Deployment."""

    #: ``<target>-primary``: the Deployment that serves the promoted revision, and its Service.
    primary: str
    #: ``<target>-canary``: the Service that selects the target's pods.
    canary_service: str


def workload_names(target: str) -> WorkloadNames:
    """The names canaryd derives from the target Deployment's name."""
    return WorkloadNames(primary=f"{target}{PRIMARY_SUFFIX}", canary_service=f"{target}{CANARY_SUFFIX}")
