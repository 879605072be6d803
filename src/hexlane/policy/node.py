"""What one node enforces: its ipcache and the policy of each of its endpoints.

An agent knows every pod of the cluster with its identity label set, the identities the API
holds (number -> labels), the NetworkPolicies and the nodes. `node_policy` turns that into the
node's datapath tables, as `resolve.resolve_cluster` does for a whole cluster but with the
numbers already allocated (the agents allocate them through CiliumIdentity; a pod whose label
set has no number yet is left out of the ipcache: traffic from it counts as world until the
number appears, as in Cilium before its identity is known).

`datapath_tables` is the last step: the three BPF tables (ipcache, enforced endpoints, policy
entries keyed by endpoint address) as plain values the datapath edge encodes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from hexlane.model.netpol import CiliumNetworkPolicy, NetworkPolicy
from hexlane.policy.identity import (
    LabelSet,
    ReservedIdentity,
    cidr_labels,
    plan_cidr_identities,
    reserved_labels,
)
from hexlane.policy.maps import (
    IPv4Network,
    PolicyEntry,
    PolicyRef,
    ipcache_entries,
    policy_cookies,
)
from hexlane.policy.resolve import (
    EndpointPolicy,
    PodInfo,
    PodKey,
    named_ports_by_identity,
    policy_prefixes,
    resolve_endpoint,
)

#: hl_endpoints flags (bpf/policy.h)
EP_F_INGRESS = 1
EP_F_EGRESS = 2
EP_F_AUDIT = 4  # policyAuditMode: denied connections pass, their verdicts say AUDIT


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """A pod of this node as the datapath sees it."""

    key: PodKey
    ip: str
    identity: int
    policy: EndpointPolicy

    @property
    def flags(self) -> int:
        return ((EP_F_INGRESS if self.policy.ingress_enforced else 0)
                | (EP_F_EGRESS if self.policy.egress_enforced else 0))


@dataclass(frozen=True, slots=True)
class NodePolicy:
    ipcache: dict[IPv4Network, int]
    endpoints: dict[PodKey, LocalEndpoint]
    cidr_identities: dict[IPv4Network, int]
    pod_identity: dict[PodKey, int]
    #: local pods left out: no identity number yet, or no IP yet
    waiting: tuple[PodKey, ...] = ()


def labels_index(identities: Mapping[int, LabelSet]) -> dict[LabelSet, int]:
    """Label set -> its number (the lowest, should two objects hold the same labels)."""
    out: dict[LabelSet, int] = {}
    for n in sorted(identities, reverse=True):
        out[identities[n]] = n
    return out


def node_policy(pods: Iterable[tuple[PodInfo, LabelSet]], local: Collection[PodKey],
                identities: Mapping[int, LabelSet], policies: Iterable[NetworkPolicy], *,
                local_node_ips: Iterable[str] = (), remote_node_ips: Iterable[str] = (),
                previous_cidr: Mapping[IPv4Network, int] | None = None,
                allow_localhost: bool = True,
                cilium: Iterable[CiliumNetworkPolicy] = (),
                always: bool = False) -> NodePolicy:
    """The node's tables (module docstring). `pods`: every endpoint pod of the cluster with
    its identity label set; `local`: the keys of this node's; `identities`: the allocated
    ones (number -> labels); `previous_cidr`: the CIDR identities of the last run (kept);
    `cilium`: the CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies; `always`:
    policyEnforcementMode always (every endpoint enforced both ways)."""
    policies = list(policies)
    cilium = list(cilium)
    index = labels_index(identities)
    table: dict[int, LabelSet] = {int(r): reserved_labels(r) for r in ReservedIdentity}
    table.update(identities)
    infos: list[PodInfo] = []
    pod_identity: dict[PodKey, int] = {}
    waiting: list[PodKey] = []
    for info, labels in pods:
        ident = index.get(labels)
        if ident is None or not info.ip:
            if info.key in local:
                waiting.append(info.key)
            continue
        infos.append(info)
        pod_identity[info.key] = ident
    cidr_ids = plan_cidr_identities(policy_prefixes(policies, cilium), previous_cidr)
    for prefix, ident in cidr_ids.items():
        table[ident] = cidr_labels(prefix)
    named = named_ports_by_identity(infos, pod_identity)
    cache = ipcache_entries(((p.ip, pod_identity[p.key]) for p in infos), local_node_ips,
                            remote_node_ips, cidr_ids)
    endpoints = {
        p.key: LocalEndpoint(p.key, p.ip, pod_identity[p.key],
                             resolve_endpoint(p, pod_identity[p.key], policies, table, named,
                                              cidr_ids, allow_localhost, cilium, always))
        for p in infos if p.key in local}
    return NodePolicy(ipcache=cache, endpoints=endpoints, cidr_identities=cidr_ids,
                      pod_identity=pod_identity, waiting=tuple(sorted(waiting)))


@dataclass(frozen=True, slots=True)
class DatapathTables:
    """The BPF tables (bpf/policy.h) as values: the ipcache; the enforced endpoints (address
    -> (identity, flags)); the policy entries of each enforced endpoint (address, entry),
    each with the number of the policies it comes from (`cookies`; `policies` names them)."""

    ipcache: dict[IPv4Network, int]
    endpoints: dict[str, tuple[int, int]]
    entries: frozenset[tuple[str, PolicyEntry]]
    cookies: dict[tuple[str, PolicyEntry], int] = field(default_factory=dict)
    policies: dict[int, tuple[PolicyRef, ...]] = field(default_factory=dict)


def datapath_tables(node: NodePolicy, *, audit: bool = False) -> DatapathTables:
    """Only enforced endpoints are in the tables: any other costs the datapath one miss.
    `audit` (policyAuditMode): every enforced endpoint lets what its policy denies pass, and
    reports the verdict as audited."""
    endpoints: dict[str, tuple[int, int]] = {}
    origins: dict[tuple[str, PolicyEntry], frozenset[PolicyRef]] = {}
    for ep in node.endpoints.values():
        if ep.flags:
            endpoints[ep.ip] = (ep.identity, ep.flags | (EP_F_AUDIT if audit else 0))
            for e in ep.policy.entries:
                origins[(ep.ip, e)] = ep.policy.origins.get(e, frozenset())
    numbers = policy_cookies(set(origins.values()))
    return DatapathTables(ipcache=dict(node.ipcache), endpoints=endpoints,
                          entries=frozenset(origins),
                          cookies={k: numbers[refs] for k, refs in origins.items()},
                          policies={n: tuple(sorted(refs)) for refs, n in numbers.items()
                                    if n})
