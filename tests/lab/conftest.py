"""One lab per test session (2 nodes, a unique name), always torn down, also on failure."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from lab_helpers import Lab, hexlane, lab_namespaces


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    name = f"t{secrets.token_hex(3)}"
    lab = Lab(name)
    try:
        lab.run("up", "--nodes", "2", "--node-monitor-grace-period", "6", timeout=300)
        yield lab
    finally:
        hexlane("lab", "down", "--name", name, check=False)
        assert lab_namespaces(name) == []
        assert not lab.dir.exists()
