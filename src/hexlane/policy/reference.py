"""A deliberately simple evaluator of Kubernetes NetworkPolicy, written from the API's text
and nothing else of hexlane's: no identities, no entries, no ipcache. The property tests hold
`resolve` + the datapath lookups against it; keep it obvious rather than fast.

From the NetworkPolicy reference and concepts page:
- A connection is allowed iff the source's egress allows it AND the destination's ingress
  allows it. Only pods have policies: an address outside the cluster allows everything.
- A pod is isolated in a direction iff some policy in its namespace selects it (podSelector)
  and lists that direction in policyTypes. A non-isolated direction allows everything.
- An isolated direction allows a connection iff some rule of some such policy allows it: its
  peers (from/to) match the other end (no peers: any end) and its ports match the destination
  port (no ports: any port).
- A peer with podSelector selects pods of the policy's namespace; with namespaceSelector, pods
  of the namespaces it selects (with both: pods matching podSelector in those namespaces).
- A peer with ipBlock selects addresses in `cidr` and not in any `except`. The one choice made
  here, with Kubernetes' docs ("these should be cluster-external IPs") and as Cilium does: an
  ipBlock does not select pods.
- A port matches when its protocol (default TCP) is the connection's and its port is absent
  (all ports), the port number, a number with endPort the range port..endPort, or a name that
  the destination pod has a container port of, with that number and protocol.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from hexlane.model.netpol import NetworkPolicy, NetworkPolicyPeer, NetworkPolicyRule
from hexlane.policy.resolve import PodInfo, PodKey

End = PodKey | str  # a pod (namespace, name) or an address outside the cluster


def allowed(src: End, dst: End, port: int, protocol: str, policies: Iterable[NetworkPolicy],
            pods: Mapping[PodKey, PodInfo], namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether a new connection from `src` to `dst`:`port`/`protocol` is allowed."""
    policies = list(policies)
    return (_allows(src, dst, dst, port, protocol, "Egress", policies, pods, namespaces)
            and _allows(dst, src, dst, port, protocol, "Ingress", policies, pods, namespaces))


def _allows(subject: End, other: End, dst: End, port: int, protocol: str, ptype: str,
            policies: list[NetworkPolicy], pods: Mapping[PodKey, PodInfo],
            namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    if isinstance(subject, str):
        return True  # outside the cluster: no policy of ours
    pod = pods[subject]
    isolating = [pol for pol in policies
                 if pol.namespace == pod.namespace and pol.pod_selector.matches(pod.labels)
                 and ptype in pol.policy_types]
    if not isolating:
        return True
    dst_pod = None if isinstance(dst, str) else pods[dst]
    for pol in isolating:
        for rule in (pol.ingress if ptype == "Ingress" else pol.egress):
            if (_peers_match(rule, pol.namespace, other, pods, namespaces)
                    and _ports_match(rule, dst_pod, port, protocol)):
                return True
    return False


def _peers_match(rule: NetworkPolicyRule, policy_ns: str, other: End,
                 pods: Mapping[PodKey, PodInfo],
                 namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    if not rule.peers:
        return True
    return any(_peer_matches(peer, policy_ns, other, pods, namespaces) for peer in rule.peers)


def _peer_matches(peer: NetworkPolicyPeer, policy_ns: str, other: End,
                  pods: Mapping[PodKey, PodInfo],
                  namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    if peer.ip_block is not None:
        if not isinstance(other, str):
            return False  # ipBlock does not select pods (see the module text)
        addr = ipaddress.ip_address(other)
        return (addr in ipaddress.ip_network(peer.ip_block.cidr, strict=False)
                and not any(addr in ipaddress.ip_network(ex, strict=False)
                            for ex in peer.ip_block.except_))
    if isinstance(other, str):
        return False  # selectors select pods only
    pod = pods[other]
    if peer.namespace_selector is not None:
        if not peer.namespace_selector.matches(namespaces.get(pod.namespace, {})):
            return False
    elif pod.namespace != policy_ns:
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)


def _ports_match(rule: NetworkPolicyRule, dst_pod: PodInfo | None, port: int,
                 protocol: str) -> bool:
    if not rule.ports:
        return True
    for p in rule.ports:
        if p.protocol != protocol:
            continue
        if p.port is None:
            return True
        if isinstance(p.port, int):
            last = p.end_port if p.end_port is not None else p.port
            if p.port <= port <= last:
                return True
        elif dst_pod is not None and any(
                cp.name == p.port and cp.protocol == protocol and cp.container_port == port
                for cp in dst_pod.ports):
            return True
    return False
