"""A few chaos runs in the normal suite: a rollout under random faults keeps every invariant.

The long runs (``python bench/bench_chaos.py --runs 1000``) print the table of
faults injected and invariants checked; these seeds cover a good and a bad
revision, one and two replicas, and most kinds of fault.
"""

from __future__ import annotations

import pytest

from tests.chaos.runner import FAULTS, plan_for, run_once, table

SEEDS = [1, 3, 4]


def test_a_plan_replays_exactly_from_its_seed() -> None:
    assert plan_for(11) == plan_for(11)
    assert plan_for(11) != plan_for(12)
    kinds = {event.kind for seed in range(200) for event in plan_for(seed).faults}
    assert kinds == set(FAULTS)  # every fault is drawn by some seed


def test_the_chosen_seeds_cover_both_revisions_and_two_replicas() -> None:
    plans = [plan_for(seed) for seed in SEEDS]
    assert {p.good for p in plans} == {True, False}
    assert {p.replicas for p in plans} == {1, 2}


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_randomized_rollout_under_faults_keeps_every_invariant(seed: int) -> None:
    result = await run_once(seed, timeout=60)
    print(table([result]))
    assert result.violations == []
    assert sum(result.faults.values()) == len(plan_for(seed).faults)
    assert result.checks["status never ahead of the route"] > 0
