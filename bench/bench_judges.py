"""Benchmark: fixed thresholds, the Mann-Whitney judge and the sequential judge on one corpus of runs.

Generates the scenario corpus of ``tests/fixtures/scenarios.py`` (at least
500 canary runs: healthy and noisy traffic, error-rate regressions relative
and absolute, p50 and p99 latency regressions, 0.2 to 500 requests/s, no
traffic, a drift that hits both sides, canary scrape gaps and Prometheus
outages), writes it into a real Prometheus with ``promtool tsdb
create-blocks-from openmetrics``, and replays every run with each judge
through ``canaryd backtest``'s engine (``canaryd.runtime.backtest.replay``),
so what is measured is what users get. Printed per judge:

- false promotions (a regression beyond the tolerance Succeeded), false
  rollbacks (a run within it Failed), undecided runs;
- median and p95 time to a decision (Succeeded or Failed) from the start;
- median time to roll back a clear regression (3x the errors or 2x the p99
  at 20 requests/s or more);
- the undecided runs by traffic;

then whether the goals hold:

1. no false promotion of a regression of at least twice the primary's error
   rate at 5 requests/s or more (each comparison judge);
2. at most 1 % false rollbacks of healthy canaries (each comparison judge);
3. each comparison judge strictly better than fixed thresholds on false
   promotions and on false rollbacks;
4. the sequential judge's median time to roll back a clear regression at
   most half the Mann-Whitney judge's.

    python bench/bench_judges.py [--seed 14] [--limit N] [--concurrency 16] [--verbose]

Exits 1 when a goal is missed (with ``--limit``, on the runs it kept).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canaryd.adapters.prometheus import PrometheusQuerier
from canaryd.api.models import Canary, MetricTemplate
from canaryd.runtime.backtest import BacktestResult, endpoint_factory, replay
from canaryd.sandbox.prometheus_server import PrometheusServer
from tests.fixtures.scenarios import (
    JUDGES,
    RUN_MINUTES,
    Scenario,
    corpus,
    judged_canary,
    openmetrics,
)

ROOT = Path(__file__).resolve().parents[1]
#: When every replayed run starts (a whole minute, in the past).
START = 1_700_000_040


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    judge: str
    result: BacktestResult

    @property
    def false_promotion(self) -> bool:
        return self.scenario.regression and self.result.decision == "Succeeded"

    @property
    def false_rollback(self) -> bool:
        return not self.scenario.regression and self.result.decision == "Failed"

    @property
    def undecided(self) -> bool:
        return self.result.decision == "Undecided"


def _templates() -> dict[tuple[str, str], MetricTemplate]:
    found = {}
    for document in yaml.safe_load_all((ROOT / "analysis" / "sandbox.yaml").read_text()):
        if document:
            template = MetricTemplate.model_validate(document)
            found[(template.metadata.namespace, template.metadata.name)] = template
    return found


def _percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}m"


async def _replay_all(server: PrometheusServer, scenarios: Sequence[Scenario], concurrency: int,
                      verbose: bool) -> list[Outcome]:  # fmt: skip
    templates = _templates()
    start = datetime.fromtimestamp(START, UTC)
    end = start + timedelta(minutes=RUN_MINUTES)
    endpoint_for = endpoint_factory(server.url, timeout=30.0)
    gate = asyncio.Semaphore(concurrency)
    outcomes: list[Outcome] = []
    async with PrometheusQuerier(max_in_flight=concurrency) as querier:

        async def one(scenario: Scenario, judge: str) -> None:
            canary = Canary.model_validate(judged_canary(scenario, judge))
            async with gate:
                result = await replay(
                    canary, templates, querier=querier, endpoint_for=endpoint_for, start=start, end=end
                )
            outcome = Outcome(scenario, judge, result)
            outcomes.append(outcome)
            if verbose:
                mark = " FALSE" if outcome.false_promotion or outcome.false_rollback else ""
                print(
                    f"  {judge:<13} {scenario.name} {scenario.kind:<15} {scenario.rps:>5g} rps "
                    f"truth={'regression' if scenario.regression else 'healthy':<10} -> {result.decision:<9} "
                    f"{_minutes(result.seconds_to_decision):>6}{mark}  {result.reason}",
                    flush=True,
                )

        await asyncio.gather(*(one(s, j) for j in JUDGES for s in scenarios))
    return outcomes


def _row(judge: str, outcomes: Sequence[Outcome]) -> dict[str, object]:
    mine = [o for o in outcomes if o.judge == judge]
    decided = [o.result.seconds_to_decision for o in mine if o.result.seconds_to_decision is not None]
    clear = [
        o.result.seconds_to_decision
        for o in mine
        if o.scenario.clear_regression and o.result.decision == "Failed" and o.result.seconds_to_decision
    ]
    healthy = [o for o in mine if not o.scenario.regression]
    return {
        "judge": judge,
        "runs": len(mine),
        "false_promotions": sum(o.false_promotion for o in mine),
        "doubled_promoted": sum(o.false_promotion and o.scenario.doubled_errors for o in mine),
        "false_rollbacks": sum(o.false_rollback for o in mine),
        "healthy": len(healthy),
        "undecided": sum(o.undecided for o in mine),
        "median": statistics.median(decided) if decided else None,
        "p95": _percentile(decided, 0.95),
        "clear_median": statistics.median(clear) if clear else None,
        "clear_rolled_back": len(clear),
    }


def _table(rows: Sequence[dict[str, object]], regressions: int, doubled: int, clear: int) -> str:
    headers = [
        "judge", "false promotions", "of which >=2x errors >=5rps", "false rollbacks", "undecided",
        "median to decision", "p95 to decision", "median to roll back a clear regression",
    ]  # fmt: skip
    lines = [headers]
    for row in rows:
        healthy = int(row["healthy"])  # type: ignore[call-overload]
        rollbacks = int(row["false_rollbacks"])  # type: ignore[call-overload]
        lines.append([
            str(row["judge"]),
            f"{row['false_promotions']}/{regressions}",
            f"{row['doubled_promoted']}/{doubled}",
            f"{rollbacks}/{healthy} ({100 * rollbacks / healthy if healthy else 0:.1f}%)",
            f"{row['undecided']}/{row['runs']}",
            _minutes(row["median"]),  # type: ignore[arg-type]
            _minutes(row["p95"]),  # type: ignore[arg-type]
            f"{_minutes(row['clear_median'])} ({row['clear_rolled_back']}/{clear} rolled back)",  # type: ignore[arg-type]
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def _undecided_by_traffic(outcomes: Sequence[Outcome]) -> str:
    levels = sorted({o.scenario.rps for o in outcomes})
    lines = ["undecided runs by traffic (requests/s): " + "  ".join(f"{rps:g}" for rps in levels)]
    for judge in JUDGES:
        cells = []
        for rps in levels:
            mine = [o for o in outcomes if o.judge == judge and o.scenario.rps == rps]
            cells.append(f"{sum(o.undecided for o in mine)}/{len(mine)}")
        lines.append(f"  {judge:<13} " + "  ".join(cells))
    return "\n".join(lines)


def _goals(rows: dict[str, dict[str, object]]) -> list[tuple[str, bool, str]]:
    fixed = rows["thresholds"]
    results: list[tuple[str, bool, str]] = []
    for judge in ("mann-whitney", "sequential"):
        row = rows[judge]
        doubled = int(row["doubled_promoted"])  # type: ignore[call-overload]
        results.append(
            (f"{judge}: no false promotion of >=2x errors at >=5 rps", doubled == 0, f"{doubled} promoted")
        )
        healthy = int(row["healthy"])  # type: ignore[call-overload]
        rollbacks = int(row["false_rollbacks"])  # type: ignore[call-overload]
        share = 100 * rollbacks / healthy if healthy else 0.0
        results.append((f"{judge}: <= 1% false rollbacks of healthy canaries", share <= 1.0, f"{share:.2f}%"))
        promotions = int(row["false_promotions"])  # type: ignore[call-overload]
        fixed_promotions = int(fixed["false_promotions"])  # type: ignore[call-overload]
        fixed_rollbacks = int(fixed["false_rollbacks"])  # type: ignore[call-overload]
        results.append((
            f"{judge}: fewer false promotions than fixed thresholds",
            promotions < fixed_promotions, f"{promotions} vs {fixed_promotions}",
        ))  # fmt: skip
        results.append((
            f"{judge}: fewer false rollbacks than fixed thresholds",
            rollbacks < fixed_rollbacks, f"{rollbacks} vs {fixed_rollbacks}",
        ))  # fmt: skip
    sequential_time = rows["sequential"]["clear_median"]
    fixed_sample_time = rows["mann-whitney"]["clear_median"]
    if isinstance(sequential_time, float | int) and isinstance(fixed_sample_time, float | int):
        ratio = sequential_time / fixed_sample_time
        results.append((
            "sequential median time to roll back a clear regression <= half of mann-whitney's",
            ratio <= 0.5, f"{_minutes(sequential_time)} vs {_minutes(fixed_sample_time)} (ratio {ratio:.2f})",
        ))  # fmt: skip
    else:
        results.append(
            ("sequential median time to roll back a clear regression <= half", False, "not measured")
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=14, help="the corpus' seed")
    parser.add_argument("--limit", type=int, default=0, help="keep every n-th run only, to be quick (0: all)")
    parser.add_argument("--concurrency", type=int, default=16, help="runs replayed at once")
    parser.add_argument("--verbose", action="store_true", help="print every run's outcome")
    args = parser.parse_args()

    scenarios = corpus(args.seed)
    if args.limit:
        scenarios = scenarios[:: max(1, len(scenarios) // args.limit)][: args.limit]
    started = time.perf_counter()
    with PrometheusServer() as server:
        server.stop()
        text = "\n".join(openmetrics(scenarios, START)) + "\n"
        generated = time.perf_counter()
        server.backfill(text)
        del text
        server.start()
        loaded = time.perf_counter()
        print(
            f"corpus: {len(scenarios)} runs (seed {args.seed}), generated in {generated - started:.1f}s, "
            f"written by promtool and served in {loaded - generated:.1f}s",
            flush=True,
        )
        outcomes = asyncio.run(_replay_all(server, scenarios, args.concurrency, args.verbose))
    replayed = time.perf_counter()
    kinds = Counter(s.kind for s in scenarios)
    regressions = sum(s.regression for s in scenarios)
    doubled = sum(s.doubled_errors for s in scenarios)
    clear = sum(s.clear_regression for s in scenarios)
    checks = sum(len(o.result.checks) for o in outcomes)
    print(
        f"replayed {len(outcomes)} runs ({checks} metric checks) in {replayed - loaded:.1f}s; "
        f"{regressions} regressions ({doubled} with >=2x errors at >=5 rps, {clear} clear), "
        f"{len(scenarios) - regressions} within tolerance"
    )
    print("kinds: " + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())))
    print()
    rows = {judge: _row(judge, outcomes) for judge in JUDGES}
    print(_table(list(rows.values()), regressions, doubled, clear))
    print()
    print(_undecided_by_traffic(outcomes))
    print()
    goals = _goals(rows)
    for text, met, detail in goals:
        print(f"{'met   ' if met else 'MISSED'}  {text}: {detail}")
    return 0 if all(met for _, met, _ in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
