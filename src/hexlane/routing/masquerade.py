"""The masquerade plan (pure): which pod traffic leaves the node with the node's address.

`plan_masquerade(local, nodes, native_routing_cidr)` says what the eBPF masquerade on the
node's external interface (`hexlane.datapath.masq`, `bpf/masq.c`) needs: the node IP, this
node's pod CIDR, the destinations that keep the pod's source address (Cilium's rules:
`ipv4NativeRoutingCIDR`, every known pod CIDR, every node IP), and the NAT port range.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from hexlane.routing.routes import NodeRouting

#: NAT source ports for masqueraded pod flows: above Linux's default ephemeral range
#: (32768-60999), so they never collide with the node's own connections.
MASQ_PORT_MIN = 61000
MASQ_PORT_MAX = 65535


@dataclass(frozen=True)
class MasqPlan:
    """What the eBPF masquerading on the node's external interface needs to know."""

    enabled: bool
    node_ip: IPv4Address
    pod_cidr: IPv4Network
    #: Destinations whose traffic keeps the pod's source address.
    nonmasq: frozenset[IPv4Network]
    port_min: int = MASQ_PORT_MIN
    port_max: int = MASQ_PORT_MAX


def plan_masquerade(local: NodeRouting, nodes: Iterable[NodeRouting],
                    native_routing_cidr: IPv4Network | None, *,
                    enabled: bool = True) -> MasqPlan:
    """Masquerade pods of `local` towards everything but the cluster (Cilium's rules).

    Traffic from the node's pod CIDR keeps its pod source address towards
    `ipv4NativeRoutingCIDR`, every known pod CIDR and every node IP; towards anything else it
    leaves with the node's IP.
    """
    nonmasq: set[IPv4Network] = set()
    if native_routing_cidr is not None:
        nonmasq.add(native_routing_cidr)
    for node in (local, *nodes):
        nonmasq.add(IPv4Network(f"{node.node_ip}/32"))
        nonmasq.update(node.pod_cidrs)
    if not local.pod_cidrs:
        raise ValueError(f"node {local.name} has no pod CIDR to masquerade")
    return MasqPlan(enabled, local.node_ip, local.pod_cidrs[0], frozenset(nonmasq))
