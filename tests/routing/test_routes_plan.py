"""The pod routing plan (pure): which routes, VXLAN FDB and neighbour entries a node wants.

Pins down: endpoint /32 routes on their host veth; the local pod CIDR unreachable; native mode
with autoDirectNodeRoutes routes each remote pod CIDR via the remote node IP (and nothing
without it); tunnel mode routes via the remote router IP on hexlane_vxlan with one FDB and one
neighbour entry per remote node, MACs derived from node IPs; overlapping CIDRs are refused with
a warning; the plan does not depend on the order nodes are given in; link names fit Linux.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.routing.routes import (
    VXLAN_DEVICE,
    FdbSpec,
    LocalEndpoint,
    NeighborSpec,
    NodeRouting,
    RouteSpec,
    RoutingSettings,
    endpoint_mac,
    host_ifname,
    plan_routes,
    vxlan_mac,
)


def node(i: int) -> NodeRouting:
    return NodeRouting(f"node{i}", IPv4Address(f"10.0.0.{10 + i}"),
                       (IPv4Network(f"10.42.{i}.0/24"),))


LOCAL, N2, N3 = node(1), node(2), node(3)


def test_native_with_auto_direct_routes() -> None:
    plan = plan_routes(LOCAL, [LOCAL, N2, N3],
                       RoutingSettings("native", auto_direct_node_routes=True),
                       [LocalEndpoint(IPv4Address("10.42.1.7"), "lxc0123456789ab")])
    assert plan.vxlan is None and not plan.fdb and not plan.neighbors
    assert plan.routes == {
        RouteSpec(IPv4Network("10.42.1.7/32"), device="lxc0123456789ab", scope_link=True),
        RouteSpec(IPv4Network("10.42.1.0/24"), kind="unreachable"),
        RouteSpec(IPv4Network("10.42.2.0/24"), gateway=IPv4Address("10.0.0.12")),
        RouteSpec(IPv4Network("10.42.3.0/24"), gateway=IPv4Address("10.0.0.13")),
    }


def test_native_without_auto_direct_routes_leaves_remote_cidrs_to_the_lan() -> None:
    plan = plan_routes(LOCAL, [N2, N3], RoutingSettings("native"))
    assert plan.routes == {RouteSpec(IPv4Network("10.42.1.0/24"), kind="unreachable")}


def test_tunnel_mode() -> None:
    plan = plan_routes(LOCAL, [N3, N2], RoutingSettings("tunnel", lan_mtu=1500))
    assert plan.vxlan is not None
    assert (plan.vxlan.name, plan.vxlan.port, plan.vxlan.mtu) == (VXLAN_DEVICE, 8472, 1450)
    assert plan.vxlan.local_ip == LOCAL.node_ip and plan.vxlan.mac == "0e:68:0a:00:00:0b"
    assert plan.fdb == {FdbSpec(vxlan_mac(N2.node_ip), N2.node_ip),
                        FdbSpec(vxlan_mac(N3.node_ip), N3.node_ip)}
    assert plan.neighbors == {NeighborSpec(IPv4Address("10.42.2.1"), "0e:68:0a:00:00:0c"),
                              NeighborSpec(IPv4Address("10.42.3.1"), "0e:68:0a:00:00:0d")}
    assert RouteSpec(IPv4Network("10.42.2.0/24"), gateway=IPv4Address("10.42.2.1"),
                     device=VXLAN_DEVICE, onlink=True,
                     src=IPv4Address("10.42.1.1")) in plan.routes


def test_overlapping_remote_cidr_is_not_routed() -> None:
    bad = NodeRouting("bad", IPv4Address("10.0.0.99"), (IPv4Network("10.42.1.128/25"),))
    plan = plan_routes(LOCAL, [bad, N2], RoutingSettings("native", True))
    assert all(r.dst != IPv4Network("10.42.1.128/25") for r in plan.routes)
    assert "overlaps" in str(plan.problems[0]) and plan.problems[0].severity == "warning"


def test_link_names_and_macs() -> None:
    name = host_ifname("c0ffee" * 10)
    assert name.startswith("lxc") and len(name) == 15
    assert host_ifname("a") != host_ifname("b")
    mac = endpoint_mac("abc", "eth0")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert mac == endpoint_mac("abc", "eth0") != endpoint_mac("abc", "net1")


@settings(max_examples=100, deadline=None)
@given(st.permutations([node(i) for i in range(1, 7)]), st.sampled_from(["native", "tunnel"]))
def test_plan_ignores_node_order_and_never_routes_a_cidr_twice(
        nodes: list[NodeRouting], mode: str) -> None:
    settings_ = RoutingSettings(mode, auto_direct_node_routes=True)  # type: ignore[arg-type]
    plan = plan_routes(LOCAL, nodes, settings_)
    assert plan == plan_routes(LOCAL, sorted(nodes), settings_)
    dsts = [r.dst for r in plan.routes]
    assert len(dsts) == len(set(dsts)) == 6  # local unreachable + 5 remote nodes


def test_service_addresses_are_routed_to_the_host_device() -> None:
    """The service CIDR and LoadBalancer/external IPs go to hexlane_host (the node's own
    connections meet the load balancer there); one overlapping a pod CIDR is refused."""
    from hexlane.routing.routes import HOST_DEVICE

    wanted = [IPv4Network("10.43.0.0/16"), IPv4Network("10.0.0.240/32"),
              IPv4Network("10.42.2.7/32")]
    plan = plan_routes(LOCAL, [N2], RoutingSettings(mode="native", auto_direct_node_routes=True),
                       service_routes=wanted)
    host = {r.dst for r in plan.routes if r.device == HOST_DEVICE}
    assert host == {IPv4Network("10.43.0.0/16"), IPv4Network("10.0.0.240/32")}
    assert all(r.scope_link for r in plan.routes if r.device == HOST_DEVICE)
    assert [p for p in plan.problems if "10.42.2.7/32" in str(p)]


def test_local_endpoints_get_permanent_neighbours() -> None:
    """The node never ARPs for its own pods (their MACs are hexlane's choice): a neighbour
    entry per endpoint with a MAC, on its host veth."""
    ep = LocalEndpoint(IPv4Address("10.42.1.9"), "lxc0123456789ab", "0a:58:0a:2a:01:09")
    plan = plan_routes(LOCAL, [], RoutingSettings(mode="native"), [ep])
    assert NeighborSpec(ep.ip, ep.mac, device=ep.host_ifname) in plan.neighbors
    bare = plan_routes(LOCAL, [], RoutingSettings(mode="native"),
                       [LocalEndpoint(ep.ip, ep.host_ifname)])
    assert not bare.neighbors
