"""Benchmark: many chaos runs (randomized rollouts under random faults), and the table of what was checked.

Runs go in episodes (``tests.chaos.runner``): one sandbox, one stand-in
Prometheus and one or two ``canaryd run`` replicas carry ``--canaries``
Canaries at once, each one run with its own random steps, good or bad
revision, second writer and team edits; the episode's faults hit all of them.
The invariants are checked after every event. Prints one line per episode
(and one per run with a violation) and, at the end, the faults injected and
the invariants checked. A failing run is saved with its episode's seed and its
index (``$CANARYD_CHAOS_DIR``, default ``/tmp/canaryd-chaos``); ``--seed``
replays its episode, ``--only`` keeps just some of its runs under the same
faults.

    python bench/bench_chaos.py [--runs 1000] [--canaries 40] [--first-seed 1] [--minutes 0]
    python bench/bench_chaos.py --seed 42 [--canaries 40] [--only 7]     # replay an episode
    python bench/bench_chaos.py --real [--episodes 3] [--canaries 6]      # on the real control plane

With ``--real`` the episodes run on a real control plane of their own
(``cluster.harness``, with Traefik from ``cluster.dataplane``): their faults are
kube-apiserver and etcd SIGKILLed and started again and the controller
SIGKILLed and restarted (``tests.chaos.real``).

Exits 1 when a run broke an invariant or an episode could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos.runner import EpisodeResult, run_episode, table


async def main(seeds: list[int], runs: int, canaries: int, minutes: float, only: list[int] | None) -> int:
    episodes: list[EpisodeResult] = []
    stop_at = time.monotonic() + minutes * 60 if minutes else None
    runner_errors: list[int] = []
    for seed in seeds:
        if sum(len(e.runs) for e in episodes) >= runs or (stop_at is not None and time.monotonic() > stop_at):
            break
        try:
            episode = await run_episode(seed, canaries, keep_logs=len(seeds) == 1, only=only)
        except Exception as error:  # the runner's own failure: say so, and go on with the next seed
            where = traceback.extract_tb(error.__traceback__)[-3:]
            frames = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(where))
            print(f"episode {seed:>6} runner error: {type(error).__name__}: {error} ({frames})", flush=True)
            runner_errors.append(seed)
            continue
        episodes.append(episode)
        violated = [r for r in episode.runs if r.violations]
        good = sum(r.good for r in episode.runs)
        phases = sorted({r.phase or "-" for r in episode.runs})
        faults = ",".join(f"{k}x{n}" for k, n in sorted(episode.injected.items()))
        total = sum(len(e.runs) for e in episodes)
        print(
            f"episode {seed:>6} runs {len(episode.runs)} (good {good}) replicas {episode.replicas} "
            f"{episode.seconds:5.1f}s phases {'/'.join(phases)} {faults}  violated {len(violated)}  "
            f"(total runs {total})",
            flush=True,
        )
        for result in violated:
            print(f"  run {seed}/{result.index}: {'; '.join(result.violations)[:400]}", flush=True)
    print(table(episodes))
    if runner_errors:
        print(f"runner errors (their runs are not counted): episodes {runner_errors}")
    return 1 if any(r.violations for e in episodes for r in e.runs) or runner_errors else 0


def main_real(first_seed: int, episodes: int, canaries: int) -> int:
    from cluster import podnet
    from cluster.dataplane import DataPlane
    from cluster.harness import Cluster, ClusterConfig
    from tests.chaos.real import real_table, run_real_episode

    reservation = podnet.reserve()
    cluster = Cluster.create(ClusterConfig(pod_cidr=reservation.cidr), build_output=sys.stderr)
    try:
        print(f"real cluster started in {cluster.start():.1f} s", flush=True)
        plane = DataPlane.create(cluster)
        try:
            print(f"data plane started in {plane.start():.1f} s", flush=True)
            results, extra = [], Counter[str]()
            for seed in range(first_seed, first_seed + episodes):
                episode, counts = asyncio.run(run_real_episode(cluster, plane, seed, canaries))
                results.append(episode)
                extra.update(counts)
                violated = sum(bool(r.violations) for r in episode.runs)
                faults = ",".join(f"{k}x{n}" for k, n in sorted(episode.injected.items()))
                print(f"real episode {seed} runs {len(episode.runs)} {episode.seconds:5.1f}s {faults} "
                      f"violated {violated}", flush=True)  # fmt: skip
            print(real_table(results, extra))
        finally:
            plane.stop(remove=True)
    finally:
        cluster.stop(remove=True)
        reservation.release()
    return 1 if any(r.violations for e in results for r in e.runs) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="stop starting episodes after this many runs")
    parser.add_argument("--canaries", type=int, help="runs per episode (40 on the sandbox, 6 with --real)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--seed", type=int, help="replay this one episode")
    parser.add_argument("--only", type=int, action="append", help="with --seed: only this run (repeatable)")
    parser.add_argument("--minutes", type=float, default=0, help="stop starting episodes after this long")
    parser.add_argument("--real", action="store_true", help="episodes on a real control plane of their own")
    parser.add_argument("--episodes", type=int, default=3, help="with --real: how many episodes")
    args = parser.parse_args()
    if args.real:
        first = args.seed if args.seed is not None else args.first_seed
        sys.exit(main_real(first, args.episodes, args.canaries or 6))
    chosen = [args.seed] if args.seed is not None else list(range(args.first_seed, args.first_seed + 100_000))
    sys.exit(asyncio.run(main(chosen, args.runs, args.canaries or 40, args.minutes, args.only)))
