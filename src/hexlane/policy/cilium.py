"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (L3/L4) resolved into policy entries.

Cilium's rules, as resolved here (docs.cilium.io, "Layer 3/4 policies", "Deny policies",
"Policy enforcement modes"):

- A spec selects the endpoints whose identity labels its `endpointSelector` matches; a
  CiliumNetworkPolicy only those of its own namespace, a clusterwide one any (`{}`: all).
  `nodeSelector` (host policies) selects no pod.
- An endpoint selected by a spec with ingress or ingressDeny rules is in default deny at
  ingress (likewise egress), unless the spec's `enableDefaultDeny` says false for it.
- Peers: `fromEndpoints`/`toEndpoints` select pod identities by their `k8s:` labels (in a
  CiliumNetworkPolicy limited to its namespace unless the selector names
  `io.kubernetes.pod.namespace`); `fromCIDR`/`fromCIDRSet` (with except) the CIDR identities
  inside; `fromEntities`: host 1, remote-node 6 and kube-apiserver 7, kube-apiserver 7,
  health 4, init 5, ingress 8, unmanaged 3, world (2 and every CIDR identity), cluster (every
  reserved identity of the cluster and every pod identity), all (any identity). A rule with
  ports or ICMP types but no peer applies to every peer; a rule with nothing selects nothing.
- `toPorts`: protocol ANY (the default) with a port is TCP, UDP and SCTP; without a port, any
  protocol; port 0 or none is every port; endPort makes a range; a named port is the
  destination pod's container port. `icmps`: ICMP (IPv4) types, keyed as the port of protocol
  1 (names as Cilium spells them, or numbers).
- ingressDeny/egressDeny make deny entries, and deny wins (`maps.with_deny_precedence`).
- L7 rules (`rules` under toPorts) and toFQDNs/toServices/toGroups are not enforced (their
  L3/L4 part is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hexlane.model.netpol import (
    CIDRBlock,
    CiliumNetworkPolicy,
    CiliumPolicyRule,
    NetworkPolicy,
    PolicyPort,
)
from hexlane.model.node import ContainerPort
from hexlane.model.selectors import LabelSelector
from hexlane.policy.identity import (
    POD_NAMESPACE_LABEL,
    UNKNOWN_IDENTITY,
    LabelSet,
    ReservedIdentity,
    identity_namespace,
    k8s_pod_labels,
)
from hexlane.policy.maps import (
    EGRESS,
    INGRESS,
    PROTO_ANY,
    PROTO_NUMBERS,
    WORLD_PREFIX,
    IPv4Network,
    PolicyEntry,
    PolicyRef,
    port_range_prefixes,
)

PROTO_ICMP = 1
ICMP_TYPES = {  # Cilium's names for ICMPv4 types (pkg/policy/api/icmp.go)
    "EchoReply": 0, "DestinationUnreachable": 3, "Redirect": 5, "Echo": 8,
    "EchoRequest": 8, "RouterAdvertisement": 9, "RouterSelection": 10, "TimeExceeded": 11,
    "ParameterProblem": 12, "Timestamp": 13, "TimestampReply": 14, "Photuris": 40,
    "ExtendedEchoRequest": 42, "ExtendedEchoReply": 43,
}
_RESERVED_OF_CLUSTER = (ReservedIdentity.HOST, ReservedIdentity.UNMANAGED,
                        ReservedIdentity.HEALTH, ReservedIdentity.INIT,
                        ReservedIdentity.REMOTE_NODE, ReservedIdentity.KUBE_APISERVER,
                        ReservedIdentity.INGRESS)
_ENTITY_IDS = {
    "host": (ReservedIdentity.HOST,),
    "remote-node": (ReservedIdentity.REMOTE_NODE, ReservedIdentity.KUBE_APISERVER),
    "kube-apiserver": (ReservedIdentity.KUBE_APISERVER,),
    "health": (ReservedIdentity.HEALTH,),
    "init": (ReservedIdentity.INIT,),
    "ingress": (ReservedIdentity.INGRESS,),
    "unmanaged": (ReservedIdentity.UNMANAGED,),
}


@dataclass(frozen=True, slots=True)
class CiliumResolution:
    """What the Cilium policies say of one endpoint."""

    ingress_enforced: bool
    egress_enforced: bool
    entries: frozenset[PolicyEntry]
    #: the policies each entry comes from
    origins: Mapping[PolicyEntry, frozenset[PolicyRef]] = field(default_factory=dict,
                                                                compare=False)


def _pieces(block: CIDRBlock) -> list[IPv4Network]:
    from hexlane.policy.resolve import cidr_pieces  # (resolve imports this module)

    return cidr_pieces(block)


def rule_blocks(rule: CiliumPolicyRule) -> list[CIDRBlock]:
    return [*(CIDRBlock(c) for c in rule.cidrs), *rule.cidr_sets]


def cilium_prefixes(policies: Iterable[CiliumNetworkPolicy]) -> set[IPv4Network]:
    """Every prefix the policies' CIDR peers resolve to (the ipcache's CIDR entries)."""
    out: set[IPv4Network] = set()
    for pol in policies:
        for spec in pol.specs:
            for rule in (*spec.ingress, *spec.ingress_deny, *spec.egress, *spec.egress_deny):
                for block in rule_blocks(rule):
                    out.update(_pieces(block))
    return out


def _namespace(pol: CiliumNetworkPolicy) -> str | None:
    """The namespace a policy is limited to: None for a clusterwide one."""
    return pol.namespace if pol.NAMESPACED else None


def _names_namespace(sel: LabelSelector) -> bool:
    return any(r.key == POD_NAMESPACE_LABEL for r in sel.requirements)


def selects(pol: CiliumNetworkPolicy, sel: LabelSelector | None, labels: LabelSet) -> bool:
    """Whether `sel` (an endpointSelector or a from/toEndpoints entry of `pol`) selects the
    pod identity with `labels`."""
    if sel is None:
        return False
    ns = identity_namespace(labels)
    if ns is None:
        return False  # reserved and CIDR identities: by entities and CIDRs only
    policy_ns = _namespace(pol)
    if policy_ns is not None and ns != policy_ns and not _names_namespace(sel):
        return False
    return sel.matches(k8s_pod_labels(labels))


def _peers(pol: CiliumNetworkPolicy, rule: CiliumPolicyRule, identities: Mapping[int, LabelSet],
           cidr_identities: Mapping[IPv4Network, int]) -> set[int] | None:
    """The remote identities a rule names; None when it names no peer at all."""
    if not (rule.endpoints or rule.cidrs or rule.cidr_sets or rule.entities):
        return None
    out: set[int] = set()
    for sel in rule.endpoints:
        out.update(i for i, labels in identities.items() if selects(pol, sel, labels))
    for block in rule_blocks(rule):
        for piece in _pieces(block):
            if piece == WORLD_PREFIX:
                out.add(int(ReservedIdentity.WORLD))
                out.update(cidr_identities.values())
            else:
                out.update(i for p, i in cidr_identities.items() if p.subnet_of(piece))
    for entity in rule.entities:
        if entity == "all":
            out.add(UNKNOWN_IDENTITY)
        elif entity in ("world", "world-ipv4"):
            out.add(int(ReservedIdentity.WORLD))
            out.update(cidr_identities.values())
        elif entity == "cluster":
            out.update(int(r) for r in _RESERVED_OF_CLUSTER)
            out.update(i for i, labels in identities.items()
                       if identity_namespace(labels) is not None)
        else:
            out.update(int(r) for r in _ENTITY_IDS.get(entity, ()))
    return out


def _port_entries(direction: str, remote: int, port: PolicyPort, deny: bool,
                  named: Iterable[ContainerPort]) -> list[PolicyEntry]:
    protos = (["TCP", "UDP", "SCTP"] if port.protocol == "ANY" and port.port is not None
              else [port.protocol])
    out: list[PolicyEntry] = []
    for proto_name in protos:
        if proto_name == "ANY":
            out.append(PolicyEntry(direction, remote, PROTO_ANY, deny=deny))
            continue
        proto = PROTO_NUMBERS.get(proto_name)
        if proto is None:
            continue  # ICMPv6, VRRP, IGMP: not IPv4 TCP/UDP/SCTP (icmps rules are separate)
        if port.port is None:
            out.append(PolicyEntry(direction, remote, proto, deny=deny))
        elif isinstance(port.port, int):
            if port.end_port and port.end_port > port.port:
                out += [PolicyEntry(direction, remote, proto, p, bits, deny=deny)
                        for p, bits in port_range_prefixes(port.port, port.end_port)]
            else:
                out.append(PolicyEntry(direction, remote, proto, port.port, 16, deny=deny))
        else:
            out += [PolicyEntry(direction, remote, proto, cp.container_port, 16, deny=deny)
                    for cp in named if cp.name == port.port and cp.protocol == proto_name]
    return out


def _icmp_type(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    return ICMP_TYPES.get(text)


def _rule_entries(direction: str, remotes: set[int], rule: CiliumPolicyRule, deny: bool,
                  own_ports: tuple[ContainerPort, ...],
                  named_ports: Mapping[int, tuple[ContainerPort, ...]]) -> set[PolicyEntry]:
    out: set[PolicyEntry] = set()
    ports = [p for pr in rule.ports for p in pr.ports]
    for remote in remotes:
        if (not rule.ports and not rule.icmp_types) or (rule.ports and not ports):
            out.add(PolicyEntry(direction, remote, deny=deny))  # L3 only, or toPorts: [{}]
        named = own_ports if direction == INGRESS else named_ports.get(remote, ())
        for port in ports:
            out.update(_port_entries(direction, remote, port, deny, named))
        for family, type_text in rule.icmp_types:
            icmp = _icmp_type(type_text)
            if family == "IPv4" and icmp is not None:
                out.add(PolicyEntry(direction, remote, PROTO_ICMP, icmp, 16, deny=deny))
    return out


def resolve_cilium(labels: LabelSet, own_ports: tuple[ContainerPort, ...],
                   policies: Iterable[CiliumNetworkPolicy], identities: Mapping[int, LabelSet],
                   named_ports: Mapping[int, tuple[ContainerPort, ...]],
                   cidr_identities: Mapping[IPv4Network, int]) -> CiliumResolution:
    """What the Cilium policies make of the endpoint whose identity has `labels`."""
    enforced = {INGRESS: False, EGRESS: False}
    origins: dict[PolicyEntry, set[PolicyRef]] = {}
    for pol in policies:
        ref = policy_ref(pol)
        for spec in pol.specs:
            if not selects(pol, spec.endpoint_selector, labels):
                continue
            for direction, allow, deny in ((INGRESS, spec.ingress, spec.ingress_deny),
                                           (EGRESS, spec.egress, spec.egress_deny)):
                if allow or deny:
                    enforced[direction] = True
                for rules, is_deny in ((allow, False), (deny, True)):
                    for rule in rules:
                        remotes = _peers(pol, rule, identities, cidr_identities)
                        if remotes is None:
                            if not (rule.ports or rule.icmp_types):
                                continue  # an empty rule selects nothing
                            remotes = {UNKNOWN_IDENTITY}
                        for e in _rule_entries(direction, remotes, rule, is_deny, own_ports,
                                               named_ports):
                            origins.setdefault(e, set()).add(ref)
    return CiliumResolution(enforced[INGRESS], enforced[EGRESS], frozenset(origins),
                            {e: frozenset(refs) for e, refs in origins.items()})


def policy_ref(pol: CiliumNetworkPolicy | NetworkPolicy) -> PolicyRef:
    """Which policy `pol` is, as flows name it."""
    return PolicyRef(pol.KIND, pol.namespace or "", pol.name)
