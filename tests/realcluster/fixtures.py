"""pytest fixtures for tests that need a real Kubernetes control plane (``cluster.harness``).

Why this module exists: one session-scoped cluster (about 10-20 s to start once built) is shared by
every test that asks for ``real_cluster``; tests isolate themselves with ``real_namespace``. Tests
that install and remove cluster-wide objects (the install manifests, the Helm chart, canaryd's CRDs
and ClusterRoles) must not pull them from under the others: they share ``install_cluster``, a second
cluster of their own, and clean up after themselves. It is a plugin module (tests/conftest.py lists
it in ``pytest_plugins``) so that tests anywhere in the suite can use it.

``real_dataplane`` (session) adds the real data plane (``cluster.dataplane``): the pod CIDR in a
network namespace, every Ready pod answered by the pods' application, Traefik as the Gateway. The
cluster's pod CIDR is reserved per run (``cluster.podnet``) so that parallel runs never route the same
one.

Environment: ``CANARYD_REAL_CLUSTER=0`` skips these tests; with ``CI`` set (true/1) or
``CANARYD_REQUIRE_REAL_CLUSTER=1`` they can never be skipped: a cluster that cannot be built or
started fails them. Missing binaries are built (a cold build takes a while; see scripts/cluster build).
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator

import pytest

from cluster import podnet
from cluster.dataplane import DataPlane
from cluster.harness import Cluster, ClusterConfig, ClusterError, PortInUse

MARKER = "realcluster: needs the real control plane of scripts/cluster (built on first use)"
_started: list[str] = []


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def real_cluster_required() -> bool:
    return _truthy("CI") or _truthy("CANARYD_REQUIRE_REAL_CLUSTER")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "real_cluster" in fixtures or "install_cluster" in fixtures:
            item.add_marker(pytest.mark.realcluster)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _started:
        terminalreporter.write_line(line)
    _started.clear()


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[Cluster]:
    """A started cluster: 2 kwok Nodes, Gateway API standard CRDs Established, admin credentials.

    See ``cluster.harness.Cluster`` for what it offers (kubeconfig, api(), kubectl(), create_token(),
    audit_events(), restart_apiserver(), ...).
    """
    yield from _session_cluster("real cluster")


@pytest.fixture(scope="session")
def install_cluster() -> Iterator[Cluster]:
    """A second started cluster, like ``real_cluster``, for tests that install and remove canaryd itself.

    Its tests run one after another and each leaves it as it found it (no canaryd CRDs, ClusterRoles or
    canaryd-system): they delete cluster-wide objects that tests on ``real_cluster`` rely on.
    """
    yield from _session_cluster("install cluster")


def _session_cluster(label: str) -> Iterator[Cluster]:
    if os.environ.get("CANARYD_REAL_CLUSTER", "").strip() == "0":
        if real_cluster_required():
            pytest.fail(
                "CANARYD_REAL_CLUSTER=0, but CI or CANARYD_REQUIRE_REAL_CLUSTER requires the real cluster"
            )
        pytest.skip("real cluster disabled by CANARYD_REAL_CLUSTER=0")
    try:
        reservation = podnet.reserve()
    except podnet.PodNetError as error:
        pytest.fail(f"{label}: {error}", pytrace=False)
    for attempt in range(3):
        try:
            # A cold build takes a while: show its progress past pytest's capture.
            config = ClusterConfig(pod_cidr=reservation.cidr)
            cluster = Cluster.create(config, build_output=sys.__stderr__)
            try:
                seconds = cluster.start()
            except PortInUse:
                shutil.rmtree(cluster.run_dir, ignore_errors=True)
                raise
            break
        except PortInUse as error:  # another run took a port we had picked: pick again
            if attempt == 2:
                reservation.release()
                pytest.fail(f"{label}: {error}", pytrace=False)
        except ClusterError as error:
            reservation.release()
            pytest.fail(f"{label}: {error}", pytrace=False)
    _started.append(f"{label}: Kubernetes {cluster.version} started in {seconds:.1f} s ({cluster.run_dir})")
    try:
        yield cluster
    finally:
        cluster.stop(remove=True)
        reservation.release()


@pytest.fixture(scope="session")
def real_dataplane(real_cluster: Cluster) -> Iterator[DataPlane]:
    """Traefik and the pods' application on ``real_cluster``: see ``cluster.dataplane.DataPlane``.

    Gateways must come from ``real_dataplane.gateway(namespace, name)`` (the listener port is
    Traefik's entry point); requests go through ``cluster.load.RouteLoad(real_dataplane.web_url, host)``.
    """
    for attempt in range(3):
        try:
            plane = DataPlane.create(real_cluster)
            seconds = plane.start()
            break
        except PortInUse as error:  # another run took a port we had picked: pick again
            if attempt == 2:
                pytest.fail(f"real data plane: {error}", pytrace=False)
        except ClusterError as error:
            pytest.fail(f"real data plane: {error}", pytrace=False)
        except podnet.PodNetError as error:
            pytest.fail(f"real data plane: {error}", pytrace=False)
    _started.append(
        f"real data plane: pod network {plane.network.netns}, Traefik on {plane.web_url}, started in "
        f"{seconds:.1f} s ({plane.run_dir})"
    )
    try:
        yield plane
    finally:
        plane.stop(remove=True)


@pytest.fixture
def real_namespace(real_cluster: Cluster) -> Iterator[str]:
    """A fresh namespace on the real cluster, deleted (without waiting) after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    status, body = real_cluster.api(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    assert status == 201, body
    yield name
    real_cluster.api("DELETE", f"/api/v1/namespaces/{name}")
