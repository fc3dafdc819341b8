"""The real-cluster checker's ordering: a quiet stream is caught up only when a fresh read proves it.

Why this module exists: seed 2 of the real episode reported "status says 0 %
while the route carries [30]" three times at one instant after kube-apiserver
and etcd restarts. canaryd had written the route (rv 1531) before the status
(rv 1537), but the route's watch, silent for 7 s, delivered 1531 0.2 s after
the Canary's watch delivered 1537, and the checker had taken the silence as
"caught up". These tests replay that order of deliveries on ``OrderedView``
without a cluster.
"""

from __future__ import annotations

from typing import Any

from tests.chaos.real import OrderedView
from tests.chaos.runner import APP, Invariants, KillablePrometheus, run_plan


def _view() -> OrderedView:
    return OrderedView(Invariants(run_plan(2, 2), KillablePrometheus(store=None)))


def _route(version: int, canary_weight: int) -> dict[str, Any]:
    refs = [
        {"name": f"{APP}-primary", "port": 80, "weight": 100 - canary_weight},
        {"name": f"{APP}-canary", "port": 80, "weight": canary_weight},
    ]
    return {
        "metadata": {"name": APP, "resourceVersion": str(version)},
        "spec": {"rules": [{"backendRefs": refs}]},
    }


def _canary(version: int, phase: str, weight: int, moving: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "step": 1, "canaryWeight": weight}
    if moving is not None:
        status["movingToWeight"] = moving
    return {"metadata": {"name": APP, "resourceVersion": str(version)}, "status": status}


def _promoted_at_30(view: OrderedView) -> None:
    """Both streams listed: the route carries 30 %, status says so and that it moves to 0 %."""
    view.add("route", _route(1518, 30), relisted=False, known=None)
    view.read("route", 1518, 1520)
    view.add("canary", _canary(1520, "Finalizing", 30, moving=0), relisted=False, known=None)
    view.read("canary", 1520, 1520)
    view.process()
    assert view.pending == []


def test_a_status_delivered_before_the_route_it_follows_waits_for_that_route() -> None:
    view = _view()
    _promoted_at_30(view)
    view.add("canary", _canary(1537, "Finalizing", 0), relisted=False, known="1520")
    view.process()
    assert view.waiting_on() == ["route"]  # the route stream is quiet: silence proves nothing
    view.read("route", 1531, 1540)  # a fresh list: the route is at 1531, which its stream has not delivered
    view.process()
    assert [entry[0] for entry in view.pending] == [1537]
    view.add("route", _route(1531, 0), relisted=False, known="1518")
    view.process()
    view.finish()
    assert view.checker.violations == []
    assert view.trace[-2:] == [
        "rv 1531 route [{'shop-primary': 100, 'shop-canary': 0}]",
        "rv 1537 canary Finalizing step 1 weight 0 moving None",
    ]
    assert view.checker.checks["status never ahead of the route"] >= 2  # each status version


def test_a_route_proven_unchanged_lets_a_status_ahead_of_it_be_reported() -> None:
    view = _view()
    _promoted_at_30(view)
    view.add("canary", _canary(1537, "Finalizing", 0), relisted=False, known="1520")
    view.read("route", 1518, 1540)  # the route's latest version is the one its stream delivered
    view.process()
    assert view.pending == []
    view.finish()
    assert any("status says 0% while the route carries [30]" in v for v in view.checker.violations)
    assert view.unproven_at_end == 0


def test_versions_left_unproven_at_the_end_are_counted() -> None:
    view = _view()
    _promoted_at_30(view)
    view.add("canary", _canary(1537, "Finalizing", 30), relisted=False, known="1520")
    view.finish()
    assert view.unproven_at_end == 1
