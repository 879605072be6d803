"""Pod address decisions (pure): per-node pod IP allocation and cluster-pool node CIDRs.

Two allocators live here, both deterministic functions of their inputs:

- `PodIPAllocator` hands out pod IPs from one node's pod CIDR. The first address after the
  network address is the node's router IP (Cilium's `cilium_host` address, our
  `hexlane_host`), so pods get addresses from the second one on. An owner (a CNI attachment,
  "containerID/ifname") asking again gets the same IP, so a repeated ADD is harmless. Freed
  addresses are not reused at once: a cursor moves round the range, which keeps a freed IP
  away from the next pod as long as the range allows (stale conntrack entries and ARP caches
  then point nowhere rather than at a stranger). `to_dict`/`from_dict` are the persistent form
  the agent writes atomically before it answers, so no IP reaches two pods across restarts.
- `carve_node_cidrs` is `ipam.mode: cluster-pool`: node pod CIDRs cut at
  `clusterPoolIPv4MaskSize` out of `clusterPoolIPv4PodCIDRList`, in pool order, nodes taken
  by name, existing assignments kept while they are valid, so a node never changes CIDR
  because another one joined or left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hexlane.model.errors import InputError, Problem

#: The format version of `PodIPAllocator.to_dict`; bumped when the layout changes.
ALLOCATOR_FORMAT = 1


class PodIPsExhausted(Exception):
    """Every pod address of the node's pod CIDR is in use."""

    def __init__(self, cidr: IPv4Network, in_use: int) -> None:
        super().__init__(f"pod CIDR {cidr} has no free address ({in_use} in use)")
        self.cidr = cidr
        self.in_use = in_use


def parse_pod_cidr(text: str, path: str = "podCIDR") -> IPv4Network:
    """An IPv4 pod CIDR with room for the router IP and at least one pod (prefix <= 30)."""
    try:
        cidr = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise InputError([Problem(f"not an IPv4 CIDR: {text!r} ({err})", path)]) from None
    if not isinstance(cidr, IPv4Network):
        raise InputError([Problem(f"only IPv4 pod CIDRs are supported, got {text!r}", path)])
    if cidr.prefixlen > 30:
        raise InputError([Problem(
            f"pod CIDR {text} is too small: it needs a router IP and pod IPs (prefix <= 30)",
            path)])
    return cidr


def router_ip(cidr: IPv4Network) -> IPv4Address:
    """The node's router IP in its pod CIDR: the first address after the network address."""
    return cidr.network_address + 1


@dataclass
class PodIPAllocator:
    """Pod IPs of one node's pod CIDR, by owner.

    Pod addresses run from network+2 to broadcast-1; the network address, the router IP and
    the broadcast address are never handed out. `allocations` may hold IPs outside `cidr`
    (the node's CIDR changed while pods kept their addresses): they stay owned and are freed
    normally, and are never handed out again from here.
    """

    cidr: IPv4Network
    allocations: dict[str, IPv4Address] = field(default_factory=dict)
    #: Offset (from the first pod address) where the next search starts.
    cursor: int = 0

    def __post_init__(self) -> None:
        seen: dict[IPv4Address, str] = {}
        for owner, ip in self.allocations.items():
            if ip in seen:
                raise ValueError(f"{ip} is allocated to both {seen[ip]!r} and {owner!r}")
            seen[ip] = owner
        self._by_ip = seen

    @property
    def router_ip(self) -> IPv4Address:
        return router_ip(self.cidr)

    @property
    def capacity(self) -> int:
        """How many pod addresses the CIDR has (all but network, router and broadcast)."""
        return self.cidr.num_addresses - 3

    def _address_at(self, offset: int) -> IPv4Address:
        return self.cidr.network_address + 2 + offset

    def owner_of(self, ip: IPv4Address) -> str | None:
        return self._by_ip.get(ip)

    def get(self, owner: str) -> IPv4Address | None:
        return self.allocations.get(owner)

    def allocate(self, owner: str) -> IPv4Address:
        """The owner's IP: the one it has, or the next free one after the cursor."""
        existing = self.allocations.get(owner)
        if existing is not None:
            return existing
        capacity = self.capacity
        for step in range(capacity):
            offset = (self.cursor + step) % capacity
            ip = self._address_at(offset)
            if ip not in self._by_ip:
                self.allocations[owner] = ip
                self._by_ip[ip] = owner
                self.cursor = (offset + 1) % capacity
                return ip
        raise PodIPsExhausted(self.cidr, len(self.allocations))

    def claim(self, owner: str, ip: IPv4Address) -> None:
        """Record an IP the owner already has (e.g. found on a live interface)."""
        holder = self._by_ip.get(ip)
        if holder is not None and holder != owner:
            raise ValueError(f"{ip} already belongs to {holder!r}, not {owner!r}")
        previous = self.allocations.get(owner)
        if previous is not None and previous != ip:
            del self._by_ip[previous]
        self.allocations[owner] = ip
        self._by_ip[ip] = owner

    def release(self, owner: str) -> IPv4Address | None:
        """Free the owner's IP; None when it had none (release is idempotent)."""
        ip = self.allocations.pop(owner, None)
        if ip is not None:
            del self._by_ip[ip]
        return ip

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ALLOCATOR_FORMAT,
            "cidr": str(self.cidr),
            "cursor": self.cursor,
            "allocations": {owner: str(ip) for owner, ip in sorted(self.allocations.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], cidr: IPv4Network | None = None
                  ) -> PodIPAllocator:
        """Load a persisted allocator; `cidr`, when given, replaces the stored pod CIDR."""
        if data.get("format") != ALLOCATOR_FORMAT:
            raise ValueError(f"unknown allocator format {data.get('format')!r}")
        stored = parse_pod_cidr(str(data["cidr"]), "cidr")
        allocations = {str(owner): IPv4Address(str(ip))
                       for owner, ip in dict(data.get("allocations", {})).items()}
        target = cidr if cidr is not None else stored
        capacity = target.num_addresses - 3
        cursor = int(data.get("cursor", 0)) if target == stored else 0
        return cls(target, allocations, cursor % capacity)


# --- cluster-pool: node CIDRs carved from the cluster's pod CIDR list -------------------------


@dataclass(frozen=True)
class NodeCIDRPlan:
    """Which pod CIDR each node has; nodes that got none; problems with the pool."""

    assignments: dict[str, IPv4Network]
    unassigned: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()


def parse_cluster_pool(cidrs: Sequence[str], mask_size: int,
                       path: str = "ipam.operator.clusterPoolIPv4PodCIDRList"
                       ) -> list[IPv4Network]:
    """The pool list as networks; every problem (bad CIDR, too small for the mask) at once."""
    problems: list[Problem] = []
    pool: list[IPv4Network] = []
    if not 1 <= mask_size <= 30:
        problems.append(Problem(f"mask size {mask_size} must be between 1 and 30",
                                "ipam.operator.clusterPoolIPv4MaskSize"))
    for i, text in enumerate(cidrs):
        try:
            net = ipaddress.ip_network(str(text), strict=True)
        except ValueError as err:
            problems.append(Problem(f"not a CIDR: {text!r} ({err})", f"{path}[{i}]"))
            continue
        if not isinstance(net, IPv4Network):
            problems.append(Problem(f"only IPv4 is supported, got {text!r}", f"{path}[{i}]"))
            continue
        if net.prefixlen > mask_size:
            problems.append(Problem(
                f"{text} is smaller than one node CIDR (/{mask_size})", f"{path}[{i}]"))
            continue
        for j, other in enumerate(pool):
            if net.overlaps(other):
                problems.append(Problem(f"{text} overlaps {other} (entry {j})", f"{path}[{i}]"))
                break
        else:
            pool.append(net)
    if problems:
        raise InputError(problems)
    return pool


def _subnets(pool: Iterable[IPv4Network], mask_size: int) -> Iterable[IPv4Network]:
    for net in pool:
        yield from net.subnets(new_prefix=mask_size)


def carve_node_cidrs(pool: Sequence[IPv4Network], mask_size: int, nodes: Iterable[str],
                     existing: Mapping[str, IPv4Network]) -> NodeCIDRPlan:
    """Give every node in `nodes` one pod CIDR of /mask_size from `pool`.

    Existing assignments of nodes still present are kept when they lie in the pool at the
    mask size and no earlier node (by name) holds the same CIDR; nodes not in `nodes` lose
    theirs. New nodes, by name, get the lowest free subnets in pool order. When the pool
    runs out the remaining nodes are listed as unassigned with a problem each.
    """
    names = sorted(set(nodes))
    taken: set[IPv4Network] = set()
    assignments: dict[str, IPv4Network] = {}
    for name in names:
        cidr = existing.get(name)
        if (cidr is not None and cidr.prefixlen == mask_size and cidr not in taken
                and any(cidr.subnet_of(net) for net in pool)):
            assignments[name] = cidr
            taken.add(cidr)
    free = (net for net in _subnets(pool, mask_size) if net not in taken)
    unassigned: list[str] = []
    problems: list[Problem] = []
    for name in names:
        if name in assignments:
            continue
        cidr = next(free, None)
        if cidr is None:
            unassigned.append(name)
            problems.append(Problem(
                f"cluster pool exhausted: no /{mask_size} left for node {name}",
                "ipam.operator.clusterPoolIPv4PodCIDRList", obj=f"Node/{name}"))
            continue
        assignments[name] = cidr
        taken.add(cidr)
    return NodeCIDRPlan(assignments, tuple(unassigned), tuple(problems))
