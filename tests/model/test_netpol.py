"""NetworkPolicy and Cilium(Clusterwide)NetworkPolicy parsing: structure, selectors (with
Cilium's source prefixes), ports and endPort, protocols, CIDRs and entities."""

from __future__ import annotations

from typing import Any

import pytest
from model_helpers import errors

from hexlane.model import (
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    NetworkPolicy,
    parse_object,
)


def np(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "allow", "namespace": "default"}, "spec": spec}


def test_k8s_policy() -> None:
    pol = NetworkPolicy.parse(np({
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}},
                               "podSelector": {}},
                              {"ipBlock": {"cidr": "10.0.0.0/16",
                                           "except": ["10.0.1.0/24"]}}],
                     "ports": [{"port": 8000, "endPort": 8080}, {"port": "http",
                                                                 "protocol": "UDP"}]}],
        "egress": [{}]}))
    assert pol.policy_types == ("Ingress", "Egress")
    assert pol.pod_selector.matches({"app": "web"})
    peers = pol.ingress[0].peers
    assert peers[0].namespace_selector is not None and peers[1].ip_block is not None
    assert peers[1].ip_block.except_ == ("10.0.1.0/24",)
    assert [(p.port, p.end_port, p.protocol) for p in pol.ingress[0].ports] == [
        (8000, 8080, "TCP"), ("http", None, "UDP")]
    assert NetworkPolicy.parse(np({})).policy_types == ("Ingress",)


@pytest.mark.parametrize(("spec", "types"), [
    ({}, ("Ingress",)),
    ({"egress": []}, ("Ingress",)),            # no egress rule: Kubernetes adds no Egress
    ({"egress": [{}]}, ("Ingress", "Egress")),
    ({"policyTypes": [], "egress": [{}]}, ("Ingress", "Egress")),  # empty = not given
    ({"policyTypes": ["Egress"]}, ("Egress",)),
])
def test_policy_types_default_as_kubernetes_does(spec, types):
    assert NetworkPolicy.parse(np(spec)).policy_types == types


@pytest.mark.parametrize(("spec", "path", "fragment"), [
    ({"ingress": [{"ports": [{"port": 8080, "endPort": 8000}]}]},
     "spec.ingress[0].ports[0].endPort", "below port"),
    ({"ingress": [{"ports": [{"port": "http", "endPort": 8000}]}]},
     "spec.ingress[0].ports[0].endPort", "numeric port"),
    ({"ingress": [{"ports": [{"port": 0}]}]}, "spec.ingress[0].ports[0].port", "out of range"),
    ({"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]},
     "spec.ingress[0].ports[0].protocol", "'TCP'"),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     "spec.ingress[0].from[0]", "may not also"),
    ({"ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]", "empty peer"),
    ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0/8"}}]}]},
     "spec.egress[0].to[0].ipBlock.cidr", "invalid CIDR"),
    ({"policyTypes": ["Both"]}, "spec.policyTypes[0]", "Ingress or Egress"),
    ({"podSelector": {"matchLabels": {"app": "x"}, "matchFields": {}}},
     "spec.podSelector.matchFields", "unknown field"),
])
def test_k8s_policy_problems(spec: dict[str, Any], path: str, fragment: str) -> None:
    found = errors(NetworkPolicy, np(spec))
    assert any(p == path and fragment in m for p, m in found), found


def cnp(spec: Any, kind: str = "CiliumNetworkPolicy", key: str = "spec") -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": kind,
            "metadata": {"name": "p", "namespace": "default"}, key: spec}


def test_cilium_policy() -> None:
    pol = CiliumNetworkPolicy.parse(cnp({
        "endpointSelector": {"matchLabels": {"k8s:app": "web",
                                             "io.kubernetes.pod.namespace": "default"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"any:role": "client"}}],
                     "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"},
                                            {"port": "8000", "endPort": 8080}],
                                  "rules": {"http": [{"method": "GET"}]}}]},
                    {"fromEntities": ["world", "cluster"], "fromCIDR": ["192.168.1.10"],
                     "fromCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}]}],
        "egress": [{"toFQDNs": [{"matchName": "example.com"}],
                    "icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}]}],
        "egressDeny": [{"toEntities": ["world"]}]}))
    (spec,) = pol.specs
    assert spec.endpoint_selector is not None
    assert spec.endpoint_selector.matches({"app": "web", "io.kubernetes.pod.namespace":
                                           "default"})
    assert spec.ingress[0].endpoints[0].matches({"role": "client"})
    assert spec.ingress[0].ports[0].has_l7_rules
    assert [(p.port, p.end_port, p.protocol) for p in spec.ingress[0].ports[0].ports] == [
        (80, None, "TCP"), (8000, 8080, "ANY")]
    assert spec.ingress[1].entities == ("world", "cluster")
    assert spec.egress[0].fqdns == ("example.com",)
    assert spec.egress[0].icmp_types == (("IPv4", "8"),)
    assert spec.egress_deny[0].entities == ("world",)


def test_specs_list_and_clusterwide() -> None:
    pol = CiliumNetworkPolicy.parse(cnp([{"endpointSelector": {}}, {"endpointSelector": {}}],
                                        key="specs"))
    assert len(pol.specs) == 2
    ccnp = parse_object(cnp({"nodeSelector": {"matchLabels": {"kubernetes.io/os": "linux"}},
                             "ingress": [{"fromEntities": ["health"]}]},
                            kind="CiliumClusterwideNetworkPolicy"))
    assert isinstance(ccnp, CiliumClusterwideNetworkPolicy)
    assert ccnp.meta.namespace == ""  # cluster-scoped


@pytest.mark.parametrize(("spec", "path", "fragment"), [
    ({"endpointSelector": {}, "egress": [{"toEntities": ["internet"]}]},
     "spec.egress[0].toEntities[0]", "unknown entity"),
    ({"endpointSelector": {}, "egress": [{"toCIDR": ["10.0.0.0/33"]}]},
     "spec.egress[0].toCIDR[0]", "prefix length"),
    ({"endpointSelector": {}, "egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/8",
                                                         "except": ["11.0.0.0/16"]}]}]},
     "spec.egress[0].toCIDRSet[0].except[0]", "strict subnet"),
    ({"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "70000"}]}]}]},
     "spec.ingress[0].toPorts[0].ports[0].port", "out of range"),
    ({"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [
        {"port": "80", "protocol": "HTTP"}]}]}]},
     "spec.ingress[0].toPorts[0].ports[0].protocol", "'ANY'"),
    ({"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [
        {"port": "90", "endPort": 80}]}]}]},
     "spec.ingress[0].toPorts[0].ports[0].endPort", "below port"),
    ({"ingress": []}, "spec.endpointSelector", "exactly one"),
    ({"nodeSelector": {}}, "spec.nodeSelector", "only allowed in a CiliumClusterwide"),
    ({"endpointSelector": {"matchLabels": {"k8s:bad key": "x"}}},
     "spec.endpointSelector.matchLabels.bad key", "invalid label key"),
    ({"endpointSelector": {}, "ingressDeny": [{"toPorts": [{"rules": {"http": []}}]}]},
     "spec.ingressDeny[0].toPorts[0].rules", "deny"),
])
def test_cilium_policy_problems(spec: dict[str, Any], path: str, fragment: str) -> None:
    found = errors(CiliumNetworkPolicy, cnp(spec))
    assert any(p == path and fragment in m for p, m in found), found


def test_cilium_policy_needs_a_spec() -> None:
    found = errors(CiliumNetworkPolicy, {"metadata": {"name": "p"}})
    assert found[0][0] == "spec"


def test_numeric_cilium_port_is_accepted_with_a_warning() -> None:
    pol = CiliumNetworkPolicy.parse(cnp({"endpointSelector": {}, "ingress": [
        {"toPorts": [{"ports": [{"port": 80}]}]}]}))
    assert pol.specs[0].ingress[0].ports[0].ports[0].port == 80
    assert any("string" in w.message for w in pol.warnings)
