"""Which cluster ``canaryd run`` talks to: --kubeconfig (CANARYD_KUBECONFIG), $KUBECONFIG, in-cluster.

Two sandbox API servers stand for two clusters; the client's host says which
one a configuration chose, and a request proves it is usable.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from canaryd.adapters.kube import CORE_EVENTS, ConfigurationError, KubeClient
from canaryd.sandbox.server.apiserver import SandboxApiServer


@pytest.fixture
async def two_clusters(
    tmp_path: Path,
) -> AsyncIterator[tuple[SandboxApiServer, Path, SandboxApiServer, Path]]:
    first, second = SandboxApiServer(), SandboxApiServer()
    await first.start()
    await second.start()
    try:
        yield (
            first, first.write_kubeconfig(tmp_path / "first"),
            second, second.write_kubeconfig(tmp_path / "second"),
        )  # fmt: skip
    finally:
        await first.stop()
        await second.stop()


async def host_of(kubeconfig: str | None) -> str:
    client = await KubeClient.connect(kubeconfig)
    try:
        await client.list(CORE_EVENTS, "default")  # usable, not only configured
        return client.host
    finally:
        await client.close()


async def test_the_flag_wins_over_kubeconfig_and_kubeconfig_over_in_cluster(two_clusters, monkeypatch):
    first, first_config, second, second_config = two_clusters
    monkeypatch.setenv("KUBECONFIG", str(second_config))
    assert await host_of(str(first_config)) == first.url
    assert await host_of(None) == second.url
    # A list of files, as kubectl takes it: the first that names the current context wins.
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first_config), str(second_config)]))
    assert await host_of(None) == first.url


async def test_without_either_it_needs_the_pods_service_account(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # a ~/.kube/config is never read by the controller
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(ConfigurationError, match="set CANARYD_KUBECONFIG or KUBECONFIG"):
        await KubeClient.connect(None)
