"""Three `canaryd run --shards` replicas share the Canaries; one is SIGKILLed mid-run and the others finish.

The replicas are real processes against the sandbox cluster and its real
Prometheus. Every Canary must still walk each of its weights exactly once, in
order (no step skipped, none taken twice: two steps never closer together than
the interval; a step whose weight never reached its route restarts its interval
instead), and the killed replica's shards must be taken by the survivors within
the lease duration plus one retry period.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from canaryd.adapters.shards import shard_lease_name
from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world

pytestmark = pytest.mark.prometheus

NS = "shop"
LEASE_NS = "canaryd-system"
SHARDS = 6
LEASE, RENEW, RETRY = 3.0, 2.0, 0.5
INTERVAL = 3
STEPS = [20, 40, 60, 80]
CANARIES = 9
PASSING = [{"name": "always", "query": "vector(100)", "thresholdRange": {"min": 1}}]


class StepRecorder:
    """Each Canary's (step, lastStepTime) as its status went through them, from the store's change feed."""

    def __init__(self, store: Any) -> None:
        self.steps: dict[str, list[tuple[int, str]]] = {}
        self._unsubscribe = store.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        obj = event.obj
        if event.storage_key[1] != "canaries" or not isinstance(obj, dict):
            return
        status = obj.get("status") or {}
        if status.get("phase") != "Progressing":
            return
        entry = (int(status.get("step", 0)), str(status.get("lastStepTime", "")))
        seen = self.steps.setdefault(obj["metadata"]["name"], [])
        if not seen or seen[-1] != entry:
            seen.append(entry)

    def close(self) -> None:
        self._unsubscribe()


async def replica(cluster: SandboxCluster, identity: str, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "canaryd.cli.main", "run",
        "--kubeconfig", str(cluster.kubeconfig_path), "--prometheus-url", str(cluster.prometheus_url),
        "--shards", str(SHARDS), "--leader-election-identity", identity,
        "--lease-duration", str(LEASE), "--renew-deadline", str(RENEW), "--retry-period", str(RETRY),
        "--health-address", "0", "--metrics-address", "0", "--qps", "500", "--burst", "1000",
        "--log-format", "json", "--log-level", "warning",
        stdout=asyncio.subprocess.DEVNULL, stderr=log.open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def holders(store: Any) -> dict[int, str]:
    found = {}
    for shard in range(SHARDS):
        lease = world.find(
            store, "leases.coordination.k8s.io", LEASE_NS, shard_lease_name("canaryd-leader", shard)
        )
        if lease is not None and lease["spec"].get("holderIdentity"):
            found[shard] = lease["spec"]["holderIdentity"]
    return found


async def test_three_replicas_carry_every_run_through_one_being_killed(tmp_path: Path):
    async with SandboxCluster(with_prometheus=True, ready_delay=0.05, tick_interval=0.5) as cluster:
        store = cluster.store
        world.install_crds(store)
        world.install_gateway(store)
        store.ensure_namespace(LEASE_NS)
        names = [f"app-{i}" for i in range(CANARIES)]
        for name in names:
            world.app(store, NS, name, step_weights=STEPS, interval=f"{INTERVAL}s", metrics=PASSING)
        recorders = {name: world.WeightRecorder(store, NS, name) for name in names}
        steps = StepRecorder(store)
        processes = {
            identity: await replica(cluster, identity, tmp_path / f"{identity}.log")
            for identity in ("r1", "r2", "r3")
        }
        try:
            await world.wait_until(
                lambda: len(holders(store)) == SHARDS and len(set(holders(store).values())) == 3,
                timeout=30,
                message="the three replicas hold every shard between them",
            )
            await world.wait_until(
                lambda: all(world.status(store, NS, n).get("phase") == "Initialized" for n in names),
                timeout=60,
                message="every Canary initialized",
            )
            for name in names:
                world.new_revision(store, NS, name, "app:2")
            await world.wait_until(
                lambda: sum(int(world.status(store, NS, n).get("step", 0)) >= 2 for n in names) >= 3,
                timeout=60,
                message="runs under way",
            )
            held = Counter(holders(store).values())
            victim = max(held, key=lambda identity: held[identity])
            orphaned = {shard for shard, holder in holders(store).items() if holder == victim}
            processes[victim].send_signal(signal.SIGKILL)
            await processes[victim].wait()
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            await world.wait_until(
                lambda: all(holders(store).get(s) not in (None, victim) for s in orphaned),
                timeout=LEASE * 4,
                message="the killed replica's shards taken over",
            )
            takeover = loop.time() - killed_at
            await world.wait_until(
                lambda: all(world.status(store, NS, n).get("phase") == "Succeeded" for n in names),
                timeout=120,
                message="every run finished",
            )
        finally:
            for process in processes.values():
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                await asyncio.wait_for(process.wait(), 30)
            steps.close()
            for recorder in recorders.values():
                recorder.close()
        assert set(holders(store).values()) <= {"r1", "r2", "r3"} - {victim}
        assert takeover <= LEASE + RETRY + 1.0, f"takeover took {takeover:.1f}s"
        expected = [(100, 0)] + [(100 - w, w) for w in STEPS] + [(100, 0)]
        for name in names:
            assert recorders[name].sequence == expected, (name, recorders[name].sequence, steps.steps[name])
            walked = steps.steps[name]
            # Steps only go forward, through every step; a step whose weight never reached the route before
            # its interval passed (its replica died in between) restarts its interval: same step, later time.
            numbers = [step for step, _ in walked]
            assert numbers == sorted(numbers) and set(numbers) == set(range(len(STEPS) + 1)), (name, walked)
            times = [datetime.fromisoformat(at.replace("Z", "+00:00")) for _, at in walked if at]
            gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
            assert all(gap >= INTERVAL - 0.05 for gap in gaps), (name, gaps)
