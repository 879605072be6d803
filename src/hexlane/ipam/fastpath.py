"""LB-IPAM's fast path for the common event: new, plain LoadBalancer Services (pure).

A full run of the allocator costs time in proportion to every Service in the cluster (seconds
at 10,000), which is fine once per batch but not for the latency of one new Service. When the
only changes since the last run are *added* Services that ask for nothing special — handled
by LB-IPAM, no requested IPs, no sharing key, no ingress yet — and the last plan has no
conflicting pool, the answer for everything else is unchanged (nothing was freed, so no
waiting Service can gain; every holder keeps its IPs), and the new Services only need free
addresses. `allocate_added` gets them from the same pure allocator, run over just the new
Services and pools cut down to their free addresses (every address the last plan gives, and
reserved first/last addresses, taken out), and merges the answer into the last plan with the
pool counters moved on.

Where it would not be exact it declines (returns None) and the caller makes a full run: a
pool conflict, any special request, or a new Service left unsatisfied (the reason would name
the cut-down pools). One difference remains by design: in a range with holes (addresses freed
by deleted Services) the fast path gives the lowest free address, where a full run gives the
first address of the smallest hole (Cilium's heap order). Both are valid, and the next full
run keeps whichever was given (held IPs are taken back first), so nothing ever moves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field, replace

from hexlane.ipam.inputs import pool_input_from_model, service_input_from_model
from hexlane.ipam.lbipam import (
    BlockInput,
    LBIPAMPlan,
    Options,
    PoolInput,
    ServiceResult,
    allocate,
    is_handled,
    requested_ip_texts,
    sharing_key,
)
from hexlane.model.cilium import LBIPPool
from hexlane.model.service import Service

Address = tuple[int, int]  # (IP version, integer value)


def address(text: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.version, int(ip)


@dataclass
class HeldAddresses:
    """Every address the current plan gives to some Service."""

    addresses: set[Address] = field(default_factory=set)

    @classmethod
    def of(cls, plan: LBIPAMPlan) -> HeldAddresses:
        held = cls()
        held.add(ip for r in plan.services.values() if r.handled for ip in r.ips)
        return held

    def add(self, ips: Iterable[str]) -> None:
        for text in ips:
            a = address(text)
            if a is not None:
                self.addresses.add(a)


def _ip(version: int, value: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def free_blocks(pool: PoolInput, held: Set[Address], need: int) -> tuple[BlockInput, ...]:
    """The pool's free addresses as blocks, in block order and address order, enough of them
    to hold `need` addresses per original block (the allocator never looks further)."""
    out: list[BlockInput] = []
    for block in pool.blocks:
        version, first, last = block.first.version, int(block.first), int(block.last)
        taken = sorted(v for ver, v in held if ver == version and first <= v <= last) \
            if held else []
        if block.from_cidr and pool.allow_first_last_ips == "No" and block.size > 2:
            taken = sorted({first, last, *taken})
        start, room = first, 0
        for value in [*taken, last + 1]:
            if value > start and room < need:
                stop = value - 1
                out.append(BlockInput(_ip(version, start), _ip(version, stop), False))
                room += stop - start + 1
            start = max(start, value + 1)
            if room >= need:
                break
    return tuple(out)


def allocate_added(previous: LBIPAMPlan, pools: Sequence[LBIPPool], added: Sequence[Service],
                   held: HeldAddresses, options: Options | None = None
                   ) -> LBIPAMPlan | None:
    """The plan with `added` Services allocated, or None when a full run is needed (see the
    module docstring). `previous` must be the plan for the same pools and the other Services."""
    options = options or Options()
    if previous.idle or any(p.conflicting for p in previous.pools.values()):
        return None
    inputs = [service_input_from_model(s) for s in added]
    handled = [s for s in inputs if is_handled(s, options)]
    for s in handled:
        if s.key in previous.services or requested_ip_texts(s) or sharing_key(s) \
                or s.current_ingress_ips:
            return None
    results: dict[str, ServiceResult] = {
        s.key: ServiceResult(s.key, (), None, handled=False)
        for s in inputs if not is_handled(s, options)}
    pool_inputs = [pool_input_from_model(p) for p in pools]
    if {p.name for p in pool_inputs} != set(previous.pools):
        return None
    counts: dict[str, int] = {p.name: 0 for p in pool_inputs}
    if handled:
        need = len(handled)
        cut = [replace(p, blocks=free_blocks(p, held.addresses, need), allow_first_last_ips="")
               for p in pool_inputs]
        plan = allocate(cut, handled, options=options)
        for s in handled:
            result = plan.services[s.key]
            if not result.satisfied:
                return None
            results[s.key] = result
            for text in result.ips:
                a = address(text)
                owner = next((p.name for p in pool_inputs if a is not None and any(
                    b.first.version == a[0] and int(b.first) <= a[1] <= int(b.last)
                    for b in p.blocks)), None)
                if owner is not None:
                    counts[owner] += 1
    pools_status = {name: replace(st, available=st.available - counts.get(name, 0),
                                  used=st.used + counts.get(name, 0))
                    for name, st in previous.pools.items()}
    return LBIPAMPlan(services={**previous.services, **results}, pools=pools_status)
