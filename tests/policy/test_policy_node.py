"""One node's tables (`hexlane.policy.node`): with the identities the API holds, the node's
ipcache and its endpoints' policies agree with resolving the whole cluster at once; pods whose
label set has no number yet wait (and are left out of the ipcache); only enforced endpoints
reach the datapath's tables."""

from __future__ import annotations

from policy_helpers import netpol, ns_labels, pod

from hexlane.policy.identity import ReservedIdentity, pod_identity_labels
from hexlane.policy.maps import INGRESS, IPv4Network, PolicyEntry
from hexlane.policy.node import EP_F_INGRESS, datapath_tables, labels_index, node_policy
from hexlane.policy.resolve import resolve_cluster

NAMESPACES = ns_labels("shop", "ops")
PODS = [pod("shop", "web-1", "10.244.1.10", {"app": "web"}),
        pod("shop", "web-2", "10.244.2.10", {"app": "web"}),
        pod("shop", "db", "10.244.1.11", {"app": "db"}, ports=[("pg", 5432, "TCP")]),
        pod("ops", "probe", "10.244.2.12", {"app": "probe"})]
LOCAL = {("shop", "web-1"), ("shop", "db")}  # node1's
POLICIES = [netpol("shop", {"podSelector": {"matchLabels": {"app": "db"}},
                            "policyTypes": ["Ingress"],
                            "ingress": [{"from": [{"podSelector": {"matchLabels":
                                                                   {"app": "web"}}}],
                                         "ports": [{"port": "pg"}]}]})]


def labelled(pods=PODS):
    return [(p, pod_identity_labels(p.labels, p.namespace, NAMESPACES[p.namespace]))
            for p in pods]


def test_a_node_enforces_what_the_cluster_resolves() -> None:
    whole = resolve_cluster(PODS, NAMESPACES, POLICIES, local_node_ips=["10.0.0.11"],
                            remote_node_ips=["10.0.0.12"])
    allocated = {i: whole.identities[i] for i in set(whole.pod_identity.values())}
    node = node_policy(labelled(), LOCAL, allocated, POLICIES,
                       local_node_ips=["10.0.0.11"], remote_node_ips=["10.0.0.12"])
    assert node.ipcache == whole.ipcache
    assert set(node.endpoints) == LOCAL
    for key, ep in node.endpoints.items():
        assert ep.policy == whole.endpoints[key]
        assert ep.identity == whole.pod_identity[key]
    assert node.waiting == ()
    tables = datapath_tables(node)
    db_id = whole.pod_identity[("shop", "db")]
    web_id = whole.pod_identity[("shop", "web-1")]
    assert tables.endpoints == {"10.244.1.11": (db_id, EP_F_INGRESS)}  # web is not enforced
    assert tables.entries == {
        ("10.244.1.11", PolicyEntry(INGRESS, web_id, 6, 5432, 16)),
        ("10.244.1.11", PolicyEntry(INGRESS, int(ReservedIdentity.HOST)))}
    assert tables.ipcache[IPv4Network("10.0.0.11/32")] == int(ReservedIdentity.HOST)
    assert tables.ipcache[IPv4Network("10.0.0.12/32")] == int(ReservedIdentity.REMOTE_NODE)


def test_pods_without_a_number_wait_and_are_left_out() -> None:
    whole = resolve_cluster(PODS, NAMESPACES, POLICIES)
    db = whole.pod_identity[("shop", "db")]
    node = node_policy(labelled(), LOCAL, {db: whole.identities[db]}, POLICIES)
    assert node.waiting == (("shop", "web-1"),)  # only local pods are reported waiting
    assert IPv4Network("10.244.2.10/32") not in node.ipcache  # world until it has one
    # the db's policy names no web identity yet: nothing but the host may come in
    assert {e.identity for e in node.endpoints[("shop", "db")].policy.entries} == {
        int(ReservedIdentity.HOST)}


def test_the_label_index_prefers_the_lowest_number() -> None:
    labels = labelled()[0][1]
    assert labels_index({300: labels, 256: labels, 257: frozenset()})[labels] == 256


def test_each_entry_carries_the_number_of_the_policies_it_comes_from() -> None:
    """The number is the same for the same policies whatever else changes (no rewrite of the
    others' entries), names every policy that gives the entry, a deny's policy for an allow it
    overrides, and 0 for hexlane's own entry (the host's access)."""
    from hexlane.model.netpol import CiliumNetworkPolicy
    from hexlane.policy.maps import PolicyRef

    also = netpol("shop", {"podSelector": {"matchLabels": {"app": "db"}},
                           "policyTypes": ["Ingress"],
                           "ingress": [{"from": [{"podSelector": {"matchLabels":
                                                                  {"app": "web"}}}],
                                        "ports": [{"port": 5432}]}]}, name="also")
    deny = CiliumNetworkPolicy.parse({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "no-probe", "namespace": "shop"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "db"}},
                 "ingressDeny": [{"fromEndpoints": [{"matchLabels": {
                     "k8s:io.kubernetes.pod.namespace": "ops"}}]}]}})
    whole = resolve_cluster(PODS, NAMESPACES, POLICIES)
    allocated = {i: whole.identities[i] for i in set(whole.pod_identity.values())}

    def tables(policies, cilium=()):
        return datapath_tables(node_policy(labelled(), LOCAL, allocated, policies,
                                           cilium=cilium))

    one = tables(POLICIES)
    web = whole.pod_identity[("shop", "web-1")]
    probe = whole.pod_identity[("ops", "probe")]
    pg = ("10.244.1.11", PolicyEntry(INGRESS, web, 6, 5432, 16))
    host = ("10.244.1.11", PolicyEntry(INGRESS, int(ReservedIdentity.HOST)))
    assert one.cookies[host] == 0
    assert one.policies[one.cookies[pg]] == (PolicyRef("NetworkPolicy", "shop", "p"),)
    two = tables([*POLICIES, also], [deny])
    assert two.policies[two.cookies[pg]] == (PolicyRef("NetworkPolicy", "shop", "also"),
                                             PolicyRef("NetworkPolicy", "shop", "p"))
    denied = ("10.244.1.11", PolicyEntry(INGRESS, probe, deny=True))
    assert two.policies[two.cookies[denied]] == (
        PolicyRef("CiliumNetworkPolicy", "shop", "no-probe"),)
    # the same policies, the same number, in any company
    assert tables(POLICIES, [deny]).cookies[pg] == one.cookies[pg]
