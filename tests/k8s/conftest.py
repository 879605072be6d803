"""Fixtures for the client layer's tests: one apiserver process for the run, and one with a
short watch history (the helpers themselves are in k8s_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from k8s_helpers import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One apiserver for the whole run (tests use their own namespaces and names)."""
    srv = ServerProcess(tmp_path_factory.mktemp("k8s-apiserver"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def short_history_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An apiserver that keeps only 5 changes for resuming watches (older: 410 Gone)."""
    srv = ServerProcess(tmp_path_factory.mktemp("k8s-short-history"), "--watch-history", "5")
    try:
        yield srv
    finally:
        srv.stop()
