"""The policy map and the ipcache as the datapath will hold and look them up.

Policy map (one per endpoint, Cilium's `cilium_policy_<ep>`), an LPM trie keyed by
{remote identity, direction, protocol, destination port}; identity 0 is any identity,
protocol 0 any protocol (only with port 0), port 0 any port. A port range is a port and a
prefix length over the port's 16 bits, as Cilium does: 8080-8083 is 8080/14. The key's
prefix length covers identity (32) + direction (8) + protocol (8) + port (16) = 64 bits, less
16 for any port and 8 more for any protocol, less (16 - port prefix) for a range.

`lookup` mirrors the BPF lookup: an LPM lookup with the remote identity, which finds the most
specific entry among {id, proto, port (range)}, {id, proto, any port} and {id, any}; if none,
the same with identity 0. So the order is: exact {id, port, proto}, then {id, any port}, then
{any id, port}, then {any, any}. With allow entries only (Kubernetes NetworkPolicy) the order
decides only which entry is hit (counted); it will decide verdicts once deny entries exist.

ipcache (one per node): an LPM trie of IPv4 prefix -> identity; `ipcache_lookup` is its
longest-prefix match. Pods' /32s, nodes' /32s (host for this node, remote-node for the others),
the policies' CIDR prefixes with their CIDR identities, and 0.0.0.0/0 -> world.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hexlane.policy.identity import UNKNOWN_IDENTITY, ReservedIdentity

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address

PROTO_ANY = 0
PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}
INGRESS = "ingress"
EGRESS = "egress"
DIRECTIONS = (INGRESS, EGRESS)
FULL_PREFIX = 64  # identity 32 + direction 8 + protocol 8 + port 16


@dataclass(frozen=True, slots=True, order=True)
class PolicyEntry:
    """One policy map entry: traffic with the remote `identity` (0: any) to `port`/`port_bits`
    (port 0: any) over `protocol` (0: any) in `direction` is allowed, or with `deny` denied
    (CiliumNetworkPolicy's ingressDeny/egressDeny). For ICMP (protocol 1) the port is the
    ICMP type, as Cilium keys `icmps` rules."""

    direction: str
    identity: int
    protocol: int = PROTO_ANY
    port: int = 0
    port_bits: int = 0  # prefix length over the port's 16 bits: 16 one port, 0 any port
    deny: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r}: expected ingress or egress")
        if self.port == 0 and self.port_bits != 0:
            raise ValueError("port 0 (any port) takes port_bits 0")
        if self.protocol == PROTO_ANY and self.port != 0:
            raise ValueError("a port needs a protocol (protocol 0 means any, any port)")
        if not 0 <= self.port_bits <= 16 or self.port & _host_mask(self.port_bits):
            raise ValueError(f"port {self.port}/{self.port_bits} is not a port prefix")

    @property
    def prefix_len(self) -> int:
        """The LPM key's prefix length (bits after the lpm header)."""
        wildcard = 16 - self.port_bits
        if self.protocol == PROTO_ANY:
            wildcard += 8
        return FULL_PREFIX - wildcard

    @property
    def port_range(self) -> tuple[int, int] | None:
        """(first, last) port, None for any port."""
        if self.port == 0:
            return None
        return self.port, self.port | _host_mask(self.port_bits)

    def matches(self, protocol: int, port: int) -> bool:
        if self.protocol == PROTO_ANY:
            return True
        if self.protocol != protocol:
            return False
        rng = self.port_range
        return rng is None or rng[0] <= port <= rng[1]

    def describe(self) -> str:
        proto = PROTO_NAMES.get(self.protocol, str(self.protocol))
        rng = self.port_range
        if self.protocol == PROTO_ANY:
            ports = "ANY"
        elif rng is None:
            ports = f"ANY/{proto}"
        elif rng[0] == rng[1]:
            ports = f"{rng[0]}/{proto}"
        else:
            ports = f"{rng[0]}-{rng[1]}/{proto}"
        return f"{self.direction} {self.identity} {ports}" + (" deny" if self.deny else "")

    def covers(self, other: PolicyEntry) -> bool:
        """Whether every connection `other` matches is one this entry matches too."""
        if self.direction != other.direction or self.identity not in (0, other.identity):
            return False
        if self.protocol == PROTO_ANY:
            return True
        if self.protocol != other.protocol:
            return False
        mine, theirs = self.port_range, other.port_range
        if mine is None:
            return True
        return theirs is not None and mine[0] <= theirs[0] and theirs[1] <= mine[1]


# --- where an entry comes from -------------------------------------------------------------------

#: Cilium's policy match types (a policy verdict's policy_match_type): which part of the key hit
MATCH_NONE, MATCH_L3_ONLY, MATCH_L3_L4, MATCH_L4_ONLY, MATCH_ALL = 0, 1, 2, 3, 4
MATCH_NAMES = {MATCH_NONE: "none", MATCH_L3_ONLY: "L3-Only", MATCH_L3_L4: "L3-L4",
               MATCH_L4_ONLY: "L4-Only", MATCH_ALL: "all"}


def match_type(entry: PolicyEntry) -> int:
    """What a hit on `entry` matched: a peer (L3), a port (L4), both, or neither (all)."""
    if entry.identity != UNKNOWN_IDENTITY:
        return MATCH_L3_ONLY if entry.protocol == PROTO_ANY else MATCH_L3_L4
    return MATCH_ALL if entry.protocol == PROTO_ANY else MATCH_L4_ONLY


@dataclass(frozen=True, slots=True, order=True)
class PolicyRef:
    """A policy an entry was derived from (Hubble's flow.Policy): its kind, namespace ("" for
    a cluster-wide one) and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    @property
    def labels(self) -> tuple[str, ...]:
        """Cilium's derived-from labels of the policy's rules."""
        out = [f"k8s:io.cilium.k8s.policy.derived-from={self.kind}",
               f"k8s:io.cilium.k8s.policy.name={self.name}"]
        if self.namespace:
            out.append(f"k8s:io.cilium.k8s.policy.namespace={self.namespace}")
        return tuple(out)


def _cookie_hash(refs: frozenset[PolicyRef]) -> int:
    text = "\n".join(f"{r.kind}/{r.namespace}/{r.name}" for r in sorted(refs))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")


def policy_cookies(ref_sets: Iterable[frozenset[PolicyRef]]) -> dict[frozenset[PolicyRef], int]:
    """A number for each set of policies (0 for the empty set: no policy, e.g. default deny),
    which the datapath carries in the policy entries and reports in its verdicts. A hash of
    the names, so the same policies keep their number across changes and restarts (no entry
    rewritten for another's sake); a collision takes the next free number, in a fixed
    order."""
    out: dict[frozenset[PolicyRef], int] = {frozenset(): 0}
    taken = {0}
    for refs in sorted(set(ref_sets) - {frozenset()}, key=lambda r: sorted(r)):
        cookie = _cookie_hash(refs) or 1
        while cookie in taken:
            cookie = cookie % 0xFFFFFFFF + 1
        taken.add(cookie)
        out[refs] = cookie
    return out


def deny_origins(entries: frozenset[PolicyEntry],
                 origins: Mapping[PolicyEntry, frozenset[PolicyRef]],
                 ) -> dict[PolicyEntry, frozenset[PolicyRef]]:
    """The policies behind each entry after `with_deny_precedence`: an allow entry turned deny
    comes from the deny entries that cover it."""
    denies = [e for e in origins if e.deny]
    out: dict[PolicyEntry, frozenset[PolicyRef]] = {}
    for e in entries:
        refs = origins.get(e)
        if refs is None and e.deny:
            refs = frozenset().union(*(origins[d] for d in denies if d.covers(e)))
        out[e] = refs or frozenset()
    return out


def _host_mask(bits: int) -> int:
    return (1 << (16 - bits)) - 1


def port_range_prefixes(first: int, last: int) -> list[tuple[int, int]]:
    """Cover [first, last] (1 <= first <= last <= 65535) with the fewest aligned
    (port, prefix length) blocks, as Cilium's policy map expresses endPort ranges."""
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"bad port range {first}-{last}")
    out = []
    p = first
    while p <= last:
        size = p & -p  # the largest block aligned at p
        while p + size - 1 > last:
            size //= 2
        out.append((p, 16 - size.bit_length() + 1))
        p += size
    return out


def with_deny_precedence(entries: Iterable[PolicyEntry]) -> frozenset[PolicyEntry]:
    """Entries whose most-specific lookup gives deny whenever any deny entry matches, as
    Cilium's deny-wins rule demands: an allow entry that a deny entry covers (same or any
    identity, a protocol and port range containing its own) becomes a deny entry itself.
    Where a deny is more specific than an allow, the LPM lookup already finds the deny."""
    entries = set(entries)
    denies = [e for e in entries if e.deny]
    if not denies:
        return frozenset(entries)
    out: set[PolicyEntry] = set()
    for e in entries:
        if not e.deny and any(d.covers(e) for d in denies):
            e = PolicyEntry(e.direction, e.identity, e.protocol, e.port, e.port_bits, deny=True)
        out.add(e)
    # an allow and a deny under one key: the deny
    keys = {(e.direction, e.identity, e.protocol, e.port, e.port_bits) for e in out if e.deny}
    return frozenset(e for e in out
                     if e.deny or (e.direction, e.identity, e.protocol, e.port,
                                   e.port_bits) not in keys)


def lookup(entries: Iterable[PolicyEntry], remote_identity: int, port: int, protocol: int,
           direction: str) -> PolicyEntry | None:
    """The entry the datapath's lookup hits for a new connection, None if none (a drop with
    "Policy denied" where the direction is enforced). See the module text for the order."""
    for identity in (remote_identity, UNKNOWN_IDENTITY):
        best: PolicyEntry | None = None
        for e in entries:
            if (e.direction == direction and e.identity == identity
                    and e.matches(protocol, port)
                    and (best is None or e.prefix_len > best.prefix_len)):
                best = e
        if best is not None:
            return best
        if remote_identity == UNKNOWN_IDENTITY:
            break
    return None


# --- ipcache ------------------------------------------------------------------------------------

WORLD_PREFIX = IPv4Network("0.0.0.0/0")


def ipcache_entries(pods: Iterable[tuple[str, int]], local_node_ips: Iterable[str] = (),
                    remote_node_ips: Iterable[str] = (),
                    cidr_identities: Mapping[IPv4Network, int] | None = None,
                    ) -> dict[IPv4Network, int]:
    """The desired ipcache of a node: pods' IP/32 -> their identity, this node's IPs -> host,
    other nodes' -> remote-node (a node's IP wins over a pod's: a host-network pod has it),
    the policies' CIDR prefixes -> their CIDR identities, 0.0.0.0/0 -> world. A /32 CIDR
    prefix equal to a pod's or node's IP keeps the pod's or node's identity, as in Cilium
    (cluster endpoints are not selected by CIDR)."""
    out: dict[IPv4Network, int] = {WORLD_PREFIX: int(ReservedIdentity.WORLD)}
    for prefix, ident in (cidr_identities or {}).items():
        if prefix.prefixlen > 0:
            out[prefix] = ident
    for ip, ident in pods:
        out[IPv4Network(f"{ip}/32")] = ident
    for ip in remote_node_ips:
        out[IPv4Network(f"{ip}/32")] = int(ReservedIdentity.REMOTE_NODE)
    for ip in local_node_ips:
        out[IPv4Network(f"{ip}/32")] = int(ReservedIdentity.HOST)
    return out


def ipcache_lookup(ipcache: Mapping[IPv4Network, int], ip: str | IPv4Address) -> int:
    """Longest-prefix match of `ip`; world when nothing (not even 0.0.0.0/0) contains it."""
    addr = int(IPv4Address(ip) if isinstance(ip, str) else ip)
    for bits in sorted({net.prefixlen for net in ipcache}, reverse=True):
        ident = ipcache.get(IPv4Network((addr >> (32 - bits) << (32 - bits), bits)))
        if ident is not None:
            return ident
    return int(ReservedIdentity.WORLD)
