"""Tests of the real-cluster harness itself; every test that uses the cluster is marked ``realcluster``."""

from __future__ import annotations

import pytest

from tests.realcluster.fixtures import (  # noqa: F401  (fixtures and hooks, re-exported for pytest)
    pytest_configure,
    pytest_terminal_summary,
    real_cluster,
    real_namespace,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "real_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realcluster)
