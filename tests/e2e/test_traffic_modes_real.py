"""canaryd's traffic modes on the real control plane, with Traefik carrying real requests to real pods.

The controller runs in-process against the real kube-apiserver with a
scripted analysis that passes (the analysis itself is covered by the
end-to-end scenarios); what is checked here is where Traefik sends each real
request while canaryd's rules are on the route, and after they are gone.
Every answer names the pod that served it (``x-canaryd-pod``).
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from canaryd.api.constants import Verdict
from canaryd.core.observations import MetricResult
from canaryd.runtime.controller import running_controller
from canaryd.runtime.settings import Settings
from cluster.load import canary_pods_of
from tests.cli.test_canaryctl import run_ctl
from tests.e2e.backends import REAL, RealBackend, backend
from tests.runtime import world

pytestmark = [pytest.mark.e2e, pytest.mark.realcluster]
HTTP = "httproutes.gateway.networking.k8s.io"
METRIC = [{"name": "ok", "query": "vector(1)", "thresholdRange": {"min": 0}}]


class PassingAnalysis:
    async def __call__(self, canary: Any, metrics: Any, now: datetime) -> tuple[MetricResult, ...]:
        return tuple(MetricResult(name=m.check.name, verdict=Verdict.PASS, value=1.0) for m in metrics)


def payments_route(real: RealBackend, name: str) -> dict[str, Any]:
    """A weighted /payments rule and a /healthz rule pinned to the primary, as app teams write them."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": real.ns},
        "spec": {
            "parentRefs": [{"name": real.gateway_name, "namespace": real.gateway_namespace}],
            "hostnames": [real.host(name)],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/payments"}}],
                    "backendRefs": [
                        {"name": f"{name}-primary", "port": 8080, "weight": 100},
                        {"name": f"{name}-canary", "port": 8080, "weight": 0},
                    ],
                },
                {
                    "matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
                    "backendRefs": [{"name": f"{name}-primary", "port": 8080}],
                },
            ],
        },
    }


async def who_answers(
    real: RealBackend, name: str, path: str, headers: dict[str, str], count: int
) -> Counter:
    """Send ``count`` real requests through Traefik; which kind of pod answered each ("canary", "primary")."""
    answered: Counter[str] = Counter()
    is_canary = canary_pods_of(name)
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(
                f"{real.plane.web_url}{path}",
                headers={"Host": real.host(name), **headers},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as response:
                await response.read()
                pod = response.headers.get("x-canaryd-pod")
                answered["none" if pod is None else "canary" if is_canary(pod) else "primary"] += 1
    return answered


async def until_answered_by(
    real: RealBackend, name: str, path: str, headers: dict[str, str], who: str
) -> None:
    """Wait until Traefik applies the route: every one of a few requests answered by ``who``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        answered = await who_answers(real, name, path, headers, 5)
        if answered == Counter({who: 5}):
            return
        if loop.time() > deadline:
            raise AssertionError(f"{path} {headers}: still answered by {dict(answered)}")
        await asyncio.sleep(0.2)


async def test_ab_header_requests_reach_only_the_canary_and_the_rest_only_the_primary(request):
    async with backend(REAL, request) as real:
        assert isinstance(real, RealBackend)
        store, name = real.store, "payments-api"
        store.create("deployments", world.deployment(real.ns, name))
        store.create(HTTP, payments_route(real, name))
        canary = world.canary(real.ns, name, interval="1s", metrics=copy.deepcopy(METRIC))
        analysis = canary["spec"]["analysis"]
        del analysis["stepWeights"]
        analysis.update(match=[{"headers": [{"name": "x-canary", "value": "insider"}]}], iterations=1000)
        store.create("canaries.canaryd.io", canary)
        settings = Settings(
            kubeconfig=str(real.kubeconfig_path), namespaces=[real.ns], health_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0", prometheus_url=real.prometheus_url, qps=200, burst=400,
        )  # fmt: skip
        async with running_controller(settings, analyzer=PassingAnalysis()):
            await world.wait_until(
                lambda: world.status(store, real.ns, name).get("phase") == "Initialized", timeout=60
            )
            as_written = store.get(HTTP, name, real.ns)["spec"]
            await until_answered_by(real, name, "/payments", {}, "primary")
            world.new_revision(store, real.ns, name, "app:2")
            await world.wait_until(
                lambda: (
                    store.get(HTTP, name, real.ns)["spec"]["rules"][0].get("name") == "abtest-0.canaryd.io"
                ),
                timeout=60,
                message="canaryd's A/B rule on the route",
            )
            insider = {"x-canary": "insider"}
            await until_answered_by(real, name, "/payments", insider, "canary")
            with_header = await who_answers(real, name, "/payments/charge", insider, 50)
            without = await who_answers(real, name, "/payments/charge", {}, 50)
            other_value = await who_answers(real, name, "/payments", {"x-canary": "outsider"}, 20)
            health = await who_answers(real, name, "/healthz", insider, 20)
            print(
                f"\nA/B through Traefik, {real.ns}/{name}: with x-canary: insider {dict(with_header)}; "
                f"without {dict(without)}; x-canary: outsider {dict(other_value)}; /healthz with the header "
                f"{dict(health)}"
            )
            assert with_header == Counter({"canary": 50})
            assert without == Counter({"primary": 50})
            assert other_value == Counter({"primary": 20})
            assert health == Counter({"primary": 20}), "the rule pinned to the primary moved"

            promoted = await asyncio.to_thread(
                run_ctl, "--kubeconfig", str(real.kubeconfig_path), "-n", real.ns, "promote", name
            )
            assert promoted.code == 0, promoted.err
            await world.wait_until(
                lambda: world.status(store, real.ns, name).get("phase") == "Succeeded", timeout=90
            )
            assert store.get(HTTP, name, real.ns)["spec"] == as_written
            await until_answered_by(real, name, "/payments", insider, "primary")
            after = await who_answers(real, name, "/payments", insider, 20)
            assert after == Counter({"primary": 20})
