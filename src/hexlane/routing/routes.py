"""The pod routing plan (pure): the routes, VXLAN FDB and neighbour entries a node should have.

Given this node, the other nodes (name, node IP, pod CIDRs), the routing settings and the
local endpoints, `plan_routes` returns the desired state the netlink reconciler converges to.

- Service addresses the node's own connections must meet the load balancer at (the service
  CIDR, LoadBalancer and external IPs) are routed to `hexlane_host`, whose tc egress program
  translates them.
- Every local endpoint gets a permanent neighbour entry on its host-side veth (its MAC is
  hexlane's choice): the node never ARPs for its pods. A packet the load balancer sends by
  `bpf_redirect_neigh` while a pod's neighbour is still unresolved leaves, once resolved, with
  the Ethernet header it came with (hexlane_host's), and the pod drops it: the first
  connection of a node to a fresh pod through a ClusterIP was lost so.
- Every local endpoint gets a /32 route to its host-side veth (Cilium's
  `endpointRoutes.enabled`; without a BPF program on `hexlane_host` to redirect, hexlane always
  routes endpoints this way). The rest of the local pod CIDR is `unreachable`, so a packet to
  a free pod address is refused at once instead of wandering off through the default route.
- `routingMode: native` with `autoDirectNodeRoutes`: each remote pod CIDR via that node's IP
  (the nodes share the LAN). Without `autoDirectNodeRoutes` the LAN's router is trusted to
  know the pod CIDRs, as in Cilium, and no remote route is planned.
- `routingMode: tunnel`: a VXLAN device `hexlane_vxlan` (UDP 8472 as Cilium, learning off).
  Each node's VXLAN MAC is derived from its node IP (`vxlan_mac`), so no MAC needs to be
  exchanged: each remote pod CIDR is routed `via <remote router IP> dev hexlane_vxlan onlink`
  with `src <local router IP>`, a permanent neighbour entry maps the remote router IP to the
  remote VXLAN MAC, and an FDB entry sends that MAC to the remote node IP.

Names of the endpoint's links are decided here too (`host_ifname`: `lxc` + 12 hex digits of
the container ID's SHA-256, as Cilium; `endpoint_mac`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from hexlane.ipam.podcidr import router_ip
from hexlane.model.errors import Problem

HOST_DEVICE = "hexlane_host"
HOST_PEER_DEVICE = "hexlane_net"
VXLAN_DEVICE = "hexlane_vxlan"
VXLAN_PORT = 8472  # Cilium's VXLAN port (the Linux default 4789 is IANA's)
VXLAN_VNI = 2
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
#: The routing protocol number on every route hexlane installs (`ip route ... proto 104`),
#: so the reconciler knows its own routes and leaves every other route alone.
ROUTE_PROTO = 104

RoutingMode = Literal["native", "tunnel"]


@dataclass(frozen=True, order=True)
class NodeRouting:
    """What routing needs to know about one node."""

    name: str
    node_ip: IPv4Address
    pod_cidrs: tuple[IPv4Network, ...]


@dataclass(frozen=True)
class RoutingSettings:
    mode: RoutingMode = "tunnel"  # Cilium's default routingMode
    auto_direct_node_routes: bool = False
    vxlan_port: int = VXLAN_PORT
    vni: int = VXLAN_VNI
    lan_mtu: int = 1500

    @property
    def pod_mtu(self) -> int:
        """The MTU of pod interfaces: the LAN's, less the VXLAN overhead in tunnel mode."""
        return self.lan_mtu - VXLAN_OVERHEAD if self.mode == "tunnel" else self.lan_mtu


@dataclass(frozen=True)
class LocalEndpoint:
    ip: IPv4Address
    host_ifname: str
    mac: str = ""  # the pod interface's MAC (hexlane chose it): a permanent neighbour


@dataclass(frozen=True, order=True)
class RouteSpec:
    """One route of the main table. `kind` is the route type (unicast or unreachable)."""

    dst: IPv4Network
    kind: Literal["unicast", "unreachable"] = "unicast"
    gateway: IPv4Address | None = None
    device: str | None = None
    onlink: bool = False
    src: IPv4Address | None = None
    scope_link: bool = False


@dataclass(frozen=True, order=True)
class FdbSpec:
    mac: str
    dst: IPv4Address
    device: str = VXLAN_DEVICE


@dataclass(frozen=True, order=True)
class NeighborSpec:
    ip: IPv4Address
    mac: str
    device: str = VXLAN_DEVICE


@dataclass(frozen=True)
class VxlanSpec:
    name: str
    vni: int
    port: int
    local_ip: IPv4Address
    mac: str
    mtu: int


@dataclass(frozen=True)
class RoutePlan:
    routes: frozenset[RouteSpec]
    fdb: frozenset[FdbSpec]
    neighbors: frozenset[NeighborSpec]
    vxlan: VxlanSpec | None
    problems: tuple[Problem, ...] = ()


def vxlan_mac(node_ip: IPv4Address) -> str:
    """A node's VXLAN device MAC: locally administered unicast 0e:68 + the node IP's bytes."""
    return ":".join(f"{b:02x}" for b in (0x0E, 0x68, *node_ip.packed))


def host_ifname(container_id: str) -> str:
    """The host side of an endpoint's veth: `lxc` + 12 hex digits (15 chars, Linux's limit)."""
    return "lxc" + hashlib.sha256(container_id.encode()).hexdigest()[:12]


def endpoint_mac(container_id: str, ifname: str) -> str:
    """A stable, locally administered unicast MAC for the pod's interface."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).digest()
    first = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in (first, *digest[1:6]))


def plan_routes(local: NodeRouting, nodes: Iterable[NodeRouting], settings: RoutingSettings,
                endpoints: Sequence[LocalEndpoint] = (),
                service_routes: Iterable[IPv4Network] = ()) -> RoutePlan:
    """The desired routes, FDB and neighbour entries of `local` (see the module docstring)."""
    routes: set[RouteSpec] = set()
    fdb: set[FdbSpec] = set()
    neighbors: set[NeighborSpec] = set()
    problems: list[Problem] = []
    for ep in endpoints:
        routes.add(RouteSpec(IPv4Network(f"{ep.ip}/32"), device=ep.host_ifname,
                             scope_link=True))
        if ep.mac:
            neighbors.add(NeighborSpec(ep.ip, ep.mac, device=ep.host_ifname))
    for cidr in local.pod_cidrs:
        routes.add(RouteSpec(cidr, kind="unreachable"))
    for dst in sorted(set(service_routes)):
        if any(dst.overlaps(c) for n in (local, *nodes) for c in n.pod_cidrs):
            problems.append(Problem(f"service addresses {dst} overlap a pod CIDR; not routed "
                                    f"to {HOST_DEVICE}", obj=f"Node/{local.name}",
                                    severity="warning"))
            continue
        routes.add(RouteSpec(dst, device=HOST_DEVICE, scope_link=True))
    vxlan = None
    if settings.mode == "tunnel":
        vxlan = VxlanSpec(VXLAN_DEVICE, settings.vni, settings.vxlan_port, local.node_ip,
                          vxlan_mac(local.node_ip), settings.pod_mtu)
    local_router = router_ip(local.pod_cidrs[0]) if local.pod_cidrs else None
    claimed: dict[IPv4Network, str] = {c: local.name for c in local.pod_cidrs}
    for node in sorted(nodes):
        if node.name == local.name or node.node_ip == local.node_ip or not node.pod_cidrs:
            continue
        usable = []
        for cidr in node.pod_cidrs:
            clash = next((owner for other, owner in claimed.items() if other.overlaps(cidr)),
                         None)
            if clash is not None:
                problems.append(Problem(
                    f"pod CIDR {cidr} of node {node.name} overlaps one of node {clash}; "
                    "not routed", obj=f"Node/{node.name}", severity="warning"))
                continue
            claimed[cidr] = node.name
            usable.append(cidr)
        if not usable:
            continue
        if settings.mode == "native":
            if settings.auto_direct_node_routes:
                routes.update(RouteSpec(cidr, gateway=node.node_ip) for cidr in usable)
            continue
        remote_router = router_ip(node.pod_cidrs[0])
        mac = vxlan_mac(node.node_ip)
        fdb.add(FdbSpec(mac, node.node_ip))
        neighbors.add(NeighborSpec(remote_router, mac))
        routes.update(RouteSpec(cidr, gateway=remote_router, device=VXLAN_DEVICE, onlink=True,
                                src=local_router) for cidr in usable)
    return RoutePlan(frozenset(routes), frozenset(fdb), frozenset(neighbors), vxlan,
                     tuple(problems))
