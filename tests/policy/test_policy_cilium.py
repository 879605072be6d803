"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy L3/L4 resolved (`policy/cilium.py`),
with the examples of Cilium's documentation: endpoint selectors limited to the policy's
namespace (clusterwide: any), entities, CIDR sets with except, toPorts with ANY and port 0,
ICMP types, deny over allow (the "Deny policies" page's table), enforcement mode always.
Every verdict is the datapath's: entries + the LPM lookup, through `ClusterPolicy.verdict`."""

from __future__ import annotations

from typing import Any

import pytest
from policy_helpers import ns_labels, pod

from hexlane.model.netpol import CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy
from hexlane.policy.identity import ReservedIdentity
from hexlane.policy.maps import INGRESS, PolicyEntry
from hexlane.policy.resolve import resolve_cluster

NAMESPACES = ns_labels("default", "other")
SERVER, CLIENT, OTHER_NS_CLIENT, THIRD = "10.244.0.10", "10.244.0.11", "10.244.1.11", "10.244.0.12"
PODS = [pod("default", "server", SERVER, {"app": "server"}, ports=[("http", 80, "TCP")]),
        pod("default", "client", CLIENT, {"app": "client"}),
        pod("other", "client", OTHER_NS_CLIENT, {"app": "client"}),
        pod("default", "third", THIRD, {"app": "third"})]
OUTSIDE = "192.0.2.7"


def cnp(spec: dict[str, Any], name: str = "p", namespace: str = "default"
        ) -> CiliumNetworkPolicy:
    return CiliumNetworkPolicy.parse({"apiVersion": "cilium.io/v2",
                                      "kind": "CiliumNetworkPolicy",
                                      "metadata": {"name": name, "namespace": namespace},
                                      "spec": spec})


def ccnp(spec: dict[str, Any], name: str = "c") -> CiliumClusterwideNetworkPolicy:
    return CiliumClusterwideNetworkPolicy.parse({
        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": name}, "spec": spec})


def verdicts(policies: list[CiliumNetworkPolicy], cases: list[tuple[str, str, int, str]],
             **kw: Any) -> list[bool]:
    cluster = resolve_cluster(PODS, NAMESPACES, [], cilium=policies,
                              local_node_ips=["10.0.0.11"], remote_node_ips=["10.0.0.12"],
                              **kw)
    return [cluster.verdict(*c) for c in cases]


SERVER_SEL = {"matchLabels": {"app": "server"}}
FROM_CLIENT = {"fromEndpoints": [{"matchLabels": {"app": "client"}}]}


def test_endpoint_selectors_stay_in_the_policy_namespace_unless_clusterwide() -> None:
    cases = [(CLIENT, SERVER, 80, "TCP"), (OTHER_NS_CLIENT, SERVER, 80, "TCP"),
             (THIRD, SERVER, 80, "TCP")]
    ns_policy = cnp({"endpointSelector": SERVER_SEL, "ingress": [FROM_CLIENT]})
    assert verdicts([ns_policy], cases) == [True, False, False]
    cw = ccnp({"endpointSelector": SERVER_SEL, "ingress": [FROM_CLIENT]})
    assert verdicts([cw], cases) == [True, True, False]
    # naming the namespace label reaches into another namespace
    named = cnp({"endpointSelector": SERVER_SEL, "ingress": [{"fromEndpoints": [
        {"matchLabels": {"k8s:app": "client", "k8s:io.kubernetes.pod.namespace": "other"}}]}]})
    assert verdicts([named], cases) == [False, True, False]
    # `fromEndpoints: [{}]` in a namespaced policy: every pod of its namespace
    same_ns = cnp({"endpointSelector": SERVER_SEL, "ingress": [{"fromEndpoints": [{}]}]})
    assert verdicts([same_ns], cases) == [True, False, True]


def test_the_deny_policies_table() -> None:
    """Cilium's "Deny Policies" page: allow L3 client + L4 80 and 81; then deny 80/TCP from
    the client; then deny the client at L3."""
    allow = cnp({"endpointSelector": SERVER_SEL, "ingress": [
        FROM_CLIENT,
        {**FROM_CLIENT, "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]},
        {**FROM_CLIENT, "toPorts": [{"ports": [{"port": "81", "protocol": "TCP"}]}]}]},
        name="allow")
    deny_80 = cnp({"endpointSelector": SERVER_SEL, "ingressDeny": [
        {**FROM_CLIENT, "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]},
        name="deny-80")
    deny_l3 = cnp({"endpointSelector": SERVER_SEL, "ingressDeny": [FROM_CLIENT]},
                  name="deny-l3")
    cases = [(CLIENT, SERVER, 81, "TCP"), (CLIENT, SERVER, 80, "TCP"),
             (CLIENT, SERVER, 8, "ICMP")]  # curl :81, curl :80, ping
    assert verdicts([allow], cases) == [True, True, True]
    assert verdicts([allow, deny_80], cases) == [True, False, True]
    assert verdicts([allow, deny_80, deny_l3], cases) == [False, False, False]
    # a deny-only policy still puts the pod in default deny (the page says so)
    assert verdicts([deny_80], [(THIRD, SERVER, 81, "TCP")]) == [False]


def test_entities() -> None:
    def ingress_from(*entities: str) -> list[bool]:
        pol = cnp({"endpointSelector": SERVER_SEL,
                   "ingress": [{"fromEntities": list(entities)}]})
        return verdicts([pol], [("10.0.0.11", SERVER, 80, "TCP"),  # this node: host
                                ("10.0.0.12", SERVER, 80, "TCP"),  # another: remote-node
                                (OUTSIDE, SERVER, 80, "TCP"),  # world
                                (CLIENT, SERVER, 80, "TCP")])  # a pod
    # (the host is allowed whenever ingress is enforced: allow-localhost)
    assert ingress_from("world") == [True, False, True, False]
    assert ingress_from("remote-node") == [True, True, False, False]
    assert ingress_from("cluster") == [True, True, False, True]
    assert ingress_from("all") == [True, True, True, True]
    host_only = cnp({"endpointSelector": SERVER_SEL, "ingress": [{"fromEntities": ["host"]}]})
    cluster = resolve_cluster(PODS, NAMESPACES, [], cilium=[host_only])
    assert cluster.endpoints[("default", "server")].entries == {
        PolicyEntry(INGRESS, int(ReservedIdentity.HOST))}


def test_egress_to_cidr_set_with_except_and_world() -> None:
    pol = cnp({"endpointSelector": {"matchLabels": {"app": "client"}}, "egress": [
        {"toCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["192.0.2.7/32"]}]}]})
    assert verdicts([pol], [(CLIENT, "192.0.2.8", 443, "TCP"), (CLIENT, OUTSIDE, 443, "TCP"),
                            (CLIENT, "198.51.100.1", 443, "TCP"),
                            (CLIENT, SERVER, 80, "TCP")]) == [True, False, False, False]
    world = cnp({"endpointSelector": {"matchLabels": {"app": "client"}},
                 "egress": [{"toEntities": ["world"]}]})
    assert verdicts([pol, world], [(CLIENT, OUTSIDE, 443, "TCP"),
                                   (CLIENT, "198.51.100.1", 53, "UDP"),
                                   (CLIENT, SERVER, 80, "TCP")]) == [True, True, False]


@pytest.mark.parametrize("ports, cases", [
    # protocol ANY (the default) with a port: TCP, UDP and SCTP on it
    ([{"port": "53"}], [(53, "TCP", True), (53, "UDP", True), (54, "UDP", False)]),
    # port "0": every port of the protocol
    ([{"port": "0", "protocol": "UDP"}], [(9, "UDP", True), (9, "TCP", False)]),
    # endPort: a range
    ([{"port": "8080", "endPort": 8083, "protocol": "TCP"}],
     [(8083, "TCP", True), (8084, "TCP", False)]),
    # a named port: the server's container port "http"
    ([{"port": "http", "protocol": "TCP"}], [(80, "TCP", True), (81, "TCP", False)]),
])
def test_to_ports(ports: list[dict[str, Any]], cases: list[tuple[int, str, bool]]) -> None:
    pol = cnp({"endpointSelector": SERVER_SEL,
               "ingress": [{**FROM_CLIENT, "toPorts": [{"ports": ports}]}]})
    got = verdicts([pol], [(CLIENT, SERVER, port, proto) for port, proto, _ in cases])
    assert got == [want for _, _, want in cases]


def test_icmp_types() -> None:
    pol = cnp({"endpointSelector": SERVER_SEL, "ingress": [
        {**FROM_CLIENT, "icmps": [{"fields": [{"type": "EchoRequest", "family": "IPv4"}]}]}]})
    assert verdicts([pol], [(CLIENT, SERVER, 8, "ICMP"), (CLIENT, SERVER, 13, "ICMP"),
                            (CLIENT, SERVER, 80, "TCP")]) == [True, False, False]


def test_enforcement_mode_always_denies_what_nothing_allows() -> None:
    cases = [(CLIENT, THIRD, 80, "TCP"), ("10.0.0.11", THIRD, 80, "TCP")]
    assert verdicts([], cases) == [True, True]
    assert verdicts([], cases, always=True) == [False, True]  # the host: allow-localhost



def test_trace_names_the_policies_that_select_allow_and_deny() -> None:
    from hexlane.policy.resolve import named_ports_by_identity
    from hexlane.policy.trace import End, trace

    allow = cnp({"endpointSelector": SERVER_SEL, "ingress": [FROM_CLIENT]}, name="allow")
    deny = ccnp({"endpointSelector": SERVER_SEL, "ingressDeny": [
        {**FROM_CLIENT, "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]},
        name="no-80")
    cluster = resolve_cluster(PODS, NAMESPACES, [], cilium=[allow, deny])
    pods = {p.key: p for p in PODS}
    ends = {k: End(pods[k], cluster.pod_identity[k]) for k in pods}
    named = named_ports_by_identity(PODS, cluster.pod_identity)

    def run(src: tuple[str, str], port: int):
        return trace(ends[src], ends[("default", "server")], port, "TCP", [], [allow, deny],
                     cluster.identities, named, cluster.cidr_identities)
    t80, t81 = run(("default", "client"), 80), run(("default", "client"), 81)
    assert not t80.allowed and t80.ingress.denied_by == (
        "CiliumClusterwideNetworkPolicy no-80",)
    assert t81.allowed and t81.ingress.allowed_by == ("CiliumNetworkPolicy default/allow",)
    assert set(t81.ingress.selected_by) == {"CiliumNetworkPolicy default/allow",
                                            "CiliumClusterwideNetworkPolicy no-80"}
    assert not t81.egress.enforced and t81.egress.allowed
    third = run(("default", "third"), 81)
    assert not third.allowed and "default deny" in third.ingress.reason
    assert third.to_dict()["verdict"] == "DENIED"
