"""The Prometheus helper the sandbox and the tests depend on: start, backfill, scrape, stop by PID."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import web

from canaryd.sandbox.prometheus_server import (
    BackfillError,
    PrometheusNotInstalledError,
    PrometheusServer,
)
from tests.fixtures.prometheus import QUERY_TIME, PrometheusFactory, gauge, to_openmetrics


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_backfilled_values_are_exact_and_stop_ends_the_process(prometheus_factory: PrometheusFactory) -> None:
    server = prometheus_factory(series=[gauge("helper_value", {"k": "v"}, 12.25)])
    pid = server.pid
    assert pid is not None and _alive(pid)

    data = server.query('helper_value{k="v"}', at=QUERY_TIME)

    assert data["result"][0]["value"][1] == "12.25"
    server.stop()
    assert not _alive(pid)
    assert not server.running


def test_backfill_on_a_running_server_is_visible_at_once_on_the_same_port(
    prometheus_factory: PrometheusFactory,
) -> None:
    server = prometheus_factory()
    url = server.url

    server.backfill(to_openmetrics([gauge("late_value", {}, 3.0)]))

    assert server.url == url
    assert server.query("late_value", at=QUERY_TIME)["result"][0]["value"][1] == "3"


def test_bad_openmetrics_input_is_reported() -> None:
    with PrometheusServer() as server, pytest.raises(BackfillError, match="promtool"):
        server.backfill('broken{label="no closing quote} 1 1700000000\n')


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    hint = "apt-get install -y --no-install-recommends prometheus"
    with pytest.raises(PrometheusNotInstalledError, match=hint):
        PrometheusServer()


async def test_scrapes_its_targets(prometheus_factory: PrometheusFactory) -> None:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text='scraped_requests_total{code="200"} 7\n', content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        server = prometheus_factory(scrape_targets=[f"127.0.0.1:{port}"], scrape_interval="1s")
        series = await asyncio.to_thread(server.wait_for_series, "scraped_requests_total", 30.0)
        assert series[0]["metric"]["instance"] == f"127.0.0.1:{port}"
        assert series[0]["value"][1] == "7"
    finally:
        await runner.cleanup()
