"""Which nodes the agent routes to, from Node and CiliumNode objects (pure).

Pins down: the node IP is the Node's IPv4 InternalIP, else the CiliumNode's; pod CIDRs come
from the CiliumNode under cluster-pool and from Node spec.podCIDRs/podCIDR under kubernetes;
a node is routable only when both are known, and loses its routes when either goes; bad
entries are skipped with a problem naming the object and field; the agent's own node says
what it still waits for.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.routing.nodes import cluster_nodes, local_node, node_ip, node_pod_cidrs


def node(name: str, ip: str | None = None, **spec: Any) -> dict[str, Any]:
    status = {"addresses": [{"type": "Hostname", "address": name}]}
    if ip is not None:
        status["addresses"].append({"type": "InternalIP", "address": ip})
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def cnode(name: str, *cidrs: str, ip: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ipam": {"podCIDRs": list(cidrs)}}
    if ip is not None:
        spec["addresses"] = [{"type": "InternalIP", "ip": ip}]
    return {"metadata": {"name": name}, "spec": spec}


def test_cluster_pool_needs_node_ip_and_ciliumnode_cidr() -> None:
    nodes = [node("a", "10.0.0.11"), node("b", "10.0.0.12"), node("c")]
    cnodes = [cnode("a", "10.42.1.0/24"), cnode("c", "10.42.3.0/24"),
              cnode("d", "10.42.4.0/24", ip="10.0.0.14")]
    routed, problems = cluster_nodes(nodes, cnodes, "cluster-pool")
    assert [(n.name, str(n.node_ip), [str(c) for c in n.pod_cidrs]) for n in routed] == [
        ("a", "10.0.0.11", ["10.42.1.0/24"]),
        ("d", "10.0.0.14", ["10.42.4.0/24"]),  # CiliumNode addresses stand in for the Node
    ]
    assert problems == []


def test_kubernetes_mode_reads_node_spec() -> None:
    nodes = [node("a", "10.0.0.11", podCIDRs=["10.42.1.0/24", "fd00::/64"]),
             node("b", "10.0.0.12", podCIDR="10.42.2.0/24")]
    routed, _ = cluster_nodes(nodes, [cnode("a", "10.99.0.0/24")], "kubernetes")
    assert {n.name: n.pod_cidrs for n in routed} == {
        "a": (IPv4Network("10.42.1.0/24"),), "b": (IPv4Network("10.42.2.0/24"),)}


def test_bad_cidrs_are_problems_with_paths() -> None:
    _, problems = cluster_nodes([node("a", "10.0.0.11")],
                                [cnode("a", "10.42.1.0/33", "10.42.1.0/31", "10.42.2.0/24")],
                                "cluster-pool")
    assert [(p.obj, p.path) for p in problems] == [
        ("CiliumNode/a", "spec.ipam.podCIDRs[0]"), ("CiliumNode/a", "spec.ipam.podCIDRs[1]")]
    cidrs, problems = node_pod_cidrs(node("b", podCIDR="nonsense"), None, "kubernetes")
    assert cidrs == () and problems[0].path == "spec.podCIDR" and problems[0].obj == "Node/b"


def test_node_ip_prefers_ipv4_internal_ip() -> None:
    n = node("a")
    n["status"]["addresses"] += [{"type": "InternalIP", "address": "fd00::1"},
                                 {"type": "InternalIP", "address": "10.0.0.5"}]
    assert node_ip(n, cnode("a", ip="10.0.0.9")) == IPv4Address("10.0.0.5")
    assert node_ip(node("a"), cnode("a", ip="10.0.0.9")) == IPv4Address("10.0.0.9")
    assert node_ip(None, None) is None


def test_local_node_says_what_it_waits_for() -> None:
    assert "Node n1 to exist" in local_node("n1", None, None, "cluster-pool").waiting_for
    assert "InternalIP" in local_node("n1", node("n1"), None, "cluster-pool").waiting_for
    waiting = local_node("n1", node("n1", "10.0.0.11"), None, "cluster-pool").waiting_for
    assert "CiliumNode spec.ipam.podCIDRs" in waiting
    ready = local_node("n1", node("n1", "10.0.0.11"), cnode("n1", "10.42.1.0/24"),
                       "cluster-pool")
    assert ready.routing is not None and ready.routing.pod_cidrs == (IPv4Network("10.42.1.0/24"),)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"),
                       st.tuples(st.booleans(), st.booleans(), st.integers(1, 200)),
                       max_size=6))
def test_routed_exactly_when_ip_and_cidr_known(spec: dict[str, tuple[bool, bool, int]]) -> None:
    """Property: a node is routed iff it has an IP and a CIDR; output sorted by name."""
    nodes = [node(name, f"10.0.0.{i}" if has_ip else None)
             for name, (has_ip, _, i) in spec.items()]
    cnodes = [cnode(name, f"10.42.{i}.0/24") for name, (_, has_cidr, i) in spec.items()
              if has_cidr]
    routed, _ = cluster_nodes(nodes, cnodes, "cluster-pool")
    assert [n.name for n in routed] == sorted(name for name, (ip, cidr, _) in spec.items()
                                              if ip and cidr)
