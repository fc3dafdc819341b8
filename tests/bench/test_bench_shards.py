"""The shard bench's arithmetic: lateness quantiles from a histogram's buckets, and its per-replica table.

The bench's figures are only as true as these: a quantile taken from the
wrong bucket, or a table that divides by the wrong count of steps, would
print a plausible number that means nothing.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

from bench.bench_shards import (
    ReplicaFigures,
    bucket_delta,
    merged_lateness,
    parse_scrape,
    quantile_from_buckets,
    replica_table,
)

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def histogram_of(values: list[float]) -> dict[float, float]:
    """Cumulative buckets of `values`, as the controller's histogram would export them."""
    registry = CollectorRegistry()
    histogram = Histogram("canaryd_step_lateness_seconds", "lateness", buckets=BOUNDS, registry=registry)
    for value in values:
        histogram.observe(value)
    return parse_scrape(generate_latest(registry).decode()).lateness_buckets


def test_the_quantile_interpolates_inside_the_bucket_it_falls_in():
    # 90 observations at 20 ms (the 10-25 ms bucket) and 10 at 3 s (2.5-5 s)
    buckets = histogram_of([0.02] * 90 + [3.0] * 10)
    estimate, lower, upper = quantile_from_buckets(0.5, buckets)
    assert (lower, upper) == (0.01, 0.025)
    assert estimate == pytest.approx(0.01 + 0.015 * 50 / 90)
    estimate, lower, upper = quantile_from_buckets(0.99, buckets)
    assert (lower, upper) == (2.5, 5)
    assert estimate == pytest.approx(2.5 + 2.5 * 9 / 10)


def test_the_first_bucket_starts_at_zero_and_beyond_the_last_bound_only_the_last_bound_is_known():
    estimate, lower, upper = quantile_from_buckets(0.5, histogram_of([0.001] * 4))
    assert (lower, upper) == (0.0, 0.005) and estimate == pytest.approx(0.0025)
    estimate, lower, upper = quantile_from_buckets(0.99, histogram_of([0.001] * 50 + [100.0] * 50))
    assert (estimate, lower) == (60, 60) and math.isinf(upper)


def test_no_observations_give_no_quantile():
    assert all(math.isnan(v) for v in quantile_from_buckets(0.99, histogram_of([])))
    assert all(math.isnan(v) for v in quantile_from_buckets(0.99, {}))


def test_a_run_is_measured_between_two_scrapes_and_replicas_add_up():
    earlier = histogram_of([5.0] * 100)  # lateness before the run (initialization) is not the run's
    later = histogram_of([5.0] * 100 + [0.02] * 10)
    during = bucket_delta(later, earlier)
    assert during[math.inf] == 10
    assert quantile_from_buckets(0.99, during)[1:] == (0.01, 0.025)
    merged = merged_lateness([figures("a", during), figures("b", histogram_of([3.0] * 10))])
    assert merged[math.inf] == 20
    assert quantile_from_buckets(0.25, merged)[1:] == (0.01, 0.025)
    assert quantile_from_buckets(0.75, merged)[1:] == (2.5, 5)


def test_requests_and_passes_are_read_by_verb_and_summed_over_codes():
    registry = CollectorRegistry()
    requests = PromCounter(
        "canaryd_kubernetes_requests", "r", ["verb", "resource", "code"], registry=registry
    )
    requests.labels("patch", "canaries", "200").inc(7)
    requests.labels("patch", "canaries", "409").inc(1)
    requests.labels("create", "events", "201").inc(4)
    reconciles = PromCounter("canaryd_reconciles", "p", ["outcome"], registry=registry)
    reconciles.labels("ok").inc(9)
    reconciles.labels("conflict").inc(1)
    scrape = parse_scrape(generate_latest(registry).decode())
    assert scrape.requests == Counter({("patch", "canaries"): 8, ("create", "events"): 4})
    assert scrape.reconciles == 10


def figures(identity: str, lateness: dict[float, float], **changes: object) -> ReplicaFigures:
    values: dict[str, object] = {
        "identity": identity, "canaries": 150, "shards": 4, "window_steps": 200, "window_cpu": 3.0,
        "window_wall": 100.0, "window_passes": 400.0, "lateness": lateness,
        "window_requests": Counter({("patch", "canaries"): 400, ("patch", "httproutes"): 200,
                                    ("create", "events"): 200, ("watch", "canaries"): 3}),
    }  # fmt: skip
    values.update(changes)
    return ReplicaFigures(**values)  # type: ignore[arg-type]


def test_the_table_gives_each_replica_its_costs_per_step_of_its_own_canaries():
    rows = replica_table(
        [
            figures("replica-1", histogram_of([0.02] * 100)),
            figures("replica-2", histogram_of([3.0] * 100), window_steps=100, window_cpu=2.0),
        ]
    )
    header, first, second = rows
    assert header.split()[-2:] == ["create/step", "patch/step"]  # watches are not requests per step
    assert first.split()[:4] == ["replica-1", "150", "4", "200"]
    assert "15.00 ms" in first and "0.03" in first and first.split()[-3:] == ["2.00", "1.00", "3.00"]
    assert "20.00 ms" in second and second.split()[-3:] == ["4.00", "2.00", "6.00"]
    assert "(10 ms to 25 ms)" in first and "(2.5 s to 5.0 s)" in second
