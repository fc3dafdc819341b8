"""Benchmark: many chaos runs (randomized rollouts under random faults), and the table of what was checked.

Each run is one seed of ``tests.chaos.runner``: a rollout with random steps,
a good or bad revision, one or two ``canaryd run`` replicas, and a random
schedule of faults; the invariants are checked after every event. Prints one
line per run and, at the end, the faults injected and the invariants checked.
A failing run is saved with its seed (``$CANARYD_CHAOS_DIR``, default
``/tmp/canaryd-chaos``) and replays with ``--seed``.

    python bench/bench_chaos.py [--runs 1000] [--first-seed 1] [--parallel 1] [--minutes 0]
    python bench/bench_chaos.py --seed 42          # replay one run

Exits 1 when a run broke an invariant.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos.runner import RunResult, run_once, table


async def main(seeds: list[int], parallel: int, minutes: float) -> int:
    results: list[RunResult] = []
    stop_at = time.monotonic() + minutes * 60 if minutes else None
    queue = list(seeds)
    runner_errors: list[int] = []

    async def worker() -> None:
        while queue and (stop_at is None or time.monotonic() < stop_at):
            seed = queue.pop(0)
            try:
                result = await run_once(seed, keep_logs=len(seeds) == 1)
            except Exception as error:  # the runner's own failure: say so, and go on with the next seed
                print(f"seed {seed:>6} runner error: {type(error).__name__}: {error}", flush=True)
                runner_errors.append(seed)
                continue
            results.append(result)
            verdict = "ok" if not result.violations else "VIOLATED " + "; ".join(result.violations)[:300]
            faults = ",".join(f"{k}x{n}" for k, n in sorted(result.faults.items()))
            kind = "good" if result.good else "bad "
            head = f"seed {seed:>6} {kind} replicas {result.replicas} {result.phase or '-':<10}"
            print(f"{head} {result.seconds:5.1f}s {faults}  {verdict}", flush=True)

    await asyncio.gather(*(worker() for _ in range(parallel)))
    print(table(sorted(results, key=lambda r: r.seed)))
    if runner_errors:
        print(f"runner errors (not counted as runs): seeds {runner_errors}")
    return 1 if any(r.violations for r in results) or runner_errors else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--seed", type=int, help="replay this one run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (each has its own sandbox)")
    parser.add_argument("--minutes", type=float, default=0, help="stop starting runs after this long")
    args = parser.parse_args()
    chosen = (
        [args.seed] if args.seed is not None else list(range(args.first_seed, args.first_seed + args.runs))
    )
    sys.exit(asyncio.run(main(chosen, args.parallel, args.minutes)))
