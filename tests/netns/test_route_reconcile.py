"""The netlink reconciler converges a node's routes, VXLAN device, FDB and neighbours to a plan.

Runs `hexlane.datapath.netlink.apply_plan` in a node namespace made by the test, through a
sequence of plans: native with two peers, a peer gone, a switch to tunnel mode, back to native.
Pins down: what the plan says is there after each step, what it no longer says is removed, a
second apply of the same plan changes nothing, and routes hexlane did not make (another
protocol, same table) are never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest

from helpers.cni import node_with_eth0
from hexlane.datapath import netlink
from hexlane.lab import netns
from hexlane.lab.netns import Topology
from hexlane.routing.routes import NodeRouting, RoutingSettings, plan_routes

pytestmark = [pytest.mark.slow, pytest.mark.root]


def node(i: int) -> NodeRouting:
    return NodeRouting(f"n{i}", IPv4Address(f"10.85.0.{10 + i}"),
                       (IPv4Network(f"10.86.{i}.0/24"),))


@pytest.fixture
def node_ns() -> Iterator[str]:
    with Topology("hxr") as topo:
        name = node_with_eth0(topo, "10.85.0.11/24")
        # Someone else's route, in the same table: must survive every reconcile.
        netns.run(name, ["ip", "route", "add", "192.0.2.0/24", "via", "10.85.0.1",
                         "proto", "static"])
        yield name


def apply(ns: str, plan: object) -> netlink.ReconcileReport:
    async def go() -> netlink.ReconcileReport:
        async with netlink.iproute_in() as ipr:
            # The router IP the tunnel routes use as source, as the agent sets it up first.
            await netlink.ensure_host_device(ipr, IPv4Address("10.86.1.1"), 1500)
            return await netlink.apply_plan(ipr, plan)  # type: ignore[arg-type]

    return netns.run_in_netns(netns.netns_path(ns), lambda: asyncio.run(go()))


def routes(ns: str) -> str:
    return netns.run(ns, ["ip", "route", "show"]).stdout


def test_plans_converge_and_foreign_routes_stay(node_ns: str) -> None:
    local = node(1)
    native = RoutingSettings("native", auto_direct_node_routes=True)

    report = apply(node_ns, plan_routes(local, [node(2), node(3)], native))
    assert report.added and not report.failed
    table = routes(node_ns)
    assert "10.86.2.0/24 via 10.85.0.12 dev eth0 proto 104" in table
    assert "10.86.3.0/24 via 10.85.0.13 dev eth0 proto 104" in table
    assert "unreachable 10.86.1.0/24 proto 104" in table
    again = apply(node_ns, plan_routes(local, [node(3), node(2)], native))
    assert not again.changed and not again.failed  # idempotent, order does not matter

    report = apply(node_ns, plan_routes(local, [node(3)], native))
    assert report.removed == ["route 10.86.2.0/24"]
    assert "10.86.2.0/24" not in routes(node_ns)

    report = apply(node_ns, plan_routes(local, [node(2), node(3)], RoutingSettings("tunnel")))
    assert not report.failed
    table = routes(node_ns)
    assert "10.86.2.0/24 via 10.86.2.1 dev hexlane_vxlan proto 104 src 10.86.1.1 onlink" \
        in table
    neigh = netns.run(node_ns, ["ip", "neigh", "show", "dev", "hexlane_vxlan"]).stdout
    assert "10.86.3.1 lladdr 0e:68:0a:55:00:0d PERMANENT" in neigh
    assert not apply(node_ns, plan_routes(local, [node(2), node(3)],
                                          RoutingSettings("tunnel"))).changed

    report = apply(node_ns, plan_routes(local, [node(3)], RoutingSettings("tunnel")))
    fdb = netns.run(node_ns, ["bridge", "fdb", "show", "dev", "hexlane_vxlan"]).stdout
    assert "10.85.0.12" not in fdb and "dst 10.85.0.13" in fdb

    apply(node_ns, plan_routes(local, [], native))
    assert "hexlane_vxlan" not in netns.run(node_ns, ["ip", "link"]).stdout
    table = routes(node_ns)
    assert "10.86.3.0/24" not in table
    assert "192.0.2.0/24 via 10.85.0.1 dev eth0 proto static" in table
