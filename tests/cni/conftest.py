"""Fixtures for CNI tests: a node namespace with an endpoint agent (see tests/helpers/cni.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.cni import Agent, cni, conf
from hexlane.lab import netns
from hexlane.lab.netns import Topology


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with Topology("hxc") as t:
        yield t
        made = list(t.created)
    assert not any(netns.exists(n) for n in made)



@pytest.fixture(scope="module")
def node(topo: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One node namespace (no LAN) with an endpoint agent serving pod CIDR 10.244.1.0/28.

    Shared by a module's tests (starting an agent costs seconds); `fresh_node` wipes its
    endpoints after each test.
    """
    topo.add("node")
    netns.run(topo["node"], ["ip", "link", "add", "eth0", "type", "veth", "peer", "eth0p"])
    netns.run(topo["node"], ["ip", "addr", "add", "192.168.77.11/24", "dev", "eth0"])
    netns.run(topo["node"], ["ip", "link", "set", "eth0", "up"])
    agent = Agent(topo, "node", tmp_path_factory.mktemp("cni") / "state",
                  node_ip="192.168.77.11",
                  pod_cidr="10.244.1.0/28")
    agent.start()
    yield agent
    agent.stop()


@pytest.fixture
def fresh_node(topo: Topology, node: Agent) -> Iterator[Agent]:
    """The module's node, with every endpoint removed after the test (CNI GC, nothing valid)."""
    yield node
    if node.proc is None:
        node.start()
    rc, out = cni(topo["node"], "GC", conf("1.1.0", **{"cni.dev/valid-attachments": []}))
    assert rc == 0, out
