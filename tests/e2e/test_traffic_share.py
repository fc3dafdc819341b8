"""End to end: a run whose steps count only once the data plane carries their weight (analysis.trafficShare).

`canaryd run` as a process on each backend with a real Prometheus: the sandbox's traffic simulator with
analysis/sandbox.yaml's ``traffic-share``, and the real control plane with Traefik carrying real requests
and analysis/traefik.yaml's ``traefik-traffic-share``. What a user sees: a TrafficShifted Event per step
with the share measured on the data plane, and the condition at the end.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.backends import BACKENDS, Backend, assert_traffic_followed_the_weights, backend
from tests.e2e.test_e2e import until_phase
from tests.runtime import world

pytestmark = pytest.mark.e2e


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest) -> Any:
    async with backend(request.param, request) as chosen:
        yield chosen


async def test_each_step_counts_once_the_data_plane_carries_its_weight(env: Backend, tmp_path: Path) -> None:
    store, ns = env.store, env.ns
    env.app(
        "verified", step_weights=[20, 50], interval="3s", threshold=2, metrics=env.metrics(), deadline=120
    )
    canary = store.get("canaries.canaryd.io", "verified", ns)
    share_check = {
        "templateRef": {"name": f"{env.template_prefix}traffic-share", "namespace": env.system_ns},
        "tolerance": 10,
        "interval": "6s",
    }
    store.patch(
        "canaries.canaryd.io",
        "verified",
        {"spec": {"analysis": {**canary["spec"]["analysis"], "trafficShare": share_check}}},
        ns,
    )
    recorder = world.WeightRecorder(store, ns, "verified")
    ctl = env.controller(tmp_path).start()
    try:
        await until_phase(env, "verified", "Initialized", timeout=30)
        await env.carry_traffic("verified")
        world.new_revision(store, ns, "verified", "shop:2.0")
        await until_phase(env, "verified", "Succeeded", timeout=120)
        shifted = [e["note"] for e in world.events(store, ns, "verified") if e["reason"] == "TrafficShifted"]
        print(f"\ntraffic share on the {env.name} data plane, {ns}/verified: " + " | ".join(shifted))
        measured = [float(m) for note in shifted for m in re.findall(r"receives ([0-9.]+)%", note)]
        assert len(measured) == 2, shifted
        for weight, share in zip((20, 50), measured, strict=True):
            assert abs(share - weight) <= 10, f"step at {weight}% counted with {share}% measured"
        assert recorder.sequence == [(100, 0), (80, 20), (50, 50), (100, 0)]
        assert_traffic_followed_the_weights(env.traffic_report({"verified": recorder}))
    finally:
        recorder.close()
        code = ctl.stop()
    assert code == 0, ctl.log()[-3000:]
