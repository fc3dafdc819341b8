"""For any route and any history, every part of the route canaryd does not own stays byte for byte.

A state machine drives one Canary (a plain canary, A/B testing, a mirror
phase, sticky sessions, with or without traffic-share checks) over a real
route object: several weighted rules, rules pinned to the primary, rules to
other Services, filters, timeouts, backendRef filters, parents in other
namespaces. canaryd's writes are its real JSON Patches, applied by a JSON
Patch implementation to the route as an API server keeps it (defaults filled
in, resourceVersion and generation moving); the Gateway reports on the
generation it has processed, lagging behind. Around the controller, the app
team edits its own rules (sometimes between canaryd's read and its write, so
the guarded patch fails), people press buttons, the controller restarts
(it keeps nothing but the Canary's status), revisions come and go.

After every step: the route without canaryd's parts (``route_plan.user_view``)
is exactly what the team last made of it; and once a run is over and the
routes settled, nothing of canaryd's is left on them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from canaryd.api.constants import Action, Phase, Verdict
from canaryd.api.models import Canary
from canaryd.core.effects import Effect, RecordEvent, SetRouteWeights
from canaryd.core.lifecycle import analysis_due, decide, traffic_share_due
from canaryd.core.observations import MetricResult, Observations, RouteState, ShareReading
from canaryd.core.route_plan import normalized, route_patch, user_view
from canaryd.core.routes import inspect_route
from tests.core.world import World, make_canary, with_status

PRIMARY, CANARY = "payments-api-primary", "payments-api-canary"
NAMESPACE = "payments"
GATEWAY = "example.com/gateway"


def _api_server_stores(route: dict[str, Any], spec_changed: bool) -> dict[str, Any]:
    """What an API server does with a written route: defaults, a new resourceVersion, a new generation."""
    stored = copy.deepcopy(route)
    stored["spec"]["rules"] = [normalized(r, "HTTPRoute") for r in stored["spec"]["rules"]]
    meta = stored["metadata"]
    meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
    if spec_changed:
        meta["generation"] += 1
    return stored


# -- random routes as app teams write them ------------------------------------------------------------------

_paths = st.sampled_from(["/", "/payments", "/payments/v2", "/refunds", "/api"])
_matches = st.lists(
    st.fixed_dictionaries(
        {
            "path": st.builds(
                lambda t, v: {"type": t, "value": v}, st.sampled_from(["PathPrefix", "Exact"]), _paths
            )
        },
        optional={
            "method": st.sampled_from(["GET", "POST"]),
            "headers": st.just([{"name": "x-tenant", "value": "eu"}]),
        },
    ),
    min_size=1,
    max_size=2,
    unique_by=lambda m: json.dumps(m, sort_keys=True),
)
_filters = st.lists(
    st.sampled_from(
        [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-team", "value": "pay"}]},
            },
            {"type": "URLRewrite", "urlRewrite": {"hostname": "payments.internal"}},
            {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "port": 9000}}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["server"]}},
        ]
    ),
    min_size=1,
    max_size=2,
    unique_by=lambda f: f["type"],
)
_ref_filters = st.lists(
    st.just(
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-b", "value": "1"}]}}
    ),
    min_size=1,
    max_size=1,
)


@st.composite
def _weighted_rule(draw: st.DrawFn) -> dict[str, Any]:
    ours = [
        {"name": PRIMARY, "port": 8080, "weight": 100},
        {"name": CANARY, "port": 8080, "weight": 0},
    ]
    for ref in ours:
        if draw(st.booleans()):
            ref["filters"] = draw(_ref_filters)
    refs = ours + draw(st.lists(st.just({"name": "legacy", "port": 80, "weight": 0}), max_size=1))
    rule: dict[str, Any] = {"backendRefs": draw(st.permutations(refs))}
    if draw(st.booleans()):
        rule["matches"] = draw(_matches)
    if draw(st.booleans()):
        rule["filters"] = draw(_filters)
    if draw(st.booleans()):
        rule["timeouts"] = {"request": "10s"}
    if draw(st.booleans()):
        rule["name"] = f"team-{draw(st.integers(0, 99))}"
    return rule


_pinned_rule = st.builds(
    lambda matches: {"matches": matches, "backendRefs": [{"name": PRIMARY, "port": 8080, "weight": 1}]},
    _matches,
)
_foreign_rule = st.builds(
    lambda filters, namespace: {
        "filters": filters,
        "backendRefs": [
            {"name": "search", "port": 80, "weight": 1, **({"namespace": namespace} if namespace else {})}
        ],
    },
    _filters,
    st.sampled_from([None, "search"]),
)


@st.composite
def routes(draw: st.DrawFn) -> dict[str, Any]:
    rules = draw(st.lists(_weighted_rule(), min_size=1, max_size=2))
    rules += draw(st.lists(st.one_of(_pinned_rule, _foreign_rule), max_size=3))
    rules = draw(st.permutations(rules))
    parents = [{"name": "public", "namespace": "infra"}]
    if draw(st.booleans()):
        parents.append({"name": "internal", "namespace": "edge", "sectionName": "http"})
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "payments-api",
            "namespace": NAMESPACE,
            "uid": "route-uid",
            "resourceVersion": "1",
            "generation": 1,
            "annotations": {"team": "payments"},
        },
        "spec": {"parentRefs": parents, "hostnames": ["payments.example.com"], "rules": list(rules)},
    }
    return _api_server_stores(route, spec_changed=False)


@st.composite
def canaries(draw: st.DrawFn) -> Canary:
    mode = draw(st.sampled_from(["canary", "ab", "mirror", "mirror-only", "sticky", "mirror-sticky"]))
    canary = make_canary(
        step_weights=sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=3))),
        threshold=draw(st.integers(1, 3)),
        interval="30s",
        progress_deadline_seconds=draw(st.sampled_from([60, 600, 600])),
    )
    analysis = canary.spec.analysis.model_dump(by_alias=True, exclude_none=True, mode="json")
    if mode == "ab":
        analysis.pop("stepWeights")
        analysis["match"] = [{"headers": [{"name": "x-canary", "value": "insider"}]}, {"method": "POST"}]
    if mode.startswith("mirror"):
        analysis["mirror"] = {"percent": draw(st.sampled_from([25, 100]))}
    if mode == "mirror-only":
        analysis.pop("stepWeights")
    if mode in ("ab", "mirror", "mirror-only", "mirror-sticky"):
        analysis["iterations"] = draw(st.integers(1, 3))
    if mode.endswith("sticky"):
        analysis["sessionAffinity"] = {"cookieName": "canary-session", "maxAge": "1h"}
    if draw(st.booleans()) and mode != "ab" and mode != "mirror-only":
        analysis["trafficShare"] = {"templateRef": {"name": "traffic-share"}, "tolerance": 5}
    spec = canary.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    spec["analysis"] = analysis
    return Canary.model_validate({"metadata": canary.metadata.model_dump(by_alias=True), "spec": spec})


# -- the world around the route ---------------------------------------------------------------------------


@dataclass
class RouteWorld(World):
    """World with a real route: canaryd's effects are its JSON Patches; the Gateway lags behind."""

    route: dict[str, Any] = field(default_factory=dict)
    #: The route as the last observation saw it (what canaryd computes its patch from).
    seen: dict[str, Any] = field(default_factory=dict)
    gateway_accepts: bool = True
    failed_writes: int = 0

    def _gateway_status(self) -> dict[str, Any]:
        parents = self.route["spec"]["parentRefs"]
        condition = {
            "type": "Accepted",
            "status": "True" if self.gateway_accepts else "False",
            "reason": "Accepted" if self.gateway_accepts else "NotAllowedByListeners",
            "observedGeneration": self.gateway_generation,
        }
        return {
            "parents": [
                {"parentRef": p, "controllerName": GATEWAY, "conditions": [condition]} for p in parents
            ]
        }

    def route_state(self) -> RouteState:
        observed = copy.deepcopy(self.route)
        observed["status"] = self._gateway_status()
        self.seen = observed
        record = self.canary.status.route_record("HTTPRoute", "payments-api")
        return inspect_route("HTTPRoute", "payments-api", observed, PRIMARY, CANARY, record)

    def share_readings(self) -> tuple[ShareReading, ...]:
        """What a traffic-share template would measure: the weights as the Gateway last programmed them."""
        state = inspect_route("HTTPRoute", "payments-api", self.route, PRIMARY, CANARY)
        weight = state.canary_weight if state.canary_weight is not None else 0
        return (ShareReading("payments-api", float(weight) if self.gateway_caught_up() else 0.0),)

    def gateway_caught_up(self) -> bool:
        return self.gateway_generation >= self.route["metadata"]["generation"]

    def observations(self, analysis: tuple[MetricResult, ...] | None = None) -> Observations:
        base = super().observations(analysis)
        from dataclasses import replace

        return replace(base, traffic_share=self.share_readings())

    def apply(self, effects: tuple[Effect, ...] | list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SetRouteWeights):
                self.write_route(effect)
            else:
                super().apply([effect])

    def write_route(self, effect: SetRouteWeights) -> None:
        seen = self.seen or self.route
        ops = route_patch(seen, "HTTPRoute", PRIMARY, CANARY, (effect.primary, effect.canary), effect.shape)
        if not ops:
            return
        try:
            patched = jsonpatch.apply_patch(copy.deepcopy(self.route), ops)
        except jsonpatch.JsonPatchTestFailed:
            self.failed_writes += 1  # 422: someone changed the route since canaryd read it
            return
        self.route = _api_server_stores(patched, spec_changed=patched["spec"] != self.route["spec"])

    def team_edits(self, edit: str) -> None:
        """The app team changes its own rules (never canaryd's): a new generation."""
        route = copy.deepcopy(self.route)
        theirs = [r for r in route["spec"]["rules"] if not str(r.get("name", "")).endswith(".canaryd.io")]
        target = theirs[len(theirs) // 2]
        if edit == "timeout":
            target["timeouts"] = {"request": f"{len(json.dumps(route)) % 50 + 1}s"}
        elif edit == "header filter":
            filters = [f for f in target.get("filters") or [] if f.get("type") != "RequestHeaderModifier"]
            added = {"add": [{"name": "x-edit", "value": edit}]}
            filters.insert(0, {"type": "RequestHeaderModifier", "requestHeaderModifier": added})
            target["filters"] = filters
        elif edit == "new rule":
            if len(route["spec"]["rules"]) < 12:
                route["spec"]["rules"].append({"backendRefs": [{"name": "docs", "port": 80}]})
        elif edit == "hostname":
            route["spec"]["hostnames"] = ["payments.example.com", "pay.example.com"]
        elif edit == "annotation":
            route["metadata"]["annotations"]["edited"] = "yes"
        elif edit == "their weights":
            for rule in theirs:
                for ref in rule["backendRefs"]:
                    if ref["name"] not in (PRIMARY, CANARY):
                        ref["weight"] = 3
        self.route = _api_server_stores(route, spec_changed=route["spec"] != self.route["spec"])

    def team_view(self) -> str:
        return json.dumps(
            {"spec": team_parts(self.route), "metadata": self.route["metadata"].get("annotations")},
            sort_keys=True,
        )


def _without_cookie(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in filters if "Set-Cookie" not in json.dumps(f.get("responseHeaderModifier"))]


def _set_or_drop(holder: dict[str, Any], key: str, items: list[Any]) -> None:
    if items:
        holder[key] = items
    else:
        holder.pop(key, None)


def team_parts(route: dict[str, Any]) -> dict[str, Any]:
    """The route without what canaryd owns, stated here on its own (not with canaryd's code): rules named
    ``*.canaryd.io``; in each rule listing both Services once, their two weights, a RequestMirror to the
    canary Service, and a Set-Cookie filter on the canary backendRef; lists left empty by that."""
    spec = copy.deepcopy(route["spec"])
    kept = []
    for team_rule in spec["rules"]:
        if str(team_rule.get("name", "")).endswith(".canaryd.io"):
            continue
        names = [ref["name"] for ref in team_rule["backendRefs"]]
        if names.count(PRIMARY) == 1 and names.count(CANARY) == 1:
            for ref in team_rule["backendRefs"]:
                if ref["name"] in (PRIMARY, CANARY):
                    ref.pop("weight", None)
                if ref["name"] == CANARY:
                    _set_or_drop(ref, "filters", _without_cookie(ref.get("filters", [])))
            mirror_to_canary = [
                f
                for f in team_rule.get("filters", [])
                if f["type"] == "RequestMirror" and f["requestMirror"]["backendRef"]["name"] == CANARY
            ]
            _set_or_drop(
                team_rule, "filters", [f for f in team_rule.get("filters", []) if f not in mirror_to_canary]
            )
        kept.append(team_rule)
    spec["rules"] = kept
    return spec


class RouteMachine(RuleBasedStateMachine):
    world: RouteWorld

    @initialize(
        route=routes(), canary=canaries(), start_in=st.sampled_from(["nothing", "initialized", "a run"])
    )
    def start(self, route: dict[str, Any], canary: Canary, start_in: str) -> None:
        self.world = RouteWorld(canary=canary, route=route)
        self.expected = self.world.team_view()
        if start_in != "nothing":
            self.reconcile_until_settled()
            self.world.roll_out()
            self.reconcile_until_settled()
        if start_in == "a run":
            self.world.new_revision("rev2")
            self.reconcile_until_settled()
            self.world.roll_out()
            self.reconcile_until_settled()

    def reconcile_until_settled(self) -> None:
        for _ in range(6):
            decision = self.reconcile()
            if not [e for e in decision.effects if not isinstance(e, RecordEvent)]:
                return

    def reconcile(self, verdict: Verdict = Verdict.PASS) -> Any:
        world = self.world
        canary = world.canary
        observations = world.observations()
        due = analysis_due(canary, observations, world.now)
        names = [m.name for m in canary.spec.analysis.metrics]
        results = tuple(MetricResult(name=n, verdict=verdict, value=1.0) for n in names) if due else None
        from dataclasses import replace

        observations = replace(
            observations,
            analysis=results,
            traffic_share=observations.traffic_share
            if traffic_share_due(canary, observations, world.now)
            else None,
        )
        decision = decide(canary, observations, world.now)
        world.apply(decision.effects)
        world.canary = with_status(canary, decision.status)
        world.forget_answered_action(decision)
        return decision

    # -- the world changes ----------------------------------------------------------------------------

    @rule(
        edit=st.sampled_from(
            ["timeout", "header filter", "new rule", "hostname", "annotation", "their weights"]
        )
    )
    def team_edits_its_route(self, edit: str) -> None:
        self.world.team_edits(edit)
        self.expected = self.world.team_view()

    @rule(edit=st.sampled_from(["timeout", "header filter", "new rule", "hostname"]))
    def team_edits_between_canaryds_read_and_write(self, edit: str) -> None:
        world = self.world
        canary = world.canary
        observations = world.observations()
        decision = decide(canary, observations, world.now)
        world.team_edits(edit)  # lands first: canaryd's guarded patch, built from what it read, must fail
        self.expected = world.team_view()
        before = json.dumps(world.route, sort_keys=True)
        writes = [e for e in decision.effects if isinstance(e, SetRouteWeights)]
        world.apply(writes)
        write = writes[0] if writes else None
        if write and route_patch(
            world.seen, "HTTPRoute", PRIMARY, CANARY, (write.primary, write.canary), write.shape
        ):
            assert json.dumps(world.route, sort_keys=True) == before, "a stale patch changed the route"

    @rule()
    def gateway_catches_up(self) -> None:
        self.world.gateway_generation = self.world.route["metadata"]["generation"]

    @rule(accepts=st.booleans())
    def gateway_changes_its_mind(self, accepts: bool) -> None:
        self.world.gateway_accepts = accepts
        self.world.gateway_generation = self.world.route["metadata"]["generation"]

    @rule(template_hash=st.sampled_from(["rev1", "rev2", "rev3"]))
    def team_releases(self, template_hash: str) -> None:
        self.world.new_revision(template_hash)

    @rule()
    def pods_roll_out(self) -> None:
        self.world.roll_out()

    @rule(action=st.sampled_from(list(Action)))
    def person_asks(self, action: Action) -> None:
        self.world.request(action)

    @rule()
    def controller_restarts(self) -> None:
        """Nothing survives but what the API server stores: the Canary as JSON, the route."""
        stored = Canary.model_validate_json(json.dumps(self.world.canary.dump()))
        assert stored.status == self.world.canary.status
        self.world.canary = stored
        self.world.seen = {}

    @rule(
        seconds=st.sampled_from([1, 31, 61, 61, 700]),
        verdict=st.sampled_from([Verdict.PASS] * 4 + [Verdict.FAIL]),
    )
    def time_passes_and_controller_reconciles(self, seconds: int, verdict: Verdict) -> None:
        self.world.tick(seconds)
        self.reconcile(verdict)

    @rule()
    def controller_reconciles(self) -> None:
        self.reconcile()

    # -- what must always hold ------------------------------------------------------------------------

    @invariant()
    def the_teams_parts_are_unchanged_byte_for_byte(self) -> None:
        if hasattr(self, "world"):
            assert self.world.team_view() == self.expected, (
                "canaryd changed a part of the route it does not own"
            )

    @invariant()
    def canaryds_own_idea_of_its_parts_agrees(self) -> None:
        if hasattr(self, "world"):
            assert user_view(self.world.route, PRIMARY, CANARY) == team_parts(self.world.route)

    @invariant()
    def a_settled_idle_canary_leaves_nothing_of_its_own_on_the_route(self) -> None:
        if not hasattr(self, "world"):
            return
        world = self.world
        if world.canary.status.phase in (Phase.PROGRESSING, Phase.PROMOTING, None):
            return
        state = inspect_route("HTTPRoute", "payments-api", world.route, PRIMARY, CANARY)
        if not state.has_backends:
            return
        canary = world.canary
        decision = decide(canary, world.observations(), world.now)
        if any(isinstance(e, SetRouteWeights) for e in decision.effects):
            return  # not settled yet: the next write takes canaryd's parts away
        assert not state.has_additions, (
            f"{canary.status.phase}: canaryd's rules or filters stayed on the route"
        )
        assert (state.primary_weight, state.canary_weight) == (100, 0)


RouteMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestRouteProperties = RouteMachine.TestCase
