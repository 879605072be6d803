"""The cluster's nodes as routing sees them (pure): Node and CiliumNode objects -> NodeRouting.

A node is routable once two facts are known:

- its IP: the Node's first IPv4 `InternalIP` (`status.addresses`), else the CiliumNode's
  `spec.addresses` InternalIP (Cilium's agent publishes it there);
- its pod CIDRs: under `ipam.mode: cluster-pool` the CiliumNode's `spec.ipam.podCIDRs`
  (written by the operator), under `ipam.mode: kubernetes` the Node's `spec.podCIDRs` (or the
  older single `spec.podCIDR`), set by kube-controller-manager or the lab's controller.

`cluster_nodes` turns the informers' caches into `NodeRouting`s and a problem per object it
had to skip; `local_node` answers the same for this agent's own node, with why it is not
ready yet. Nothing here talks to the API or the kernel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hexlane.model.errors import Problem
from hexlane.routing.routes import NodeRouting

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class LocalNode:
    """This node's routing facts, or the reason they are not known yet."""

    routing: NodeRouting | None
    waiting_for: str = ""


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _ipv4(text: Any) -> IPv4Address | None:
    try:
        ip = ipaddress.ip_address(str(text))
    except ValueError:
        return None
    return ip if isinstance(ip, IPv4Address) else None


def _internal_ip(addresses: Any, field: str) -> IPv4Address | None:
    """The first IPv4 InternalIP of a list of addresses (each giving its IP in `field`)."""
    for addr in addresses or []:
        if isinstance(addr, Mapping) and addr.get("type") == "InternalIP":
            ip = _ipv4(addr.get(field))
            if ip is not None:
                return ip
    return None


def node_ip(node: Obj | None, ciliumnode: Obj | None) -> IPv4Address | None:
    """The node's IPv4 InternalIP (Node status first, then CiliumNode spec)."""
    ip = _internal_ip((node.get("status") or {}).get("addresses"), "address") if node else None
    if ip is None and ciliumnode is not None:
        ip = _internal_ip((ciliumnode.get("spec") or {}).get("addresses"), "ip")
    return ip


def pod_cidr_source(ipam_mode: str) -> str:
    """Where pod CIDRs come from under `ipam_mode`, as a field path for messages."""
    if ipam_mode == "kubernetes":
        return "Node spec.podCIDRs"
    return "CiliumNode spec.ipam.podCIDRs"


def node_pod_cidrs(node: Obj | None, ciliumnode: Obj | None, ipam_mode: str
                   ) -> tuple[tuple[IPv4Network, ...], list[Problem]]:
    """The node's IPv4 pod CIDRs under `ipam_mode`, and a problem per unusable entry."""
    problems: list[Problem] = []
    if ipam_mode == "kubernetes":
        if node is None:
            return (), problems
        spec = node.get("spec") or {}
        texts = list(spec.get("podCIDRs") or [])
        path = "spec.podCIDRs"
        if not texts and spec.get("podCIDR"):
            texts, path = [spec["podCIDR"]], "spec.podCIDR"
        obj = f"Node/{_name(node)}"
    else:
        if ciliumnode is None:
            return (), problems
        texts = list(((ciliumnode.get("spec") or {}).get("ipam") or {}).get("podCIDRs") or [])
        path = "spec.ipam.podCIDRs"
        obj = f"CiliumNode/{_name(ciliumnode)}"
    cidrs: list[IPv4Network] = []
    for i, text in enumerate(texts):
        field = f"{path}[{i}]" if path.endswith("s") else path
        try:
            net = ipaddress.ip_network(str(text), strict=True)
        except ValueError as err:
            problems.append(Problem(f"not a CIDR: {text!r} ({err})", field, obj=obj))
            continue
        if isinstance(net, IPv4Network):  # IPv6 pod CIDRs are for a dual-stack future
            if net.prefixlen > 30:
                problems.append(Problem(f"pod CIDR {net} is too small (prefix <= 30 wanted)",
                                        field, obj=obj))
                continue
            cidrs.append(net)
    return tuple(cidrs), problems


def cluster_nodes(nodes: Iterable[Obj], ciliumnodes: Iterable[Obj], ipam_mode: str
                  ) -> tuple[list[NodeRouting], list[Problem]]:
    """Every node whose IP and pod CIDRs are known, sorted by name, and what was skipped.

    Names are the union of Nodes and CiliumNodes: a CiliumNode with addresses routes even
    before its Node object is seen, and a node loses its routes as soon as either fact goes.
    """
    by_node = {_name(n): n for n in nodes if _name(n)}
    by_cnode = {_name(c): c for c in ciliumnodes if _name(c)}
    out: list[NodeRouting] = []
    problems: list[Problem] = []
    for name in sorted(set(by_node) | set(by_cnode)):
        node, cnode = by_node.get(name), by_cnode.get(name)
        cidrs, found = node_pod_cidrs(node, cnode, ipam_mode)
        problems += found
        ip = node_ip(node, cnode)
        if ip is not None and cidrs:
            out.append(NodeRouting(name, ip, cidrs))
    return out, problems


def local_node(name: str, node: Obj | None, ciliumnode: Obj | None, ipam_mode: str
               ) -> LocalNode:
    """This agent's own node, or what it still waits for (the Node, its IP, its pod CIDR)."""
    if node is None:
        return LocalNode(None, f"Node {name} to exist")
    ip = node_ip(node, ciliumnode)
    if ip is None:
        return LocalNode(None, f"an IPv4 InternalIP in Node {name} status.addresses")
    cidrs, _ = node_pod_cidrs(node, ciliumnode, ipam_mode)
    if not cidrs:
        return LocalNode(None, f"a pod CIDR in {pod_cidr_source(ipam_mode)} of {name}")
    return LocalNode(NodeRouting(name, ip, cidrs))
