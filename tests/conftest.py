"""Shared pytest configuration: fixture plugins, the --run-slow flag, and hypothesis without deadlines."""

from __future__ import annotations

import pytest
from hypothesis import settings

# A property test asserts what holds for every input, not how fast one input runs: on a machine
# shared with other builds a single example can take a second, and a deadline would fail it.
settings.register_profile("canaryd", deadline=None)
settings.load_profile("canaryd")

pytest_plugins = [
    "tests.fixtures.prometheus",
    "tests.fixtures.sandbox",
    "tests.fixtures.webhook_receiver",
    "tests.fixtures.chat_receivers",
    "tests.realcluster.fixtures",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run long soaks too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="long soak: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
