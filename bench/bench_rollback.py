"""Time to rollback: from a bad canary's first request to all traffic back on the primary, against its bound.

A Canary whose new revision fails every request (the sandbox's
``sandbox.canaryd.io/error-rate: "1"``, so it turns bad at step 1, the moment
it first gets traffic) is run on the sandbox with its real Prometheus and the
controller in this process. The time measured runs from the route write that
first sends it traffic (its first bad request follows within one simulator
tick) to the route write that puts the primary back at 100 %, both seen in the
sandbox's store. The bound comes from the configuration:

    scrape interval                  the first bad requests reach the TSDB
  + the metric's window share        until enough of the rate() window is bad to
                                     cross the threshold: for a canary failing
                                     every request, the second sample (one more
                                     scrape); else window x (100 - min) / (100 x error share)
  + interval x threshold             the failing checks, one per interval
  + query and write time             measured in this run: the mean query
                                     duration, and the time from the Failed status
                                     to the route write

    python bench/bench_rollback.py [--runs 3] [--interval 5] [--threshold 2] [--scrape 1] [--window 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from canaryd.runtime.controller import running_controller  # noqa: E402
from canaryd.runtime.log_setup import configure_logging  # noqa: E402
from canaryd.runtime.settings import Settings  # noqa: E402
from canaryd.sandbox.cluster import SandboxCluster  # noqa: E402
from tests.runtime import world  # noqa: E402

NS = "shop"
ERROR_SHARE = 1.0
MIN_SUCCESS = 99.0


class Timeline:
    """When the route first gave the canary traffic, when its status said Failed, when traffic left it."""

    def __init__(self, store: Any, name: str) -> None:
        self.name = name
        self.first_canary_weight: float | None = None
        self.failed: float | None = None
        self.back_on_primary: float | None = None
        self._unsubscribe = store.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        obj, now = event.obj, time.monotonic()
        if not isinstance(obj, dict) or (obj.get("metadata") or {}).get("name") != self.name:
            return
        kind = event.storage_key[1]
        if kind == "httproutes":
            for rule in obj["spec"].get("rules", []):
                refs = {r["name"]: r.get("weight", 1) for r in rule.get("backendRefs", [])}
                canary = refs.get(f"{self.name}-canary")
                if canary is None:
                    continue
                if canary > 0 and self.first_canary_weight is None:
                    self.first_canary_weight = now
                elif canary == 0 and self.first_canary_weight is not None and self.back_on_primary is None:
                    self.back_on_primary = now
        elif (
            kind == "canaries" and (obj.get("status") or {}).get("phase") == "Failed" and self.failed is None
        ):
            self.failed = now

    def close(self) -> None:
        self._unsubscribe()


def query_seconds(controller: Any) -> tuple[float, int]:
    """(total seconds, count) of the controller's Prometheus queries so far."""
    total, count = 0.0, 0
    for metric in controller.metrics.registry.collect():
        if metric.name == "canaryd_prometheus_query_duration_seconds":
            for sample in metric.samples:
                if sample.name.endswith("_sum"):
                    total += sample.value
                elif sample.name.endswith("_count"):
                    count += int(sample.value)
    return total, count


async def one_run(options: argparse.Namespace, index: int) -> dict[str, float]:
    async with SandboxCluster(
        with_prometheus=True,
        scrape_interval=options.scrape,
        ready_delay=0.2,
        tick_interval=0.25,
        default_rps=50,
    ) as cluster:
        store = cluster.store
        world.install_crds(store)
        world.install_gateway(store)
        store.ensure_namespace("canaryd-system")
        for doc in yaml.safe_load_all((REPO / "analysis" / "sandbox.yaml").read_text()):
            if doc:
                store.create("metrictemplates.canaryd.io", doc)
        name = f"shop-{index}"
        metric = {
            "name": "success-rate",
            "templateRef": {"name": "success-rate", "namespace": "canaryd-system"},
            "thresholdRange": {"min": MIN_SUCCESS},
            "interval": f"{options.window:g}s",
        }
        world.app(
            store, NS, name, step_weights=[20, 40, 60, 80], interval=f"{options.interval:g}s",
            threshold=options.threshold, metrics=[metric],
        )  # fmt: skip
        settings = Settings(
            kubeconfig=str(cluster.kubeconfig_path),
            prometheus_url=str(cluster.prometheus_url),
            health_address="0",
            metrics_address="0",
            qps=500,
            burst=1000,
        )
        async with running_controller(settings) as controller:
            await world.wait_until(
                lambda: world.status(store, NS, name).get("phase") == "Initialized", timeout=60
            )
            timeline = Timeline(store, name)
            queries_before = query_seconds(controller)
            world.new_revision(
                store, NS, name, "shop:2-broken", {"sandbox.canaryd.io/error-rate": str(ERROR_SHARE)}
            )
            await world.wait_until(
                lambda: timeline.back_on_primary is not None,
                timeout=options.interval * (options.threshold + 4) + 60,
                message="rolled back",
            )
            timeline.close()
            queries_after = query_seconds(controller)
    assert timeline.first_canary_weight and timeline.back_on_primary and timeline.failed
    spent, asked = (queries_after[0] - queries_before[0], queries_after[1] - queries_before[1])
    query = spent / asked if asked else 0.0
    write = timeline.back_on_primary - timeline.failed
    window_share = (
        options.scrape
        if ERROR_SHARE >= 1.0
        else max(options.scrape, options.window * (100 - MIN_SUCCESS) / (100 * ERROR_SHARE))
    )
    bound = options.scrape + window_share + options.interval * options.threshold + query + write
    return {
        "measured": timeline.back_on_primary - timeline.first_canary_weight,
        "bound": bound,
        "query": query,
        "write": write,
        "window_share": window_share,
    }


async def main_async(options: argparse.Namespace) -> None:
    results = []
    for index in range(options.runs):
        results.append(await one_run(options, index))
        r = results[-1]
        print(
            f"  run {index + 1}: time to rollback {r['measured']:.2f} s, bound {r['bound']:.2f} s "
            f"(scrape {options.scrape:g} + window share {r['window_share']:.2f} + "
            f"interval {options.interval:g} x threshold {options.threshold} + "
            f"query {r['query'] * 1000:.0f} ms "
            f"+ write {r['write'] * 1000:.0f} ms); measured - bound {r['measured'] - r['bound']:+.2f} s"
        )
        sys.stdout.flush()
    over = [r["measured"] - r["bound"] for r in results]
    print(
        f"\n  {options.runs} runs: measured - bound: worst {max(over):+.2f} s, "
        f"mean {statistics.fmean(over):+.2f} s "
        f"(goal: at most +1 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5, help="analysis interval, seconds")
    parser.add_argument("--threshold", type=int, default=2, help="failed checks before rollback")
    parser.add_argument("--scrape", type=float, default=1, help="Prometheus scrape interval, seconds")
    parser.add_argument("--window", type=float, default=5, help="the metric's rate() window, seconds")
    options = parser.parse_args()
    configure_logging("console", "warning")
    print(
        "== time to rollback: a canary failing every request from its first, "
        f"interval {options.interval:g}s, "
        f"threshold {options.threshold}, scrape {options.scrape:g}s, window {options.window:g}s =="
    )
    asyncio.run(main_async(options))


if __name__ == "__main__":
    main()
