"""The property the datapath will rest on: over random namespaces, pods (labels, container
ports), and NetworkPolicies (podSelector / namespaceSelector with matchLabels and
matchExpressions, both together, ipBlocks with excepts over the pods' and outside addresses,
ports with protocols, names and endPort, policyTypes), the verdict from hexlane's resolution —
identities, policy map entries looked up as the BPF program will, the remote identity from the
ipcache's longest-prefix match — equals the reference evaluator's, for every source,
destination, port and protocol."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_helpers import Cluster, netpol, pod

from hexlane.model.node import ContainerPort
from hexlane.policy.identity import pod_identity_labels
from hexlane.policy.resolve import PodInfo

NAMESPACES = ("x", "y", "z")
POD_KEYS = ("app", "role")
POD_VALUES = ("a", "b", "c")
NS_KEYS = ("team", "env")
PORT_NAMES = ("http", "dns", "metrics")
PORTS = (53, 80, 81, 8080, 9090)
PROBE_PORTS = (*PORTS, 1000)
PROTOCOLS = ("TCP", "UDP")
OUTSIDE = ("192.168.1.5", "192.168.1.200", "172.16.5.5", "8.8.8.8")
CIDRS = ("10.244.0.0/16", "10.244.1.0/24", "192.168.1.0/24", "192.168.0.0/16",
         "172.16.0.0/12", "0.0.0.0/0", "8.8.8.8/32", "192.168.1.5/32")
EXCEPT_CANDIDATES = ("10.244.1.0/24", "10.244.1.0/28", "192.168.1.0/25", "192.168.1.128/25",
                     "192.168.1.5/32", "172.16.0.0/16", "172.16.5.0/24", "8.8.8.8/32",
                     "192.168.0.0/16", "10.0.0.0/8")


def _strictly_inside(sub: str, sup: str) -> bool:
    a, b = ipaddress.ip_network(sub), ipaddress.ip_network(sup)
    return a != b and a.subnet_of(b)  # type: ignore[arg-type]


@st.composite
def selectors(draw: st.DrawFn, keys: tuple[str, ...], values: tuple[str, ...]
              ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ml = draw(st.dictionaries(st.sampled_from(keys), st.sampled_from(values), max_size=2))
    if ml:
        out["matchLabels"] = ml
    exprs = []
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        expr: dict[str, Any] = {"key": draw(st.sampled_from(keys)), "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = sorted(draw(st.sets(st.sampled_from(values), min_size=1)))
        exprs.append(expr)
    if exprs:
        out["matchExpressions"] = exprs
    return out


@st.composite
def peers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(("pod", "ns", "both", "ipblock")))
    if kind == "ipblock":
        cidr = draw(st.sampled_from(CIDRS))
        inside = [e for e in EXCEPT_CANDIDATES if _strictly_inside(e, cidr)]
        excepts = draw(st.lists(st.sampled_from(inside), max_size=2, unique=True)) if inside \
            else []
        return {"ipBlock": {"cidr": cidr, **({"except": excepts} if excepts else {})}}
    out = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(selectors(POD_KEYS, POD_VALUES))
    if kind in ("ns", "both"):
        out["namespaceSelector"] = draw(selectors(
            (*NS_KEYS, "kubernetes.io/metadata.name"), (*POD_VALUES, *NAMESPACES)))
    return out


@st.composite
def ports(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    proto = draw(st.sampled_from((None, *PROTOCOLS)))
    if proto:
        out["protocol"] = proto
    kind = draw(st.sampled_from(("none", "number", "name", "range")))
    if kind == "number":
        out["port"] = draw(st.sampled_from(PORTS))
    elif kind == "name":
        out["port"] = draw(st.sampled_from(PORT_NAMES))
    elif kind == "range":
        first = draw(st.sampled_from(PORTS))
        out["port"] = first
        out["endPort"] = first + draw(st.sampled_from((0, 1, 30, 1000, 9000)))
    return out


@st.composite
def rules(draw: st.DrawFn, peer_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ps = draw(st.lists(peers(), max_size=2))
    if ps:
        out[peer_key] = ps
    pts = draw(st.lists(ports(), max_size=2))
    if pts:
        out["ports"] = pts
    return out


@st.composite
def policies(draw: st.DrawFn, i: int) -> Any:
    # a third select every pod of their namespace, so that most examples isolate some pod
    pod_selector = draw(st.one_of(st.just({}), selectors(POD_KEYS, POD_VALUES)))
    spec: dict[str, Any] = {"podSelector": pod_selector}
    types = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["policyTypes"] = types
    for key, peer_key in (("ingress", "from"), ("egress", "to")):
        rs = draw(st.lists(rules(peer_key), max_size=2))
        if rs or draw(st.booleans()):
            spec[key] = rs
    return netpol(draw(st.sampled_from(NAMESPACES)), spec, name=f"p{i}")


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    namespaces = {}
    for ns in NAMESPACES:
        labels = draw(st.dictionaries(st.sampled_from(NS_KEYS), st.sampled_from(POD_VALUES),
                                      max_size=2))
        namespaces[ns] = {"kubernetes.io/metadata.name": ns, **labels}
    pods: list[PodInfo] = []
    by_identity: dict[frozenset[Any], tuple[ContainerPort, ...]] = {}
    for i in range(draw(st.integers(1, 6))):
        ns = draw(st.sampled_from(NAMESPACES))
        labels = draw(st.dictionaries(st.sampled_from(POD_KEYS), st.sampled_from(POD_VALUES),
                                      max_size=2))
        named = draw(st.dictionaries(st.sampled_from(PORT_NAMES),
                                     st.tuples(st.sampled_from(PORTS),
                                               st.sampled_from(PROTOCOLS)), max_size=3))
        p = pod(ns, f"p{i}", f"10.244.{i % 2}.{10 + i}", labels,
                ports=[(name, num, proto) for name, (num, proto) in sorted(named.items())])
        # pods of one identity have one set of container ports (replicas of a workload):
        # where they differ, hexlane allows their union (a documented over-approximation)
        ident = pod_identity_labels(p.labels, ns, namespaces[ns])
        ports_ = by_identity.setdefault(ident, p.ports)
        pods.append(PodInfo(p.namespace, p.name, p.labels, p.ip, ports_))
    pols = [draw(policies(i)) for i in range(draw(st.integers(1, 4)))]
    return Cluster(pods, namespaces, pols)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_resolution_agrees_with_the_reference_everywhere(c: Cluster) -> None:
    ends: list[Any] = [*c.pods, *OUTSIDE]
    for src in ends:
        for dst in ends:
            if src == dst or (isinstance(src, str) and isinstance(dst, str)):
                continue
            for port in PROBE_PORTS:
                for proto in PROTOCOLS:
                    c.ask(src, dst, port, proto)
