"""KubeClient timeouts: a server that never answers is an error, a request queued for a connection is not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from canaryd.adapters.kube import ApiError, KubeClient, load_configuration


@pytest.fixture
async def slow_server(tmp_path: Path):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("sleep", "0")))
        return web.json_response({"kind": "Status", "status": "Success"})

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    yield kubeconfig
    await runner.cleanup()


async def client(kubeconfig: Path) -> KubeClient:
    configuration = await load_configuration(str(kubeconfig), None)
    return KubeClient(configuration, qps=1000, burst=1000, max_connections=2, request_timeout=1.0)


async def test_requests_waiting_for_a_pooled_connection_are_queued_not_timed_out(slow_server):
    kube = await client(slow_server)
    try:
        started = asyncio.get_running_loop().time()
        # 16 requests of 0.3 s through 2 connections: the last waits about 2.1 s for its connection,
        # longer than the 1 s request timeout, and must still get its answer.
        answers = await asyncio.gather(*(kube.request("get", "GET", "/slow?sleep=0.3") for _ in range(16)))
        assert all(a["status"] == "Success" for a in answers)
        assert asyncio.get_running_loop().time() - started >= 2.0
    finally:
        await kube.close()


async def test_a_server_that_never_answers_is_an_error_after_the_timeout(slow_server):
    kube = await client(slow_server)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ApiError) as caught:
            await kube.request("get", "GET", "/slow?sleep=30")
        assert caught.value.status == 0
        assert 0.9 <= asyncio.get_running_loop().time() - started < 5
    finally:
        await kube.close()
