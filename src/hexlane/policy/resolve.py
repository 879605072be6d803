"""Kubernetes NetworkPolicy resolved into each endpoint's policy map entries.

An endpoint is a pod with its security identity. Everything is decided on identities, as
Cilium does: a policy selects the endpoints whose identity labels its podSelector matches (in
its own namespace); a peer selects identities — pod identities by their `k8s:` labels and the
namespace labels they carry, CIDR identities by prefix. So a selector on a label the identity
label filter drops (`pod-template-hash`, ...) selects nothing, as in Cilium.

Kubernetes' rules, as resolved here:
- A pod selected by a policy whose policyTypes include a direction is isolated (default deny)
  in that direction; otherwise everything passes that way (`EndpointPolicy.*_enforced`).
- Policies add up: a connection is allowed if any rule of any selecting policy allows it.
- A rule without peers allows every peer (identity 0), without ports every port and protocol.
- podSelector alone: pods of the policy's namespace; namespaceSelector alone: every pod of the
  matching namespaces; both in one peer: pods matching both (AND); two peers: either (OR);
  `{}`: all pods / all namespaces.
- ipBlock: the CIDR less its excepts, as a set of prefixes; it selects the CIDR identities of
  every policy prefix inside one of them (world for 0.0.0.0/0). Pods' and nodes' own IPs map to
  their identities in the ipcache, so an ipBlock never selects a pod or node: ipBlock is for
  addresses outside the cluster, as Kubernetes' documentation says and Cilium does.
- ports: protocol TCP when not given; a named port is looked up in the destination pod's
  container ports (the endpoint's own for ingress; each remote identity's pods' for egress,
  their union when pods of one identity name it differently, as Cilium does); endPort ranges
  become port/prefix-length entries (`maps.port_range_prefixes`).
- Ingress from this node (identity host) is allowed when ingress is enforced (Cilium's
  `allow-localhost` default: kubelet probes keep working).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from hexlane.model.netaddr import parse_cidr
from hexlane.model.netpol import (
    CIDRBlock,
    CiliumNetworkPolicy,
    NetworkPolicy,
    NetworkPolicyPeer,
    PolicyPort,
)
from hexlane.model.node import ContainerPort, Pod
from hexlane.policy.cilium import cilium_prefixes, policy_ref, resolve_cilium
from hexlane.policy.identity import (
    DEFAULT_CLUSTER_NAME,
    DEFAULT_FILTER,
    UNKNOWN_IDENTITY,
    LabelFilter,
    LabelSet,
    ReservedIdentity,
    cidr_labels,
    identity_namespace,
    identity_namespace_labels,
    k8s_pod_labels,
    plan_allocation,
    plan_cidr_identities,
    pod_identity_labels,
    reserved_labels,
)
from hexlane.policy.maps import (
    EGRESS,
    INGRESS,
    PROTO_NUMBERS,
    WORLD_PREFIX,
    IPv4Network,
    PolicyEntry,
    PolicyRef,
    deny_origins,
    ipcache_entries,
    ipcache_lookup,
    lookup,
    port_range_prefixes,
    with_deny_precedence,
)

PodKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What policy needs of a pod."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str = ""
    ports: tuple[ContainerPort, ...] = ()
    service_account: str = ""

    @property
    def key(self) -> PodKey:
        return (self.namespace, self.name)

    @classmethod
    def from_pod(cls, pod: Pod) -> PodInfo:
        return cls(namespace=pod.namespace, name=pod.name, labels=dict(pod.labels),
                   ip=pod.pod_ip, ports=pod.ports, service_account=pod.service_account)


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    """An endpoint's policy: whether each direction is enforced, and its map's entries."""

    ingress_enforced: bool = False
    egress_enforced: bool = False
    entries: frozenset[PolicyEntry] = frozenset()
    #: the policies each entry comes from (none: hexlane's own, like the host's access)
    origins: Mapping[PolicyEntry, frozenset[PolicyRef]] = field(default_factory=dict,
                                                                compare=False)

    def enforced(self, direction: str) -> bool:
        return self.ingress_enforced if direction == INGRESS else self.egress_enforced

    def allows(self, remote_identity: int, port: int, protocol: int, direction: str) -> bool:
        """The datapath's verdict for a new connection in `direction`."""
        if not self.enforced(direction):
            return True
        hit = lookup(self.entries, remote_identity, port, protocol, direction)
        return hit is not None and not hit.deny


# --- CIDRs --------------------------------------------------------------------------------------

def _network(cidr: str) -> IPv4Network | None:
    net = parse_cidr(cidr)[0]
    return net if isinstance(net, IPv4Network) else None  # IPv6: not built (hexlane is IPv4)


def cidr_pieces(block: CIDRBlock) -> list[IPv4Network]:
    """An ipBlock's CIDR less its excepts, as the fewest prefixes (sorted)."""
    base = _network(block.cidr)
    if base is None:
        return []
    pieces = [base]
    for ex_text in block.except_:
        ex = _network(ex_text)
        if ex is None:
            continue
        nxt: list[IPv4Network] = []
        for p in pieces:
            if not p.overlaps(ex):
                nxt.append(p)
            elif ex.supernet_of(p):
                continue
            else:
                nxt.extend(p.address_exclude(ex))
        pieces = nxt
    return sorted(pieces, key=lambda p: (int(p.network_address), p.prefixlen))


def policy_prefixes(policies: Iterable[NetworkPolicy],
                    cilium: Iterable[CiliumNetworkPolicy] = ()) -> set[IPv4Network]:
    """Every prefix the policies' ipBlocks and Cilium CIDR peers resolve to (the ipcache's
    CIDR entries)."""
    out: set[IPv4Network] = cilium_prefixes(cilium)
    for pol in policies:
        for rule in (*pol.ingress, *pol.egress):
            for peer in rule.peers:
                if peer.ip_block is not None:
                    out.update(cidr_pieces(peer.ip_block))
    return out


# --- selection ----------------------------------------------------------------------------------

def _peer_identities(peer: NetworkPolicyPeer, policy_ns: str,
                     identities: Mapping[int, LabelSet],
                     cidr_identities: Mapping[IPv4Network, int]) -> set[int]:
    if peer.ip_block is not None:
        out: set[int] = set()
        for piece in cidr_pieces(peer.ip_block):
            if piece == WORLD_PREFIX:
                out.add(int(ReservedIdentity.WORLD))
                out.update(cidr_identities.values())
            else:
                out.update(ident for prefix, ident in cidr_identities.items()
                           if prefix.subnet_of(piece))
        return out
    out = set()
    for ident, labels in identities.items():
        ns, ns_labels, pod_labels = label_views(labels)
        if ns is None:
            continue  # not a pod identity
        if peer.namespace_selector is not None:
            if not peer.namespace_selector.matches(ns_labels):
                continue
        elif ns != policy_ns:
            continue
        if peer.pod_selector is not None and not peer.pod_selector.matches(pod_labels):
            continue
        out.add(ident)
    return out


@lru_cache(maxsize=1 << 16)
def label_views(labels: LabelSet) -> tuple[str | None, Mapping[str, str], Mapping[str, str]]:
    """An identity's namespace, namespace labels and `k8s:` labels, built once per label set
    (selectors are matched against them thousands of times per resolution; read only)."""
    return (identity_namespace(labels), identity_namespace_labels(labels),
            k8s_pod_labels(labels))


def _port_entries(direction: str, remote: int, port: PolicyPort,
                  container_ports: Iterable[ContainerPort]) -> list[PolicyEntry]:
    """A rule's port as entries; a named port through `container_ports`."""
    proto = PROTO_NUMBERS[port.protocol]
    if port.port is None or port.port == 0:
        return [PolicyEntry(direction, remote, proto)]
    if isinstance(port.port, int):
        if port.end_port is not None and port.end_port > port.port:
            return [PolicyEntry(direction, remote, proto, p, bits)
                    for p, bits in port_range_prefixes(port.port, port.end_port)]
        return [PolicyEntry(direction, remote, proto, port.port, 16)]
    return [PolicyEntry(direction, remote, proto, cp.container_port, 16)
            for cp in container_ports if cp.name == port.port and cp.protocol == port.protocol]


def resolve_endpoint(pod: PodInfo, identity: int, policies: Iterable[NetworkPolicy],
                     identities: Mapping[int, LabelSet],
                     named_ports: Mapping[int, tuple[ContainerPort, ...]] | None = None,
                     cidr_identities: Mapping[IPv4Network, int] | None = None,
                     allow_localhost: bool = True,
                     cilium: Iterable[CiliumNetworkPolicy] = (),
                     always: bool = False) -> EndpointPolicy:
    """The policy of one endpoint (`pod` with `identity`), from every NetworkPolicy in the
    cluster. `identities` is the cluster's identity table (number -> labels), `named_ports`
    each pod identity's container ports (for egress named ports), `cidr_identities` the
    policy prefixes' identities (`plan_cidr_identities(policy_prefixes(policies))`)."""
    named_ports = named_ports or {}
    cidr_identities = cidr_identities or {}
    labels = identities.get(identity, frozenset())
    ns = identity_namespace(labels)
    pod_labels = k8s_pod_labels(labels)
    origins: dict[PolicyEntry, set[PolicyRef]] = {}
    enforced = {INGRESS: False, EGRESS: False}
    for pol in policies:
        if ns is None or pol.namespace != ns or not pol.pod_selector.matches(pod_labels):
            continue
        entries: set[PolicyEntry] = set()
        for direction, ptype, rules in ((INGRESS, "Ingress", pol.ingress),
                                        (EGRESS, "Egress", pol.egress)):
            if ptype not in pol.policy_types:
                continue
            enforced[direction] = True
            for rule in rules:
                if rule.peers:
                    remotes: set[int] = set()
                    for peer in rule.peers:
                        remotes |= _peer_identities(peer, pol.namespace, identities,
                                                    cidr_identities)
                else:
                    remotes = {UNKNOWN_IDENTITY}
                if not rule.ports:
                    entries.update(PolicyEntry(direction, r) for r in remotes)
                    continue
                for port in rule.ports:
                    if not isinstance(port.port, str):
                        for r in remotes:
                            entries.update(_port_entries(direction, r, port, ()))
                    elif direction == INGRESS:
                        for r in remotes:
                            entries.update(_port_entries(direction, r, port, pod.ports))
                    else:
                        # the remote pods' port of that name: per identity; "any peer"
                        # becomes every identity whose pods have such a port
                        targets = (named_ports.keys() if UNKNOWN_IDENTITY in remotes
                                   else remotes)
                        for r in targets:
                            entries.update(_port_entries(direction, r, port,
                                                         named_ports.get(r, ())))
        ref = policy_ref(pol)
        for e in entries:
            origins.setdefault(e, set()).add(ref)
    cil = resolve_cilium(labels, pod.ports, cilium, identities, named_ports, cidr_identities)
    for e, refs in cil.origins.items():
        origins.setdefault(e, set()).update(refs)
    enforced[INGRESS] |= cil.ingress_enforced or always
    enforced[EGRESS] |= cil.egress_enforced or always
    if enforced[INGRESS] and allow_localhost:
        origins.setdefault(PolicyEntry(INGRESS, int(ReservedIdentity.HOST)), set())
    final = with_deny_precedence(origins)
    return EndpointPolicy(ingress_enforced=enforced[INGRESS], egress_enforced=enforced[EGRESS],
                          entries=final,
                          origins=deny_origins(final, {e: frozenset(r)
                                                       for e, r in origins.items()}))


# --- the whole cluster --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClusterPolicy:
    """Everything resolved for a cluster: identities, ipcache, each endpoint's policy."""

    identities: dict[int, LabelSet]
    pod_identity: dict[PodKey, int]
    cidr_identities: dict[IPv4Network, int]
    ipcache: dict[IPv4Network, int]
    endpoints: dict[PodKey, EndpointPolicy]
    endpoint_ips: dict[str, PodKey]

    def verdict(self, src_ip: str, dst_ip: str, port: int, protocol: str) -> bool:
        """A new connection from `src_ip` to `dst_ip`:`port` as the datapath will decide it:
        at the source endpoint (if the source is a local pod), its egress policy with the
        destination's identity from the ipcache; at the destination endpoint, its ingress
        policy with the source's identity from the ipcache."""
        proto = 1 if protocol == "ICMP" else PROTO_NUMBERS[protocol]  # ICMP: port = type
        src, dst = self.endpoint_ips.get(src_ip), self.endpoint_ips.get(dst_ip)
        if src is not None and not self.endpoints[src].allows(
                ipcache_lookup(self.ipcache, dst_ip), port, proto, EGRESS):
            return False
        return dst is None or self.endpoints[dst].allows(
            ipcache_lookup(self.ipcache, src_ip), port, proto, INGRESS)


def named_ports_by_identity(pods: Iterable[PodInfo], pod_identity: Mapping[PodKey, int],
                            ) -> dict[int, tuple[ContainerPort, ...]]:
    """Each identity's container ports: the union over its pods (sorted, no repeats)."""
    acc: dict[int, set[ContainerPort]] = {}
    for p in pods:
        ident = pod_identity.get(p.key)
        if ident is not None:
            acc.setdefault(ident, set()).update(p.ports)
    return {i: tuple(sorted(ps, key=lambda c: (c.name, c.protocol, c.container_port)))
            for i, ps in acc.items()}


def resolve_cluster(pods: Iterable[PodInfo], namespaces: Mapping[str, Mapping[str, str]],
                    policies: Iterable[NetworkPolicy], *,
                    cluster: str = DEFAULT_CLUSTER_NAME,
                    label_filter: LabelFilter = DEFAULT_FILTER,
                    existing: Mapping[int, LabelSet] | None = None,
                    local_node_ips: Iterable[str] = (), remote_node_ips: Iterable[str] = (),
                    allow_localhost: bool = True,
                    cilium: Iterable[CiliumNetworkPolicy] = (),
                    always: bool = False) -> ClusterPolicy:
    """Identities for every pod (reusing `existing` ones), CIDR identities, the ipcache and
    every endpoint's policy: what the agents and the operator will converge to."""
    pods = list(pods)
    policies = list(policies)
    cilium = list(cilium)
    identities: dict[int, LabelSet] = {int(r): reserved_labels(r) for r in ReservedIdentity}
    identities.update(existing or {})
    pod_identity: dict[PodKey, int] = {}
    for p in pods:
        labels = pod_identity_labels(p.labels, p.namespace, namespaces.get(p.namespace, {}),
                                     p.service_account, cluster, label_filter)
        alloc = plan_allocation(labels, identities)
        identities[alloc.identity] = labels
        pod_identity[p.key] = alloc.identity
    cidr_ids = plan_cidr_identities(policy_prefixes(policies, cilium))
    for prefix, ident in cidr_ids.items():
        identities[ident] = cidr_labels(prefix)
    named = named_ports_by_identity(pods, pod_identity)
    cache = ipcache_entries(((p.ip, pod_identity[p.key]) for p in pods if p.ip),
                            local_node_ips, remote_node_ips, cidr_ids)
    endpoints = {p.key: resolve_endpoint(p, pod_identity[p.key], policies, identities, named,
                                         cidr_ids, allow_localhost, cilium, always)
                 for p in pods}
    return ClusterPolicy(identities=identities, pod_identity=pod_identity,
                         cidr_identities=cidr_ids, ipcache=cache, endpoints=endpoints,
                         endpoint_ips={p.ip: p.key for p in pods if p.ip})
