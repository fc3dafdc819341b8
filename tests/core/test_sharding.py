"""Shards and who holds them: every replica reaches the same answer, and a dead replica's shards move."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from canaryd.core.sharding import assignment, plan_shards, shard_of


def test_a_canary_lands_in_the_same_shard_in_another_process() -> None:
    here = [shard_of("payments", f"api-{i}", 16) for i in range(50)]
    code = (
        "from canaryd.core.sharding import shard_of;"
        "print([shard_of('payments', f'api-{i}', 16) for i in range(50)])"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "7"}
    ).stdout
    assert str(here) == there.strip()


def test_canaries_spread_over_every_shard() -> None:
    counts = Counter(shard_of(f"team-{i % 40}", f"app-{i}", 12) for i in range(12_000))
    assert sorted(counts) == list(range(12))
    assert max(counts.values()) < 1.15 * min(counts.values())


def test_one_shard_holds_everything_and_zero_shards_is_refused() -> None:
    assert {shard_of("a", f"n{i}", 1) for i in range(20)} == {0}
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("a", "b", 0)


@pytest.mark.parametrize("shards", [3, 6, 7, 32])
def test_members_split_the_shards_evenly_and_agree_on_it(shards: int) -> None:
    members = ["replica-a", "replica-b", "replica-c"]
    owners = assignment(shards, members)
    assert sorted(owners) == list(range(shards))
    load = Counter(owners.values())
    assert set(load) == set(members)
    assert max(load.values()) - min(load.values()) <= 1
    assert assignment(shards, reversed(members)) == owners
    assert assignment(shards, []) == {}


@pytest.mark.parametrize("shards", [24, 64])
def test_a_member_leaving_or_joining_moves_few_shards_besides_its_own(shards: int) -> None:
    three = assignment(shards, ["a", "b", "c"])
    two = assignment(shards, ["a", "b"])
    four = assignment(shards, ["a", "b", "c", "d"])
    held_by_c = {s for s in range(shards) if three[s] == "c"}
    moved = {s for s in range(shards) if three[s] != two[s]}
    assert held_by_c <= moved
    assert len(moved) <= len(held_by_c) + shards // 8 + 1
    assert sum(three[s] != four[s] for s in range(shards)) <= shards // 4 + shards // 8 + 1


def test_a_replica_alone_takes_every_free_shard() -> None:
    plan = plan_shards(6, "a", [], {})
    assert plan.acquire == frozenset(range(6))
    assert not plan.renew and not plan.release


def test_a_dead_members_shards_go_to_the_survivors_each_to_one() -> None:
    shards = 30
    before = assignment(shards, ["a", "b", "c"])
    after = assignment(shards, ["a", "b"])
    # c died: its Leases expired (no live holder), it is no longer a member
    holders = {s: (h if h != "c" else None) for s, h in before.items()}
    plans = {me: plan_shards(shards, me, ["a", "b"], holders) for me in ("a", "b")}
    orphaned = {s for s, h in before.items() if h == "c"}
    assert plans["a"].acquire | plans["b"].acquire == orphaned
    assert not plans["a"].acquire & plans["b"].acquire
    for me in ("a", "b"):
        assert all(after[s] == me for s in plans[me].acquire | plans[me].renew)
        assert all(after[s] != me and before[s] == me for s in plans[me].release)


def test_a_shard_held_by_a_live_replica_is_not_taken_even_by_its_preferred_member() -> None:
    shard = next(s for s, member in assignment(50, ["a", "b"]).items() if member == "b")
    assert shard not in plan_shards(50, "b", ["a", "b"], {shard: "a"}).acquire
    # and the holder hands it over to the member that ought to hold it
    assert shard in plan_shards(50, "a", ["a", "b"], {shard: "a"}).release


def test_a_newcomer_gets_its_share_through_hand_over() -> None:
    shards = 24
    alone = {s: "a" for s in range(shards)}
    plan = plan_shards(shards, "a", ["a", "b"], alone)
    handed = {s for s, member in assignment(shards, ["a", "b"]).items() if member == "b"}
    assert plan.release == handed and plan.renew == set(range(shards)) - handed
    freed = {s: (None if s in handed else "a") for s in range(shards)}
    assert plan_shards(shards, "b", ["a", "b"], freed).acquire == handed
