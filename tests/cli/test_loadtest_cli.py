"""``canaryd loadtest`` as its own process: configured by flags and environment, serving until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from datetime import UTC, datetime

import aiohttp

from canaryd.adapters.webhook_delivery import DeliveryPolicy, WebhookSender
from canaryd.core.webhooks import HookType, build_payload
from tests.loadtest.backends import HttpBackend


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_healthy(url: str, process: asyncio.subprocess.Process, timeout: float = 20) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            assert process.returncode is None, "canaryd loadtest exited early"
            try:
                async with http.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def test_the_command_serves_webhooks_sends_load_and_stops_on_sigterm() -> None:
    backend = HttpBackend()
    await backend.start()
    port = _free_port()
    env = {**os.environ, "CANARYD_LOADTEST_NAMESPACES": "payments", "CANARYD_LOADTEST_MAX_RPS": "50"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "canaryd.cli.main",
        "loadtest",
        "--address",
        f"127.0.0.1:{port}",
        "--test-host",
        "payments-api-canary.payments=127.0.0.1",
        "--log-format",
        "console",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    sender = WebhookSender()
    try:
        await _wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
        payload = build_payload(
            hook=HookType.ROLLOUT,
            name="payments-api",
            namespace="payments",
            phase="Progressing",
            revision="r2",
            weight=10,
            step=1,
            failed_checks=0,
            now=datetime.now(UTC),
            metadata={
                "url": f"http://payments-api-canary.payments:{backend.port}/",
                "rps": "20",
                "duration": "1s",
                "wait": "true",
            },
        )
        result = await sender.call_webhook(
            f"http://127.0.0.1:{port}/", payload, policy=DeliveryPolicy(timeout=20)
        )
        assert result.ok, result.describe()
        assert 10 <= len(backend.counts.arrivals) <= 21
        too_fast = {**payload["metadata"], "rps": "80"}
        refused = await sender.call_webhook(
            f"http://127.0.0.1:{port}/", {**payload, "metadata": too_fast}, policy=DeliveryPolicy(timeout=20)
        )
        assert refused.status == 422 and "at most 50" in refused.message, "the environment set the maximum"
    finally:
        await sender.close()
        await backend.stop()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, stderr.decode()
    assert "load tester serving" in stderr.decode()


async def test_a_test_host_outside_loopback_is_refused_at_start() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "canaryd.cli.main",
        "loadtest",
        "--namespaces",
        "payments",
        "--test-host",
        "payments-api-canary.payments=10.0.0.5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    assert "loopback" in stderr.decode()
