"""Benchmark: the full hostile-input corpus (10,000 inputs) through the real reconcile path.

Generates the inputs with hypothesis from a seed (``tests.hostile.corpus``),
applies them in batches to a sandbox whose canaryd CRDs keep no schema, with
a running controller and a stand-in Prometheus answering every query with
the case's hostile answer, and prints what happened: inputs applied and
refused by the API server, the Canaries' outcomes, crashes, hangs and
refusals without a clear message (each listed), and the time taken.

    python bench/bench_hostile.py [--inputs 10000] [--batch 250] [--seed 16] [--settle 40] [--first 0]

``--settle`` is how long a batch's Canaries get to say where they stand (half
before the new revision, half after) before one that says nothing counts as a
hang: on a machine shared with other work, give it more.

Exits 1 when there was a crash, a hang or an unclear refusal; the seed
replays the same inputs, and ``--first N`` (a multiple of the batch size) starts
at the batch that holds input N, drawn exactly as in the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hostile.corpus import Case, Figures, generate, hostile_world, run_batch


def _batch(first: int, size: int, run_seed: int) -> list[Case]:
    """The ``size`` cases numbered from ``first``, each batch drawn from its own seed."""
    return generate(size, lambda n: f"hostile-{n}", run_seed * 100_003 + first, first)


async def main(inputs: int, batch: int, run_seed: int, settle: float, first: int = 0) -> int:
    figures = Figures()
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    firsts = list(range(first, first + inputs, batch))
    # Hypothesis draws about 10 inputs a second: the next batch is drawn in another process meanwhile.
    with ProcessPoolExecutor(max_workers=1) as pool:
        upcoming = loop.run_in_executor(pool, _batch, firsts[0], min(batch, inputs), run_seed)
        async with hostile_world() as (cluster, prometheus, _controller):
            for index in range(len(firsts)):
                cases = await upcoming
                if index + 1 < len(firsts):
                    following = firsts[index + 1]
                    size = min(batch, first + inputs - following)
                    upcoming = loop.run_in_executor(pool, _batch, following, size, run_seed)
                await run_batch(cluster, prometheus, cases, figures, settle_seconds=settle)
                figures.prometheus_queries = prometheus.queries
                figures.seconds = time.monotonic() - started
                print(
                    f"after {figures.inputs} inputs ({figures.seconds:.0f}s): crashes {len(figures.crashes)} "
                    f"hangs {len(figures.hangs)} unclear {len(figures.unclear)}",
                    flush=True,
                )
    print(figures.table())
    for problem in figures.problems:
        print("PROBLEM", problem[:1000])
    return 1 if figures.problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--settle", type=float, default=40.0, help="seconds a batch gets before a hang")
    parser.add_argument("--first", type=int, default=0, help="start at this input (a multiple of --batch)")
    args = parser.parse_args()
    if args.first % args.batch:
        parser.error("--first must be a multiple of --batch: batches are drawn from their first input")
    sys.exit(asyncio.run(main(args.inputs, args.batch, args.seed, args.settle, args.first)))
