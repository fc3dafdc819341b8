"""Tests of the real-cluster harness itself; every test here is marked ``realcluster``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realcluster.fixtures import (  # noqa: F401  (fixtures and hooks, re-exported for pytest)
    pytest_configure,
    pytest_terminal_summary,
    real_cluster,
    real_namespace,
)

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.realcluster)
