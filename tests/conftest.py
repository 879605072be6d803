"""Shared test fixtures and the one gate of root-only tests. Tests read only files inside the
repository.

A test that needs root (network namespaces, BPF, mounts) says so with the `root` marker, on
the test or as the module's `pytestmark`; `pytest_collection_modifyitems` below skips exactly
those when the suite does not run as root. Nothing else checks the user.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, BPF, mounts)")
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
