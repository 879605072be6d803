"""NetworkPolicy resolution, feature by feature, with the examples of Kubernetes' NetworkPolicy
documentation; every verdict is checked both through hexlane's entries + lookups and through the
reference evaluator (`Cluster.ask`)."""

from __future__ import annotations

import ipaddress

import pytest
from policy_helpers import Cluster, netpol, ns_labels, pod

from hexlane.model.netpol import CIDRBlock
from hexlane.policy.identity import LOCAL_IDENTITY_FLAG, ReservedIdentity
from hexlane.policy.maps import EGRESS, INGRESS, PolicyEntry
from hexlane.policy.resolve import cidr_pieces, policy_prefixes

DB = ("default", "db")
FRONT = ("default", "frontend")
OTHER = ("default", "other")
MYPROJ = ("myproject", "any")
ELSEWHERE = ("elsewhere", "any")

NAMESPACES = ns_labels("default", "myproject", "elsewhere",
                       myproject={"project": "myproject"})
PODS = [pod("default", "db", "10.244.0.10", {"role": "db"}),
        pod("default", "frontend", "10.244.0.11", {"role": "frontend"}),
        pod("default", "other", "10.244.0.12", {"role": "other"}),
        pod("myproject", "any", "10.244.1.10", {"role": "whatever"}),
        pod("elsewhere", "any", "10.244.2.10", {"role": "frontend"})]

# The example of https://kubernetes.io/docs/concepts/services-networking/network-policies/
DOCS_EXAMPLE = netpol("default", {
    "podSelector": {"matchLabels": {"role": "db"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [{"from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                          {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                          {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                 "ports": [{"protocol": "TCP", "port": 6379}]}],
    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                "ports": [{"protocol": "TCP", "port": 5978}]}]}, name="test-network-policy")


def test_the_docs_example_policy() -> None:
    c = Cluster(PODS, NAMESPACES, [DOCS_EXAMPLE])
    # ingress to db: frontend pods of default, any pod of myproject, 172.17/16 but 172.17.1/24
    assert c.ask(FRONT, DB, 6379)
    assert c.ask(MYPROJ, DB, 6379)
    assert c.ask("172.17.0.5", DB, 6379)
    assert c.ask("172.17.200.1", DB, 6379)
    assert not c.ask("172.17.1.5", DB, 6379)      # except
    assert not c.ask("172.18.0.1", DB, 6379)      # outside the block
    assert not c.ask(OTHER, DB, 6379)             # role=other
    assert not c.ask(ELSEWHERE, DB, 6379)         # role=frontend, but another namespace
    assert not c.ask(FRONT, DB, 6380)             # other port
    assert not c.ask(FRONT, DB, 6379, "UDP")      # other protocol
    # egress from db: only 10.0.0.0/24 on TCP 5978; nothing else, not even other pods
    assert c.ask(DB, "10.0.0.7", 5978)
    assert not c.ask(DB, "10.0.0.7", 5979)
    assert not c.ask(DB, "10.0.1.7", 5978)
    assert not c.ask(DB, FRONT, 80)
    # pods no policy selects are not isolated
    assert c.ask(OTHER, FRONT, 1234)
    assert c.ask("8.8.8.8", OTHER, 22, "UDP")
    ep = c.resolved.endpoints[DB]
    assert ep.ingress_enforced and ep.egress_enforced
    assert not c.resolved.endpoints[FRONT].ingress_enforced


def test_the_docs_example_as_entries() -> None:
    c = Cluster(PODS, NAMESPACES, [DOCS_EXAMPLE])
    r = c.resolved
    front_id = r.pod_identity[FRONT]
    myproj_id = r.pod_identity[MYPROJ]
    entries = r.endpoints[DB].entries
    assert PolicyEntry(INGRESS, front_id, 6, 6379, 16) in entries
    assert PolicyEntry(INGRESS, myproj_id, 6, 6379, 16) in entries
    assert PolicyEntry(INGRESS, int(ReservedIdentity.HOST)) in entries  # allow-localhost
    # the ipBlock: 172.17.0.0/16 less 172.17.1.0/24 is 8 prefixes, each a CIDR identity
    pieces = cidr_pieces(CIDRBlock("172.17.0.0/16", ("172.17.1.0/24",)))
    assert len(pieces) == 8 and ipaddress.IPv4Network("172.17.1.0/24") not in pieces
    for p in pieces:
        ident = r.cidr_identities[p]
        assert ident & LOCAL_IDENTITY_FLAG
        assert r.ipcache[p] == ident
        assert PolicyEntry(INGRESS, ident, 6, 6379, 16) in entries
    assert PolicyEntry(EGRESS, r.cidr_identities[ipaddress.IPv4Network("10.0.0.0/24")], 6,
                       5978, 16) in entries
    assert r.ipcache[ipaddress.IPv4Network("0.0.0.0/0")] == ReservedIdentity.WORLD
    assert r.ipcache[ipaddress.IPv4Network("10.244.0.10/32")] == r.pod_identity[DB]


DENY_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}
ALLOW_ALL_INGRESS = {"podSelector": {}, "ingress": [{}]}
DENY_EGRESS = {"podSelector": {}, "policyTypes": ["Egress"]}
ALLOW_ALL_EGRESS = {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize(("specs", "ingress", "egress"), [
    ([], True, True),
    ([DENY_INGRESS], False, True),
    ([DENY_INGRESS, ALLOW_ALL_INGRESS], True, True),   # policies add up
    ([DENY_EGRESS], True, False),
    ([DENY_EGRESS, ALLOW_ALL_EGRESS], True, True),
    ([DENY_ALL], False, False),
])
def test_default_deny_and_allow_all(specs, ingress, egress) -> None:
    c = Cluster(PODS, NAMESPACES, [netpol("default", s, name=f"p{i}")
                                   for i, s in enumerate(specs)])
    # into default (from another namespace and from outside), and out of it
    assert c.ask(MYPROJ, DB, 80) is ingress
    assert c.ask("203.0.113.9", FRONT, 443) is ingress
    assert c.ask(DB, MYPROJ, 80) is egress
    assert c.ask(DB, "203.0.113.9", 443, "UDP") is egress
    # within default both have to allow
    assert c.ask(DB, FRONT, 80) is (ingress and egress)
    # other namespaces are not affected
    assert c.ask(MYPROJ, ELSEWHERE, 80)


NS_AND_POD = {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
    {"namespaceSelector": {"matchLabels": {"user": "alice"}},
     "podSelector": {"matchLabels": {"role": "client"}}}]}]}
NS_OR_POD = {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
    {"namespaceSelector": {"matchLabels": {"user": "alice"}}},
    {"podSelector": {"matchLabels": {"role": "client"}}}]}]}


@pytest.mark.parametrize(("spec", "expect"), [
    # the docs: "contains a single from element allowing connections from Pods with the label
    # role=client in namespaces with the label user=alice"
    (NS_AND_POD, {"alice/client": True, "alice/server": False, "bob/client": False,
                  "default/client": False}),
    # "contains two elements in the from array, and allows connections from Pods in the local
    # Namespace with the label role=client, or from any Pod in any namespace with the label
    # user=alice"
    (NS_OR_POD, {"alice/client": True, "alice/server": True, "bob/client": False,
                 "default/client": True}),
])
def test_namespace_and_pod_selector_vs_or(spec, expect) -> None:
    namespaces = ns_labels("default", "alice", "bob", alice={"user": "alice"},
                           bob={"user": "bob"})
    pods = [pod("default", "db", "10.244.0.10", {"role": "db"}),
            pod("default", "client", "10.244.0.11", {"role": "client"}),
            pod("alice", "client", "10.244.1.11", {"role": "client"}),
            pod("alice", "server", "10.244.1.12", {"role": "server"}),
            pod("bob", "client", "10.244.2.11", {"role": "client"})]
    c = Cluster(pods, namespaces, [netpol("default", spec)])
    got = {f"{ns}/{name}": c.ask((ns, name), DB, 80) for ns, name in
           [("alice", "client"), ("alice", "server"), ("bob", "client"),
            ("default", "client")]}
    assert got == expect


def test_empty_selectors_select_all_pods_and_all_namespaces() -> None:
    c = Cluster(PODS, NAMESPACES, [netpol("default", {
        "podSelector": {"matchLabels": {"role": "db"}},
        "ingress": [{"from": [{"namespaceSelector": {}}]}]})])
    for src in (FRONT, MYPROJ, ELSEWHERE):
        assert c.ask(src, DB, 80)
    assert not c.ask("198.51.100.1", DB, 80)  # an empty namespaceSelector: pods only
    c = Cluster(PODS, NAMESPACES, [netpol("default", {
        "podSelector": {"matchLabels": {"role": "db"}},
        "ingress": [{"from": [{"podSelector": {}}]}]})])
    assert c.ask(FRONT, DB, 80) and c.ask(OTHER, DB, 80)
    assert not c.ask(MYPROJ, DB, 80)  # podSelector alone: the policy's namespace


def test_match_expressions() -> None:
    c = Cluster(PODS, NAMESPACES, [netpol("default", {
        "podSelector": {"matchExpressions": [{"key": "role", "operator": "In",
                                              "values": ["db", "other"]}]},
        "ingress": [{"from": [{"podSelector": {"matchExpressions": [
            {"key": "role", "operator": "NotIn", "values": ["other"]}]},
            "namespaceSelector": {"matchExpressions": [
                {"key": "project", "operator": "DoesNotExist"}]}}]}]})])
    assert c.ask(FRONT, DB, 80) and c.ask(FRONT, OTHER, 80)
    assert c.ask(ELSEWHERE, DB, 80)           # role=frontend, namespace without project
    assert not c.ask(OTHER, DB, 80)           # role NotIn other
    assert not c.ask(MYPROJ, DB, 80)          # namespace has project
    assert c.ask(MYPROJ, FRONT, 80)           # frontend is not selected


def test_ports_default_tcp_protocol_only_and_end_port() -> None:
    c = Cluster(PODS, NAMESPACES, [netpol("default", {
        "podSelector": {"matchLabels": {"role": "db"}},
        "ingress": [{"ports": [{"port": 5432}, {"protocol": "UDP"},
                               {"protocol": "SCTP", "port": 32000, "endPort": 32768}]}]})])
    assert c.ask(FRONT, DB, 5432) and not c.ask(FRONT, DB, 5432, "SCTP")
    assert c.ask(FRONT, DB, 9, "UDP") and c.ask("192.0.2.1", DB, 65535, "UDP")
    assert c.ask(FRONT, DB, 32000, "SCTP") and c.ask(FRONT, DB, 32768, "SCTP")
    assert c.ask(FRONT, DB, 32500, "SCTP")
    assert not c.ask(FRONT, DB, 31999, "SCTP") and not c.ask(FRONT, DB, 32769, "SCTP")
    entries = c.resolved.endpoints[DB].entries
    # 32000-32768 as Cilium writes it: aligned port/prefix blocks
    sctp = sorted((e.port, e.port_bits) for e in entries if e.protocol == 132)
    assert sctp == [(32000, 8), (32256, 7), (32768, 16)]


def test_named_ports_ingress_use_the_destination_pods_ports() -> None:
    pods = [pod("default", "web1", "10.244.0.21", {"app": "web", "v": "1"},
                ports=[("http", 8080, "TCP"), ("dns", 53, "UDP")]),
            pod("default", "web2", "10.244.0.22", {"app": "web", "v": "2"},
                ports=[("http", 9090, "TCP")]),
            pod("default", "client", "10.244.0.30", {"app": "client"})]
    c = Cluster(pods, ns_labels("default"), [netpol("default", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"ports": [{"port": "http"}, {"port": "dns", "protocol": "UDP"}]}]})])
    cl = ("default", "client")
    assert c.ask(cl, ("default", "web1"), 8080) and not c.ask(cl, ("default", "web1"), 9090)
    assert c.ask(cl, ("default", "web2"), 9090) and not c.ask(cl, ("default", "web2"), 8080)
    assert c.ask(cl, ("default", "web1"), 53, "UDP")
    assert not c.ask(cl, ("default", "web2"), 53, "UDP")  # web2 names no dns port


def test_named_ports_egress_use_the_remote_pods_ports() -> None:
    pods = [pod("default", "web1", "10.244.0.21", {"app": "web", "v": "1"},
                ports=[("http", 8080, "TCP")]),
            pod("default", "web2", "10.244.0.22", {"app": "web", "v": "2"},
                ports=[("http", 9090, "TCP")]),
            pod("default", "client", "10.244.0.30", {"app": "client"})]
    cl = ("default", "client")
    for peers in ([{"podSelector": {"matchLabels": {"app": "web"}}}], None):
        rule = {"ports": [{"port": "http"}]} | ({"to": peers} if peers else {})
        c = Cluster(pods, ns_labels("default"), [netpol("default", {
            "podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
            "egress": [rule]})])
        assert c.ask(cl, ("default", "web1"), 8080) and not c.ask(cl, ("default", "web1"), 9090)
        assert c.ask(cl, ("default", "web2"), 9090) and not c.ask(cl, ("default", "web2"), 8080)
        assert not c.ask(cl, "192.0.2.1", 8080)  # an outside address names no port


def test_named_port_shared_identity_gets_the_union_as_cilium() -> None:
    """Two pods of one identity naming `http` differently: the identity is allowed both
    numbers (Cilium resolves named ports per identity); documented in docs/policy.md."""
    pods = [pod("default", "a", "10.244.0.21", {"app": "web"}, ports=[("http", 8080, "TCP")]),
            pod("default", "b", "10.244.0.22", {"app": "web"}, ports=[("http", 9090, "TCP")]),
            pod("default", "client", "10.244.0.30", {"app": "client"})]
    c = Cluster(pods, ns_labels("default"), [netpol("default", {
        "podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": "http"}]}]})])
    assert c.resolved.pod_identity[("default", "a")] == c.resolved.pod_identity[("default", "b")]
    assert c.datapath(("default", "client"), ("default", "a"), 9090)
    assert not c.reference(("default", "client"), ("default", "a"), 9090)


def test_policy_types_decide_which_rules_count() -> None:
    # ingress rules but policyTypes [Egress]: the ingress rules are ignored, egress is denied
    c = Cluster(PODS, NAMESPACES, [netpol("default", {
        "podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}]})])
    assert c.ask(OTHER, DB, 80)            # ingress not isolated
    assert not c.ask(DB, OTHER, 80)        # egress isolated, no egress rule
    # egress rules without policyTypes: Kubernetes defaults to Ingress + Egress
    c = Cluster(PODS, NAMESPACES, [netpol("default", {
        "podSelector": {"matchLabels": {"role": "db"}},
        "egress": [{"to": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}]})])
    assert c.ask(DB, FRONT, 80) and not c.ask(DB, OTHER, 80)
    assert not c.ask(FRONT, DB, 80)        # ingress isolated too, with no rule


def test_ipblock_does_not_select_pods_and_cidr_identities_nest() -> None:
    pods = [pod("default", "db", "10.0.0.10", {"role": "db"}),
            pod("default", "client", "10.0.0.11", {"role": "client"})]
    policies = [netpol("default", {"podSelector": {"matchLabels": {"role": "db"}},
                                   "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
                       name="wide"),
                netpol("default", {"podSelector": {"matchLabels": {"role": "client"}},
                                   "ingress": [{"from": [{"ipBlock": {
                                       "cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}]}]},
                       name="narrow")]
    c = Cluster(pods, ns_labels("default"), policies)
    db, cl = ("default", "db"), ("default", "client")
    assert not c.ask(cl, db, 80)               # a pod's IP inside the block: not selected
    assert c.ask("10.1.2.3", db, 80)           # inside the narrow policy's except, and
    assert not c.ask("10.1.2.3", cl, 80)       # its prefix identity is inside 10/8's
    assert c.ask("10.1.3.3", cl, 80) and c.ask("10.1.3.3", db, 80)
    assert c.ask("10.200.0.1", db, 80) and not c.ask("10.200.0.1", cl, 80)
    assert not c.ask("11.0.0.1", db, 80)
    assert policy_prefixes(policies) == set(c.resolved.cidr_identities)


def test_ipblock_everything_is_world() -> None:
    c = Cluster(PODS, NAMESPACES, [netpol("default", {
        "podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]})])
    assert c.ask(DB, "8.8.8.8", 53, "UDP") and c.ask(DB, "192.168.0.1", 80)
    assert not c.ask(DB, "10.1.1.1", 80)
    assert not c.ask(DB, FRONT, 80)
    c = Cluster(PODS, NAMESPACES, [netpol("default", {
        "podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})])
    entries = c.resolved.endpoints[DB].entries
    assert entries == {PolicyEntry(EGRESS, int(ReservedIdentity.WORLD))}
    assert c.ask(DB, "10.1.1.1", 80) and not c.ask(DB, FRONT, 80)


def test_host_and_allow_localhost() -> None:
    from hexlane.policy.resolve import resolve_cluster

    r = resolve_cluster(PODS, NAMESPACES, [netpol("default", DENY_INGRESS)],
                        local_node_ips=["192.168.0.1"], remote_node_ips=["192.168.0.2"])
    assert r.verdict("192.168.0.1", "10.244.0.10", 8080, "TCP")      # kubelet probes
    assert not r.verdict("192.168.0.2", "10.244.0.10", 8080, "TCP")  # another node
    assert r.ipcache[ipaddress.IPv4Network("192.168.0.2/32")] == ReservedIdentity.REMOTE_NODE
    r = resolve_cluster(PODS, NAMESPACES, [netpol("default", DENY_INGRESS)],
                        local_node_ips=["192.168.0.1"], allow_localhost=False)
    assert not r.verdict("192.168.0.1", "10.244.0.10", 8080, "TCP")


def test_selectors_on_filtered_labels_select_nothing_as_in_cilium() -> None:
    pods = [pod("default", "db", "10.244.0.10", {"role": "db", "pod-template-hash": "abc"}),
            pod("default", "x", "10.244.0.11", {"role": "x"})]
    c = Cluster(pods, ns_labels("default"), [netpol("default", {
        "podSelector": {"matchLabels": {"pod-template-hash": "abc"}},
        "policyTypes": ["Ingress"]})])
    assert not c.resolved.endpoints[("default", "db")].ingress_enforced
    assert c.reference(("default", "x"), ("default", "db"), 80) is False  # Kubernetes would
