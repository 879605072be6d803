"""`hexlane policy trace`: which policies decide a connection between two pods, and how.

As `cilium policy trace`, computed from the API's objects (the agent's caches) rather than
observed: the source pod's egress and the destination pod's ingress, each resolved with every
policy (the verdict, exactly what the datapath's tables hold) and with each policy alone (which
ones select the pod in that direction, which allow the connection, which deny it). Deny wins;
an enforced direction that nothing allows is a default deny. The host is allowed in at ingress
whenever ingress is enforced (allow-localhost), which the trace names too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hexlane.model.netpol import CiliumNetworkPolicy, NetworkPolicy
from hexlane.model.node import ContainerPort
from hexlane.policy.identity import LabelSet, ReservedIdentity
from hexlane.policy.maps import EGRESS, INGRESS, PROTO_NUMBERS, IPv4Network, lookup
from hexlane.policy.resolve import PodInfo, resolve_endpoint

PROTO_ICMP = 1


@dataclass(frozen=True, slots=True)
class End:
    pod: PodInfo
    identity: int

    @property
    def name(self) -> str:
        return f"{self.pod.namespace}/{self.pod.name}"


@dataclass(frozen=True, slots=True)
class DirectionTrace:
    direction: str
    enforced: bool
    allowed: bool
    selected_by: tuple[str, ...] = ()
    allowed_by: tuple[str, ...] = ()
    denied_by: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Trace:
    src: End
    dst: End
    port: int
    protocol: str
    egress: DirectionTrace
    ingress: DirectionTrace
    notes: tuple[str, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    def to_dict(self) -> dict[str, object]:
        def way(t: DirectionTrace) -> dict[str, object]:
            return {"enforced": t.enforced, "allowed": t.allowed,
                    "selectedBy": list(t.selected_by), "allowedBy": list(t.allowed_by),
                    "deniedBy": list(t.denied_by), "reason": t.reason}
        return {"source": {"pod": self.src.name, "identity": self.src.identity},
                "destination": {"pod": self.dst.name, "identity": self.dst.identity},
                "port": self.port, "protocol": self.protocol,
                "egress": way(self.egress), "ingress": way(self.ingress),
                "verdict": "ALLOWED" if self.allowed else "DENIED"}


def policy_name(pol: NetworkPolicy | CiliumNetworkPolicy) -> str:
    if isinstance(pol, CiliumNetworkPolicy):
        if pol.NAMESPACED:
            return f"CiliumNetworkPolicy {pol.namespace}/{pol.name}"
        return f"CiliumClusterwideNetworkPolicy {pol.name}"
    return f"NetworkPolicy {pol.namespace}/{pol.name}"


def _proto(protocol: str) -> int:
    return PROTO_ICMP if protocol == "ICMP" else PROTO_NUMBERS[protocol]


def _direction(subject: End, remote_identity: int, port: int, protocol: str, direction: str,
               k8s: Sequence[NetworkPolicy], cilium: Sequence[CiliumNetworkPolicy],
               identities: Mapping[int, LabelSet],
               named_ports: Mapping[int, tuple[ContainerPort, ...]],
               cidr_identities: Mapping[IPv4Network, int], always: bool) -> DirectionTrace:
    proto = _proto(protocol)
    whole = resolve_endpoint(subject.pod, subject.identity, k8s, identities, named_ports,
                             cidr_identities, cilium=cilium, always=always)
    enforced = whole.enforced(direction)
    allowed = whole.allows(remote_identity, port, proto, direction)
    selected: list[str] = []
    allows: list[str] = []
    denies: list[str] = []
    singles: list[tuple[NetworkPolicy | CiliumNetworkPolicy, list[NetworkPolicy],
                        list[CiliumNetworkPolicy]]] = [(p, [p], []) for p in k8s]
    singles += [(p, [], [p]) for p in cilium]
    for pol, only_k8s, only_cilium in singles:
        alone = resolve_endpoint(subject.pod, subject.identity, only_k8s, identities,
                                 named_ports, cidr_identities, allow_localhost=False,
                                 cilium=only_cilium)
        if not alone.enforced(direction):
            continue
        selected.append(policy_name(pol))
        hit = lookup(alone.entries, remote_identity, port, proto, direction)
        if hit is not None:
            (denies if hit.deny else allows).append(policy_name(pol))
    if not enforced:
        reason = "not enforced: no policy selects the pod for " + direction
    elif denies:
        reason = "denied: a deny rule matches (deny wins)"
    elif allowed and not allows and direction == INGRESS \
            and remote_identity == int(ReservedIdentity.HOST):
        reason = "allowed: from the pod's own node (allow-localhost)"
    elif allowed:
        reason = "allowed by a rule"
    elif always and not selected:
        reason = "denied: policyEnforcementMode always, and no rule allows it"
    else:
        reason = "denied: enforced, and no rule allows it (default deny)"
    return DirectionTrace(direction, enforced, allowed, tuple(selected), tuple(allows),
                          tuple(denies), reason)


def trace(src: End, dst: End, port: int, protocol: str, k8s: Iterable[NetworkPolicy],
          cilium: Iterable[CiliumNetworkPolicy], identities: Mapping[int, LabelSet],
          named_ports: Mapping[int, tuple[ContainerPort, ...]],
          cidr_identities: Mapping[IPv4Network, int], *, always: bool = False) -> Trace:
    """The trace of a new connection from pod `src` to pod `dst` on `port`/`protocol`
    (ICMP: the port is the ICMP type)."""
    k8s, cilium = list(k8s), list(cilium)
    egress = _direction(src, dst.identity, port, protocol, EGRESS, k8s, cilium, identities,
                        named_ports, cidr_identities, always)
    ingress = _direction(dst, src.identity, port, protocol, INGRESS, k8s, cilium, identities,
                         named_ports, cidr_identities, always)
    return Trace(src, dst, port, protocol, egress, ingress)
