"""One lab per test session (2 nodes, a unique name), always torn down, also on failure."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from helpers.lab import Lab, running_lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    with running_lab(f"t{secrets.token_hex(3)}", "--node-monitor-grace-period", "6") as lab:
        yield lab
