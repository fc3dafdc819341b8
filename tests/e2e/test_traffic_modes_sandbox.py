"""End to end on the sandbox: A/B testing and a mirror phase judged by a real Prometheus.

`canaryd run` as a process, the sandbox's traffic simulator and analysis/sandbox.yaml: the analysis of
an A/B run sees only the requests that matched (the header's share), and a mirror phase's analysis
sees the copies the canary served, so both promote a good revision and roll back a bad one on
metrics the canary really produced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.backends import SANDBOX, Backend, backend
from tests.e2e.test_e2e import until_phase
from tests.runtime import world

pytestmark = pytest.mark.e2e


@pytest.fixture
async def env(request: pytest.FixtureRequest) -> Any:
    async with backend(SANDBOX, request) as chosen:
        yield chosen


def app(env: Backend, name: str, **analysis: Any) -> None:
    env.app(name, step_weights=[50], interval="3s", threshold=2, metrics=env.metrics(), deadline=120)
    canary = env.store.get("canaries.canaryd.io", name, env.ns)
    wanted = {**canary["spec"]["analysis"], **analysis}
    canary["spec"]["analysis"] = {k: v for k, v in wanted.items() if v is not None}
    env.store.update("canaries.canaryd.io", canary, env.ns)


async def test_ab_and_mirror_runs_are_judged_on_the_requests_the_canary_served(
    env: Backend, tmp_path: Path
) -> None:
    store, ns = env.store, env.ns
    header = {"headers": [{"name": "x-canary", "value": "insider"}]}
    app(env, "ab-good", stepWeights=None, iterations=3, match=[header])
    app(env, "ab-bad", stepWeights=None, iterations=3, match=[header])
    app(env, "mirror-good", iterations=3, mirror={"percent": 50})
    app(env, "mirror-bad", iterations=3, mirror={"percent": 50})
    for name in ("ab-good", "ab-bad"):
        store.patch(
            "httproutes.gateway.networking.k8s.io", name,
            {"metadata": {"annotations": {"sandbox.canaryd.io/header-share": "0.25"}}}, ns,
        )  # fmt: skip
    recorders = {
        n: world.WeightRecorder(store, ns, n) for n in ("ab-good", "ab-bad", "mirror-good", "mirror-bad")
    }
    ctl = env.controller(tmp_path).start()
    try:
        for name in recorders:
            await until_phase(env, name, "Initialized", timeout=30)
        broken = {"sandbox.canaryd.io/error-rate": "0.6"}
        world.new_revision(store, ns, "ab-good", "shop:2.0")
        world.new_revision(store, ns, "ab-bad", "shop:2.0-broken", broken)
        world.new_revision(store, ns, "mirror-good", "shop:2.0")
        world.new_revision(store, ns, "mirror-bad", "shop:2.0-broken", broken)
        for name in ("ab-good", "mirror-good"):
            await until_phase(env, name, "Succeeded", timeout=90)
        for name in ("ab-bad", "mirror-bad"):
            await until_phase(env, name, "Failed", timeout=90)
        for name in recorders:
            rate = {m["name"]: m for m in world.status(store, ns, name)["metrics"]}["success-rate"]
            print(f"\n{name}: success-rate {rate.get('value')} ({rate['verdict']})")
        good = {m["name"]: m for m in world.status(store, ns, "ab-good")["metrics"]}
        assert good["success-rate"]["verdict"] == "Pass" and good["success-rate"]["value"] >= 95
        bad = {m["name"]: m for m in world.status(store, ns, "mirror-bad")["metrics"]}
        assert bad["success-rate"]["verdict"] == "Fail" and bad["success-rate"]["value"] < 60
        assert recorders["ab-good"].sequence == [(100, 0)]
        assert recorders["ab-bad"].sequence == [(100, 0)]
        assert recorders["mirror-good"].sequence == [(100, 0), (50, 50), (100, 0)]
        assert recorders["mirror-bad"].sequence == [(100, 0)], (
            "a bad revision got real traffic after mirroring"
        )
        for name in recorders:
            rules = store.get("httproutes.gateway.networking.k8s.io", name, ns)["spec"]["rules"]
            assert [r.get("name") for r in rules] == [None]
            assert not any(f["type"] == "RequestMirror" for f in rules[0].get("filters") or [])
    finally:
        for recorder in recorders.values():
            recorder.close()
        code = ctl.stop()
    assert code == 0, ctl.log()[-3000:]
