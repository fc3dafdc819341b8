"""One chaos episode in the normal suite: many rollouts under shared random faults keep every invariant.

The long runs (``python bench/bench_chaos.py --runs 1000``) print the table of
faults injected and invariants checked; here one episode of a dozen Canaries
(good and bad revisions, a second writer and team edits) under one controller
(or two) whose faults hit all of them.
"""

from __future__ import annotations

from tests.chaos.runner import EPISODE_FAULTS, FAULTS, RUN_FAULTS, plan_for, run_episode, table

SEED = 3
CANARIES = 12


def test_an_episode_replays_exactly_from_its_seed() -> None:
    assert plan_for(11) == plan_for(11)
    assert plan_for(11) != plan_for(12)
    kinds = {event.kind for seed in range(100) for event in plan_for(seed).faults}
    assert kinds == set(EPISODE_FAULTS)  # every episode fault is drawn by some seed
    run_kinds = {event.kind for run in plan_for(5).runs for event in run.faults}
    assert run_kinds == set(RUN_FAULTS)


def test_a_run_is_the_same_whatever_the_size_of_its_episode() -> None:
    small, large = plan_for(7, canaries=5), plan_for(7, canaries=40)
    assert small.faults == large.faults and small.replicas == large.replicas
    assert small.runs == large.runs[:5]
    assert len({run.namespace for run in large.runs}) == 40


def test_the_chosen_episode_has_both_revisions_and_faults_of_both_scopes() -> None:
    plan = plan_for(SEED, CANARIES)
    assert {run.good for run in plan.runs} == {True, False}
    assert {f.kind for f in plan.faults} & {"controller_kill", "controller_stop", "leader_kill"}
    assert any(run.faults for run in plan.runs)


async def test_many_rollouts_under_shared_faults_keep_every_invariant() -> None:
    episode = await run_episode(SEED, CANARIES, timeout=90)
    print(table([episode]))
    assert [r.violations for r in episode.runs if r.violations] == []
    assert len(episode.runs) == CANARIES
    plan = plan_for(SEED, CANARIES)
    assert sum(episode.injected.values()) == len(plan.faults) + sum(len(r.faults) for r in plan.runs)
    assert all(r.checks["status never ahead of the route"] > 0 for r in episode.runs)
    assert set(FAULTS) >= set(episode.injected)
