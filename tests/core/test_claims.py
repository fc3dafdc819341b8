"""Refusing Canaries that would act on what is not theirs: canaryd's own objects, another Canary's,
names that cannot exist. A refused Canary touches nothing and says why."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from canaryd.api.constants import Phase, Reason
from canaryd.api.models import Canary
from canaryd.core.claims import claimed, derived_name_problems, precedence, refusal, related_targets
from canaryd.core.effects import RecordEvent, ReleaseOwned, RemoveFinalizer
from canaryd.core.lifecycle import analysis_due, decide
from canaryd.core.observations import CanaryClaim, Observations, RouteState, WorkloadState
from canaryd.core.routes import inspect_route
from tests.core.world import T0, World, initialized_world, make_canary, passing, with_status

# Kubernetes' own rules, written out here independently of canaryd.core.claims.
SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # RFC 1035 label, at most 63
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")  # at most 63
SUBDOMAIN_PART = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DEPLOYMENT_NAME = re.compile(rf"^{SUBDOMAIN_PART}(\.{SUBDOMAIN_PART})*$")


def kubernetes_accepts_every_derived_name(target: str) -> bool:
    primary, canary = f"{target}-primary", f"{target}-canary"
    return (
        bool(SERVICE_NAME.match(primary))
        and bool(SERVICE_NAME.match(canary))
        and len(primary) <= 253
        and bool(DEPLOYMENT_NAME.match(primary))
        and bool(LABEL_VALUE.match(primary))
    )


target_names = st.one_of(
    st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,70}[a-z0-9])?\Z"),
    st.from_regex(r"\A[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){1,3}\Z"),
    st.integers(1, 253).map(lambda n: "a" * n),
)


@settings(max_examples=400)
@given(target_names)
def test_names_are_refused_exactly_when_kubernetes_would_refuse_one_of_them(target: str) -> None:
    assert (derived_name_problems(target) == []) == kubernetes_accepts_every_derived_name(target)


def test_the_longest_target_is_55_characters_and_the_message_says_so() -> None:
    assert derived_name_problems("a" * 55) == []
    (problem,) = derived_name_problems("a" * 56)
    assert "64 characters, over the 63" in problem and "at most 55 characters" in problem
    assert derived_name_problems("a" * 253)  # the 422 that used to be retried for ever
    assert "RFC 1035" in derived_name_problems("web.v2")[0]
    assert "RFC 1035" in derived_name_problems("2048-game")[0]


def claim(name: str, target: str, *, created: int = 0, started: bool = False, uid: str = "") -> CanaryClaim:
    return CanaryClaim(
        name=name, uid=uid or f"uid-{name}", created=T0 + timedelta(seconds=created), target=target,
        started=started,
    )  # fmt: skip


def seen(*others: CanaryClaim, target: WorkloadState | None = None, routes=()) -> Observations:
    return Observations(target=target, others=others, routes=tuple(routes))


def test_a_target_canaryd_manages_is_refused_whoever_comes_first() -> None:
    primary = WorkloadState("web-primary", "rev1", 3, managed_by="web")
    refused = refusal(claim("evil", "web-primary", created=-100), seen(target=primary))
    assert refused is not None and refused.reason is Reason.TARGET_MANAGED_BY_CANARYD
    assert "primary of Canary web" in refused.message and "to 0" in refused.message


def test_of_two_canaries_on_one_deployment_the_older_keeps_it() -> None:
    older, newer = claim("a", "web", created=0), claim("b", "web", created=5)
    assert refusal(older, seen(newer)) is None
    refused = refusal(newer, seen(older))
    assert refused is not None and refused.reason is Reason.TARGET_CLAIMED
    assert "Canary a already acts on Deployment web" in refused.message and "it is older" in refused.message


def test_a_running_canary_keeps_its_target_from_an_older_newcomer() -> None:
    running, newcomer = claim("z", "web", created=50, started=True), claim("a", "web", created=0)
    assert refusal(running, seen(newcomer)) is None
    refused = refusal(newcomer, seen(running))
    assert refused is not None and "already running" in refused.message


def test_a_tie_in_age_goes_to_the_name_that_sorts_first() -> None:
    first, second = claim("alpha", "web"), claim("beta", "web")
    assert refusal(first, seen(second)) is None
    refused = refusal(second, seen(first))
    assert refused is not None and "name sorts first" in refused.message


def test_a_target_that_is_another_canarys_primary_name_conflicts_both_ways() -> None:
    web, deep = claim("web", "web", created=0), claim("deep", "web-primary", created=1)
    refused = refusal(deep, seen(web))
    assert refused is not None and "Deployment web-primary" in refused.message
    # And when the other one came first, the Canary of web is the one refused: it would create web-primary.
    assert refusal(claim("web", "web", created=2), seen(claim("deep", "web-primary", created=1))) is not None


def test_a_route_rule_naming_another_canarys_services_is_refused_to_the_newer() -> None:
    route = RouteState(
        "HTTPRoute", "shop", exists=True, has_backends=True, accepted=True,
        shared_backends=("a-canary", "a-primary"),
    )  # fmt: skip
    older, newer = claim("a", "a", created=0), claim("b", "b", created=1)
    refused = refusal(newer, seen(older, routes=[route]))
    assert refused is not None and refused.reason is Reason.ROUTE_RULE_CLAIMED
    assert "HTTPRoute shop" in refused.message and "own rule" in refused.message
    assert refusal(older, seen(newer, routes=[route])) is None


contenders = st.lists(
    st.builds(
        claim,
        name=st.sampled_from(["a", "b", "c", "d", "e", "f"]),
        target=st.sampled_from(["web", "web-primary", "api", "web-primary-primary"]),
        created=st.integers(0, 3),
        started=st.booleans(),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda c: c.name,
)


@settings(max_examples=300)
@given(contenders)
def test_no_two_canaries_that_may_act_contest_anything_and_the_first_always_may(claims: list) -> None:
    free = [c for c in claims if refusal(c, seen(*[o for o in claims if o is not c])) is None]
    for one in free:
        for other in free:
            if one is not other:
                assert not (claimed(one.target)[0] & claimed(other.target)[0]), (one, other)
                assert not (claimed(one.target)[1] & claimed(other.target)[1]), (one, other)
    assert min(claims, key=precedence) in free
    # Every replica that sees the same cache decides the same: the verdicts do not depend on order.
    again = [c for c in claims if refusal(c, seen(*[o for o in reversed(claims) if o is not c])) is None]
    assert again == free


def canary_named(name: str, target: str, created: datetime) -> Canary:
    base = make_canary()
    identity = {"name": name, "uid": f"uid-{name}", "creation_timestamp": created}
    meta = base.metadata.model_copy(update=identity)
    target_ref = base.spec.target_ref.model_copy(update={"name": target})
    spec = base.spec.model_copy(update={"target_ref": target_ref})
    return base.model_copy(update={"metadata": meta, "spec": spec})


def test_a_refused_canary_touches_nothing_and_says_why_once() -> None:
    world = World()
    canary = canary_named("payments-api", "payments-api", T0 + timedelta(hours=1))
    owner = CanaryClaim("checkout", "uid-checkout", T0, "payments-api", started=True)
    observations = Observations(target=world.target_state(), routes=(world.route_state(),), others=(owner,))
    decision = decide(canary, observations, T0 + timedelta(hours=2))
    assert all(isinstance(e, RecordEvent) for e in decision.effects)
    (event,) = decision.effects
    assert (event.type, event.reason) == ("Warning", "TargetClaimed")
    ready = decision.status.condition("Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "TargetClaimed")
    assert decision.status.phase is None and decision.next_wakeup is not None
    again = decide(with_status(canary, decision.status), observations, T0 + timedelta(hours=3))
    assert again.effects == () and again.status == decision.status
    assert not analysis_due(with_status(canary, decision.status), observations, T0 + timedelta(hours=3))


def test_a_refused_canary_that_is_deleted_only_gives_up_what_it_owns() -> None:
    world = initialized_world()
    owner = CanaryClaim("aaa", "uid-aaa", T0 - timedelta(days=1), "payments-api", started=True)
    observations = replace(
        world.observations(), others=(owner,), deleting=True, has_finalizer=True, owns_workloads=True
    )
    decision = decide(world.canary, observations, world.now)
    cluster_effects = [e for e in decision.effects if not isinstance(e, RecordEvent)]
    assert cluster_effects == [ReleaseOwned(), RemoveFinalizer()]


def test_a_backend_on_another_port_keeps_the_route_from_carrying_traffic() -> None:
    route = {
        "metadata": {"name": "web", "namespace": "shop", "uid": "u", "generation": 1},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {"backendRefs": [{"name": "web-primary", "port": 8080}, {"name": "web-canary", "port": 9090}]}
            ],
        },
        "status": {
            "parents": [{"parentRef": {"name": "gw"}, "conditions": [{"type": "Accepted", "status": "True"}]}]
        },
    }
    state = inspect_route("HTTPRoute", "web", route, "web-primary", "web-canary", port=8080)
    assert not state.usable and state.has_backends  # weights can still go back to the primary
    assert "backendRef web-canary has port 9090" in state.port_problem and "port 8080" in state.port_problem
    del route["spec"]["rules"][0]["backendRefs"][0]["port"]
    route["spec"]["rules"][0]["backendRefs"][1]["port"] = 8080
    again = inspect_route("HTTPRoute", "web", route, "web-primary", "web-canary", port=8080)
    assert "web-primary has no port" in again.port_problem


def test_with_a_port_mismatch_a_run_moves_no_traffic_and_says_which_port() -> None:
    world = initialized_world()
    world.new_revision("rev2")
    world.roll_out()
    problem = "HTTPRoute shop/web rule 0: backendRef web-canary has port 9090"
    mismatch = replace(world.route_state(), port_problem=problem)
    observations = replace(world.observations(), routes=(mismatch,))
    canary = world.canary
    for minute in range(1, 4):
        now = world.now + timedelta(minutes=minute)
        decision = decide(canary, replace(observations, analysis=passing()), now)
        canary = with_status(canary, decision.status)
    assert canary.status.phase is Phase.PROGRESSING and canary.status.canary_weight == 0
    routes_ready = canary.status.condition("RoutesReady")
    assert routes_ready is not None
    assert (routes_ready.reason, routes_ready.status) == ("RoutePortMismatch", "False")
    assert "port 9090" in routes_ready.message


def test_claims_compare_aware_and_naive_times_alike() -> None:
    aware = CanaryClaim("a", "1", datetime(2026, 1, 1, tzinfo=UTC), "web")
    naive = CanaryClaim("b", "2", datetime(2026, 1, 1, 0, 0, 1), "web")
    assert precedence(aware) < precedence(naive)


# Small alphabets make related names (a target, its -primary, a -canary) likely to collide.
_stems = st.sampled_from(["a", "b", "web", "web-primary", "web-canary", "a-primary", "b-canary"])
_suffixes = st.sampled_from(["", "-primary", "-canary"])
_related_names = st.builds(lambda stem, suffix: stem + suffix, _stems, _suffixes)
_claims = st.lists(
    st.builds(
        claim,
        st.sampled_from(["c1", "c2", "c3", "c4", "c5"]),
        _related_names,
        created=st.integers(0, 3),
        started=st.booleans(),
    ),
    max_size=6,
)


@settings(max_examples=500)
@given(me=_related_names, others=_claims, shared=st.lists(_related_names, max_size=3))
def test_the_related_targets_hold_every_canary_that_can_contest_so_the_index_lookup_decides_the_same(
    me: str, others: list[CanaryClaim], shared: list[str]
) -> None:
    """The controller hands ``refusal`` only the Canaries of ``related_targets``: it must decide the same."""
    routes = (RouteState(kind="HTTPRoute", name="r", exists=True, shared_backends=tuple(shared)),)
    mine = claim("me", me, created=1)
    related = related_targets(me, routes)
    everyone = seen(*others, routes=routes)
    looked_up = seen(*(o for o in others if o.target in related), routes=routes)
    assert refusal(mine, everyone) == refusal(mine, looked_up)
