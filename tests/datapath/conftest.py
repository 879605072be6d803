"""Fixtures for datapath tests: the LB datapath loaded and pinned in the run's bpffs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hexlane.datapath.lb.loader import LbDatapath


@pytest.fixture(scope="module")
def lb(bpffs: Path, request: pytest.FixtureRequest) -> Iterator[LbDatapath]:
    """The LB datapath loaded with Cilium's default table size and seed, pinned privately."""
    root = bpffs / request.module.__name__.rsplit(".", 1)[-1]
    datapath = LbDatapath.load(root)
    try:
        yield datapath
    finally:
        datapath.unpin()
        datapath.close()
        shutil.rmtree(root, ignore_errors=True)
