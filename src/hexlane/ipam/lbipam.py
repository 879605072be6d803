"""LB-IPAM: which LoadBalancer IPs every Service gets from CiliumLoadBalancerIPPools (pure).

`allocate(pools, services)` takes plain frozen inputs (`PoolInput`, `ServiceInput`; adapters
from manifests and from `hexlane.model` live in `hexlane.ipam.inputs`) and returns an
`LBIPAMPlan`: per Service its ingress IPs and its `cilium.io/IPAMRequestSatisfied` condition,
per pool its `cilium.io/PoolConflict` condition and IP counters. The operator turns the plan
into status patches; `hexlane ipam plan` prints it. Nothing here does I/O or reads a clock.

The semantics are Cilium's operator/pkg/lbipam (v1.16), computed from scratch instead of
event by event:

1. Pools are ordered oldest first (creationTimestamp, then input order, then name); a pool
   overlapping itself, or the newer of two unmarked overlapping pools, is marked conflicting
   (a mark stays while the pool overlaps any pool) and all of its ranges are disabled, as
   are the ranges of a `disabled` pool.
2. Every handled Service, oldest first, takes back the IPs it holds (the previous plan's, then
   `status.loadBalancer.ingress`) when they are still valid for it: requested (or of a
   requested family), inside a range whose pool selects it, and not held by an incompatible
   Service. Unlike Cilium, an IP inside a disabled or conflicting pool is taken back too, so a
   restart never moves an address (Cilium keeps such IPs while running and drops them when it
   restarts).
3. First and last addresses of CIDR blocks are reserved where `allowFirstLastIPs: "No"`.
4. Every handled Service, oldest first, then gets what it still lacks: its requested IPs, or
   one IP per requested family (a compatible shared IP first when it has a sharing key, else
   Cilium's choice from the first enabled matching range: see `hexlane.ipam.blocks`).

Beyond Cilium: Services sharing an IP need disjoint (protocol, port) pairs rather than disjoint
port numbers (DNS on TCP/53 and UDP/53 may share); MetalLB's `loadBalancerIPs` and
`allow-shared-ip` annotations are read when the Cilium ones are absent; a PreferDualStack
Service is satisfied with one family when the other cannot be had.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hexlane.ipam.blocks import BlockAllocator
from hexlane.model.selectors import LabelSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SERVICE_CONDITION = "cilium.io/IPAMRequestSatisfied"
POOL_CONFLICT_CONDITION = "cilium.io/PoolConflict"
POOL_TOTAL_CONDITION = "cilium.io/IPsTotal"
POOL_AVAILABLE_CONDITION = "cilium.io/IPsAvailable"
POOL_USED_CONDITION = "cilium.io/IPsUsed"

SERVICE_NAMESPACE_LABEL = "io.kubernetes.service.namespace"
SERVICE_NAME_LABEL = "io.kubernetes.service.name"

LB_CLASS_L2 = "io.cilium/l2-announcer"
LB_CLASS_BGP = "io.cilium/bgp-control-plane"

# Annotation spellings in order of precedence: the first one present wins (Cilium's
# annotation.Get), and MetalLB's are only read when no Cilium spelling is present.
ANNOTATIONS_IPS = ("lbipam.cilium.io/ips", "io.cilium/lb-ipam-ips")
ANNOTATIONS_SHARING_KEY = ("lbipam.cilium.io/sharing-key", "io.cilium/lb-ipam-sharing-key")
ANNOTATIONS_CROSS_NAMESPACE = ("lbipam.cilium.io/sharing-cross-namespace",
                               "io.cilium/lb-ipam-sharing-cross-namespace")
ANNOTATIONS_METALLB_IPS = ("metallb.universe.tf/loadBalancerIPs", "metallb.io/loadBalancerIPs")
ANNOTATIONS_METALLB_SHARING = ("metallb.universe.tf/allow-shared-ip", "metallb.io/allow-shared-ip")
CROSS_NAMESPACE_ANY = "*"

# Condition reasons and messages, Cilium's words.
REASON_SATISFIED = "satisfied"
REASON_NO_POOL = "no_pool"
REASON_SELECTOR_MISMATCH = "pool_selector_mismatch"
REASON_ALREADY_ALLOCATED = "already_allocated"
REASON_INCOMPATIBLE = "already_allocated_incompatible_service"
REASON_OUT_OF_IPS = "out_of_ips"
REASON_CIDR_OVERLAP = "cidr_overlap"
REASON_RESOLVED = "resolved"
REASON_COUNTER = "noreason"
MSG_NO_MATCHING_POOL = "There are no enabled CiliumLoadBalancerIPPools that match this service"
MSG_OUT_OF_IPS = ("All enabled CiliumLoadBalancerIPPools that match this service ran out of "
                  "allocatable IPs")

INCOMPATIBLE_KEY = "different sharing key"
INCOMPATIBLE_NAMESPACE = "different and not permitted namespace"
# Cilium v1.16 compares port numbers only and says "same port"; hexlane compares
# (protocol, port) pairs, and uses the words Cilium uses when it does the same.
INCOMPATIBLE_PORT = "same port and protocol"
INCOMPATIBLE_ETP = "different ExternalTrafficPolicy"
INCOMPATIBLE_LOCAL_PODS = ("compatible ExternalTrafficPolicy local but selecting different "
                           "set of pods")

_OLDEST = datetime.min.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class BlockInput:
    """One pool block as an inclusive address range; `from_cidr` matters for first/last."""

    first: IPAddress
    last: IPAddress
    from_cidr: bool = False

    def __post_init__(self) -> None:
        if self.first.version != self.last.version:
            raise ValueError(f"block {self.first} - {self.last} mixes address families")
        if int(self.first) > int(self.last):
            raise ValueError(f"block start {self.first} is after its stop {self.last}")

    @classmethod
    def cidr(cls, text: str) -> BlockInput:
        """A CIDR block; host bits are masked off, as Cilium does."""
        net = ipaddress.ip_network(text, strict=False)
        return cls(net.network_address, net.broadcast_address, True)

    @classmethod
    def range(cls, start: str, stop: str | None = None) -> BlockInput:
        """A start[-stop] block; a start alone is that one address."""
        first = ipaddress.ip_address(start)
        return cls(first, ipaddress.ip_address(stop) if stop else first, False)

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __str__(self) -> str:
        return f"{self.first} - {self.last}"


@dataclass(frozen=True, slots=True)
class PoolInput:
    """What LB-IPAM needs of a CiliumLoadBalancerIPPool."""

    name: str
    blocks: tuple[BlockInput, ...] = ()
    created: datetime | None = None
    order: int = 0  # position among inputs: breaks creationTimestamp ties (file order)
    allow_first_last_ips: str = ""  # only exactly "No" reserves first and last
    service_selector: LabelSelector | None = None  # None selects every Service
    disabled: bool = False
    # The message of the pool's current `cilium.io/PoolConflict=True` condition, None when
    # it is not marked conflicting: the mark is sticky, as in Cilium (see _settle_conflicts).
    conflict: str | None = None


@dataclass(frozen=True, slots=True)
class PortInput:
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class ServiceInput:
    """What LB-IPAM needs of a Service, its current ingress IPs included."""

    namespace: str
    name: str
    uid: str = ""
    created: datetime | None = None
    order: int = 0
    type: str = "LoadBalancer"
    load_balancer_class: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortInput, ...] = ()
    external_traffic_policy: str = "Cluster"
    selector: Mapping[str, str] = field(default_factory=dict)
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str | None = None
    load_balancer_ip: str = ""
    current_ingress_ips: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Options:
    """Operator settings that change LB-IPAM's answers (Cilium's defaults)."""

    ipv4_enabled: bool = True
    ipv6_enabled: bool = False
    default_lb_service_ipam: bool = True  # handle Services that set no loadBalancerClass
    lb_classes: tuple[str, ...] = (LB_CLASS_BGP, LB_CLASS_L2)


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "status": self.status, "reason": self.reason,
                "message": self.message}


@dataclass(frozen=True, slots=True)
class ServiceResult:
    """A Service's answer. `handled` False: not LB-IPAM's, so it must carry no ingress IPs
    and no IPAMRequestSatisfied condition (`ips` empty, `condition` None)."""

    key: str
    ips: tuple[str, ...]
    condition: Condition | None
    handled: bool = True

    @property
    def satisfied(self) -> bool:
        return self.condition is not None and self.condition.status == "True"


@dataclass(frozen=True, slots=True)
class PoolStatus:
    name: str
    conflicting: bool
    conflict_message: str
    total: int
    available: int
    used: int

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """In the order Cilium first sets them (conflict first, then the counters)."""
        conflict = (Condition(POOL_CONFLICT_CONDITION, "True", REASON_CIDR_OVERLAP,
                              self.conflict_message) if self.conflicting
                    else Condition(POOL_CONFLICT_CONDITION, "False", REASON_RESOLVED, ""))
        return (
            conflict,
            Condition(POOL_TOTAL_CONDITION, "Unknown", REASON_COUNTER, str(self.total)),
            Condition(POOL_AVAILABLE_CONDITION, "Unknown", REASON_COUNTER, str(self.available)),
            Condition(POOL_USED_CONDITION, "Unknown", REASON_COUNTER, str(self.used)),
        )


@dataclass(frozen=True, slots=True)
class LBIPAMPlan:
    """`idle`: no pool exists, so (like Cilium) LB-IPAM leaves every Service as it is."""

    services: Mapping[str, ServiceResult]
    pools: Mapping[str, PoolStatus]
    idle: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of `hexlane ipam plan -o json`."""
        return {
            "idle": self.idle,
            "services": {
                k: {"ips": list(r.ips), "handled": r.handled,
                    "condition": ({"status": r.condition.status, "reason": r.condition.reason,
                                   "message": r.condition.message}
                                  if r.condition else None)}
                for k, r in self.services.items()},
            "pools": {
                n: {"conflicting": p.conflicting,
                    "conditions": [c.to_dict() for c in p.conditions],
                    "counters": {"total": p.total, "available": p.available, "used": p.used}}
                for n, p in self.pools.items()},
        }


# --------------------------------------------------------------------------- service view


def annotation(annotations: Mapping[str, str], keys: Sequence[str]) -> str | None:
    """The value of the first of `keys` present (even if empty), or None."""
    for k in keys:
        if k in annotations:
            return annotations[k]
    return None


def requested_ip_texts(svc: ServiceInput) -> list[str]:
    """`.spec.loadBalancerIP` then the IPs annotation (MetalLB's if no Cilium one), trimmed."""
    texts = [svc.load_balancer_ip] if svc.load_balancer_ip else []
    value = annotation(svc.annotations, ANNOTATIONS_IPS)
    if value is None:
        value = annotation(svc.annotations, ANNOTATIONS_METALLB_IPS)
    if value:
        texts.extend(t.strip() for t in value.split(","))
    return [t for t in texts if t]


def requested_ips(svc: ServiceInput) -> list[IPAddress]:
    """The parseable requested IPs, first occurrence kept (bad ones are skipped, as Cilium
    does; `hexlane.ipam.inputs` reports them)."""
    out: list[IPAddress] = []
    for text in requested_ip_texts(svc):
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip not in out:
            out.append(ip)
    return out


def sharing_key(svc: ServiceInput) -> str:
    value = annotation(svc.annotations, ANNOTATIONS_SHARING_KEY)
    if value is None:
        value = annotation(svc.annotations, ANNOTATIONS_METALLB_SHARING)
    return value or ""


def sharing_cross_namespace(svc: ServiceInput) -> frozenset[str]:
    value = annotation(svc.annotations, ANNOTATIONS_CROSS_NAMESPACE)
    if not value:
        return frozenset()
    return frozenset(v.strip() for v in value.split(",") if v.strip())


def requested_families(svc: ServiceInput, options: Options) -> tuple[bool, bool]:
    """(IPv4, IPv6) wanted, exactly Cilium's serviceIPFamilyRequest."""
    v4 = v6 = False
    policy, fams = svc.ip_family_policy, svc.ip_families
    if policy == "PreferDualStack":
        if fams:
            v4 = "IPv4" in fams and options.ipv4_enabled
            v6 = "IPv6" in fams and options.ipv6_enabled
        else:
            v4, v6 = options.ipv4_enabled, options.ipv6_enabled
    elif policy == "RequireDualStack":
        v4, v6 = options.ipv4_enabled, options.ipv6_enabled
    elif fams:  # SingleStack or unset: the first listed family
        v4, v6 = fams[0] == "IPv4", fams[0] != "IPv4"
    elif options.ipv4_enabled:
        v4 = True
    elif options.ipv6_enabled:
        v6 = True
    return v4, v6


def is_handled(svc: ServiceInput, options: Options) -> bool:
    """Cilium's isResponsibleForSVC."""
    if svc.type != "LoadBalancer":
        return False
    if svc.load_balancer_class is None:
        return options.default_lb_service_ipam
    return svc.load_balancer_class in options.lb_classes


def selector_labels(svc: ServiceInput) -> dict[str, str]:
    """The labels pool selectors see: the Service's, with namespace and name labels on top
    (they override user labels, so a Service cannot pose as another namespace's)."""
    labels = dict(svc.labels)
    labels[SERVICE_NAMESPACE_LABEL] = svc.namespace
    labels[SERVICE_NAME_LABEL] = svc.name
    return labels


@dataclass(eq=False)
class _Svc:
    input: ServiceInput
    labels: dict[str, str]
    requested: list[IPAddress]
    sharing_key: str
    cross_namespace: frozenset[str]
    want_v4: bool
    want_v6: bool
    ports: frozenset[tuple[str, int]]
    etp: str
    held: list[IPAddress] = field(default_factory=list)
    held_versions: set[int] = field(default_factory=set)
    failure: Condition | None = None

    @classmethod
    def of(cls, svc: ServiceInput, options: Options) -> _Svc:
        v4, v6 = requested_families(svc, options)
        return cls(
            input=svc, labels=selector_labels(svc), requested=requested_ips(svc),
            sharing_key=sharing_key(svc), cross_namespace=sharing_cross_namespace(svc),
            want_v4=v4, want_v6=v6,
            ports=frozenset(((p.protocol or "TCP").upper(), p.port) for p in svc.ports),
            etp=svc.external_traffic_policy or "Cluster",
        )

    def wants(self, ip: IPAddress) -> bool:
        """Whether the Service may hold `ip`: requested, or of a requested family."""
        if self.requested:
            return ip in self.requested
        return self.want_v4 if ip.version == 4 else self.want_v6

    def holds_family(self, version: int) -> bool:
        return version in self.held_versions

    def satisfied(self) -> bool:
        if self.requested:
            return all(ip in self.held for ip in self.requested)
        has4, has6 = self.holds_family(4), self.holds_family(6)
        if self.input.ip_family_policy == "PreferDualStack" and self.want_v4 and self.want_v6:
            return has4 or has6
        return (has4 or not self.want_v4) and (has6 or not self.want_v6)

    def fail(self, reason: str, message: str) -> None:
        self.failure = Condition(SERVICE_CONDITION, "False", reason, message)


def sharing_incompatibility(a: ServiceInput, b: ServiceInput) -> str | None:
    """Why `a` and `b` may not share an IP (Cilium's reasons), or None when they may."""
    return _incompatibility(_Svc.of(a, Options()), _Svc.of(b, Options()))


def _incompatibility(a: _Svc, b: _Svc) -> str | None:
    if a.sharing_key != b.sharing_key:
        return INCOMPATIBLE_KEY
    ns_a, ns_b = a.input.namespace, b.input.namespace
    if ns_a != ns_b and not (
            (ns_b in a.cross_namespace or CROSS_NAMESPACE_ANY in a.cross_namespace)
            and (ns_a in b.cross_namespace or CROSS_NAMESPACE_ANY in b.cross_namespace)):
        return INCOMPATIBLE_NAMESPACE
    if a.ports & b.ports:
        return INCOMPATIBLE_PORT
    if a.etp != b.etp:
        return INCOMPATIBLE_ETP
    if a.etp == "Local":
        sel_a, sel_b = dict(a.input.selector), dict(b.input.selector)
        # Without selectors (hand-made endpoints) Cilium cannot tell which pods; refuse.
        if not sel_a or not sel_b or sel_a != sel_b:
            return INCOMPATIBLE_LOCAL_PODS
    return None


# --------------------------------------------------------------------------- pools and ranges


@dataclass(eq=False)
class _Pool:
    input: PoolInput
    ranges: list[_Range] = field(default_factory=list)
    conflicting: bool = False
    conflict_message: str = ""

    def mark(self, message: str) -> None:
        self.conflicting, self.conflict_message = True, message

    def selects(self, svc: _Svc) -> bool:
        sel = self.input.service_selector
        return sel is None or sel.matches(svc.labels)


@dataclass(eq=False)
class _Range:
    pool: _Pool
    block: BlockInput
    alloc: BlockAllocator
    reserved: set[int] = field(default_factory=set)

    @property
    def enabled(self) -> bool:
        return not self.pool.input.disabled and not self.pool.conflicting

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.block.first.version and self.alloc.contains(int(ip))


@dataclass(eq=False)
class _Group:
    """The Services holding one IP, in the order they got it."""

    ip: IPAddress
    range: _Range
    holders: list[_Svc]

    def incompatibility(self, svc: _Svc) -> str | None:
        for holder in self.holders:
            if holder is not svc and (why := _incompatibility(holder, svc)) is not None:
                return why
        return None


def _overlap(a: BlockInput, b: BlockInput) -> bool:
    return (a.first.version == b.first.version and int(a.first) <= int(b.last)
            and int(b.first) <= int(a.last))


def _settle_conflicts(pools: list[_Pool]) -> None:
    """Cilium's settleConflicts, walking the pools oldest first instead of in map order.

    `pools` come marked as their status says. Marking: an unmarked pool whose blocks overlap
    each other is marked; otherwise, against each other unmarked pool in turn, the first
    overlap marks the newer of the two. Unmarking: a marked pool is cleared only when it
    overlaps nothing at all (a marked pool overlapping only another marked pool stays
    marked, as in Cilium, so the mark does not flap between two pools).
    """
    for pool in pools:
        if pool.conflicting:
            continue
        internal = _internal_overlap(pool)
        if internal is not None:
            pool.mark(_conflict_message(internal[0], internal[1], pool.input.name))
            continue
        for other in pools:
            if other is pool or other.conflicting:
                continue
            pair = next(((a, b) for a in pool.ranges for b in other.ranges
                         if _overlap(a.block, b.block)), None)
            if pair is None:
                continue
            if pools.index(pool) < pools.index(other):  # this pool is older
                other.mark(_conflict_message(pair[1].block, pair[0].block, pool.input.name))
            else:
                pool.mark(_conflict_message(pair[0].block, pair[1].block, other.input.name))
            break
    for pool in pools:
        if not pool.conflicting or _internal_overlap(pool) is not None:
            continue
        if not any(_overlap(a.block, b.block) for other in pools if other is not pool
                   for a in pool.ranges for b in other.ranges):
            pool.conflicting, pool.conflict_message = False, ""


def _internal_overlap(pool: _Pool) -> tuple[BlockInput, BlockInput] | None:
    for a in pool.ranges:
        for b in pool.ranges:
            if a is not b and _overlap(a.block, b.block):
                return a.block, b.block
    return None


def _conflict_message(target: BlockInput, other: BlockInput, other_pool: str) -> str:
    return (f"Pool conflicts since range '{target}' overlaps range '{other}' from IP Pool "
            f"'{other_pool}'")


# --------------------------------------------------------------------------- the allocator


class _Allocator:
    def __init__(self, pools: list[_Pool]) -> None:
        self.pools = pools
        self.ranges = [r for p in pools for r in p.ranges]
        self.groups: dict[IPAddress, _Group] = {}
        # Per sharing key, the IPs its Services hold, in the order they were first held
        # (Cilium's rangesStore sharing index): a new sharer tries them in this order.
        self.sharing_index: dict[str, list[IPAddress]] = {}

    def find_range(self, svc: _Svc, ip: IPAddress) -> tuple[_Range | None, bool]:
        """Cilium's findRangeOfIP: the first enabled range holding `ip` whose pool selects
        `svc`, and whether some enabled range holds `ip` at all."""
        found = False
        for r in self.ranges:
            if r.enabled and r.contains(ip):
                found = True
                if r.pool.selects(svc):
                    return r, True
        return None, found

    def find_kept_range(self, svc: _Svc, ip: IPAddress) -> _Range | None:
        rng, _ = self.find_range(svc, ip)
        if rng is not None:
            return rng
        # hexlane: disabled and conflicting pools keep their allocations across restarts.
        for r in self.ranges:
            if not r.enabled and r.contains(ip) and r.pool.selects(svc):
                return r
        return None

    def claim(self, rng: _Range, ip: IPAddress, svc: _Svc) -> None:
        """Record a new IP for `svc` from `rng`. An IP kept in a disabled or conflicting range
        may also lie in an enabled one (pools overlap only when one conflicts): it is taken
        there too, so no range hands it out a second time."""
        for r in self.ranges:
            if r is rng or (r.enabled and r.contains(ip)):
                r.alloc.take(int(ip))
        self.groups[ip] = _Group(ip, rng, [svc])
        self.hold(svc, ip)

    def join(self, group: _Group, svc: _Svc) -> None:
        group.holders.append(svc)
        self.hold(svc, ip=group.ip)

    def hold(self, svc: _Svc, ip: IPAddress) -> None:
        svc.held.append(ip)
        svc.held_versions.add(ip.version)
        if svc.sharing_key:
            ips = self.sharing_index.setdefault(svc.sharing_key, [])
            if ip not in ips:
                ips.append(ip)

    def keep(self, svc: _Svc, ip: IPAddress) -> None:
        """Take back an IP the Service already holds, when it is still valid for it."""
        if ip in svc.held or not svc.wants(ip):
            return
        rng = self.find_kept_range(svc, ip)
        if rng is None:
            return
        group = self.groups.get(ip)
        if group is None:
            self.claim(rng, ip, svc)
        elif svc.sharing_key and group.incompatibility(svc) is None:
            self.join(group, svc)

    def reserve_first_last(self) -> None:
        for r in self.ranges:
            if (r.block.from_cidr and r.pool.input.allow_first_last_ips == "No"
                    and r.block.size > 2):
                for ip in (int(r.block.first), int(r.block.last)):
                    if r.alloc.take(ip):
                        r.reserved.add(ip)

    def satisfy(self, svc: _Svc) -> None:
        if svc.requested:
            for ip in svc.requested:
                if ip not in svc.held:
                    self.satisfy_specific(svc, ip)
            return
        for version, wanted in ((4, svc.want_v4), (6, svc.want_v6)):
            if wanted and not svc.holds_family(version):
                self.satisfy_family(svc, version)

    def satisfy_specific(self, svc: _Svc, ip: IPAddress) -> None:
        rng, found = self.find_range(svc, ip)
        if rng is None:
            if found:
                svc.fail(REASON_SELECTOR_MISMATCH,
                         f"The pool with the CIDR containing '{ip}', doesn't select this "
                         "service")
            else:
                svc.fail(REASON_NO_POOL, f"No pool exists with a CIDR containing '{ip}'")
            return
        group = self.groups.get(ip)
        if int(ip) in rng.reserved or (group is not None and not svc.sharing_key):
            svc.fail(REASON_ALREADY_ALLOCATED,
                     f"The IP '{ip}' is already allocated to another service")
            return
        if group is None:
            self.claim(rng, ip, svc)
            return
        why = group.incompatibility(svc)
        if why is not None:
            svc.fail(REASON_INCOMPATIBLE,
                     f"The IP '{ip}' is already allocated to an incompatible service. "
                     f"Reason: {why}")
            return
        self.join(group, svc)

    def satisfy_family(self, svc: _Svc, version: int) -> None:
        if svc.sharing_key:
            for ip in self.sharing_index.get(svc.sharing_key, ()):
                if ip.version != version:
                    continue
                group = self.groups[ip]
                # hexlane: joining is a new allocation, so the IP must lie in an enabled
                # pool selecting this Service (Cilium does not check).
                if self.find_range(svc, ip)[0] is None:
                    continue
                if group.incompatibility(svc) is None:
                    self.join(group, svc)
                    return
        full = False
        for r in self.ranges:
            if not r.enabled or r.block.first.version != version or not r.pool.selects(svc):
                continue
            got = r.alloc.take_any()
            if got is None:
                full = True
                continue
            ip = ipaddress.ip_address(got) if version == 4 else ipaddress.IPv6Address(got)
            self.claim(r, ip, svc)
            return
        if full:
            svc.fail(REASON_OUT_OF_IPS, MSG_OUT_OF_IPS)
        else:
            svc.fail(REASON_NO_POOL, MSG_NO_MATCHING_POOL)


def _age_key(created: datetime | None, order: int) -> tuple[datetime, int]:
    return (created if created is not None else _OLDEST, order)


@functools.lru_cache(maxsize=1 << 16)
def _parse_ip(text: str) -> IPAddress | None:
    """Parsing dominates large recomputes (every ingress IP, every run): remember it."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


@functools.lru_cache(maxsize=1 << 16)
def _format_ip(ip: IPAddress) -> str:
    return str(ip)


def _parse_ips(texts: Iterable[str]) -> list[IPAddress]:
    out: list[IPAddress] = []
    for t in texts:
        ip = _parse_ip(t)
        if ip is not None and ip not in out:
            out.append(ip)
    return out


def allocate(pools: Iterable[PoolInput], services: Iterable[ServiceInput],
             previous: LBIPAMPlan | None = None, options: Options | None = None) -> LBIPAMPlan:
    """LB-IPAM's answer for these pools and Services.

    Deterministic: the order of the inputs does not matter (pools by creationTimestamp then
    `order` then name; Services by creationTimestamp then `order` then namespace/name).
    `previous` is the last plan (the operator's memory): the IPs it gave are taken back
    before the Services' current ingress IPs, so a status write that has not landed yet
    moves nothing. A pool or Service name given twice: the first in that order counts.
    """
    options = options or Options()
    pool_list: list[_Pool] = []
    seen: set[str] = set()
    for p in sorted(pools, key=lambda p: (*_age_key(p.created, p.order), p.name)):
        if p.name in seen:
            continue
        seen.add(p.name)
        mark = p.conflict
        if previous is not None and p.name in previous.pools:
            prev_pool = previous.pools[p.name]
            mark = prev_pool.conflict_message if prev_pool.conflicting else None
        pool = _Pool(p, conflicting=mark is not None, conflict_message=mark or "")
        pool.ranges = [_Range(pool, b, BlockAllocator(int(b.first), int(b.last)))
                       for b in p.blocks]
        pool_list.append(pool)

    results: dict[str, ServiceResult] = {}
    handled: list[_Svc] = []
    for s in sorted(services, key=lambda s: (*_age_key(s.created, s.order), s.namespace,
                                             s.name)):
        if s.key in results:
            continue
        if is_handled(s, options):
            handled.append(_Svc.of(s, options))
            results[s.key] = ServiceResult(s.key, (), None)  # placeholder, replaced below
        else:
            results[s.key] = ServiceResult(s.key, (), None, handled=False)

    if not pool_list:
        # Cilium waits for the first pool before it looks at any Service.
        return LBIPAMPlan(services={}, pools={}, idle=True)

    _settle_conflicts(pool_list)
    alloc = _Allocator(pool_list)
    for svc in handled:
        held: list[str] = []
        prev = previous.services.get(svc.input.key) if previous is not None else None
        if prev is not None and prev.handled:
            held.extend(prev.ips)
        held.extend(svc.input.current_ingress_ips)
        for ip in _parse_ips(held):
            alloc.keep(svc, ip)
    alloc.reserve_first_last()
    for svc in handled:
        alloc.satisfy(svc)

    for svc in handled:
        if svc.satisfied():
            cond = Condition(SERVICE_CONDITION, "True", REASON_SATISFIED, "")
        else:
            cond = svc.failure or Condition(SERVICE_CONDITION, "False", REASON_NO_POOL,
                                            MSG_NO_MATCHING_POOL)
        ips = tuple(_format_ip(ip) for ip in svc.held)
        results[svc.input.key] = ServiceResult(svc.input.key, ips, cond)

    statuses: dict[str, PoolStatus] = {}
    for pool in pool_list:
        total = sum(r.alloc.size for r in pool.ranges)
        used = sum(r.alloc.used for r in pool.ranges)
        statuses[pool.input.name] = PoolStatus(pool.input.name, pool.conflicting,
                                               pool.conflict_message, total, total - used, used)
    return LBIPAMPlan(services=dict(sorted(results.items())), pools=statuses)
