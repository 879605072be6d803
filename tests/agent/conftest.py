"""Fixtures for agent tests: the namespace cluster (the helpers themselves are in
agent_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_helpers import Cluster

from hexlane.lab import netns
from hexlane.lab.netns import Topology


@pytest.fixture(scope="module")
def cluster(bpffs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Topology("hxa") as topo:
        c = Cluster(topo, tmp_path_factory.mktemp("agent"), bpffs / "agent")
        try:
            yield c
        finally:
            c.stop()
        made = list(topo.created)
    assert not any(netns.exists(n) for n in made)
