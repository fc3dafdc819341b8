"""The max-concurrent-runs limit holds however the decisions of many Canaries interleave."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from canaryd.api.constants import Phase
from canaryd.api.models import CanaryStatus
from canaryd.core.concurrency import Key, run_slot_available, starts_run

ACTIVE = (Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALIZING)


def test_no_limit_and_a_run_under_way_always_have_a_slot() -> None:
    many = {("ns", f"c{i}") for i in range(10)}
    assert run_slot_available(0, ("ns", "new"), None, many, set())
    for phase in ACTIVE:
        assert run_slot_available(1, ("ns", "c0"), phase, many, set())


def test_a_slot_is_free_while_fewer_others_run_than_the_limit() -> None:
    me = ("ns", "me")
    assert run_slot_available(2, me, Phase.INITIALIZED, {("ns", "a")}, set())
    assert not run_slot_available(2, me, Phase.INITIALIZED, {("ns", "a")}, {("ns", "b")})
    assert run_slot_available(2, me, Phase.WAITING, {("ns", "a"), me}, set()), "its own run is not another's"
    assert run_slot_available(1, me, Phase.WAITING, {("ns", "a")}, {me}), "a granted slot is kept"


def test_a_run_starts_when_the_phase_enters_a_run() -> None:
    idle, waiting = CanaryStatus(phase=Phase.INITIALIZED), CanaryStatus(phase=Phase.WAITING)
    assert starts_run(idle, CanaryStatus(phase=Phase.PROGRESSING))
    assert starts_run(waiting, CanaryStatus(phase=Phase.PROGRESSING))
    assert not starts_run(CanaryStatus(phase=Phase.PROGRESSING), CanaryStatus(phase=Phase.PROMOTING))
    assert not starts_run(idle, waiting)


@given(
    limit=st.integers(1, 3),
    canaries=st.integers(1, 6),
    schedule=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["decide", "cache", "end"])), max_size=60),
)
def test_concurrent_decisions_never_run_more_than_the_limit(
    limit: int, canaries: int, schedule: list[tuple[int, str]]
) -> None:
    """Each Canary decides with a possibly stale cache; the runtime reserves what a decision starts."""
    keys: list[Key] = [("ns", f"c{i}") for i in range(canaries)]
    running: set[Key] = set()  # what status says (the truth)
    cached: set[Key] = set()  # what the cache has seen of it
    reserved: set[Key] = set()
    for index, step in schedule:
        key = keys[index % canaries]
        if step == "decide" and key not in running:
            phase = Phase.PROGRESSING if key in cached else Phase.INITIALIZED
            if run_slot_available(limit, key, phase, cached, reserved):
                reserved.add(key)  # claimed before the status write ...
                running.add(key)
        elif step == "cache":
            # ... and kept until the cache shows the new phase (the write's answer is put in the cache).
            cached = set(running)
            reserved -= cached
        elif step == "end" and key in running:
            running.discard(key)
            cached.discard(key)
        assert len(running) <= limit
